//! `ticket`: a side-effecting, compensable tool component (world
//! `agentflow:agent/tool`). It keeps tickets as files in the one directory its manifest
//! grants (`agentflow-tool.toml`, preopened as `/data`): `tickets/<id>.json`.
//!
//! | `op` | arguments | does |
//! |---|---|---|
//! | `open` | `title`, `body?` | creates a ticket with status `open` |
//! | `close` | `id`, or the undo form `effect` (+ `original`) | sets its status to `closed` |
//! | `get` | `id` | reads one ticket |
//! | `list` | — | reads every ticket, by id |
//!
//! Every call answers with the ticket(s) as JSON. `open` and a `close` that changes a
//! ticket report `FileModified { path: "tickets/<id>.json", hash: <sha-256 of the file> }`.
//!
//! **Exactly once.** A ticket's id is derived from the call's idempotency key, so
//! repeating an `open` (the host does, with the same key, when it crashed after the
//! call's intent) finds the ticket it already wrote and answers the same — never a
//! second ticket. `close` is idempotent by nature.
//!
//! **Undo.** `close` is the tool's undo operation: recovery calls it with the effect of
//! an `open`, `{"op": "close", "effect": {...}, "original": {...}}`, which closes that
//! ticket.

use agentflow_sdk::tool::{Call, DATA_DIR, Description, Effect, SideEffect, Tool, ToolError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Longest title and body, in bytes.
const MAX_TITLE_BYTES: usize = 200;
const MAX_BODY_BYTES: usize = 16 * 1024;

struct TicketTool;

/// One call's arguments.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Args {
    Open {
        title: String,
        #[serde(default)]
        body: String,
    },
    Close {
        #[serde(default)]
        id: Option<String>,
        /// The undo form: the effect of the `open` to revert.
        #[serde(default)]
        effect: Option<Effect>,
        /// The undo form: the `open`'s arguments (not needed: the effect names the file).
        #[serde(default)]
        #[allow(dead_code)]
        original: Option<serde_json::Value>,
    },
    Get {
        id: String,
    },
    List {},
}

/// A ticket, as stored and as answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ticket {
    id: String,
    title: String,
    body: String,
    status: Status,
    /// The key of the call that opened it.
    opened_by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Open,
    Closed,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(untagged)]
enum Output {
    One(Ticket),
    Many(Vec<Ticket>),
}

impl Tool for TicketTool {
    type Args = Args;
    type Output = Output;

    fn describe() -> Description {
        Description::new(
            "ticket",
            "Opens, closes, reads and lists support tickets. `open` returns the new \
             ticket (with its id); repeating a call never opens a second ticket.",
            SideEffect::Compensable,
        )
        .schema(serde_json::json!({
            "type": "object",
            "properties": {
                "op": { "enum": ["open", "close", "get", "list"] },
                "title": { "type": "string", "maxLength": MAX_TITLE_BYTES },
                "body": { "type": "string", "maxLength": MAX_BODY_BYTES },
                "id": { "type": "string" },
            },
            "required": ["op"],
        }))
        .undo("close")
    }

    fn call(call: &mut Call, args: Args) -> Result<Output, ToolError> {
        handle(&Store::at(DATA_DIR), call, args)
    }
}

agentflow_sdk::export_tool!(TicketTool);

/// Serves one call on the tickets under `store`.
fn handle(store: &Store, call: &mut Call, args: Args) -> Result<Output, ToolError> {
    match args {
        Args::Open { title, body } => open(store, call, title, body).map(Output::One),
        Args::Close { id, effect, .. } => {
            let id = match (id, effect) {
                (Some(id), None) => id,
                (None, Some(effect)) => id_of_effect(&effect)?,
                (Some(_), Some(_)) => {
                    return Err(ToolError::InvalidArgs(
                        "give `id` or `effect`, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(ToolError::InvalidArgs("`close` needs `id`".into()));
                }
            };
            close(store, call, &id).map(Output::One)
        }
        Args::Get { id } => store.read(&checked_id(&id)?).map(Output::One),
        Args::List {} => store.list().map(Output::Many),
    }
}

fn open(store: &Store, call: &mut Call, title: String, body: String) -> Result<Ticket, ToolError> {
    let title = title.trim().to_string();
    if title.is_empty() {
        return Err(ToolError::InvalidArgs("`title` is empty".into()));
    }
    if title.len() > MAX_TITLE_BYTES || body.len() > MAX_BODY_BYTES {
        return Err(ToolError::InvalidArgs(format!(
            "`title` is at most {MAX_TITLE_BYTES} bytes, `body` at most {MAX_BODY_BYTES}"
        )));
    }
    let id = id_for(call);
    match store.try_read(&id)? {
        // The same call again (after a crash): the ticket it already opened.
        Some(existing) if existing.title == title && existing.body == body => {
            let bytes = store.bytes(&id)?;
            call.effect(store.effect(&id, &bytes));
            Ok(existing)
        }
        Some(existing) => Err(ToolError::Denied(format!(
            "idempotency key `{}` already opened ticket {} with other arguments",
            call.idempotency_key(),
            existing.id
        ))),
        None => {
            let ticket = Ticket {
                id: id.clone(),
                title,
                body,
                status: Status::Open,
                opened_by: call.idempotency_key().to_string(),
            };
            let bytes = store.write(&ticket)?;
            call.effect(store.effect(&id, &bytes));
            Ok(ticket)
        }
    }
}

fn close(store: &Store, call: &mut Call, id: &str) -> Result<Ticket, ToolError> {
    let id = checked_id(id)?;
    let mut ticket = store.read(&id)?;
    if ticket.status == Status::Closed {
        return Ok(ticket);
    }
    ticket.status = Status::Closed;
    let bytes = store.write(&ticket)?;
    call.effect(store.effect(&id, &bytes));
    Ok(ticket)
}

/// The id of the ticket a call opens: the same for the same run and key.
fn id_for(call: &Call) -> String {
    let mut h = Sha256::new();
    h.update(call.run_id().as_bytes());
    h.update([0]);
    h.update(call.idempotency_key().as_bytes());
    format!("T-{}", &hex(&h.finalize())[..16])
}

/// The ticket an `open`'s effect names.
fn id_of_effect(effect: &Effect) -> Result<String, ToolError> {
    match effect {
        Effect::FileModified { path, .. } => path
            .strip_prefix("tickets/")
            .and_then(|p| p.strip_suffix(".json"))
            .ok_or_else(|| ToolError::InvalidArgs(format!("`{path}` is not a ticket file")))
            .and_then(checked_id),
        other => Err(ToolError::InvalidArgs(format!(
            "the ticket tool made no effect like {other:?}"
        ))),
    }
}

/// `id` if it can name a ticket file (letters, digits, `-`), else `invalid-args`.
fn checked_id(id: &str) -> Result<String, ToolError> {
    if !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(id.to_string())
    } else {
        Err(ToolError::InvalidArgs(format!("`{id}` is not a ticket id")))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tickets under one directory.
struct Store {
    dir: PathBuf,
}

impl Store {
    fn at(root: impl AsRef<Path>) -> Store {
        Store {
            dir: root.as_ref().join("tickets"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn effect(&self, id: &str, bytes: &[u8]) -> Effect {
        Effect::FileModified {
            path: format!("tickets/{id}.json"),
            hash: hex(&Sha256::digest(bytes)),
        }
    }

    fn bytes(&self, id: &str) -> Result<Vec<u8>, ToolError> {
        std::fs::read(self.path(id)).map_err(|e| io_error("read", id, e))
    }

    fn try_read(&self, id: &str) -> Result<Option<Ticket>, ToolError> {
        match std::fs::read(self.path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ToolError::Failed(format!("ticket {id} is corrupt: {e}"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", id, e)),
        }
    }

    fn read(&self, id: &str) -> Result<Ticket, ToolError> {
        self.try_read(id)?
            .ok_or_else(|| ToolError::InvalidArgs(format!("no ticket {id}")))
    }

    /// Writes `ticket` whole (a temporary file renamed over the old one); its bytes.
    fn write(&self, ticket: &Ticket) -> Result<Vec<u8>, ToolError> {
        match std::fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create the directory of", &ticket.id, e)),
        }
        let bytes = serde_json::to_vec_pretty(ticket)
            .map_err(|e| ToolError::Failed(format!("cannot encode ticket: {e}")))?;
        let tmp = self.dir.join(format!(".{}.json.tmp", ticket.id));
        std::fs::write(&tmp, &bytes).map_err(|e| io_error("write", &ticket.id, e))?;
        std::fs::rename(&tmp, self.path(&ticket.id))
            .map_err(|e| io_error("write", &ticket.id, e))?;
        Ok(bytes)
    }

    fn list(&self) -> Result<Vec<Ticket>, ToolError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", "tickets", e)),
        };
        let mut tickets = Vec::new();
        for entry in entries {
            let name = entry
                .map_err(|e| io_error("list", "tickets", e))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) {
                tickets.push(self.read(id)?);
            }
        }
        tickets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tickets)
    }
}

fn io_error(what: &str, id: &str, e: std::io::Error) -> ToolError {
    if e.kind() == ErrorKind::PermissionDenied {
        ToolError::Denied(format!(
            "cannot {what} ticket {id}: {e} (is the directory read-only?)"
        ))
    } else {
        ToolError::Failed(format!("cannot {what} ticket {id}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentflow_sdk::tool::invoke;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("ticket-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(
        store: &Store,
        key: &str,
        args: serde_json::Value,
    ) -> (Result<Output, ToolError>, Vec<Effect>) {
        let mut call = Call::new(key, "run-1");
        let args: Args = serde_json::from_value(args).unwrap();
        let out = handle(store, &mut call, args);
        (out, call.effects().to_vec())
    }

    fn one(out: Result<Output, ToolError>) -> Ticket {
        match out {
            Ok(Output::One(t)) => t,
            other => panic!("expected one ticket, got {other:?}"),
        }
    }

    #[test]
    fn open_is_exactly_once_per_idempotency_key() {
        let dir = Scratch::new("once");
        let store = Store::at(&dir.0);
        let args = serde_json::json!({"op": "open", "title": "printer on fire"});
        let (first, effects1) = run(&store, "k1", args.clone());
        let first = one(first);
        assert_eq!(first.status, Status::Open);
        // The host repeats the call with the same key after a crash: same ticket.
        let (again, effects2) = run(&store, "k1", args.clone());
        assert_eq!(one(again), first);
        assert_eq!(effects1, effects2);
        // Another call (another key) is another ticket.
        let (other, _) = run(&store, "k2", args);
        assert_ne!(one(other).id, first.id);
        let (all, _) = run(&store, "k3", serde_json::json!({"op": "list"}));
        assert!(
            matches!(all, Ok(Output::Many(ref t)) if t.len() == 2),
            "{all:?}"
        );
        // The same key with other arguments is refused, not a silent second ticket.
        let (clash, _) = run(
            &store,
            "k1",
            serde_json::json!({"op": "open", "title": "else"}),
        );
        assert!(matches!(clash, Err(ToolError::Denied(_))), "{clash:?}");
    }

    #[test]
    fn the_effect_of_open_is_undone_by_close() {
        let dir = Scratch::new("undo");
        let store = Store::at(&dir.0);
        let original = serde_json::json!({"op": "open", "title": "vpn down", "body": "since 9:00"});
        let (opened, effects) = run(&store, "k1", original.clone());
        let opened = one(opened);
        let [Effect::FileModified { path, hash }] = &effects[..] else {
            panic!("expected one FileModified, got {effects:?}");
        };
        assert_eq!(path, &format!("tickets/{}.json", opened.id));
        let on_disk = std::fs::read(dir.0.join(path)).unwrap();
        assert_eq!(hash, &hex(&Sha256::digest(&on_disk)));
        // What recovery sends: the tool's undo op with the effect and the original args.
        let undo = serde_json::json!({"op": "close", "effect": effects[0], "original": original});
        let (closed, undo_effects) = run(&store, "k2", undo.clone());
        let closed = one(closed);
        assert_eq!(
            (closed.id.as_str(), closed.status),
            (opened.id.as_str(), Status::Closed)
        );
        assert_eq!(undo_effects.len(), 1);
        // Undoing twice changes nothing more and reports no effect.
        let (again, none) = run(&store, "k3", undo);
        assert_eq!(one(again).status, Status::Closed);
        assert!(none.is_empty());
        let (got, _) = run(
            &store,
            "k4",
            serde_json::json!({"op": "get", "id": opened.id}),
        );
        assert_eq!(one(got).status, Status::Closed);
    }

    #[test]
    fn bad_arguments_are_invalid_args() {
        let dir = Scratch::new("bad");
        let store = Store::at(&dir.0);
        for args in [
            serde_json::json!({"op": "close", "id": "../../etc/passwd"}),
            serde_json::json!({"op": "close", "id": "T-nope"}),
            serde_json::json!({"op": "close"}),
            serde_json::json!({"op": "open", "title": "  "}),
            serde_json::json!({"op": "close", "effect": {"type": "FileModified", "path": "x/../y", "hash": "0"}}),
        ] {
            let (out, effects) = run(&store, "k", args.clone());
            assert!(
                matches!(out, Err(ToolError::InvalidArgs(_))),
                "{args}: {out:?}"
            );
            assert!(effects.is_empty());
        }
        // Through the whole JSON path: unknown ops and fields are refused before any work.
        for args in [
            r#"{"op": "delete", "id": "T-1"}"#,
            r#"{"op": "open"}"#,
            r#"{"title": "x"}"#,
        ] {
            let out = invoke::<TicketTool>(&Call::new("k", "r"), args);
            assert!(
                matches!(out, Err(ToolError::InvalidArgs(_))),
                "{args}: {out:?}"
            );
        }
    }

    #[test]
    fn describes_close_as_its_undo() {
        let d = TicketTool::describe();
        assert_eq!(
            (d.name.as_str(), d.side_effect),
            ("ticket", SideEffect::Compensable)
        );
        assert_eq!(d.undo.as_deref(), Some("close"));
    }
}
