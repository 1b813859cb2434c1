//! The control plane: the one owner of the desired state — the last good route files and
//! the overrides — which compiles it into a [`Snapshot`] and publishes it. Every change
//! of routing goes through here, one at a time: a reload (watcher, SIGHUP, API), an
//! override set or cleared (API, CLI), a change of `overrides.json` on disk.
//!
//! The data path never waits on any of this: it reads the published snapshot, and a
//! change is a pointer swap. Requests in flight finish on the snapshot they started with.

pub mod audit;
pub mod build;
pub mod overrides;
pub mod rates;
pub mod service;

use crate::shadow::ShadowShared;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::diag::{Diagnostic, Report, Severity};
use crate::metrics::Metrics;
use crate::model::{Override, Trigger};
use crate::routes::{self, split, Matcher, RouteSet};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::upstream::Upstreams;
use audit::Source;
use overrides::Overrides;

/// Why the last reload was refused; shown by status until a good reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// A route's effective percent before and after an operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteChange {
    pub route: String,
    pub percent_before: f64,
    pub percent_after: f64,
}

/// What an override operation did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub version: u64,
    pub changes: Vec<RouteChange>,
    /// `None` when `overrides.json` was written; else why not (the change is in force
    /// in this process, but would not survive a restart).
    pub persist_error: Option<String>,
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
    hold_all_at_zero: bool,
    generation: u64,
    version: u64,
    loaded_at: SystemTime,
    last_reload_error: Option<ReloadError>,
    overrides_error: Option<String>,
    last_reload_ms: f64,
    kept: build::Kept,
    exported: build::Exported,
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
    pub shadow: Arc<ShadowShared>,
    /// The HTTPS listener's certificate, re-read when its files change.
    pub certificate: Option<Arc<crate::tls::CertResolver>>,
}

/// Names, sizes and modification times of the files the desired state was read from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    routes: Vec<(PathBuf, u64, Option<SystemTime>)>,
    overrides: Option<(u64, Option<SystemTime>)>,
}

fn file_meta(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

impl Fingerprint {
    pub fn take(routes_dir: &Path, state_dir: &Path) -> Fingerprint {
        let routes = routes::load::route_files(routes_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let (len, at) = file_meta(&p).unwrap_or((0, None));
                (p, len, at)
            })
            .collect();
        Fingerprint {
            routes,
            overrides: file_meta(&overrides::path_in(state_dir)),
        }
    }
}

fn report_lines(report: &Report) -> Vec<String> {
    report.errors().map(ToString::to_string).collect()
}

fn percents(snapshot: &Snapshot) -> BTreeMap<&str, u16> {
    snapshot
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.effective_bp))
        .collect()
}

fn compile_matcher(routes: &RouteSet) -> Result<Arc<Matcher>, String> {
    Matcher::new(&routes.routes)
        .map(Arc::new)
        .map_err(|e| format!("compiling the route table: {e}"))
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
        let (routes, mut report) = match routes::load_dir(&config.server.routes_dir, &config) {
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
            Err(e) => return Err(Report::whole_file_error(&config.server.routes_dir, e)),
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
        let mut state = State {
            routes,
            matcher,
            overrides,
            hold_all_at_zero: overrides_error.is_some(),
            generation: 1,
            version: 1,
            loaded_at: SystemTime::now(),
            last_reload_error: None,
            overrides_error,
            last_reload_ms: 0.0,
            kept: build::Kept::default(),
            exported: build::Exported::new(),
        };
        let snapshot = Self::compile(&config, &upstreams, &metrics, &mut state)
            .map_err(|e| Report::whole_file_error(&config.server.routes_dir, e))?;
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
        let config_shadow = config.shadow.clone();
        let certificate = match &config.server.tls {
            None => None,
            Some(t) => Some(Arc::new(
                crate::tls::CertResolver::load(&t.cert, &t.key)
                    .map_err(|e| Report::whole_file_error(&config.file, e))?,
            )),
        };
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
            shadow: Arc::new(ShadowShared::new(config_shadow, &state_dir)),
            certificate,
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
    ) -> Result<Snapshot, String> {
        let inputs = build::Inputs {
            routes: &st.routes,
            matcher: &st.matcher,
            overrides: &st.overrides,
            hold_all_at_zero: st.hold_all_at_zero,
            generation: st.generation,
            version: st.version,
            loaded_at: st.loaded_at,
        };
        build::compile(config, upstreams, &inputs, metrics, &mut st.kept)
    }

    /// Compiles the state and swaps it in.
    fn publish(&self, st: &mut State) -> Result<Arc<Snapshot>, String> {
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

    /// Reads the route files again. A file set with errors never replaces the serving
    /// snapshot: the error is logged, counted, audited, and kept for status.
    pub fn reload(&self, source: Source, reason: &str) -> Result<u64, ReloadError> {
        let mut st = self.lock();
        let started = Instant::now();
        let seen = self.fingerprint();
        let loaded = routes::load_dir(&self.config.server.routes_dir, &self.config);
        let old = self.shared.load_full();
        let before = percents(&old);
        let (routes, report) = match loaded {
            Ok(ok) => ok,
            Err(report) => {
                return Err(self.reload_failed(&mut st, source, reason, report_lines(&report)))
            }
        };
        for w in report.warnings() {
            tracing::warn!("{w}");
        }
        let matcher = match compile_matcher(&routes) {
            Ok(m) => m,
            Err(e) => return Err(self.reload_failed(&mut st, source, reason, vec![e])),
        };
        let previous_matcher = std::mem::replace(&mut st.matcher, matcher);
        let previous = std::mem::replace(&mut st.routes, routes);
        st.generation += 1;
        st.loaded_at = SystemTime::now();
        let snapshot = match self.publish(&mut st) {
            Ok(s) => s,
            Err(e) => {
                st.routes = previous;
                st.matcher = previous_matcher;
                st.generation -= 1;
                return Err(self.reload_failed(&mut st, source, reason, vec![e]));
            }
        };
        st.last_reload_ms = started.elapsed().as_secs_f64() * 1000.0;
        st.last_reload_error = None;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        self.metrics
            .config_reloads_total
            .with_label_values(&["ok"])
            .inc();
        let after = percents(&snapshot);
        let mut entry = audit::Entry::new(source, "reload", reason);
        entry.generation = Some(st.generation);
        entry.changes = diff(&before, &after);
        self.audit(&entry);
        tracing::info!(
            generation = st.generation,
            routes = snapshot.routes.len(),
            ms = format!("{:.1}", st.last_reload_ms),
            "route files reloaded ({reason})"
        );
        Ok(st.generation)
    }

    fn reload_failed(
        &self,
        st: &mut State,
        source: Source,
        reason: &str,
        errors: Vec<String>,
    ) -> ReloadError {
        self.metrics
            .config_reloads_total
            .with_label_values(&["error"])
            .inc();
        for e in &errors {
            tracing::error!(
                "reload refused, still serving generation {}: {e}",
                st.generation
            );
        }
        let err = ReloadError {
            at: crate::clock::now_rfc3339(),
            source: source.as_str().to_string(),
            errors,
        };
        let mut entry = audit::Entry::new(source, "reload", reason);
        entry.result = "error";
        entry.generation = Some(st.generation);
        entry.error = Some(err.errors.join("; "));
        self.audit(&entry);
        st.last_reload_error = Some(err.clone());
        err
    }

    /// Sets a route's percent until it is resumed.
    pub fn set_percent(
        &self,
        route: &str,
        percent_bp: u16,
        reason: &str,
        source: Source,
    ) -> Result<Outcome, ControlError> {
        {
            let st = self.lock();
            let def = st
                .routes
                .routes
                .iter()
                .find(|r| r.name == route)
                .ok_or_else(|| ControlError::UnknownRoute(route.to_string()))?;
            if def.target.is_none() && percent_bp > 0 {
                return Err(ControlError::NoTarget(route.to_string()));
            }
        }
        let sel = Selection::Routes(vec![route.to_string()]);
        self.change_overrides(&sel, source, "set", reason, |_, prev| {
            let shadow = prev.is_none_or(|p| p.shadow);
            Some(Override::new(percent_bp, shadow, Trigger::Manual, reason))
        })
    }

    /// Percent 0 and shadow paused, until resumed.
    pub fn rollback(
        &self,
        sel: &Selection,
        reason: &str,
        source: Source,
        trigger: Trigger,
    ) -> Result<Outcome, ControlError> {
        let outcome = self.change_overrides(sel, source, "rollback", reason, |_, _| {
            Some(Override::new(0, false, trigger, reason))
        })?;
        for c in &outcome.changes {
            self.metrics
                .rollbacks_total
                .with_label_values(&[&c.route, trigger.as_str()])
                .inc();
        }
        Ok(outcome)
    }

    /// Clears overrides: the route files decide again. `All` clears every entry of the
    /// file, including those of routes no longer in the files.
    pub fn resume(&self, sel: &Selection, source: Source) -> Result<Outcome, ControlError> {
        self.change_overrides(sel, source, "resume", "resume", |_, _| None)
    }

    fn change_overrides(
        &self,
        sel: &Selection,
        source: Source,
        action: &'static str,
        reason: &str,
        decide: impl Fn(&str, Option<&Override>) -> Option<Override>,
    ) -> Result<Outcome, ControlError> {
        let mut st = self.lock();
        let names: Vec<String> = match sel {
            Selection::All => st.routes.routes.iter().map(|r| r.name.clone()).collect(),
            Selection::Routes(list) => {
                for name in list {
                    if !st.routes.routes.iter().any(|r| &r.name == name) {
                        return Err(ControlError::UnknownRoute(name.clone()));
                    }
                }
                list.clone()
            }
        };
        let old = self.shared.load_full();
        let before = percents(&old);
        let mut next = st.overrides.clone();
        if matches!(sel, Selection::All) && action == "resume" {
            next.clear();
        }
        // Only routes whose override is set or cleared are changes: resuming a route
        // without an override changes nothing and records nothing.
        let mut changed = Vec::new();
        for name in &names {
            let had = st.overrides.contains_key(name);
            match decide(name, next.get(name)) {
                Some(o) => {
                    next.insert(name.clone(), o);
                    changed.push(name.clone());
                }
                None => {
                    next.remove(name);
                    if had {
                        changed.push(name.clone());
                    }
                }
            }
        }
        let names = changed;
        // Outcomes from before an override changed must not trip the guard after it.
        for name in &names {
            if let Some(w) = st.kept.guards.get(name) {
                w.reset();
            }
        }
        let persist_error = overrides::store(&self.config.server.state_dir, &next)
            .err()
            .map(|e| e.to_string());
        if let Some(e) = &persist_error {
            tracing::error!("{action} applied in memory, but {e}: it will not survive a restart");
        } else {
            // The file on disk is this state again, whatever it held before.
            st.overrides_error = None;
        }
        st.overrides = next;
        st.hold_all_at_zero = false;
        let snapshot = self
            .publish(&mut st)
            .unwrap_or_else(|_| self.shared.load_full());
        let after = percents(&snapshot);
        let mut changes = Vec::new();
        for name in &names {
            let b = before
                .get(name.as_str())
                .copied()
                .map(split::bp_to_percent)
                .unwrap_or(0.0);
            let a = after
                .get(name.as_str())
                .copied()
                .map(split::bp_to_percent)
                .unwrap_or(0.0);
            let mut entry = audit::Entry::new(source, action, reason);
            entry.route = Some(name.clone());
            entry.percent_before = Some(b);
            entry.percent_after = Some(a);
            entry.error = persist_error.clone();
            self.audit(&entry);
            tracing::info!(route = %name, source = source.as_str(), "{action}: {b}% → {a}% ({reason})");
            changes.push(RouteChange {
                route: name.clone(),
                percent_before: b,
                percent_after: a,
            });
        }
        Ok(Outcome {
            version: snapshot.version,
            changes,
            persist_error,
        })
    }

    /// Reads each guarded route's window and rolls back every route whose target is past
    /// its limits. Routes at 0 % and routes the guard already rolled back are skipped.
    /// Returns the routes rolled back.
    pub fn check_guards(&self) -> Vec<String> {
        let snap = self.shared.load_full();
        let now = crate::clock::now_ms();
        let mut tripped = Vec::new();
        for r in &snap.routes {
            let (Some(window), Some(def)) = (&r.guard, &r.def) else {
                continue;
            };
            let Some(limits) = &def.guard else { continue };
            if r.effective_bp == 0
                || r.target.is_none()
                || r.override_
                    .as_ref()
                    .is_some_and(|o| o.trigger == Trigger::Guard)
            {
                continue;
            }
            let Some(reason) = crate::guard::verdict(limits, &window.stats(now)) else {
                continue;
            };
            tracing::error!(route = %r.name, "rolling back: {reason}");
            // The rollback also empties the window (every override change does).
            let sel = Selection::Routes(vec![r.name.clone()]);
            match self.rollback(&sel, &reason, Source::Guard, Trigger::Guard) {
                Ok(_) => tripped.push(r.name.clone()),
                Err(e) => tracing::error!(route = %r.name, "the guard could not roll back: {e}"),
            }
        }
        tripped
    }

    /// Serves the listener's certificate files anew when they changed on disk.
    pub fn reload_certificate(&self) {
        let Some(c) = &self.certificate else { return };
        match c.reload_if_changed() {
            None => {}
            Some(Ok(serving)) => tracing::info!("TLS certificate reloaded: now serving {serving}"),
            Some(Err(e)) => {
                tracing::error!("TLS certificate not reloaded, the previous one keeps serving: {e}")
            }
        }
    }

    /// Lets rate limiters forget clients whose buckets are full again.
    pub fn forget_idle_clients(&self) {
        for r in &self.shared.load().routes {
            if let Some(l) = &r.limiter {
                l.forget_idle();
            }
        }
    }

    /// `overrides.json` changed on disk (another instance, the CLI offline, a person).
    /// A valid file different from ours is applied; an invalid one keeps the last good
    /// overrides in force and is reported until it is repaired.
    pub fn overrides_changed_on_disk(&self) {
        let mut st = self.lock();
        match overrides::load(&self.config.server.state_dir) {
            Err(e) => {
                let msg = e.to_string();
                if st.overrides_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!("{msg}; keeping the overrides in force");
                    st.overrides_error = Some(msg);
                }
            }
            Ok(loaded) => {
                let was_held = st.hold_all_at_zero;
                st.overrides_error = None;
                if loaded == st.overrides && !was_held {
                    return;
                }
                let old = self.shared.load_full();
                let before = percents(&old);
                st.overrides = loaded;
                st.hold_all_at_zero = false;
                match self.publish(&mut st) {
                    Ok(snapshot) => {
                        let mut entry = audit::Entry::new(
                            Source::File,
                            "overrides",
                            "overrides.json changed on disk",
                        );
                        entry.changes = diff(&before, &percents(&snapshot));
                        self.audit(&entry);
                        tracing::info!(
                            "applied overrides.json from disk ({} entries)",
                            st.overrides.len()
                        );
                    }
                    Err(e) => tracing::error!("cannot apply overrides.json: {e}"),
                }
            }
        }
    }
}

/// Routes whose effective percent differs, appeared or disappeared.
fn diff(before: &BTreeMap<&str, u16>, after: &BTreeMap<&str, u16>) -> Vec<audit::Change> {
    let mut out = Vec::new();
    for (&route, &a) in after {
        if before.get(route) != Some(&a) {
            out.push(audit::Change {
                route: route.to_string(),
                percent_before: before.get(route).map(|&b| split::bp_to_percent(b)),
                percent_after: Some(split::bp_to_percent(a)),
            });
        }
    }
    for (&route, &b) in before {
        if !after.contains_key(route) {
            out.push(audit::Change {
                route: route.to_string(),
                percent_before: Some(split::bp_to_percent(b)),
                percent_after: None,
            });
        }
    }
    out
}
