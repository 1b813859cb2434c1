//! The ramp's verbs (`start`, `pause`, `resume`, `abort`, `promote`) and its judgement
//! once a second: every change is persisted, published as a new snapshot, audited (with
//! the gates' figures when the ramp moved by itself) and told to the webhooks.

use serde::{Deserialize, Serialize};

use super::counts;
use super::judge::{self, Gate, Verdict};
use super::{read, Phase, RampState};
use crate::control::audit::{self, Source, Who};
use crate::control::store::StoreError;
use crate::control::{split, Control, Selection};
use crate::model::Trigger;
use crate::routes::ramp::{OnFailure, RampDef};

#[derive(Debug, thiserror::Error)]
pub enum RampError {
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    #[error("route `{0}` has no [route.ramp]")]
    NoRamp(String),
    /// The verb does not apply to the ramp as it is.
    #[error("{0}")]
    State(String),
    /// Another replica moved the ramps since this one applied them.
    #[error("{0}")]
    Conflict(String),
    /// A fleet's ramp moves only through the store, which cannot be reached.
    #[error("{0}; a fleet's ramp moves only through the store (`banyan set` and `banyan rollback --direct` still work)")]
    Unavailable(String),
}

/// What a ramp verb did.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RampOutcome {
    pub route: String,
    pub state: Phase,
    /// From 1.
    pub step: usize,
    pub percent_before: f64,
    pub percent_after: f64,
    /// `None` when `state/ramps.json` was written.
    pub persist_error: Option<String>,
    /// The state store's revision of the change (0 with files).
    #[serde(default)]
    pub revision: i64,
    /// Which replicas serve the change, when the state is shared through etcd.
    #[serde(default)]
    pub fleet: Option<crate::control::store::Acks>,
}

type Change = Result<RampState, RampError>;

impl Control {
    pub fn ramp_start(
        &self,
        route: &str,
        reason: &str,
        who: &Who,
    ) -> Result<RampOutcome, RampError> {
        self.change_ramp(route, who, "ramp-start", reason, Vec::new(), |r, o, _| {
            if let Some(o) = o {
                return Err(RampError::State(format!(
                    "route `{route}` has an override ({} %, {}): resume it before starting its ramp",
                    split::bp_to_percent(o.percent_bp),
                    o.trigger.as_str()
                )));
            }
            match r.map(|r| r.phase) {
                Some(p @ (Phase::Running | Phase::Paused)) => Err(RampError::State(format!(
                    "the ramp of `{route}` is {}: abort it to start again",
                    p.as_str()
                ))),
                _ => Ok(RampState::at_step(0, Phase::Running, reason)),
            }
        })
    }

    pub fn ramp_pause(
        &self,
        route: &str,
        reason: &str,
        who: &Who,
    ) -> Result<RampOutcome, RampError> {
        self.change_ramp(route, who, "ramp-pause", reason, Vec::new(), |r, _, _| {
            pause(route, r, reason)
        })
    }

    pub fn ramp_resume(
        &self,
        route: &str,
        reason: &str,
        who: &Who,
    ) -> Result<RampOutcome, RampError> {
        self.change_ramp(route, who, "ramp-resume", reason, Vec::new(), |r, o, _| {
            match (r, o) {
                (Some(r), None) if r.phase == Phase::Paused => Ok(RampState {
                    phase: Phase::Running,
                    since: crate::clock::now_rfc3339(),
                    reason: reason.to_string(),
                    ..r.clone()
                }),
                (Some(r), Some(_)) if r.phase == Phase::Paused => Err(RampError::State(format!(
                    "route `{route}` has an override: resume the route first (`banyan resume {route}`)"
                ))),
                (r, _) => Err(not_in(route, r, "paused")),
            }
        })
    }

    pub fn ramp_abort(
        &self,
        route: &str,
        reason: &str,
        who: &Who,
    ) -> Result<RampOutcome, RampError> {
        self.change_ramp(
            route,
            who,
            "ramp-abort",
            reason,
            Vec::new(),
            |r, _, _| match r {
                Some(r) if r.phase.holds_percent() => {
                    Ok(RampState::at_step(r.step, Phase::Aborted, reason))
                }
                r => Err(not_in(route, r, "running, paused or done")),
            },
        )
    }

    /// The next step now, or the last one (`full`), without waiting for the gates.
    pub fn ramp_promote(
        &self,
        route: &str,
        full: bool,
        reason: &str,
        who: &Who,
    ) -> Result<RampOutcome, RampError> {
        self.change_ramp(
            route,
            who,
            "promote",
            reason,
            Vec::new(),
            |r, _, def| match r {
                Some(r) if matches!(r.phase, Phase::Running | Phase::Paused) => {
                    let last = def.steps.len() - 1;
                    let step = if full {
                        last
                    } else {
                        (r.step.saturating_add(1)).min(last)
                    };
                    Ok(next_step(step, last, r.phase, reason))
                }
                r => Err(not_in(route, r, "running or paused")),
            },
        )
    }

    /// Judges every running ramp on its step's figures: advances, holds, or fails it. A
    /// running ramp under an override (a `set`, a rollback) is paused. In a fleet every
    /// replica counts its share of each step; the elected replica alone judges, on every
    /// replica's counts of the same step added up.
    pub fn check_ramps(&self) {
        let snap = self.shared.load_full();
        let ramps = self.lock().ramps.clone();
        let judges = self.store.judges_ramps();
        for r in &snap.routes {
            let Some(def) = r.def.as_ref().and_then(|d| d.ramp.as_ref()) else {
                continue;
            };
            let state = ramps.get(&r.name);
            let running = state.filter(|s| s.phase == Phase::Running);
            let mut gates = Vec::new();
            if let Some(s) = running {
                let epoch = s.epoch();
                // Read before the live lock: the store's lock is never taken inside it.
                let (others, judged) = if judges {
                    (self.store.ramp_counts(&r.name), None)
                } else {
                    (Vec::new(), self.store.ramp_judged(&r.name))
                };
                let now = read(r);
                let mut live = self.ramp_live.lock().unwrap_or_else(|p| p.into_inner());
                // This process's first look counts from its start (its counters' zero);
                // a move applied here set its own baseline as it published.
                let l = live.entry(r.name.clone()).or_insert_with(|| super::Live {
                    epoch: epoch.clone(),
                    ..super::Live::default()
                });
                if l.epoch != epoch {
                    l.epoch = epoch.clone();
                    l.baseline = now.clone();
                }
                l.running = true;
                l.counts = counts::between(&now, &l.baseline);
                if !judges {
                    // The elected replica's judgement, shown here; nothing moves here.
                    l.gates.clear();
                    l.verdict.clear();
                    gates = judged
                        .filter(|(_, j)| j.epoch == epoch)
                        .map_or_else(Vec::new, |(_, j)| j.gates);
                } else {
                    let (sum, replicas) = counts::fleet_sum(&l.counts, &epoch, &others);
                    gates = judge::gates(def, &sum.figures());
                    let verdict = judge::verdict(def, &gates, s.held());
                    l.gates = gates.clone();
                    l.replicas = replicas;
                    l.verdict = match &verdict {
                        Verdict::Advance => "advancing".to_string(),
                        Verdict::Hold(h) => h.clone(),
                        Verdict::Fail(f) => format!("failed: {f}"),
                    };
                    drop(live);
                    if let Some(o) = &r.override_ {
                        let why = format!("paused: an override is in force ({})", o.reason);
                        let name = r.name.as_str();
                        self.auto(name, "ramp-pause", &why, Vec::new(), |s, _, _| {
                            pause(name, s, &why)
                        });
                    } else {
                        self.act(&r.name, def, s, verdict, gates.clone());
                    }
                }
            } else if let Some(l) = self
                .ramp_live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&r.name)
            {
                l.running = false;
            }
            let state = self.lock().ramps.get(&r.name).cloned();
            self.ramp_gauges.export(&r.name, state.as_ref(), &gates);
        }
    }

    fn act(&self, route: &str, def: &RampDef, s: &RampState, verdict: Verdict, gates: Vec<Gate>) {
        let last = def.steps.len() - 1;
        match verdict {
            Verdict::Hold(_) => {}
            Verdict::Advance => {
                let step = (s.step.saturating_add(1)).min(last);
                let pct = def
                    .steps
                    .get(step)
                    .map_or(0.0, |b| split::bp_to_percent(*b));
                let why = format!(
                    "step {} passed: every gate held for {}s; now {pct} %",
                    s.step.saturating_add(1),
                    s.held().as_secs()
                );
                let action = if step == last {
                    "ramp-done"
                } else {
                    "ramp-step"
                };
                self.auto(route, action, &why, gates, |_, _, _| {
                    Ok(next_step(step, last, Phase::Running, &why))
                });
            }
            Verdict::Fail(gate) => {
                let why = format!("ramp: step {} failed: {gate}", s.step.saturating_add(1));
                tracing::error!(route = %route, "{why}");
                match def.on_failure {
                    OnFailure::Pause => {
                        self.auto(route, "ramp-pause", &why, gates, |r, _, _| {
                            pause(route, r, &why)
                        });
                    }
                    OnFailure::Rollback => {
                        // The users first: the route is safe before the ramp is marked.
                        let sel = Selection::Routes(vec![route.to_string()]);
                        if let Err(e) = self.rollback(&sel, &why, Source::Ramp, Trigger::Ramp) {
                            tracing::error!(route = %route, "the ramp could not roll back: {e}");
                        }
                        self.auto(route, "ramp-fail", &why, gates, |r, _, _| {
                            Ok(RampState::at_step(
                                r.map_or(0, |r| r.step),
                                Phase::Failed,
                                &why,
                            ))
                        });
                    }
                }
            }
        }
    }

    fn auto(
        &self,
        route: &str,
        action: &'static str,
        reason: &str,
        gates: Vec<Gate>,
        f: impl FnOnce(Option<&RampState>, Option<&crate::model::Override>, &RampDef) -> Change,
    ) {
        if let Err(e) = self.change_ramp(route, &Source::Ramp.into(), action, reason, gates, f) {
            tracing::error!(route = %route, "{action}: {e}");
        }
    }

    /// Applies one change to a route's ramp: persisted, published, audited.
    fn change_ramp(
        &self,
        route: &str,
        who: &Who,
        action: &'static str,
        reason: &str,
        gates: Vec<Gate>,
        f: impl FnOnce(Option<&RampState>, Option<&crate::model::Override>, &RampDef) -> Change,
    ) -> Result<RampOutcome, RampError> {
        let mut st = self.lock();
        let def = st
            .routes
            .routes
            .iter()
            .find(|r| r.name == route)
            .ok_or_else(|| RampError::UnknownRoute(route.to_string()))?;
        let ramp = def
            .ramp
            .clone()
            .ok_or_else(|| RampError::NoRamp(route.to_string()))?;
        let next = f(st.ramps.get(route), st.overrides.get(route), &ramp)?;
        let before = self
            .shared
            .load()
            .routes
            .iter()
            .find(|r| r.name == route)
            .map_or(0, |r| r.effective_bp);
        let mut ramps = st.ramps.clone();
        ramps.insert(route.to_string(), next.clone());
        // The store first: a move another replica made since this one applied its last
        // refuses this one, before anything here changes.
        let (revision, persist_error) = match self.store.write_ramps(&ramps) {
            Ok(revision) => (revision, None),
            Err(e @ StoreError::Conflict { .. }) => return Err(RampError::Conflict(e.to_string())),
            Err(e @ StoreError::Unavailable(_)) => {
                return Err(RampError::Unavailable(e.to_string()))
            }
            Err(StoreError::Local(e)) => (0, Some(e)),
        };
        if let Some(e) = &persist_error {
            tracing::error!("{action} applied in memory, but {e}: it will not survive a restart");
        }
        if self.etcd.is_some() {
            // The replica's own copy: what it serves if it restarts while etcd is away.
            if let Err(e) = super::store(&self.config.server.state_dir, &ramps) {
                tracing::warn!("cannot keep the fleet's ramps in {}: {e}", super::FILE_NAME);
            }
        }
        st.ramps = ramps;
        if let Some(w) = st.kept.guards.get(route) {
            // Outcomes at the old percent must not judge the new one.
            w.reset();
        }
        let snapshot = self
            .publish(&mut st)
            .unwrap_or_else(|_| self.shared.load_full());
        drop(st);
        // The new stretch's counts start now, not at the next judgement.
        self.rebase(&snapshot, route, &next);
        self.store.ramps_applied(revision, snapshot.version);
        let served = snapshot.routes.iter().find(|r| r.name == route);
        let after = served.map_or(0, |r| r.effective_bp);
        let (b, a) = (split::bp_to_percent(before), split::bp_to_percent(after));
        let mut entry = audit::Entry::by(who, action, reason);
        entry.route = Some(route.to_string());
        entry.percent_before = Some(b);
        entry.percent_after = Some(a);
        entry.error = persist_error.clone();
        entry.gates = gates;
        self.audit(&entry);
        tracing::info!(route = %route, source = who.source.as_str(), "{action}: {b}% → {a}% ({reason})");
        Ok(RampOutcome {
            route: route.to_string(),
            state: next.phase,
            step: next.step.saturating_add(1),
            percent_before: b,
            percent_after: a,
            persist_error,
            revision,
            fleet: None,
        })
    }
}

fn next_step(step: usize, last: usize, phase: Phase, reason: &str) -> RampState {
    let phase = if step >= last { Phase::Done } else { phase };
    RampState::at_step(step, phase, reason)
}

fn pause(route: &str, r: Option<&RampState>, reason: &str) -> Change {
    match r {
        Some(r) if r.phase == Phase::Running => Ok(RampState {
            phase: Phase::Paused,
            held_ms: r.held().as_millis() as u64,
            since: crate::clock::now_rfc3339(),
            reason: reason.to_string(),
            step: r.step,
        }),
        r => Err(not_in(route, r, "running")),
    }
}

fn not_in(route: &str, r: Option<&RampState>, wanted: &str) -> RampError {
    let now = r.map_or("not started", |r| r.phase.as_str());
    RampError::State(format!("the ramp of `{route}` is {now}, not {wanted}"))
}
