//! The leases a host holds on the runs it executes ([`crate::ledger::leases`]): taken
//! when a run starts or resumes, renewed by one heartbeat task every
//! [`leases::HEARTBEAT`], let go when the run ends — so `agentflow runs` can tell a
//! run in progress from one whose host died. The heartbeat also carries out the
//! operators' cancel requests for those runs ([`crate::ledger::cancels`]).

use crate::ledger::{Commit, Ledger, leases};
use crate::supervisor::RunContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The runs this host executes, and the heartbeat that renews their leases.
pub(crate) struct LeaseKeeper {
    ledger: Ledger,
    holder: leases::Holder,
    runs: Mutex<HashMap<String, Weak<RunContext>>>,
    heartbeat_started: AtomicBool,
}

/// A run's lease while this host executes it; let go on drop.
pub(crate) struct Held {
    keeper: Arc<LeaseKeeper>,
    run_id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.keeper.runs.lock().unwrap().remove(&self.run_id);
    }
}

impl LeaseKeeper {
    pub(crate) fn new(ledger: Ledger) -> Arc<LeaseKeeper> {
        Arc::new(LeaseKeeper {
            ledger,
            holder: leases::Holder::this_process(),
            runs: Mutex::new(HashMap::new()),
            heartbeat_started: AtomicBool::new(false),
        })
    }

    /// This process, as leases name it.
    pub(crate) fn holder(&self) -> &leases::Holder {
        &self.holder
    }

    /// Keep renewing the lease of `run` (already taken in the ledger) until the
    /// returned guard drops.
    pub(crate) fn hold(self: &Arc<Self>, run: &Arc<RunContext>) -> Held {
        let run_id = run.run_id.as_str();
        self.runs
            .lock()
            .unwrap()
            .insert(run_id.to_string(), Arc::downgrade(run));
        if !self.heartbeat_started.swap(true, Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(heartbeat(Arc::downgrade(self)));
        }
        Held {
            keeper: self.clone(),
            run_id: run_id.to_string(),
        }
    }

    /// Take over the lease of `run` (a resume), then hold it.
    pub(crate) async fn take(self: &Arc<Self>, run: &Arc<RunContext>) -> anyhow::Result<Held> {
        let (id, holder) = (run.run_id.clone(), self.holder.clone());
        self.ledger
            .write_as(Commit::Visible, move |w| w.take_lease(&id, &holder))
            .await?;
        Ok(self.hold(run))
    }
}

/// Renew the held leases every heartbeat, until the host is gone.
async fn heartbeat(keeper: Weak<LeaseKeeper>) {
    loop {
        tokio::time::sleep(leases::HEARTBEAT).await;
        let Some(k) = keeper.upgrade() else { return };
        let runs: HashMap<String, Weak<RunContext>> = k.runs.lock().unwrap().clone();
        if runs.is_empty() {
            continue;
        }
        let (ledger, holder) = (k.ledger.clone(), k.holder.clone());
        drop(k);
        let ids: Vec<String> = runs.keys().cloned().collect();
        let renewed = ledger
            .write_as(Commit::Visible, {
                let ids = ids.clone();
                move |w| w.renew_leases(&ids, &holder)
            })
            .await;
        if let Err(e) = renewed {
            tracing::warn!("renewing run leases: {e}");
        }
        if let Err(e) = carry_out_cancels(&ledger, &runs, &ids).await {
            tracing::warn!("reading cancel requests: {e}");
        }
    }
}

/// Cancel what operators asked to cancel in the runs this host executes.
async fn carry_out_cancels(
    ledger: &Ledger,
    runs: &HashMap<String, Weak<RunContext>>,
    ids: &[String],
) -> anyhow::Result<()> {
    let requests = ledger.with_reader(|conn| crate::ledger::cancels::pending(conn, ids))??;
    for request in requests {
        if let Some(run) = runs.get(&request.run_id).and_then(Weak::upgrade) {
            tracing::warn!(run = %request.run_id, task = request.task_id, "cancelled by an operator");
            run.cancel(None, request.task_id).await;
        }
        ledger.write(move |w| w.cancel_done(request.id)).await?;
    }
    Ok(())
}
