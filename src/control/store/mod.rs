//! Where the control plane keeps routing state that outlives this process and is shared
//! with other replicas (`[state]` in the config). One interface, two implementations:
//!
//! - `files` (the default): `overrides.json` in the state folder — one instance, or
//!   instances sharing the folder, which converge through their file watchers.
//! - `etcd` (`etcd.rs`): a fleet of replicas. The overrides are one key, written with a
//!   compare-and-swap on the revision this replica last applied, so two operators cannot
//!   overwrite each other unseen; every replica watches it and applies a change as it does
//!   a local one; each announces what it has applied under a lease, so a change can wait
//!   until every live replica serves it.
//!
//! The local `overrides.json` is written in both cases: with etcd it is the last state
//! this replica saw, what it serves if it restarts while etcd is away.
//!
//! With etcd the store also keeps the fleet's audit log (its latest entries), the ramps'
//! state (`ramps.json`'s content, one key, written like the overrides) and, with
//! `routes = "store"`, the route tables (`tables.rs`): every numbered table pushed.

pub mod etcd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::audit;
use super::overrides::{self, Overrides};
use super::ramp::counts::{Judged, PublishedStep};
use super::ramp::{self, Ramps};
use super::tables::Table;

/// A revision of the shared state: etcd's `mod_revision` of the overrides key (0: never
/// written). Always 0 with files.
pub type Revision = i64;

/// What one replica announces: who it is and what it has applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Presence {
    pub replica: String,
    /// banyan's version.
    pub version: String,
    /// Its admin API, for `banyan rollback --direct` when the store is away.
    pub admin: String,
    /// The store revision up to which it has applied every change (overrides and route
    /// tables).
    pub applied_revision: Revision,
    /// The stored route table it serves (0: its routes folder).
    #[serde(default)]
    pub table: u64,
    /// Elected to judge the fleet's aggregates (the guard on the fleet's windows).
    #[serde(default)]
    pub leader: bool,
    /// Its snapshot version serving them.
    pub snapshot: u64,
    /// Its last control-plane error (a refused reload, an unreadable store value).
    pub error: Option<String>,
    /// When it last wrote this, RFC 3339.
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the {what} were changed on another replica (the store is at revision {current}, this replica had applied {expected}); nothing was changed, try again")]
    Conflict {
        /// `overrides`, `route tables`, `ramps`.
        what: &'static str,
        expected: Revision,
        current: Revision,
    },
    #[error("the state store cannot be reached: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Local(String),
}

/// Who has applied a change, after waiting for the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Acks {
    pub revision: Revision,
    /// Live replicas serving the change (or a later one).
    pub applied: Vec<String>,
    /// Live replicas that had not applied it when the wait ended.
    pub pending: Vec<String>,
    pub waited_ms: f64,
}

/// The fleet as this replica sees it, for `GET /api/v1/fleet`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetView {
    /// `files` or `etcd`.
    pub store: String,
    /// Whether the store can be reached now (always true with files).
    pub up: bool,
    /// Since when it cannot, RFC 3339.
    pub down_since: Option<String>,
    /// This replica's name and the revision it has applied.
    pub replica: String,
    pub applied_revision: Revision,
    /// The replica elected to judge the fleet's aggregates (etcd only).
    pub leader: Option<String>,
    /// Every live replica, this one included (files: only this one).
    pub replicas: Vec<Presence>,
    /// The fleet's figures per route over each replica's last ten seconds, both sides
    /// (etcd only; routes without traffic are left out).
    #[serde(default)]
    pub aggregates: BTreeMap<String, etcd::aggregates::FleetRoute>,
}

pub trait Store: Send + Sync {
    /// Writes the overrides, if the store still holds what this replica last applied;
    /// returns the new revision.
    fn write_overrides(&self, next: &Overrides) -> Result<Revision, StoreError>;
    /// Keeps overrides changed on this replica alone (`rollback --direct`, the emergency
    /// path when the store is away): shared with the fleet when the store can be reached,
    /// unless it changed there meanwhile.
    fn keep_local(&self, next: &Overrides) -> Result<(), StoreError>;
    /// This replica now serves the overrides of `revision` with snapshot `snapshot`.
    fn applied(&self, revision: Revision, snapshot: u64);
    /// Waits until every live replica has applied `revision`, at most `deadline`.
    fn wait_applied(&self, revision: Revision, deadline: Duration) -> Acks;
    fn fleet(&self) -> FleetView;
    /// Stores `table` as the newest route table (numbering it), if the store still holds
    /// the one this replica saw last; returns the write's revision.
    fn push_routes(&self, table: &mut Table) -> Result<Revision, StoreError>;
    /// Every stored route table, newest first.
    fn route_tables(&self) -> Result<Vec<Table>, StoreError>;
    /// This replica now serves route table `number`, stored at `revision`.
    fn routes_applied(&self, number: u64, revision: Revision, snapshot: u64);
    /// Records an audit entry where the fleet reads it (files: `audit.jsonl` has it).
    fn audit(&self, entry: &audit::Entry);
    /// Writes every ramp's state, if the store still holds what this replica last
    /// applied of them; returns the new revision (files: `ramps.json`, revision 0).
    fn write_ramps(&self, next: &Ramps) -> Result<Revision, StoreError>;
    /// This replica now serves the ramps of `revision`.
    fn ramps_applied(&self, revision: Revision, snapshot: u64);
    /// Whether this replica judges the ramps: always with files; with etcd, the elected
    /// replica while the store can be reached (nobody else, so a ramp moves once).
    fn judges_ramps(&self) -> bool;
    /// The other live replicas' counts of `route`'s running step, as they published them.
    fn ramp_counts(&self, route: &str) -> Vec<PublishedStep>;
    /// The elected replica's last judgement of `route`'s ramp and its name, as this
    /// replica received it (etcd, on the other replicas).
    fn ramp_judged(&self, route: &str) -> Option<(String, Judged)>;
    /// The latest audit entries, oldest first, and where they were read.
    fn audit_entries(&self, limit: usize) -> (Vec<serde_json::Value>, String);
}

const NOT_STORED: &str =
    "route tables are kept in the store only with [state] store = \"etcd\" and routes = \"store\"";

/// `overrides.json` in the state folder.
pub struct Files {
    pub state_dir: PathBuf,
    pub replica: String,
    pub admin: String,
    snapshot: std::sync::atomic::AtomicU64,
}

impl Files {
    pub fn new(state_dir: PathBuf, replica: String, admin: String) -> Files {
        Files {
            state_dir,
            replica,
            admin,
            snapshot: Default::default(),
        }
    }
}

impl Store for Files {
    fn write_overrides(&self, next: &Overrides) -> Result<Revision, StoreError> {
        overrides::store(&self.state_dir, next)
            .map(|_| 0)
            .map_err(|e| StoreError::Local(e.to_string()))
    }

    fn keep_local(&self, next: &Overrides) -> Result<(), StoreError> {
        self.write_overrides(next).map(|_| ())
    }

    fn applied(&self, _revision: Revision, snapshot: u64) {
        self.snapshot
            .store(snapshot, std::sync::atomic::Ordering::Relaxed);
    }

    fn wait_applied(&self, revision: Revision, _deadline: Duration) -> Acks {
        Acks {
            revision,
            applied: vec![self.replica.clone()],
            pending: Vec::new(),
            waited_ms: 0.0,
        }
    }

    fn fleet(&self) -> FleetView {
        FleetView {
            store: "files".to_string(),
            up: true,
            down_since: None,
            replica: self.replica.clone(),
            applied_revision: 0,
            leader: None,
            aggregates: BTreeMap::new(),
            replicas: vec![Presence {
                replica: self.replica.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                admin: self.admin.clone(),
                applied_revision: 0,
                table: 0,
                leader: false,
                snapshot: self.snapshot.load(std::sync::atomic::Ordering::Relaxed),
                error: None,
                at: crate::clock::now_rfc3339(),
            }],
        }
    }

    fn push_routes(&self, _table: &mut Table) -> Result<Revision, StoreError> {
        Err(StoreError::Local(NOT_STORED.into()))
    }

    fn route_tables(&self) -> Result<Vec<Table>, StoreError> {
        Err(StoreError::Local(NOT_STORED.into()))
    }

    fn routes_applied(&self, _number: u64, _revision: Revision, _snapshot: u64) {}

    fn audit(&self, _entry: &audit::Entry) {}

    fn write_ramps(&self, next: &Ramps) -> Result<Revision, StoreError> {
        ramp::store(&self.state_dir, next).map(|_| 0).map_err(|e| {
            StoreError::Local(format!(
                "cannot write {}: {e}",
                ramp::path_in(&self.state_dir).display()
            ))
        })
    }

    fn ramps_applied(&self, _revision: Revision, _snapshot: u64) {}

    fn judges_ramps(&self) -> bool {
        true
    }

    fn ramp_counts(&self, _route: &str) -> Vec<PublishedStep> {
        Vec::new()
    }

    fn ramp_judged(&self, _route: &str) -> Option<(String, Judged)> {
        None
    }

    fn audit_entries(&self, limit: usize) -> (Vec<serde_json::Value>, String) {
        local_audit(&self.state_dir, limit)
    }
}

/// The latest entries of this replica's `audit.jsonl`.
pub fn local_audit(state_dir: &std::path::Path, limit: usize) -> (Vec<serde_json::Value>, String) {
    let path = state_dir.join(audit::FILE_NAME);
    (audit::tail(&path, limit), path.display().to_string())
}
