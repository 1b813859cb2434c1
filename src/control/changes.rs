//! Overrides: a route's percent set, rolled back or resumed (API, CLI, guard), and
//! `overrides.json` changed on disk; each audited with the percents it changed.

use std::collections::BTreeMap;

use super::store;
use crate::model::{Override, Trigger};
use crate::routes::split;
use crate::snapshot::Snapshot;
use audit::{Source, Who};

use super::*;

impl Control {
    /// Sets a route's percent until it is resumed.
    pub fn set_percent(
        &self,
        route: &str,
        percent_bp: u16,
        reason: &str,
        who: impl Into<Who>,
    ) -> Result<Outcome, ControlError> {
        let who = who.into();
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
        self.change_overrides(&sel, &who, "set", reason, |_, prev| {
            let shadow = prev.is_none_or(|p| p.shadow);
            Some(Override::new(percent_bp, shadow, Trigger::Manual, reason))
        })
    }

    /// Percent 0 and shadow paused, until resumed.
    pub fn rollback(
        &self,
        sel: &Selection,
        reason: &str,
        who: impl Into<Who>,
        trigger: Trigger,
    ) -> Result<Outcome, ControlError> {
        let outcome = self.change_overrides(sel, &who.into(), "rollback", reason, |_, _| {
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
    pub fn resume(&self, sel: &Selection, who: impl Into<Who>) -> Result<Outcome, ControlError> {
        self.change_overrides(sel, &who.into(), "resume", "resume", |_, _| None)
    }

    fn change_overrides(
        &self,
        sel: &Selection,
        who: &Who,
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
        // The shared store first: a change another replica made since this one applied
        // its last refuses this one, before anything here changes.
        let written = if who.here_only {
            self.store.keep_local(&next).map(|()| 0)
        } else {
            self.store.write_overrides(&next)
        };
        let (revision, persist_error) = match written {
            Ok(revision) => (revision, None),
            Err(e @ store::StoreError::Conflict { .. }) => {
                return Err(ControlError::Conflict(e.to_string()))
            }
            Err(e) => (0, Some(e.to_string())),
        };
        if self.etcd.is_some() {
            // The replica's own copy: what it serves if it restarts while etcd is away.
            if let Err(e) = overrides::store(&self.config.server.state_dir, &next) {
                tracing::warn!("cannot keep the fleet's overrides in overrides.json: {e}");
            }
        }
        // Outcomes from before an override changed must not trip the guard after it.
        for name in &names {
            if let Some(w) = st.kept.guards.get(name) {
                w.reset();
            }
        }
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
            let mut entry = audit::Entry::by(who, action, reason);
            entry.route = Some(name.clone());
            entry.percent_before = Some(b);
            entry.percent_after = Some(a);
            entry.error = persist_error.clone();
            self.audit(&entry);
            tracing::info!(route = %name, source = who.source.as_str(), "{action}: {b}% → {a}% ({reason})");
            changes.push(RouteChange {
                route: name.clone(),
                percent_before: b,
                percent_after: a,
            });
        }
        self.store.applied(revision, snapshot.version);
        Ok(Outcome {
            version: snapshot.version,
            changes,
            persist_error,
            revision,
            fleet: None,
        })
    }

    /// The overrides in force, for seeding an empty fleet store.
    pub fn current_overrides(&self) -> Overrides {
        self.lock().overrides.clone()
    }

    /// The fleet's overrides at `revision`, read from the state store (another replica's
    /// change, or this one's coming back): applied as a local change would be.
    pub fn overrides_from_store(&self, next: Overrides, revision: store::Revision) {
        let mut st = self.lock();
        if next == st.overrides && !st.hold_all_at_zero {
            let version = self.shared.load().version;
            drop(st);
            self.store.applied(revision, version);
            return;
        }
        let old = self.shared.load_full();
        let before = percents(&old);
        for (name, o) in &next {
            if st.overrides.get(name) != Some(o) {
                if let Some(w) = st.kept.guards.get(name) {
                    w.reset();
                }
            }
        }
        st.overrides = next;
        st.hold_all_at_zero = false;
        st.overrides_error = None;
        if let Err(e) = overrides::store(&self.config.server.state_dir, &st.overrides) {
            tracing::warn!("cannot keep the fleet's overrides in overrides.json: {e}");
        }
        match self.publish(&mut st) {
            Ok(snapshot) => {
                let mut entry = audit::Entry::new(
                    Source::Fleet,
                    "overrides",
                    format!("changed in the state store (revision {revision})"),
                );
                entry.changes = diff(&before, &percents(&snapshot));
                self.audit(&entry);
                tracing::info!(
                    revision,
                    "applied the fleet's overrides ({} entries)",
                    st.overrides.len()
                );
                drop(st);
                self.store.applied(revision, snapshot.version);
            }
            Err(e) => tracing::error!("cannot apply the fleet's overrides: {e}"),
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

pub(super) fn percents(snapshot: &Snapshot) -> BTreeMap<&str, u16> {
    snapshot
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.effective_bp))
        .collect()
}

/// Routes whose effective percent differs, appeared or disappeared.
pub(super) fn diff(
    before: &BTreeMap<&str, u16>,
    after: &BTreeMap<&str, u16>,
) -> Vec<audit::Change> {
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
