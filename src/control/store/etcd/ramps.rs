//! The ramps' state in etcd: `{prefix}/ramps`, the same JSON as `ramps.json`, written
//! with a compare-and-swap on the revision of it this replica last applied (as the
//! overrides are) and applied by every replica from its watch. While etcd cannot be
//! reached a ramp verb is refused: a ramp is one position for the whole fleet, so one
//! replica alone must not move it. The counts each replica keeps of a running step, and
//! the elected replica's judgements, travel with its published windows
//! (`aggregates.rs`).

use std::sync::Arc;

use etcd_client::{Client, Txn, TxnOp};

use super::{conflict, put_if, Etcd, Revision, SessionError, StoreError, WRITE_TIMEOUT};
use crate::control::ramp::counts::{Judged, PublishedStep};
use crate::control::ramp::{self, Ramps};
use crate::control::Control;

impl Etcd {
    pub(super) fn ramps_key(&self) -> String {
        format!("{}/ramps", self.settings.prefix)
    }

    fn ramps_put_if(&self, expected: Revision, next: &Ramps) -> Txn {
        put_if(self.ramps_key(), expected, ramp::render(next))
    }

    pub(super) fn store_ramps(&self, next: &Ramps) -> Result<Revision, StoreError> {
        let Some((mut client, _)) = self.connected() else {
            return Err(StoreError::Unavailable(
                self.lock()
                    .error
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
            ));
        };
        let expected = self.lock().ramps_revision;
        let txn = self
            .ramps_put_if(expected, next)
            .or_else([TxnOp::get(self.ramps_key(), None)]);
        let resp = self
            .block_on(async move { client.txn(txn).await }, WRITE_TIMEOUT)?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        Err(conflict(resp, expected, "ramps"))
    }

    pub(super) fn mark_ramps_applied(&self, revision: Revision, snapshot: u64) {
        {
            let mut g = self.lock();
            g.ramps_revision = g.ramps_revision.max(revision);
            g.applied_revision = g.applied_revision.max(revision);
            g.snapshot = snapshot;
            self.gauges.applied_revision.set(g.applied_revision);
        }
        self.put_presence();
        self.changed.notify_all();
    }

    /// The ramps at the session's start: etcd's, or, in an empty store, this replica's
    /// (a fleet that moves to etcd keeps its ramps where they are).
    pub(super) async fn first_ramps(
        &self,
        client: &mut Client,
        control: &Arc<Control>,
        start: Revision,
    ) -> Result<(), SessionError> {
        let options = etcd_client::GetOptions::new().with_revision(start);
        let got = client.get(self.ramps_key(), Some(options)).await?;
        if let Some(kv) = got.kvs().first() {
            self.apply_ramps(control, kv.value(), kv.mod_revision())
                .await;
            return Ok(());
        }
        let c = Arc::clone(control);
        let current = tokio::task::spawn_blocking(move || c.current_ramps())
            .await
            .unwrap_or_default();
        if current.is_empty() {
            return Ok(());
        }
        let resp = client.txn(self.ramps_put_if(0, &current)).await?;
        if resp.succeeded() {
            let rev = resp.header().map_or(0, |h| h.revision());
            tracing::info!(
                revision = rev,
                "the store had no ramps: stored this replica's"
            );
            let version = control.snapshot().version;
            self.mark_ramps_applied(rev, version);
        }
        Ok(())
    }

    /// Serves the ramps stored at `revision`.
    pub(super) async fn apply_ramps(
        &self,
        control: &Arc<Control>,
        value: &[u8],
        revision: Revision,
    ) {
        let path = std::path::PathBuf::from(self.ramps_key());
        match ramp::parse(&path, value) {
            Ok(next) => {
                let c = Arc::clone(control);
                let _ =
                    tokio::task::spawn_blocking(move || c.ramps_from_store(next, revision)).await;
            }
            Err(e) => {
                tracing::error!(
                    "the fleet's ramps in etcd are unreadable ({e}); keeping the ramps in force"
                );
                self.lock().error = Some(format!("ramps in etcd unreadable: {e}"));
                self.put_presence();
            }
        }
    }

    /// The other replicas' counts of `route`'s running step.
    pub(super) fn counts_of(&self, route: &str) -> Vec<PublishedStep> {
        let g = self.lock();
        g.windows
            .iter()
            .filter(|(name, _)| *name != &self.settings.replica)
            .filter_map(|(_, p)| p.steps.get(route).cloned())
            .collect()
    }

    /// The elected replica's judgement of `route`, from its published windows.
    pub(super) fn judged_of(&self, route: &str) -> Option<(String, Judged)> {
        let g = self.lock();
        g.windows
            .iter()
            .filter(|(name, _)| *name != &self.settings.replica)
            .find_map(|(name, p)| Some((name.clone(), p.judged.get(route)?.clone())))
    }
}
