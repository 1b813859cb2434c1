//! The fleet's state in etcd v3. Keys under the configured prefix:
//!
//! - `{prefix}/overrides`: the overrides, the same JSON as `overrides.json`. Written with
//!   a compare-and-swap on the `mod_revision` this replica last applied.
//! - `{prefix}/replicas/{name}`: each replica's [`Presence`], bound to a lease (3 s), so a
//!   replica that dies leaves the list within the lease time.
//! - `{prefix}/routes` and `{prefix}/routes-history/{number}`: the route table served
//!   with `routes = "store"`, and every table stored (the last 100), written together
//!   with a compare-and-swap on the `mod_revision` of the table this replica saw last.
//! - `{prefix}/audit/{time}-{replica}`: the fleet's audit log, its latest 1,000 entries.
//! - `{prefix}/ramps`: every ramp's state, the same JSON as `ramps.json`, written like
//!   the overrides (`ramps.rs`).
//! - `{prefix}/windows/{replica}` and `{prefix}/leader`: each replica's guard windows and
//!   counts of running ramp steps, and the election of the replica that judges their sum
//!   (`aggregates.rs`).
//!
//! `run` is the replica's session with etcd, on the control service's runtime: it reads
//! the overrides, announces the replica, then watches both and applies every change of
//! the overrides as a local one (one snapshot swap), announcing the revision it applied.
//! When etcd cannot be reached the replica keeps serving what it has (never file
//! defaults), says since when, and tries again every half second.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use prometheus::IntGauge;

pub mod aggregates;
mod ramps;
mod session;
mod tables;

use super::{Acks, FleetView, Presence, Revision, Store, StoreError};
use crate::config::state::Etcd as Settings;
use crate::control::audit;
use crate::control::overrides::{self, Overrides};
use crate::control::ramp::counts::{Judged, PublishedStep};
use crate::control::ramp::Ramps;
use crate::control::tables::Table;

/// A replica's presence outlives it by at most this long.
pub const LEASE_SECONDS: i64 = 3;
/// How long a write may wait for etcd before the change counts as not shared.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(500);

pub struct Gauges {
    pub up: IntGauge,
    pub applied_revision: IntGauge,
    pub replicas: IntGauge,
}

pub struct Etcd {
    settings: Settings,
    admin: String,
    /// This replica's state folder: its own audit log, read when etcd is away.
    state_dir: std::path::PathBuf,
    gauges: Gauges,
    /// The control service's runtime, where every etcd call runs.
    handle: OnceLock<tokio::runtime::Handle>,
    client: Mutex<Option<(Client, i64)>>,
    inner: Mutex<Inner>,
    /// Notified when a replica's presence changes.
    changed: Condvar,
    /// Itself, for tasks spawned from `&self` (set when the session starts).
    this: OnceLock<std::sync::Weak<Etcd>>,
    /// This replica's windows as last published.
    published: Mutex<Option<aggregates::Published>>,
}

#[derive(Default)]
struct Inner {
    /// Every change up to this store revision is applied here (acknowledgements).
    applied_revision: Revision,
    /// The overrides key's revision applied: what this replica's writes compare with.
    overrides_revision: Revision,
    /// The ramps key's revision applied: what this replica's ramp writes compare with.
    ramps_revision: Revision,
    /// The routes key's revision and table number last seen, served or refused.
    routes_revision: Revision,
    routes_number: u64,
    /// The route table served.
    table: u64,
    /// Elected to judge the fleet's aggregates.
    leader: bool,
    /// Every live replica's last published windows, by replica.
    windows: BTreeMap<String, aggregates::Published>,
    snapshot: u64,
    error: Option<String>,
    /// Other live replicas and this one, by name.
    replicas: BTreeMap<String, Presence>,
    up: bool,
    down_since: Option<String>,
    /// Overrides changed here while etcd was away: written to etcd when it returns, if
    /// nobody changed them there meanwhile (else etcd's win, and the log says so).
    unshared: Option<Overrides>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("{0}")]
    Ended(&'static str),
    #[error("{0}")]
    Tls(String),
}

impl Etcd {
    pub fn new(
        settings: Settings,
        admin: String,
        state_dir: std::path::PathBuf,
        gauges: Gauges,
    ) -> Etcd {
        gauges.up.set(0);
        Etcd {
            settings,
            admin,
            state_dir,
            gauges,
            handle: OnceLock::new(),
            client: Mutex::new(None),
            inner: Mutex::new(Inner {
                down_since: Some(crate::clock::now_rfc3339()),
                ..Inner::default()
            }),
            changed: Condvar::new(),
            this: OnceLock::new(),
            published: Mutex::new(None),
        }
    }

    fn shared_self(&self) -> Option<Arc<Etcd>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
    }

    pub fn replica(&self) -> &str {
        &self.settings.replica
    }

    fn overrides_key(&self) -> String {
        format!("{}/overrides", self.settings.prefix)
    }

    /// A transaction writing `next` as the overrides if etcd still holds revision
    /// `expected` of them (0: never written): the compare-and-swap every write uses.
    fn overrides_put_if(&self, expected: Revision, next: &Overrides) -> Txn {
        put_if(self.overrides_key(), expected, overrides::render(next))
    }

    fn replicas_prefix(&self) -> String {
        format!("{}/replicas/", self.settings.prefix)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn presence(&self, g: &Inner) -> Presence {
        Presence {
            replica: self.settings.replica.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            admin: self.admin.clone(),
            applied_revision: g.applied_revision,
            table: g.table,
            leader: g.leader,
            snapshot: g.snapshot,
            error: g.error.clone(),
            at: crate::clock::now_rfc3339(),
        }
    }

    /// Runs `fut` on the control service's runtime and waits for it, from a blocking
    /// thread (the admin API's, the guard's), at most `timeout`.
    fn block_on<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let handle = self
            .handle
            .get()
            .ok_or_else(|| StoreError::Unavailable("not connected yet".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(timeout)
            .map_err(|_| StoreError::Unavailable(format!("no answer within {timeout:?}")))
    }

    fn put_presence(&self) {
        let Some((mut client, lease)) = self.connected() else {
            return;
        };
        let Some(handle) = self.handle.get() else {
            return;
        };
        let key = format!("{}{}", self.replicas_prefix(), self.settings.replica);
        let value = serde_json::to_string(&self.presence(&self.lock())).unwrap_or_default();
        handle.spawn(async move {
            let _ = client
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await;
        });
    }

    fn connected(&self) -> Option<(Client, i64)> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn mark_down(&self, why: &str) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut g = self.lock();
        if g.up || g.error.as_deref() != Some(why) {
            tracing::error!(
                "the state store (etcd) cannot be reached: {why}; serving the last state"
            );
        }
        if g.up {
            g.down_since = Some(crate::clock::now_rfc3339());
        }
        g.up = false;
        g.leader = false;
        // Figures nobody refreshes any more are not the fleet's.
        g.windows.clear();
        g.error = Some(why.to_string());
        // The last presence list stays: it is where `rollback --direct` finds the others.
        self.gauges.up.set(0);
        self.changed.notify_all();
    }
}

/// Writes `value` at `key` if etcd still holds revision `expected` of it (0: never
/// written).
fn put_if(key: String, expected: Revision, value: String) -> Txn {
    let guard = if expected == 0 {
        Compare::version(key.clone(), CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key.clone(), CompareOp::Equal, expected)
    };
    Txn::new()
        .when([guard])
        .and_then([TxnOp::put(key, value, None)])
}

/// A compare-and-swap that failed: the key's revision now, read by its `else` branch.
fn conflict(resp: etcd_client::TxnResponse, expected: Revision, what: &'static str) -> StoreError {
    let current = resp
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map_or(0, |kv| kv.mod_revision())),
            _ => None,
        })
        .unwrap_or(0);
    StoreError::Conflict {
        what,
        expected,
        current,
    }
}

impl Store for Etcd {
    fn write_overrides(&self, next: &Overrides) -> Result<Revision, StoreError> {
        let Some((mut client, _)) = self.connected() else {
            let mut g = self.lock();
            g.unshared = Some(next.clone());
            return Err(StoreError::Unavailable(
                g.error.clone().unwrap_or_else(|| "not connected".into()),
            ));
        };
        let expected = self.lock().overrides_revision;
        let txn = self
            .overrides_put_if(expected, next)
            .or_else([TxnOp::get(self.overrides_key(), None)]);
        let sent = self
            .block_on(async move { client.txn(txn).await }, WRITE_TIMEOUT)
            .and_then(|r| r.map_err(|e| StoreError::Unavailable(e.to_string())));
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                self.lock().unshared = Some(next.clone());
                return Err(e);
            }
        };
        if resp.succeeded() {
            self.lock().unshared = None;
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        Err(conflict(resp, expected, "overrides"))
    }

    fn keep_local(&self, next: &Overrides) -> Result<(), StoreError> {
        self.lock().unshared = Some(next.clone());
        // Reachable after all: share it now, unless etcd changed since this replica's last.
        if let (Some((mut client, _)), Some(handle)) = (self.connected(), self.handle.get()) {
            let local = next.clone();
            let expected = self.lock().overrides_revision;
            let me = self.shared_self();
            handle.spawn(async move {
                if let Some(me) = me {
                    if me.lock().unshared.take().is_some() {
                        let _ = me.share(&mut client, &local, expected).await;
                    }
                }
            });
        }
        Ok(())
    }

    fn applied(&self, revision: Revision, snapshot: u64) {
        {
            let mut g = self.lock();
            g.applied_revision = g.applied_revision.max(revision);
            g.overrides_revision = g.overrides_revision.max(revision);
            g.snapshot = snapshot;
            self.gauges.applied_revision.set(g.applied_revision);
        }
        self.put_presence();
    }

    fn wait_applied(&self, revision: Revision, deadline: Duration) -> Acks {
        let started = Instant::now();
        let mut g = self.lock();
        loop {
            let me = &self.settings.replica;
            let mut applied = Vec::new();
            let mut pending = Vec::new();
            if g.applied_revision >= revision {
                applied.push(me.clone());
            } else {
                pending.push(me.clone());
            }
            for (name, p) in g.replicas.iter().filter(|(n, _)| *n != me) {
                if p.applied_revision >= revision {
                    applied.push(name.clone());
                } else {
                    pending.push(name.clone());
                }
            }
            let waited = started.elapsed();
            if pending.is_empty() || waited >= deadline {
                return Acks {
                    revision,
                    applied,
                    pending,
                    waited_ms: waited.as_secs_f64() * 1000.0,
                };
            }
            g = self
                .changed
                .wait_timeout(g, deadline - waited)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn fleet(&self) -> FleetView {
        let g = self.lock();
        // This replica as it is now, not as its last presence write was seen back.
        let mut replicas: Vec<Presence> = g
            .replicas
            .values()
            .filter(|p| p.replica != self.settings.replica)
            .cloned()
            .collect();
        replicas.push(self.presence(&g));
        replicas.sort_by(|a, b| a.replica.cmp(&b.replica));
        FleetView {
            store: "etcd".to_string(),
            up: g.up,
            down_since: g.down_since.clone(),
            replica: self.settings.replica.clone(),
            applied_revision: g.applied_revision,
            leader: replicas
                .iter()
                .find(|p| p.leader)
                .map(|p| p.replica.clone()),
            replicas,
            aggregates: aggregates::fleet_routes(&g.windows),
        }
    }

    fn push_routes(&self, table: &mut Table) -> Result<Revision, StoreError> {
        self.store_table(table)
    }

    fn route_tables(&self) -> Result<Vec<Table>, StoreError> {
        self.read_tables()
    }

    fn routes_applied(&self, number: u64, revision: Revision, snapshot: u64) {
        {
            let mut g = self.lock();
            g.table = number;
            g.routes_number = g.routes_number.max(number);
            g.routes_revision = g.routes_revision.max(revision);
            g.applied_revision = g.applied_revision.max(revision);
            g.snapshot = snapshot;
            g.error = None;
            self.gauges.applied_revision.set(g.applied_revision);
        }
        self.put_presence();
        self.changed.notify_all();
    }

    fn audit(&self, entry: &audit::Entry) {
        self.append_audit(entry);
    }

    fn audit_entries(&self, limit: usize) -> (Vec<serde_json::Value>, String) {
        self.read_audit(limit)
    }

    fn write_ramps(&self, next: &Ramps) -> Result<Revision, StoreError> {
        self.store_ramps(next)
    }

    fn ramps_applied(&self, revision: Revision, snapshot: u64) {
        self.mark_ramps_applied(revision, snapshot);
    }

    fn judges_ramps(&self) -> bool {
        let g = self.lock();
        g.up && g.leader
    }

    fn ramp_counts(&self, route: &str) -> Vec<PublishedStep> {
        self.counts_of(route)
    }

    fn ramp_judged(&self, route: &str) -> Option<(String, Judged)> {
        self.judged_of(route)
    }
}
