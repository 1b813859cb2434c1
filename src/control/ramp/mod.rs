//! Ramps: a route's percent climbing its `[route.ramp]` steps by itself, each step
//! judged on evidence (`judge.rs`). The position of every started ramp is persisted in
//! the state store — `state/ramps.json` (atomically, like overrides), or etcd for a
//! fleet — so that a restart resumes at the same step with the hold's elapsed time kept;
//! the counts of a step are kept in memory from when the step (or this process) began
//! (`counts.rs`). In a fleet every replica counts and publishes, and the elected replica
//! adds the counts up and alone judges and moves the ramp (`shared.rs`). The verbs and
//! the periodic judgement are `verbs.rs`; this file holds the state and its reading.
//!
//! Precedence, highest first: a rollback, any other override (a manual `set` also
//! pauses the ramp), the ramp's step, the route file's percent.

pub mod counts;
pub mod judge;
mod shared;
mod verbs;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

pub use verbs::{RampError, RampOutcome};
pub use view::RampStatus;

use crate::snapshot::CompiledRoute;
use counts::{Epoch, StepCounts};
use judge::Gate;

pub const FILE_NAME: &str = "ramps.json";
const MAX_FILE_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Judged every second; advances by itself.
    Running,
    /// Holds its step; `ramp resume` judges again.
    Paused,
    /// Reached its last step, where it stays.
    Done,
    /// A gate failed and the route was rolled back.
    Failed,
    /// Stopped by hand: the route file's percent again.
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Running,
        Phase::Paused,
        Phase::Done,
        Phase::Failed,
        Phase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }

    /// Whether the ramp's step sets the route's percent.
    pub fn holds_percent(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused | Phase::Done)
    }
}

/// One route's ramp, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampState {
    pub phase: Phase,
    /// Index into the route's steps.
    pub step: usize,
    /// RFC 3339: when the step's current running stretch began (or when it stopped).
    pub since: String,
    /// Time at this step before `since`, in milliseconds.
    #[serde(default)]
    pub held_ms: u64,
    /// Why the ramp last changed.
    #[serde(default)]
    pub reason: String,
}

impl RampState {
    /// The stretch this state's figures are counted over.
    pub fn epoch(&self) -> Epoch {
        Epoch {
            since: self.since.clone(),
            step: self.step,
        }
    }

    pub fn at_step(step: usize, phase: Phase, reason: &str) -> RampState {
        RampState {
            phase,
            step,
            since: crate::clock::now_rfc3339(),
            held_ms: 0,
            reason: reason.to_string(),
        }
    }

    /// Time at the current step: running time only.
    pub fn held(&self) -> Duration {
        let before = Duration::from_millis(self.held_ms);
        if self.phase != Phase::Running {
            return before;
        }
        let running = humantime::parse_rfc3339_weak(&self.since)
            .ok()
            .and_then(|at| SystemTime::now().duration_since(at).ok())
            .unwrap_or_default();
        before.saturating_add(running)
    }

    /// The step in `steps` (a route file may have shortened the list since).
    pub fn percent_bp(&self, steps: &[u16]) -> Option<u16> {
        steps.get(self.step).or(steps.last()).copied()
    }
}

/// Every started ramp, by route name.
pub type Ramps = BTreeMap<String, RampState>;

pub fn path_in(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join(FILE_NAME)
}

/// The ramps file; a missing file is no ramps.
pub fn load(state_dir: &Path) -> Result<Ramps, String> {
    let path = path_in(state_dir);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ramps::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            return Err(format!("{} is larger than 8 MiB", path.display()))
        }
        Ok(_) => {}
    }
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&path, &text)
}

/// A ramps file's bytes (`path` for messages).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Ramps, String> {
    serde_json::from_slice(bytes)
        .map_err(|e| format!("{} is not a ramps file: {e}", path.display()))
}

/// What `store` writes.
pub fn render(ramps: &Ramps) -> String {
    let mut text = serde_json::to_string_pretty(ramps).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

pub fn store(state_dir: &Path, ramps: &Ramps) -> std::io::Result<()> {
    super::overrides::write_atomic(state_dir, FILE_NAME, render(ramps).as_bytes())
}

/// A route's counters at one instant, for the figures of a step.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    counts: super::rates::Counts,
    fallbacks: u64,
}

pub fn read(r: &CompiledRoute) -> Reading {
    Reading {
        counts: super::rates::route_counts(r),
        fallbacks: r.metrics.fallback_counts().iter().map(|(_, n)| n).sum(),
    }
}

/// What the control plane knows of a running ramp between judgements: where the step's
/// figures start, and the last gates and verdict, for status.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The stretch and step the baseline belongs to.
    pub epoch: Epoch,
    pub baseline: Reading,
    /// This replica's counts over the step at the last look (what it publishes).
    pub counts: StepCounts,
    /// The last judgement, by this replica (empty on a fleet's other replicas).
    pub gates: Vec<Gate>,
    pub verdict: String,
    /// Replicas whose counts the last judgement added up.
    pub replicas: usize,
    /// The step is running here: its counts are published.
    pub running: bool,
}

/// `banyan_ramp_step`, `banyan_ramp_state`, `banyan_ramp_gate`.
pub struct Gauges {
    step: IntGaugeVec,
    state: IntGaugeVec,
    gate: GaugeVec,
}

impl Gauges {
    pub fn register(r: &Registry) -> prometheus::Result<Gauges> {
        let step = IntGaugeVec::new(
            Opts::new(
                "banyan_ramp_step",
                "The ramp's current step, from 1 (0: not started)",
            ),
            &["route"],
        )?;
        let state = IntGaugeVec::new(
            Opts::new(
                "banyan_ramp_state",
                "1 for the ramp's state: ready, running, paused, done, failed, aborted",
            ),
            &["route", "state"],
        )?;
        let gate = GaugeVec::new(
            Opts::new(
                "banyan_ramp_gate",
                "Each gate's figure over the running step: requests, error_delta, p99_ratio, match_rate",
            ),
            &["route", "gate"],
        )?;
        r.register(Box::new(step.clone()))?;
        r.register(Box::new(state.clone()))?;
        r.register(Box::new(gate.clone()))?;
        Ok(Gauges { step, state, gate })
    }

    /// Sets one route's gauges: its ramp (`None`: declared, not started) and gates.
    pub fn export(&self, route: &str, ramp: Option<&RampState>, gates: &[Gate]) {
        let current = ramp.map_or("ready", |r| r.phase.as_str());
        for s in ["ready"].into_iter().chain(Phase::ALL.map(Phase::as_str)) {
            self.state
                .with_label_values(&[route, s])
                .set(i64::from(s == current));
        }
        let step = ramp
            .filter(|r| r.phase.holds_percent())
            .map_or(0, |r| r.step.saturating_add(1));
        self.step.with_label_values(&[route]).set(step as i64);
        for g in gates {
            if let Some(f) = g.figure {
                self.gate.with_label_values(&[route, &g.gate]).set(f);
            }
        }
    }
}

/// Live state by route, kept beside the persisted ramps.
pub type LiveMap = HashMap<String, Live>;
