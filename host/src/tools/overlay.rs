//! Copy-on-write views of the granted workspace, one per task.
//!
//! The root task reads and writes the directory itself. Every other task writes to its
//! own view, kept in the ledger (`workspace_files`, contents in `blobs`): a read looks
//! in the task's view, then its parent's, and so on up to the root's — the directory.
//! The first time a task writes a path, the content its parent's view had then (the
//! *base*) is kept with the change, so the change can be merged back by three-way diff
//! when the parent joins the task (`crate::merge`). Parallel siblings therefore never
//! see or clobber each other's half-done work, and the views survive a crash with the
//! rest of the ledger.

use super::workspace_dir::WorkspaceDir;
use crate::ledger::{Connection, SqlError, SqlResult, Writer, blobs, tasks, workspace};

/// Largest workspace file a view reads from the directory.
pub const MAX_FILE_BYTES: u64 = super::workspace::MAX_READ_BYTES;

/// One task's view of the workspace.
#[derive(Clone, Debug)]
pub struct View {
    pub run_id: String,
    /// The task, its parent, …, the root.
    pub chain: Vec<u64>,
    /// The workspace directory (the root task's view), as a capability handle.
    pub root: WorkspaceDir,
}

/// One file of a task's own view.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnFile {
    pub path: String,
    pub base: Option<String>,
    pub content: String,
}

impl View {
    /// The view of task `task_id`; its ancestry comes from the ledger's `tasks` table.
    pub fn of(
        conn: &Connection,
        root: &WorkspaceDir,
        run_id: &str,
        task_id: u64,
    ) -> SqlResult<View> {
        let mut chain = vec![task_id];
        let mut at = task_id;
        while let Some(parent) = tasks::parent_of(conn, run_id, at)? {
            at = parent;
            if chain.contains(&at) {
                break;
            }
            chain.push(at);
        }
        Ok(View {
            run_id: run_id.to_string(),
            chain,
            root: root.clone(),
        })
    }

    /// Whether this is the root task's view, the directory itself.
    pub fn is_root(&self) -> bool {
        self.chain.len() == 1
    }

    /// The task whose view this is.
    pub fn task_id(&self) -> u64 {
        self.chain[0]
    }

    /// The parent's view (`None` for the root).
    pub fn parent(&self) -> Option<View> {
        (!self.is_root()).then(|| View {
            run_id: self.run_id.clone(),
            chain: self.chain[1..].to_vec(),
            root: self.root.clone(),
        })
    }

    /// The content of `path` (normalised, relative) as this view sees it.
    pub fn read(&self, conn: &Connection, path: &str) -> SqlResult<Option<String>> {
        for task in &self.chain[..self.chain.len() - 1] {
            if let Some(hash) = own_hash(conn, &self.run_id, *task, path)? {
                return content(conn, &hash).map(Some);
            }
        }
        // What the directory has, through the handle that cannot leave it; a path that
        // escapes (or is not readable) is no file as far as a view is concerned.
        match self.root.read(path, MAX_FILE_BYTES) {
            Ok(Some(bytes)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            _ => Ok(None),
        }
    }

    /// Read `path` for the task itself, freezing what it saw: the first read of a path
    /// the task has not written copies the parent's content into the task's view (as
    /// base and content), so a later change the task derives from it is merged against
    /// what it actually read, not against whatever the parent has merged meanwhile.
    pub fn read_snapshot(&self, w: &Writer, path: &str) -> SqlResult<Option<String>> {
        let conn = w.conn();
        if self.is_root() || own_hash(conn, &self.run_id, self.task_id(), path)?.is_some() {
            return self.read(conn, path);
        }
        let Some(text) = self.read(conn, path)? else {
            return Ok(None);
        };
        let hash = w.put_blob(text.as_bytes())?;
        w.snapshot_workspace_file(&self.run_id, self.task_id(), path, &hash)?;
        Ok(Some(text))
    }

    /// Write `path` in this view: the directory for the root, the ledger otherwise
    /// (keeping the parent's content as the base the first time). Returns the hash of
    /// the new content.
    pub fn write(&self, w: &Writer, path: &str, text: &str) -> SqlResult<String> {
        if self.is_root() {
            // A merge writes a path a task wrote earlier: through the handle, so a
            // symlink placed meanwhile cannot lead the write out of the workspace.
            self.root
                .write(path, text.as_bytes(), false)
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            return Ok(blobs::sha256_hex(text.as_bytes()));
        }
        let task = self.task_id();
        let hash = w.put_blob(text.as_bytes())?;
        if w.has_workspace_file(&self.run_id, task, path)? {
            w.update_workspace_file(&self.run_id, task, path, &hash)?;
        } else {
            let base = match self.parent() {
                Some(parent) => parent.read(w.conn(), path)?,
                None => None,
            };
            let base_hash = base.map(|b| w.put_blob(b.as_bytes())).transpose()?;
            w.insert_workspace_file(&self.run_id, task, path, base_hash.as_deref(), &hash)?;
        }
        Ok(hash)
    }

    /// Names in directory `dir` ("" for the top) as this view sees them; directories
    /// end with `/`.
    pub fn list(&self, conn: &Connection, dir: &str) -> SqlResult<Vec<String>> {
        let mut names = std::collections::BTreeSet::new();
        if let Ok(Some(entries)) = self.root.list(dir) {
            names.extend(entries);
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        for task in &self.chain[..self.chain.len() - 1] {
            for file in own_files(conn, &self.run_id, *task)? {
                if let Some(rest) = file.path.strip_prefix(&prefix) {
                    names.insert(match rest.split_once('/') {
                        Some((first, _)) => format!("{first}/"),
                        None => rest.to_string(),
                    });
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}

impl View {
    /// Write this view of the whole workspace into the empty directory `dest` (what a
    /// command validator runs on): the directory's files, then the own files of each
    /// task of the chain, the task's own last. Files the directory's handle refuses
    /// (links out, larger than [`MAX_FILE_BYTES`]) are left out. Returns the bytes
    /// written; more than `max_bytes` in all is an error.
    pub fn materialize(
        &self,
        conn: &Connection,
        dest: &std::path::Path,
        max_bytes: u64,
    ) -> anyhow::Result<u64> {
        let mut written = 0u64;
        let mut put = |path: &str, bytes: &[u8]| -> anyhow::Result<()> {
            let path = super::workspace_dir::normalise(path)?;
            written += bytes.len() as u64;
            if written > max_bytes {
                anyhow::bail!("the workspace view is larger than {max_bytes} bytes");
            }
            let target = dest.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, bytes)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", target.display()))
        };
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            for name in self.root.list(&dir).ok().flatten().unwrap_or_default() {
                let path = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                if let Some(sub) = path.strip_suffix('/') {
                    dirs.push(sub.to_string());
                } else if let Ok(Some(bytes)) = self.root.read(&path, MAX_FILE_BYTES) {
                    put(&path, &bytes)?;
                }
            }
        }
        for task in self.chain[..self.chain.len() - 1].iter().rev() {
            for (path, hash) in workspace::files(conn, &self.run_id, *task)?
                .into_iter()
                .map(|row| (row.path, row.content_hash))
            {
                put(&path, content(conn, &hash)?.as_bytes())?;
            }
        }
        Ok(written)
    }
}

fn io(e: std::io::Error) -> SqlError {
    SqlError::ToSqlConversionFailure(Box::new(e))
}

fn own_hash(conn: &Connection, run_id: &str, task: u64, path: &str) -> SqlResult<Option<String>> {
    workspace::file_hash(conn, run_id, task, path)
}

/// The text of a blob ("" if it is missing, which a consistent ledger never has).
pub fn content(conn: &Connection, hash: &str) -> SqlResult<String> {
    blobs::text(conn, hash)
}

/// The files task `task` wrote in its own view, with their bases, by path.
pub fn own_files(conn: &Connection, run_id: &str, task: u64) -> SqlResult<Vec<OwnFile>> {
    workspace::files(conn, run_id, task)?
        .into_iter()
        .map(|row| {
            Ok(OwnFile {
                path: row.path,
                base: row.base_hash.map(|h| content(conn, &h)).transpose()?,
                content: content(conn, &row.content_hash)?,
            })
        })
        .collect()
}
