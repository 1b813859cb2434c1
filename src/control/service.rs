//! The control plane's long-lived loop, as a Pingora background service: it watches the
//! routes folder (as a folder, so editors' rename-on-save and Kubernetes ConfigMap
//! `..data` symlink swaps are seen; its parent too, so a removed and recreated folder is
//! watched again) and the state folder's `overrides.json`, debounces, reloads on SIGHUP,
//! and samples request rates for status once a second.
//!
//! The watcher is created inside `start`: Pingora may fork to daemonize before services
//! start, and a thread created earlier would not survive it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use super::audit::Source;
use super::{overrides, Control};
use crate::priority;

/// What a file-system event means for the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Routes,
    Overrides,
    /// The routes folder itself appeared or disappeared.
    RoutesFolder,
}

/// A change, and whether its write is complete: a file closed after writing, renamed into
/// place (editors' rename-on-save, Kubernetes' `..data` swap) or removed. Creating or
/// modifying a file means a write may still be under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    change: Change,
    settled: bool,
}

fn is_settled(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(notify::event::ModifyKind::Name(_))
            | EventKind::Remove(_)
    )
}

const GUARD_INTERVAL: Duration = Duration::from_millis(250);

pub struct ControlService {
    control: Arc<Control>,
}

impl ControlService {
    pub fn new(control: Arc<Control>) -> Self {
        ControlService { control }
    }
}

/// Events that change content; opening and reading files (ours included) are not.
fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

fn classify(path: &Path, routes_dir: &Path, state_dir: &Path) -> Option<Change> {
    if path == routes_dir {
        return Some(Change::RoutesFolder);
    }
    if path.parent() == Some(routes_dir) {
        // Hidden files are not route files (editors' swap and temporary files); the one
        // hidden name that matters is Kubernetes' `..data` link, swapped on each update.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && name != "..data" {
            return None;
        }
        return Some(Change::Routes);
    }
    if path.parent() == Some(state_dir) && overrides::is_overrides_file(path) {
        return Some(Change::Overrides);
    }
    None
}

struct Watches {
    watcher: RecommendedWatcher,
    routes_dir: PathBuf,
    routes_watched: bool,
}

impl Watches {
    fn new(
        tx: UnboundedSender<Event>,
        routes_dir: &Path,
        state_dir: &Path,
    ) -> notify::Result<Watches> {
        let (r, s) = (routes_dir.to_path_buf(), state_dir.to_path_buf());
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if !is_change(&event.kind) {
                return;
            }
            let settled = is_settled(&event.kind);
            for p in &event.paths {
                if let Some(change) = classify(p, &r, &s) {
                    let _ = tx.send(Event { change, settled });
                }
            }
        })?;
        let mut w = Watches {
            watcher,
            routes_dir: routes_dir.to_path_buf(),
            routes_watched: false,
        };
        if let Some(parent) = routes_dir.parent().filter(|p| p.is_dir()) {
            if let Err(e) = w.watcher.watch(parent, RecursiveMode::NonRecursive) {
                tracing::warn!(
                    "cannot watch {}: {e}; a recreated routes folder needs SIGHUP",
                    parent.display()
                );
            }
        }
        if let Err(e) = w.watcher.watch(state_dir, RecursiveMode::NonRecursive) {
            tracing::warn!(
                "cannot watch {}: {e}; overrides written by others are not seen",
                state_dir.display()
            );
        }
        w.rearm();
        Ok(w)
    }

    /// Watches the routes folder if it exists and is not watched; true when it started.
    fn rearm(&mut self) -> bool {
        if self.routes_watched || !self.routes_dir.is_dir() {
            return false;
        }
        let _ = self.watcher.unwatch(&self.routes_dir);
        match self
            .watcher
            .watch(&self.routes_dir, RecursiveMode::NonRecursive)
        {
            Ok(()) => {
                self.routes_watched = true;
                true
            }
            Err(e) => {
                tracing::warn!("cannot watch {}: {e}", self.routes_dir.display());
                false
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ControlService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        priority::lower_this_thread();
        let control = &self.control;
        let cfg = &control.config.server;
        let debounce = cfg.reload_debounce;
        // After a completed write, a short quiet window still gathers the rest of a
        // multi-file change; the full debounce applies while a write is under way.
        let settle = debounce / 5;
        let (tx, mut rx) = unbounded_channel();
        let mut watches = match Watches::new(tx, &cfg.routes_dir, &cfg.state_dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(
                    "cannot watch files ({e}); reload with SIGHUP or POST /api/v1/reload"
                );
                None
            }
        };
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        if let Some(etcd) = &control.etcd {
            tokio::spawn(Arc::clone(etcd).run(Arc::clone(control)));
        }
        // Ready only once changes can no longer go unseen: SIGHUP is handled and the files
        // are watched (and re-read if they changed since start).
        {
            let c = Arc::clone(control);
            let _ = tokio::task::spawn_blocking(move || {
                priority::lower_this_thread();
                c.start_watching();
            })
            .await;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        // The guard reads its windows often, so a failing target is rolled back within a
        // fraction of a second of crossing its limits.
        let mut guard_tick = tokio::time::interval(GUARD_INTERVAL);
        guard_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut routes_pending, mut overrides_pending) = (false, false);
        let mut first_pending: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        loop {
            let due = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                event = rx.recv() => {
                    let Some(Event { change, settled }) = event else { break };
                    match change {
                        Change::Routes => routes_pending = true,
                        Change::Overrides => overrides_pending = true,
                        Change::RoutesFolder => {
                            routes_pending = true;
                            if let Some(w) = watches.as_mut() {
                                if !cfg.routes_dir.is_dir() {
                                    w.routes_watched = false;
                                }
                                w.rearm();
                            }
                        }
                    }
                    // Trailing debounce, but never more than five quiet periods after the
                    // first change, so a stream of writes still goes live promptly.
                    let now = Instant::now();
                    let first = *first_pending.get_or_insert(now);
                    let quiet = if settled { settle } else { debounce };
                    deadline = Some((now + quiet).min(first + debounce * 5));
                }
                _ = due => {
                    deadline = None;
                    first_pending = None;
                    let (r, o) = (std::mem::take(&mut routes_pending), std::mem::take(&mut overrides_pending));
                    let c = Arc::clone(control);
                    let _ = tokio::task::spawn_blocking(move || {
                        priority::lower_this_thread();
                        if o {
                            c.overrides_changed_on_disk();
                        }
                        if r {
                            let _ = c.reload(Source::File, "routes folder changed");
                        }
                    })
                    .await;
                }
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let c = Arc::clone(control);
                    let _ = tokio::task::spawn_blocking(move || {
                        priority::lower_this_thread();
                        c.overrides_changed_on_disk();
                        let _ = c.reload(Source::File, "SIGHUP");
                    })
                    .await;
                }
                _ = guard_tick.tick() => {
                    if control.snapshot().routes.iter().any(|r| r.guard.is_some()) {
                        let c = Arc::clone(control);
                        let _ = tokio::task::spawn_blocking(move || c.check_guards()).await;
                    }
                }
                _ = tick.tick() => {
                    let snapshot = control.snapshot();
                    control.rates.sample(&snapshot);
                    snapshot.upstreams.iter().for_each(|u| u.sweep_idle());
                    control.release_retired();
                    crate::memory::give_back(false);
                    ticks += 1;
                    if snapshot.routes.iter().any(|r| r.def.as_ref().is_some_and(|d| d.ramp.is_some())) {
                        let c = Arc::clone(control);
                        let _ = tokio::task::spawn_blocking(move || {
                            priority::lower_this_thread();
                            c.check_ramps();
                        })
                        .await;
                    }
                    if control.certificate.is_some() {
                        let c = Arc::clone(control);
                        let _ = tokio::task::spawn_blocking(move || c.reload_certificate()).await;
                    }
                    if ticks % 10 == 0 {
                        control.forget_idle_clients();
                    }
                    if let Some(w) = watches.as_mut() {
                        if w.routes_watched && !cfg.routes_dir.is_dir() {
                            w.routes_watched = false;
                        }
                        if w.rearm() {
                            routes_pending = true;
                            deadline = Some(Instant::now() + debounce);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_classified_by_where_they_happen() {
        let routes = Path::new("/srv/banyan/routes");
        let state = Path::new("/srv/banyan/state");
        let c = |p: &str| classify(Path::new(p), routes, state);
        assert_eq!(c("/srv/banyan/routes/orders.toml"), Some(Change::Routes));
        assert_eq!(c("/srv/banyan/routes/..data"), Some(Change::Routes));
        assert_eq!(c("/srv/banyan/routes/.orders.toml.swp"), None);
        assert_eq!(c("/srv/banyan/routes/..data_tmp"), None);
        assert_eq!(c("/srv/banyan/routes/..2026_11_22_10_00_00.0001"), None);
        assert_eq!(c("/srv/banyan/routes"), Some(Change::RoutesFolder));
        assert_eq!(
            c("/srv/banyan/state/overrides.json"),
            Some(Change::Overrides)
        );
        assert_eq!(c("/srv/banyan/state/.overrides.json.1.ab.tmp"), None);
        assert_eq!(c("/srv/banyan/state/audit.jsonl"), None);
        assert_eq!(c("/srv/banyan/target/debug/x"), None);
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_settled(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_settled(&EventKind::Modify(
            notify::event::ModifyKind::Name(notify::event::RenameMode::To)
        )));
        assert!(!is_settled(&EventKind::Modify(
            notify::event::ModifyKind::Data(notify::event::DataChange::Any)
        )));
        assert!(!is_settled(&EventKind::Create(
            notify::event::CreateKind::File
        )));
    }
}
