//! The `checkpoints` table, written side: a semantic checkpoint's state goes to
//! `blobs` and its index row is written in the transaction of its `checkpoint.save`
//! event. Reading them back is [`query::checkpoints`](super::query::checkpoints) and
//! [`query::checkpoint_state`](super::query::checkpoint_state).

use super::{SqlResult, Writer};
use rusqlite::params;

/// A checkpoint to record: `state` is the guest's bytes, `host_state` (JSON) what the
/// host knew when it was saved.
#[derive(Clone, Debug)]
pub struct NewCheckpoint<'a> {
    pub run_id: &'a str,
    pub task_id: u64,
    pub number: u32,
    /// The sequence number of its `checkpoint.save` event.
    pub event_seq: u64,
    pub note: &'a str,
    pub state: &'a [u8],
    pub step: u32,
    pub host_state: &'a str,
    pub saved_at: i64,
}

impl Writer {
    /// Store a checkpoint's state and index it.
    pub fn save_checkpoint(&self, c: &NewCheckpoint<'_>) -> SqlResult<()> {
        let hash = self.put_blob(c.state)?;
        self.conn.prepare_cached(
            "INSERT INTO checkpoints (run_id, task_id, number, event_seq, note, state_hash, step, host_state, saved_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?.execute(
            params![c.run_id, c.task_id as i64, c.number, c.event_seq as i64, c.note, hash, c.step, c.host_state, c.saved_at],
        )?;
        Ok(())
    }
}
