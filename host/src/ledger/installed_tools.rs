//! The `installed_tools` table: tool components installed on this ledger with
//! `agentflow tools install` — name, the component's SHA-256 (its bytes are in
//! `blobs`, so a run's build stays readable after a reinstall or a removal), the
//! manifest and what the component's `describe` returned, as JSON.

use super::{Connection, SqlResult, Writer, blobs, now_ms};
use rusqlite::{OptionalExtension, params};

/// The table (migration 5).
pub const TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS installed_tools (
    name             TEXT    PRIMARY KEY,
    hash             TEXT    NOT NULL,
    manifest_json    TEXT    NOT NULL,
    description_json TEXT    NOT NULL,
    installed_at     INTEGER NOT NULL
);";

/// One installed tool component.
#[derive(Clone, Debug, PartialEq)]
pub struct InstalledTool {
    pub name: String,
    /// SHA-256 hex of the component bytes (in `blobs`).
    pub hash: String,
    pub manifest_json: String,
    pub description_json: String,
    pub installed_at: i64,
}

fn row(r: &super::db::Row<'_>) -> SqlResult<InstalledTool> {
    Ok(InstalledTool {
        name: r.get(0)?,
        hash: r.get(1)?,
        manifest_json: r.get(2)?,
        description_json: r.get(3)?,
        installed_at: r.get(4)?,
    })
}

const COLUMNS: &str = "name, hash, manifest_json, description_json, installed_at";

/// Every installed tool, by name.
pub fn list(conn: &Connection) -> SqlResult<Vec<InstalledTool>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM installed_tools ORDER BY name"
    ))?;
    let rows = stmt.query_map([], row)?;
    rows.collect()
}

/// The names of the installed tools.
pub fn names(conn: &Connection) -> SqlResult<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM installed_tools ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// The installed tool `name`, if any.
pub fn get(conn: &Connection, name: &str) -> SqlResult<Option<InstalledTool>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM installed_tools WHERE name = ?1"),
        [name],
        row,
    )
    .optional()
}

/// The component bytes of build `hash`.
pub fn component(conn: &Connection, hash: &str) -> SqlResult<Option<Vec<u8>>> {
    blobs::get(conn, hash)
}

impl Writer {
    /// Install (or replace) tool `tool.name`, storing its component bytes in `blobs`.
    /// `installed_at` is set now. Returns the build it replaced, if another.
    pub fn install_tool(
        &mut self,
        tool: &InstalledTool,
        bytes: &[u8],
    ) -> SqlResult<Option<String>> {
        self.put_blob_hashed(&tool.hash, bytes)?;
        let previous = get(&self.conn, &tool.name)?.map(|t| t.hash);
        self.conn.execute(
            "INSERT INTO installed_tools (name, hash, manifest_json, description_json, installed_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, manifest_json = excluded.manifest_json,
                 description_json = excluded.description_json, installed_at = excluded.installed_at",
            params![tool.name, tool.hash, tool.manifest_json, tool.description_json, now_ms()],
        )?;
        Ok(previous.filter(|h| *h != tool.hash))
    }

    /// Remove tool `name` from the registry (its component stays in `blobs`, where the
    /// runs that used it find it). Whether it was installed.
    pub fn remove_tool(&mut self, name: &str) -> SqlResult<bool> {
        Ok(self
            .conn
            .execute("DELETE FROM installed_tools WHERE name = ?1", [name])?
            > 0)
    }
}
