//! The ramps as fleet state: applied when the store says they changed (another replica's
//! verb, the elected replica's move, this replica's own write coming back), and what this
//! replica publishes for the fleet's judgement — its counts of every running step and,
//! when elected, its verdicts.

use std::collections::BTreeMap;

use super::counts::{Judged, PublishedStep};
use super::{read, Live, Phase, RampState, Ramps};
use crate::control::audit::{self, Source};
use crate::control::changes::{diff, percents};
use crate::control::{store, Control};
use crate::snapshot::Snapshot;

impl Control {
    /// Every ramp's state in force, for seeding an empty fleet store.
    pub fn current_ramps(&self) -> Ramps {
        self.lock().ramps.clone()
    }

    /// A running ramp's counts start at this snapshot: the route's counters now are its
    /// baseline. Anything else keeps its last judgement for status.
    pub(super) fn rebase(&self, snapshot: &Snapshot, route: &str, state: &RampState) {
        let mut live = self.ramp_live.lock().unwrap_or_else(|p| p.into_inner());
        match snapshot.routes.iter().find(|r| r.name == route) {
            Some(r) if state.phase == Phase::Running => {
                live.insert(
                    route.to_string(),
                    Live {
                        epoch: state.epoch(),
                        baseline: read(r),
                        running: true,
                        ..Live::default()
                    },
                );
            }
            _ => {
                if let Some(l) = live.get_mut(route) {
                    l.running = false;
                }
            }
        }
    }

    /// The fleet's ramps at `revision`, read from the state store: applied as a local
    /// change would be (one snapshot swap), kept in `ramps.json` for a restart while the
    /// store is away, and audited here as the fleet's.
    pub fn ramps_from_store(&self, next: Ramps, revision: store::Revision) {
        let mut st = self.lock();
        if next == st.ramps {
            let version = self.shared.load().version;
            drop(st);
            self.store.ramps_applied(revision, version);
            return;
        }
        let names: std::collections::BTreeSet<&String> =
            st.ramps.keys().chain(next.keys()).collect();
        let changed: Vec<(String, Option<RampState>)> = names
            .into_iter()
            .filter(|name| st.ramps.get(*name) != next.get(*name))
            .map(|name| (name.clone(), next.get(name).cloned()))
            .collect();
        let before = self.shared.load_full();
        for (name, _) in &changed {
            if let Some(w) = st.kept.guards.get(name) {
                // Outcomes at the old percent must not judge the new one.
                w.reset();
            }
        }
        st.ramps = next;
        if let Err(e) = super::store(&self.config.server.state_dir, &st.ramps) {
            tracing::warn!("cannot keep the fleet's ramps in {}: {e}", super::FILE_NAME);
        }
        let snapshot = match self.publish(&mut st) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot apply the fleet's ramps: {e}");
                return;
            }
        };
        drop(st);
        for (name, state) in &changed {
            match state {
                Some(s) => self.rebase(&snapshot, name, s),
                None => self.rebase(&snapshot, name, &RampState::at_step(0, Phase::Aborted, "")),
            }
        }
        let mut entry = audit::Entry::new(
            Source::Fleet,
            "ramps",
            format!("changed in the state store (revision {revision})"),
        );
        entry.changes = diff(&percents(&before), &percents(&snapshot));
        self.audit(&entry);
        tracing::info!(
            revision,
            "applied the fleet's ramps ({} changed)",
            changed.len()
        );
        self.store.ramps_applied(revision, snapshot.version);
    }

    /// This replica's counts of every running step, and its last verdicts on them (the
    /// store publishes the verdicts only while this replica is the elected one). Reads no
    /// lock the control plane holds across a store call: the store's session calls it.
    pub fn ramp_published(&self) -> (BTreeMap<String, PublishedStep>, BTreeMap<String, Judged>) {
        let live = self.ramp_live.lock().unwrap_or_else(|p| p.into_inner());
        let running = live.iter().filter(|(_, l)| l.running);
        let steps = running
            .clone()
            .map(|(name, l)| {
                let p = PublishedStep {
                    epoch: l.epoch.clone(),
                    counts: l.counts.clone(),
                };
                (name.clone(), p)
            })
            .collect();
        let judged = running
            .filter(|(_, l)| !l.verdict.is_empty())
            .map(|(name, l)| {
                let j = Judged {
                    epoch: l.epoch.clone(),
                    replicas: l.replicas,
                    gates: l.gates.clone(),
                    verdict: l.verdict.clone(),
                };
                (name.clone(), j)
            })
            .collect();
        (steps, judged)
    }
}
