//! Quotas shared by the hosts of one PostgreSQL ledger (a cluster's workers): on top
//! of its own sliding windows, the scheduler reserves each call in the ledger's
//! `quota_use` ([`crate::ledger::quotas`]), so the workers together stay within each
//! model's and provider's quota. A model the cluster's quota refuses is passed over
//! until its window has room, as with the host's own quotas.

use super::{Grant, Scheduler};
use crate::ledger::quotas::{SharedLimit, SharedQuotas};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Scheduler {
    /// Take back the local reservations of a grant the cluster's quota refused: no
    /// call was made, so not even its request counts here.
    pub(super) fn withdraw(&self, grant: &Grant) {
        let mut state = self.state.lock().unwrap();
        if let (Some(id), Some(&i)) = (grant.model_quota, self.index.get(&grant.model)) {
            state.model_quota[i].withdraw(id);
        }
        if let (Some(id), Some(w)) = (
            grant.provider_quota,
            state.provider_quota.get_mut(&grant.provider),
        ) {
            w.withdraw(id);
        }
        if grant.probe
            && let Some(h) = self.health(&mut state, &grant.model)
        {
            h.release_probe();
        }
    }

    /// Reserve `grant`'s call (model `i`) in the quotas shared with the cluster: the
    /// reservations, or until when and why they do not fit. A shared store that fails
    /// leaves the host to its own quotas (logged).
    pub(super) async fn reserve_shared(
        &self,
        grant: &Grant,
        i: usize,
        input: u64,
        output: u64,
    ) -> Result<(Vec<i64>, Option<i64>), (Instant, String)> {
        let Some(shared) = self.shared.clone() else {
            return Ok((Vec::new(), None));
        };
        let limits = self.shared_limits(i);
        if limits.is_empty() {
            return Ok((Vec::new(), None));
        }
        let window = self.config.quota_window_ms.max(1) as i64;
        let reserved =
            tokio::task::spawn_blocking(move || shared.reserve(&limits, window, input, output))
                .await;
        let reserved = match reserved {
            Ok(Ok(decided)) => Ok(decided),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match reserved {
            Ok(Ok((ids, stamped_ms))) => Ok((ids, Some(stamped_ms))),
            Ok(Err(refusal)) => Err((
                Instant::now() + Duration::from_millis(refusal.retry_in_ms),
                refusal.reason,
            )),
            Err(error) => {
                tracing::warn!(model = %grant.model, %error, "shared quota unavailable: this host's own quotas only");
                Ok((Vec::new(), None))
            }
        }
    }

    /// The quotas model `i` and its provider share with the cluster.
    fn shared_limits(&self, i: usize) -> Vec<SharedLimit> {
        let m = &self.models[i];
        let mut limits = Vec::new();
        if m.has_quota() {
            limits.push(SharedLimit {
                scope: format!("model:{}", m.name),
                tpm: m.tpm,
                rpm: m.rpm,
                itpm: m.itpm,
                otpm: m.otpm,
            });
        }
        if let Some(q) = self.provider_limits.get(&m.provider) {
            limits.push(SharedLimit {
                scope: format!("provider:{}", m.provider),
                tpm: q.tpm,
                rpm: q.rpm,
                itpm: q.itpm,
                otpm: q.otpm,
            });
        }
        limits
    }

    /// Share this host's quotas with the other hosts of its PostgreSQL ledger.
    pub fn share_quotas(&mut self, shared: SharedQuotas) {
        self.shared = Some(Arc::new(shared));
    }

    /// Whether any model or provider has a quota.
    pub fn has_quotas(&self) -> bool {
        !self.provider_limits.is_empty() || self.models.iter().any(|m| m.has_quota())
    }

    /// Set `grant`'s reservations in the shared quotas to what the call used (in the
    /// background: the caller holds the scheduler's lock).
    pub(super) fn reconcile_shared(&self, grant: &Grant, input: u64, output: u64) {
        if let Some(shared) = self.shared.clone()
            && !grant.shared_quota.is_empty()
        {
            let (ids, window) = (
                grant.shared_quota.clone(),
                self.config.quota_window_ms.max(1) as i64,
            );
            let update = move || {
                if let Err(e) = shared.reconcile(&ids, input, output, window) {
                    tracing::warn!(error = %e, "cannot reconcile a shared quota reservation");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(update)),
                Err(_) => update(),
            }
        }
    }
}
