//! Per-route shadow state that outlives snapshots: outcome counters (the contract's
//! `banyan_shadow_requests_total` and `banyan_shadow_duration_seconds`), skip reasons, and
//! the learned noise. The control plane keeps one per route name, like the route's metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus::{Histogram, IntCounter};
use serde::{Deserialize, Serialize};

use super::Metrics;
use crate::compare::noise::NoiseTable;
use crate::compare::{Noise, SkipReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Mismatch,
    Error,
    Dropped,
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Match,
        Outcome::Mismatch,
        Outcome::Error,
        Outcome::Dropped,
        Outcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
            Outcome::Skipped => "skipped",
        }
    }
}

/// Why a copy was dropped: what to change differs (a slow new service fills
/// `max_in_flight`; a host whose cores are busy starves the worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `shadow.max_in_flight` copies were under way.
    InFlight,
    /// `shadow::MAX_WAITING` copies were waiting for the worker to start them: the cores
    /// were busy with clients or with the host's other work.
    WorkerBehind,
    /// The shadow worker's thread is gone; nothing can send copies.
    WorkerStopped,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::InFlight,
        DropReason::WorkerBehind,
        DropReason::WorkerStopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::InFlight => "max_in_flight",
            DropReason::WorkerBehind => "worker_behind",
            DropReason::WorkerStopped => "worker_stopped",
        }
    }
}

/// Pairs of legacy answers compared for every route before sampling thins out: enough to
/// meet most noisy fields early, when people first look at the match rate.
const LEARN_ALWAYS: u64 = 100;
/// After that, one request in this many is also sent to legacy a second time.
const LEARN_EVERY: u64 = 10;

pub struct RouteShadow {
    name: String,
    outcomes: [OnceLock<IntCounter>; 5],
    duration: OnceLock<Histogram>,
    skipped: [AtomicU64; SkipReason::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Legacy-twice samples taken, for the learning schedule.
    learn_ticks: AtomicU64,
    noise: Mutex<NoiseTable>,
}

impl RouteShadow {
    pub fn new(route: &str) -> Self {
        RouteShadow {
            name: route.to_string(),
            outcomes: Default::default(),
            duration: OnceLock::new(),
            skipped: Default::default(),
            dropped: Default::default(),
            learn_ticks: AtomicU64::new(0),
            noise: Mutex::new(NoiseTable::default()),
        }
    }

    fn outcome(&self, m: &Metrics, o: Outcome) -> &IntCounter {
        self.outcomes[o as usize].get_or_init(|| {
            m.shadow_requests_total
                .with_label_values(&[&self.name, o.as_str()])
        })
    }

    pub fn record(&self, m: &Metrics, o: Outcome) {
        self.outcome(m, o).inc();
    }

    pub fn record_skip(&self, m: &Metrics, reason: SkipReason) {
        self.skipped[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.record(m, Outcome::Skipped);
    }

    pub fn record_drop(&self, m: &Metrics, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.record(m, Outcome::Dropped);
    }

    pub fn observe_duration(&self, m: &Metrics, seconds: f64) {
        self.duration
            .get_or_init(|| m.shadow_duration_seconds.with_label_values(&[&self.name]))
            .observe(seconds);
    }

    /// Whether this request is also one of the noise samples.
    pub fn take_learning_sample(&self) -> bool {
        let n = self.learn_ticks.fetch_add(1, Ordering::Relaxed);
        n < LEARN_ALWAYS || n % LEARN_EVERY == 0
    }

    /// The noise table; a panic while it was held leaves it whole, so carry on with it.
    fn table(&self) -> MutexGuard<'_, NoiseTable> {
        self.noise.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn noise(&self) -> Arc<Noise> {
        self.table().current()
    }

    pub fn learn(&self, differences: &[crate::compare::Difference]) {
        let mut t = self.table();
        if t.learn(differences) {
            tracing::info!(
                route = %self.name,
                fields = ?t.fields().iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
                "learned noisy fields from two answers of legacy"
            );
        }
    }

    /// (matches, mismatches) so far: the copies compared.
    pub fn compared(&self) -> (u64, u64) {
        let count = |o: Outcome| self.outcomes[o as usize].get().map_or(0, IntCounter::get);
        (count(Outcome::Match), count(Outcome::Mismatch))
    }

    /// What `/api/v1/status` shows about the route's shadow traffic.
    pub fn summary(&self) -> ShadowStats {
        let count = |o: Outcome| self.outcomes[o as usize].get().map_or(0, IntCounter::get);
        let (matched, mismatched) = (count(Outcome::Match), count(Outcome::Mismatch));
        let compared = matched + mismatched;
        let (noisy_fields, noise_samples) = {
            let t = self.table();
            (t.fields(), t.samples())
        };
        ShadowStats {
            matched,
            mismatched,
            errors: count(Outcome::Error),
            dropped: count(Outcome::Dropped),
            dropped_by_reason: by_reason(DropReason::ALL.map(DropReason::as_str), &self.dropped),
            skipped: count(Outcome::Skipped),
            skipped_by_reason: by_reason(SkipReason::ALL.map(SkipReason::as_str), &self.skipped),
            match_rate: (compared > 0).then(|| matched as f64 / compared as f64),
            noisy_fields: noisy_fields
                .into_iter()
                .map(|(field, count)| NoisyField { field, count })
                .collect(),
            noise_samples,
        }
    }
}

/// `[name, count]` for the reasons counted at least once; `names` in the counters' order.
fn by_reason<const N: usize>(names: [&str; N], counts: &[AtomicU64; N]) -> Vec<(String, u64)> {
    names
        .iter()
        .zip(counts)
        .map(|(name, n)| (name.to_string(), n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShadowStats {
    #[serde(rename = "match")]
    pub matched: u64,
    #[serde(rename = "mismatch")]
    pub mismatched: u64,
    pub errors: u64,
    pub dropped: u64,
    /// `[reason, count]` for the reasons seen, as `DropReason::as_str` names them.
    #[serde(default)]
    pub dropped_by_reason: Vec<(String, u64)>,
    pub skipped: u64,
    pub skipped_by_reason: Vec<(String, u64)>,
    /// matches / (matches + mismatches); `None` before the first comparison.
    pub match_rate: Option<f64>,
    pub noisy_fields: Vec<NoisyField>,
    /// Pairs of legacy answers compared to learn noise.
    pub noise_samples: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NoisyField {
    pub field: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_and_skips_are_counted_with_their_reasons() {
        let metrics = Metrics::new().expect("metrics");
        let route = RouteShadow::new("orders");
        for _ in 0..3 {
            route.record_drop(&metrics, DropReason::WorkerBehind);
        }
        route.record_drop(&metrics, DropReason::InFlight);
        route.record_skip(&metrics, SkipReason::Encoding);
        route.record(&metrics, Outcome::Match);
        let s = route.summary();
        assert_eq!((s.dropped, s.skipped, s.matched), (4, 1, 1));
        assert_eq!(
            s.dropped_by_reason,
            [
                ("max_in_flight".to_string(), 1),
                ("worker_behind".to_string(), 3)
            ]
        );
        assert_eq!(s.skipped_by_reason, [("content_encoding".to_string(), 1)]);
        let dropped = metrics
            .shadow_requests_total
            .with_label_values(&["orders", "dropped"])
            .get();
        assert_eq!(dropped, 4, "the contract's counter sees every drop");
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(
            json["dropped_by_reason"],
            serde_json::json!([["max_in_flight", 1], ["worker_behind", 3]])
        );
    }
}
