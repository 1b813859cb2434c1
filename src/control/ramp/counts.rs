//! A step's counts as plain data that add up across replicas. Each replica counts a
//! running step from its own baseline (its counters when it began serving the step, or
//! when its process started) and, in a fleet, publishes the counts with the step they
//! belong to; the elected replica adds every replica's counts of the same step and judges
//! the sum. Latencies travel as `metrics::quantiles` buckets, so the fleet's p99 is taken
//! over every replica's requests, not averaged from each one's p99.

use serde::{Deserialize, Serialize};

use super::judge::{Figures, Gate};
use super::Reading;
use crate::metrics::quantiles::{self, Sparse};

/// Both sides' counts over a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepCounts {
    pub legacy_requests: u64,
    pub legacy_errors: u64,
    /// Target-bound requests, fallbacks included (they failed on the target).
    pub target_requests: u64,
    /// 5xx answers and fallbacks.
    pub target_errors: u64,
    pub compared: u64,
    pub matched: u64,
    /// Request durations over the step, per side, in `metrics::quantiles` buckets.
    #[serde(default)]
    pub legacy_latency: Sparse,
    #[serde(default)]
    pub target_latency: Sparse,
}

/// Which step of which stretch counts belong to: the ramp state's `since` and `step`.
/// Counts of another stretch (before a pause, a promotion) never judge this one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub since: String,
    pub step: usize,
}

/// One replica's counts of a running step, as it publishes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedStep {
    #[serde(flatten)]
    pub epoch: Epoch,
    pub counts: StepCounts,
}

/// The elected replica's last judgement of a step, as it publishes it for the others'
/// status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    #[serde(flatten)]
    pub epoch: Epoch,
    /// How many replicas' counts were added up.
    pub replicas: usize,
    pub gates: Vec<Gate>,
    pub verdict: String,
}

/// `now − then` of one side's buckets.
fn latency_between(now: &Sparse, then: &Sparse) -> Sparse {
    now.iter()
        .filter_map(|&(i, n)| {
            let before = then
                .binary_search_by_key(&i, |&(j, _)| j)
                .map_or(0, |k| then[k].1);
            let d = n.saturating_sub(before);
            (d > 0).then_some((i, d))
        })
        .collect()
}

fn latency_sum(a: &Sparse, b: &Sparse) -> Sparse {
    let mut all: std::collections::BTreeMap<u16, u64> = a.iter().copied().collect();
    for &(i, n) in b {
        *all.entry(i).or_insert(0) += n;
    }
    all.into_iter().collect()
}

/// The counts between two readings of one replica. A fallback is a target-bound request
/// that failed on the target; it was counted as legacy's, so it moves from legacy's count
/// to target's.
pub fn between(now: &Reading, then: &Reading) -> StepCounts {
    let fallbacks = now.fallbacks.saturating_sub(then.fallbacks);
    let (now, then) = (&now.counts, &then.counts);
    let d = |i: usize| now.requests[i].saturating_sub(then.requests[i]);
    let matched = now.shadow.0.saturating_sub(then.shadow.0);
    let mismatched = now.shadow.1.saturating_sub(then.shadow.1);
    StepCounts {
        legacy_requests: d(0).saturating_sub(fallbacks),
        legacy_errors: d(1),
        target_requests: d(2).saturating_add(fallbacks),
        target_errors: d(3).saturating_add(fallbacks),
        compared: matched.saturating_add(mismatched),
        matched,
        legacy_latency: latency_between(&now.durations[0], &then.durations[0]),
        target_latency: latency_between(&now.durations[1], &then.durations[1]),
    }
}

impl StepCounts {
    pub fn add(&mut self, o: &StepCounts) {
        self.legacy_requests = self.legacy_requests.saturating_add(o.legacy_requests);
        self.legacy_errors = self.legacy_errors.saturating_add(o.legacy_errors);
        self.target_requests = self.target_requests.saturating_add(o.target_requests);
        self.target_errors = self.target_errors.saturating_add(o.target_errors);
        self.compared = self.compared.saturating_add(o.compared);
        self.matched = self.matched.saturating_add(o.matched);
        self.legacy_latency = latency_sum(&self.legacy_latency, &o.legacy_latency);
        self.target_latency = latency_sum(&self.target_latency, &o.target_latency);
    }

    pub fn figures(&self) -> Figures {
        Figures {
            legacy_requests: self.legacy_requests,
            legacy_errors: self.legacy_errors,
            legacy_p99_ms: quantiles::between(&self.legacy_latency, &Vec::new(), 0.99),
            target_requests: self.target_requests,
            target_errors: self.target_errors,
            target_p99_ms: quantiles::between(&self.target_latency, &Vec::new(), 0.99),
            compared: self.compared,
            matched: self.matched,
        }
    }
}

/// One replica's counts with the others' of the same step: the fleet's, and how many
/// replicas they came from (this one included).
pub fn fleet_sum<'a>(
    mine: &StepCounts,
    epoch: &Epoch,
    others: impl IntoIterator<Item = &'a PublishedStep>,
) -> (StepCounts, usize) {
    let mut sum = mine.clone();
    let mut replicas = 1;
    for p in others.into_iter().filter(|p| &p.epoch == epoch) {
        sum.add(&p.counts);
        replicas += 1;
    }
    (sum, replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(target: u64, errors: u64, latency_ms: u64) -> StepCounts {
        let target_latency = vec![(quantiles::index(latency_ms * 1000) as u16, target)];
        StepCounts {
            legacy_requests: 100,
            legacy_errors: 0,
            target_requests: target,
            target_errors: errors,
            legacy_latency: vec![(quantiles::index(1000) as u16, 100)],
            target_latency,
            ..StepCounts::default()
        }
    }

    fn epoch(step: usize) -> Epoch {
        Epoch {
            since: "2026-12-03T10:00:00Z".into(),
            step,
        }
    }

    #[test]
    fn replicas_of_the_same_step_add_up_and_others_do_not() {
        let mine = counts(10, 0, 2);
        let same = PublishedStep {
            epoch: epoch(1),
            counts: counts(15, 3, 2),
        };
        let before = PublishedStep {
            epoch: epoch(0),
            counts: counts(1000, 1000, 2),
        };
        let (sum, replicas) = fleet_sum(&mine, &epoch(1), [&same, &before]);
        assert_eq!(replicas, 2);
        assert_eq!((sum.target_requests, sum.target_errors), (25, 3));
        assert_eq!(sum.legacy_requests, 200);
        let f = sum.figures();
        assert_eq!(f.target_requests, 25);
        assert!(f.legacy_p99_ms.is_some_and(|p| (p - 1.0).abs() < 0.05));
    }

    #[test]
    fn the_fleets_p99_is_over_every_replicas_requests() {
        // 98 fast requests on one replica, 2 slow ones on another: the fleet's p99 is
        // slow although one replica alone would say fast.
        let fast = counts(98, 0, 1);
        let slow = PublishedStep {
            epoch: epoch(0),
            counts: counts(2, 0, 500),
        };
        let (sum, _) = fleet_sum(&fast, &epoch(0), [&slow]);
        let p99 = sum.figures().target_p99_ms.unwrap_or(0.0);
        assert!(p99 > 400.0, "{p99}");
        assert!(fast.figures().target_p99_ms.unwrap_or(0.0) < 2.0);
    }

    #[test]
    fn published_counts_read_back_the_same() {
        let p = PublishedStep {
            epoch: epoch(2),
            counts: counts(7, 1, 3),
        };
        let text = serde_json::to_string(&p).unwrap_or_default();
        let back: PublishedStep = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, p);
    }
}
