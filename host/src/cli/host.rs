//! Running one command's host or ledger and closing it again: the process-level
//! plumbing (a tokio runtime, the WAL checkpoint on the way out) that a library
//! should not do for its caller.

use agentflow::ledger::{Ledger, existing};
use agentflow::{Host, HostConfig};
use std::path::Path;

/// Start a host on the ledger `db` (telling the operator on stderr when a task waits
/// for a human), run `f` with it on a new tokio runtime, wait for the host's background
/// quality evaluations (`[observe] evaluate`, at most `evaluate_wait_ms`), then close
/// the host (see [`close`]).
pub fn with_host<T>(
    config: HostConfig,
    db: &Path,
    f: impl AsyncFnOnce(&Host) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut host = Host::new(config, db)?;
        // A task waiting for a human says so, with the command that answers it.
        let db = db.to_path_buf();
        host.set_notices(std::sync::Arc::new(move |w| super::print::notice(w, &db)));
        let result = f(&host).await;
        let running = host.evaluations_running();
        if running > 0 {
            let bound = host.config().observe.evaluate_wait_ms;
            eprintln!(
                "agentflow: waiting for {running} quality evaluation(s) to be recorded (at most {:.1}s)",
                bound as f64 / 1000.0
            );
            let left = host
                .wait_for_evaluations(std::time::Duration::from_millis(bound))
                .await;
            if left > 0 {
                eprintln!("agentflow: warning: {left} quality evaluation(s) abandoned unrecorded");
            }
        }
        close(host);
        result
    })
}

/// Open the existing ledger `db`, run `f` with it, then checkpoint its WAL (see
/// [`close`]).
pub fn with_ledger<T>(
    db: &Path,
    f: impl FnOnce(&Ledger) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let ledger = existing::open(db)?;
    let result = f(&ledger)?;
    if let Err(e) = ledger.checkpoint(std::time::Duration::from_secs(5)) {
        eprintln!("agentflow: warning: {e}");
    }
    Ok(result)
}

/// [`with_ledger`] for an async `f`, run on a current-thread tokio runtime.
pub fn with_ledger_async<T>(
    db: &Path,
    f: impl AsyncFnOnce(&Ledger) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    with_ledger(db, |ledger| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(f(ledger))
    })
}

/// Close a host before exiting: its ledger's WAL goes into the `.db` file, so the file
/// alone holds every run. Failing to is worth a warning, not an error: nothing is lost.
fn close(host: Host) {
    if let Err(e) = host.close() {
        eprintln!("agentflow: warning: {e}");
    }
}
