//! The control plane: the one owner of the desired state — the last good route files and
//! the overrides — which compiles it into a [`Snapshot`] and publishes it. Every change
//! of routing goes through here, one at a time: a reload (watcher, SIGHUP, API), an
//! override set or cleared (API, CLI), a change of `overrides.json` on disk.
//!
//! The data path never waits on any of this: it reads the published snapshot, and a
//! change is a pointer swap. Requests in flight finish on the snapshot they started with.
//!
//! - `mod.rs`: the state, starting, compiling and publishing.
//! - `reload.rs`: reading the route files again. `changes.rs`: overrides set, rolled
//!   back, resumed, or changed on disk. `upkeep.rs`: the guard loop, certificate reload,
//!   idle rate-limit buckets. `service.rs`: the thread that runs them.
//! - `build.rs`: the snapshot compiled from routes, overrides and upstreams.
//! - `overrides.rs`, `audit.rs`, `rates.rs`: `overrides.json`, `audit.jsonl`, status rates.

pub mod audit;
pub mod build;
mod changes;
mod fingerprint;
pub mod history;
pub mod notify;
pub mod overrides;
pub mod ramp;
pub mod rates;
mod reload;
pub mod service;
pub mod store;
pub mod tables;
mod upkeep;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::diag::{Diagnostic, Report, Severity};
use crate::metrics::Metrics;
use crate::routes::{self, split, Matcher, RouteSet};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::upstream::Upstreams;
use audit::Source;
use overrides::Overrides;
use reload::compile_matcher;

pub use fingerprint::Fingerprint;
/// Why the last reload was refused; shown by status until a good reload.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReloadError {
    pub at: String,
    pub source: String,
    /// One line per problem, `file:line:column: error: message`.
    pub errors: Vec<String>,
}

/// Which routes an operation is for.
#[derive(Debug, Clone)]
pub enum Selection {
    All,
    Routes(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    #[error("route `{0}` has no target, so its percent stays 0")]
    NoTarget(String),
    /// The fleet's store holds a newer change than this replica had applied.
    #[error("{0}")]
    Conflict(String),
}

/// A route's effective percent before and after an operation.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteChange {
    pub route: String,
    pub percent_before: f64,
    pub percent_after: f64,
}

/// What an override operation did.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    pub version: u64,
    pub changes: Vec<RouteChange>,
    /// `None` when `overrides.json` was written; else why not (the change is in force
    /// in this process, but would not survive a restart).
    pub persist_error: Option<String>,
    /// The state store's revision of the change (0 with files).
    #[serde(default)]
    pub revision: i64,
    /// Which replicas serve the change, when the state is shared through etcd.
    #[serde(default)]
    pub fleet: Option<store::Acks>,
}

/// Control-plane facts for status that are not in the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub last_reload_error: Option<ReloadError>,
    pub overrides_error: Option<String>,
    pub last_reload_ms: f64,
    pub overrides_file: String,
}

struct State {
    routes: RouteSet,
    matcher: Arc<Matcher>,
    overrides: Overrides,
    /// Every started ramp (`state/ramps.json`).
    ramps: ramp::Ramps,
    hold_all_at_zero: bool,
    generation: u64,
    version: u64,
    loaded_at: SystemTime,
    last_reload_error: Option<ReloadError>,
    overrides_error: Option<String>,
    last_reload_ms: f64,
    kept: build::Kept,
    exported: build::Exported,
    /// The stored route table served (`[state] routes = "store"`); 0: the routes folder.
    table: u64,
}

pub struct Control {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    pub shared: SharedSnapshot,
    pub rates: rates::Rates,
    state: Mutex<State>,
    /// Replaced snapshots, kept until no request holds them, so that freeing one (for a
    /// large table, milliseconds of work) happens here and never on the data path.
    retired: Mutex<Vec<Arc<Snapshot>>>,
    /// Set once the files are watched: until then a change could go unseen, so the
    /// process does not report itself ready.
    watching: AtomicBool,
    /// The route files and overrides file as they were when last read.
    seen: Mutex<Fingerprint>,
    /// Shadow limits, in-flight count and the mismatch log, shared with the data path.
    /// The HTTPS listener's certificate, re-read when its files change.
    pub certificate: Option<Arc<crate::tls::CertResolver>>,
    /// Where shared routing state is kept (`[state]`): files, or etcd.
    pub store: Arc<dyn store::Store>,
    /// The etcd store's session, run by the control service; `None` with files.
    pub etcd: Option<Arc<store::etcd::Etcd>>,
    /// The webhooks of `[notify]`.
    pub notifier: Option<notify::Notifier>,
    /// Running ramps' baselines and last gates.
    ramp_live: Mutex<ramp::LiveMap>,
    ramp_gauges: ramp::Gauges,
}

fn report_lines(report: &Report) -> Vec<String> {
    report.errors().map(ToString::to_string).collect()
}

impl Control {
    /// Loads the route files and `overrides.json` and publishes the first snapshot. Route
    /// files with errors refuse the start. An unreadable overrides file does not: every
    /// route is then held at 0 % (all traffic to legacy) until the file is repaired.
    pub fn start(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<(Control, Report), Report> {
        let started = Instant::now();
        let upstreams = Arc::new(Upstreams::new(&config, &metrics));
        let state_dir = config.server.state_dir.clone();
        // Taken before reading, so a write in between shows as a difference later.
        let seen = Fingerprint::take(&config.server.routes_dir, &state_dir);
        // With route tables in the store, the one this replica served last, if any: the
        // fleet's table, not the folder's, even while the store is away.
        let local_table = match &config.state {
            crate::config::state::Store::Etcd(e) if e.routes_from_store => {
                match tables::load_local(&state_dir) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!("{e}; serving the routes folder until the store answers");
                        None
                    }
                }
            }
            _ => None,
        };
        let from_table = local_table.as_ref().and_then(|t| {
            match tables::validate(&config, &t.files) {
                Ok((routes, _)) => Some((routes, t.number)),
                Err(errors) => {
                    tracing::error!(
                        "route table {} in {} does not compile with this config ({}); serving the routes folder until the store answers",
                        t.number,
                        tables::FILE_NAME,
                        errors.join("; ")
                    );
                    None
                }
            }
        });
        let (table, loaded) = match from_table {
            Some((routes, number)) => (number, Ok((routes, Report::default()))),
            None => (0, routes::load_dir(&config.server.routes_dir, &config)),
        };
        let (routes, mut report) = match loaded {
            Ok(loaded) => loaded,
            Err(report) => {
                metrics
                    .config_reloads_total
                    .with_label_values(&["error"])
                    .inc();
                return Err(report);
            }
        };
        if let Err(e) = std::fs::create_dir_all(&state_dir) {
            report.extend([Diagnostic {
                severity: Severity::Warning,
                file: state_dir.clone(),
                line: 0,
                column: 0,
                message: format!(
                    "cannot create the state folder ({e}): overrides will not be saved"
                ),
            }]);
        }
        let matcher = match compile_matcher(&routes) {
            Ok(m) => m,
            Err(e) => {
                return Err(Report::whole_file_error(
                    &config.server.routes_dir,
                    e.to_string(),
                ))
            }
        };
        let (overrides, overrides_error) = match overrides::load(&state_dir) {
            Ok(o) => (o, None),
            Err(e) => {
                tracing::error!(
                    "{e}; holding every route at 0 % until it is repaired (`banyan resume --all`)"
                );
                (Overrides::new(), Some(e.to_string()))
            }
        };
        // An unreadable ramps file stops the ramps: each route's file percent again.
        let ramps = ramp::load(&state_dir).unwrap_or_else(|e| {
            tracing::error!("{e}; every ramp is stopped until it is repaired");
            ramp::Ramps::new()
        });
        let mut state = State {
            routes,
            matcher,
            overrides,
            ramps,
            hold_all_at_zero: overrides_error.is_some(),
            generation: 1,
            version: 1,
            loaded_at: SystemTime::now(),
            last_reload_error: None,
            overrides_error,
            last_reload_ms: 0.0,
            kept: build::Kept::default(),
            exported: build::Exported::new(),
            table,
        };
        let snapshot = Self::compile(&config, &upstreams, &metrics, &mut state)
            .map_err(|e| Report::whole_file_error(&config.server.routes_dir, e.to_string()))?;
        state.last_reload_ms = started.elapsed().as_secs_f64() * 1000.0;
        build::export_gauges(
            &snapshot,
            &metrics,
            &mut state.kept.handles,
            &mut state.exported,
        );
        metrics
            .config_reloads_total
            .with_label_values(&["ok"])
            .inc();
        metrics.config_generation.set(1);
        let mut entry = audit::Entry::new(Source::File, "reload", "start");
        entry.generation = Some(1);
        entry.changes = snapshot
            .routes
            .iter()
            .map(|r| audit::Change {
                route: r.name.clone(),
                percent_before: None,
                percent_after: Some(split::bp_to_percent(r.effective_bp)),
            })
            .collect();
        if let Err(e) = audit::append(&state_dir, &entry) {
            tracing::warn!("cannot append to the audit log: {e}");
        }
        let certificate = match &config.server.tls {
            None => None,
            Some(t) => Some(Arc::new(
                crate::tls::CertResolver::load(&t.cert, &t.key)
                    .map_err(|e| Report::whole_file_error(&config.file, e.to_string()))?,
            )),
        };
        // What other replicas and `rollback --direct` dial: a wildcard address by name.
        let admin_url = if config.admin.listen.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".to_string());
            format!("http://{host}:{}", config.admin.listen.port())
        } else {
            format!("http://{}", config.admin.listen)
        };
        let (store, etcd): (Arc<dyn store::Store>, _) = match &config.state {
            crate::config::state::Store::Files => (
                Arc::new(store::Files::new(
                    state_dir.clone(),
                    crate::config::state::default_replica(
                        config.server.listen.first().map(|a| a.port()),
                    ),
                    admin_url,
                )),
                None,
            ),
            crate::config::state::Store::Etcd(settings) => {
                let etcd = Arc::new(store::etcd::Etcd::new(
                    (**settings).clone(),
                    admin_url,
                    state_dir.clone(),
                    store::etcd::Gauges {
                        up: metrics.store_up.clone(),
                        applied_revision: metrics.store_applied_revision.clone(),
                        replicas: metrics.fleet_replicas.clone(),
                    },
                ));
                (Arc::clone(&etcd) as Arc<dyn store::Store>, Some(etcd))
            }
        };
        let notifier = match &config.notify {
            None => None,
            Some(n) => Some(
                notify::Notifier::start(
                    n,
                    store.fleet().replica,
                    metrics.notifications_total.clone(),
                )
                .map_err(|e| {
                    Report::whole_file_error(
                        &config.file,
                        format!("cannot start the webhook thread: {e}"),
                    )
                })?,
            ),
        };
        store.applied(0, snapshot.version);
        if table > 0 {
            store.routes_applied(table, 0, snapshot.version);
        }
        let ramp_gauges = ramp::Gauges::register(&metrics.registry)
            .map_err(|e| Report::whole_file_error(&config.file, e.to_string()))?;
        let control = Control {
            config,
            metrics,
            upstreams,
            shared: Arc::new(ArcSwap::from_pointee(snapshot)),
            rates: rates::Rates::default(),
            state: Mutex::new(state),
            retired: Mutex::new(Vec::new()),
            watching: AtomicBool::new(false),
            seen: Mutex::new(seen),
            certificate,
            store,
            etcd,
            notifier,
            ramp_live: Mutex::new(ramp::LiveMap::new()),
            ramp_gauges,
        };
        Ok((control, report))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent state: every field is
        // replaced whole. Carry on with it rather than take the control plane down.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn compile(
        config: &Config,
        upstreams: &Arc<Upstreams>,
        metrics: &Metrics,
        st: &mut State,
    ) -> Result<Snapshot, build::BuildError> {
        let inputs = build::Inputs {
            routes: &st.routes,
            matcher: &st.matcher,
            overrides: &st.overrides,
            ramps: &st.ramps,
            hold_all_at_zero: st.hold_all_at_zero,
            generation: st.generation,
            version: st.version,
            loaded_at: st.loaded_at,
        };
        build::compile(config, upstreams, &inputs, metrics, &mut st.kept)
    }

    /// Compiles the state and swaps it in.
    fn publish(&self, st: &mut State) -> Result<Arc<Snapshot>, build::BuildError> {
        st.version += 1;
        let snapshot = Arc::new(Self::compile(
            &self.config,
            &self.upstreams,
            &self.metrics,
            st,
        )?);
        let old = self.shared.swap(Arc::clone(&snapshot));
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(old);
        build::export_gauges(
            &snapshot,
            &self.metrics,
            &mut st.kept.handles,
            &mut st.exported,
        );
        self.metrics.config_generation.set(st.generation as i64);
        Ok(snapshot)
    }

    fn audit(&self, entry: &audit::Entry) {
        if let Err(e) = audit::append(&self.config.server.state_dir, entry) {
            tracing::warn!("cannot append to the audit log: {e}");
        }
        // A change that came from the store is in the store's log already, and was told
        // by the replica that made it; one refused here is this replica's news.
        if entry.source != Source::Fleet {
            self.store.audit(entry);
        }
        if let Some(n) = &self.notifier {
            if entry.source != Source::Fleet || entry.result == "error" {
                n.send(entry);
            }
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::take(
            &self.config.server.routes_dir,
            &self.config.server.state_dir,
        )
    }

    /// Called once the files are watched: reads again whatever changed since the last
    /// read (a write between start and the watch would otherwise go unseen), then reports
    /// the process ready.
    pub fn start_watching(&self) {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = self.fingerprint();
        if now.overrides != seen.overrides {
            self.overrides_changed_on_disk();
        }
        if now.routes != seen.routes {
            let _ = self.reload(Source::File, "changed while starting");
        }
        self.watching.store(true, Ordering::Release);
    }

    /// Ready to serve: routes loaded and their files watched.
    pub fn is_ready(&self) -> bool {
        self.watching.load(Ordering::Acquire)
    }

    /// Frees replaced snapshots that no request holds any more. Called by the control
    /// service once a second.
    pub fn release_retired(&self) {
        let done: Vec<Arc<Snapshot>> = {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            let (free, keep) = retired.drain(..).partition(|s| Arc::strong_count(s) == 1);
            *retired = keep;
            free
        };
        drop(done);
    }

    pub fn health(&self) -> Health {
        let st = self.lock();
        Health {
            last_reload_error: st.last_reload_error.clone(),
            overrides_error: st.overrides_error.clone(),
            last_reload_ms: st.last_reload_ms,
            overrides_file: overrides::path_in(&self.config.server.state_dir)
                .display()
                .to_string(),
        }
    }
}
