//! A route's ramp as status, the dashboard and `banyan status` show it: its step, the
//! time at it, the next step's earliest time, and each gate's figure against its limit.

use serde::{Deserialize, Serialize};

use super::judge::Gate;
use super::Phase;
use crate::control::{split, Control};
use crate::snapshot::CompiledRoute;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RampStatus {
    /// `ready` (declared, not started), `running`, `paused`, `done`, `failed`, `aborted`.
    pub state: String,
    /// The current step, from 1; 0 when not started.
    pub step: usize,
    /// Every step's percent.
    pub steps: Vec<f64>,
    /// The current step's percent (`None` when not started).
    pub percent: Option<f64>,
    /// Running time at this step.
    pub at_step_seconds: f64,
    pub hold_seconds: f64,
    /// Seconds until the hold allows the next step (0: the gates alone decide); `None`
    /// when the ramp is not running or at its last step.
    pub next_step_in_seconds: Option<f64>,
    pub on_failure: String,
    /// Why the ramp last changed.
    pub reason: String,
    /// The last judgement of the current step (running or paused): "holding: 4s of
    /// 10s", "not enough evidence: …", "advancing", "failed: …".
    pub verdict: Option<String>,
    /// Each gate over the running step (empty until it is first judged).
    pub gates: Vec<Gate>,
    /// In a fleet: the replica whose judgement this is (the elected one) and how many
    /// replicas' counts it added up.
    #[serde(default)]
    pub judged_by: Option<String>,
    #[serde(default)]
    pub judged_replicas: Option<usize>,
}

impl Control {
    /// `r`'s ramp, when its route file declares one.
    pub fn ramp_status(&self, r: &CompiledRoute) -> Option<RampStatus> {
        let def = r.def.as_ref()?.ramp.as_ref()?;
        let state = self.lock().ramps.get(&r.name).cloned();
        let live = self
            .ramp_live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.name)
            .cloned();
        let steps: Vec<f64> = def.steps.iter().map(|b| split::bp_to_percent(*b)).collect();
        let held = state.as_ref().map_or(0.0, |s| s.held().as_secs_f64());
        let running = state.as_ref().is_some_and(|s| s.phase == Phase::Running);
        let last = state
            .as_ref()
            .is_some_and(|s| s.step.saturating_add(1) >= def.steps.len());
        let current = |s: &super::RampState| s.phase.holds_percent() || s.phase == Phase::Failed;
        // The last judgement of this step, while it runs or after it paused (it says why):
        // this replica's, or in a fleet the elected replica's.
        let this_step = |step: usize| {
            state.as_ref().is_some_and(|s| {
                s.step == step && matches!(s.phase, Phase::Running | Phase::Paused)
            })
        };
        let me = self.etcd.as_ref().map(|e| e.replica().to_string());
        let fleet = me.is_some();
        let judged = match live.filter(|l| this_step(l.epoch.step) && !l.verdict.is_empty()) {
            Some(l) => Some((me, l.replicas, l.gates, l.verdict)),
            None => self
                .store
                .ramp_judged(&r.name)
                .filter(|(_, j)| state.as_ref().is_some_and(|s| s.epoch() == j.epoch))
                .map(|(by, j)| (Some(by), j.replicas, j.gates, j.verdict)),
        };
        Some(RampStatus {
            state: state
                .as_ref()
                .map_or("ready", |s| s.phase.as_str())
                .to_string(),
            step: state
                .as_ref()
                .filter(|s| current(s))
                .map_or(0, |s| s.step.saturating_add(1)),
            percent: state
                .as_ref()
                .filter(|s| current(s))
                .and_then(|s| s.percent_bp(&def.steps))
                .map(split::bp_to_percent),
            steps,
            at_step_seconds: held,
            hold_seconds: def.hold.as_secs_f64(),
            next_step_in_seconds: (running && !last)
                .then(|| (def.hold.as_secs_f64() - held).max(0.0)),
            on_failure: def.on_failure.as_str().to_string(),
            reason: state
                .as_ref()
                .map_or_else(String::new, |s| s.reason.clone()),
            judged_by: judged.as_ref().and_then(|j| j.0.clone()),
            judged_replicas: judged.as_ref().filter(|_| fleet).map(|j| j.1),
            verdict: judged.as_ref().map(|j| j.3.clone()),
            gates: judged.map_or_else(Vec::new, |j| j.2),
        })
    }
}
