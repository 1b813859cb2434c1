//! Requests per second, error rates and p99 latency per route and side, for status and
//! the dashboard: the control service samples each route's counters and duration buckets
//! once a second and keeps ten seconds of samples; every ten seconds a point of the same
//! figures goes into the route's fifteen minutes of history (`history.rs`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::history::History;
use crate::guard::Sketch;
use crate::metrics::quantiles::{self, Sparse};
use crate::routes::Backend;
use crate::snapshot::{CompiledRoute, Snapshot};

const WINDOW: Duration = Duration::from_secs(10);

/// One route's counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Counts {
    /// (legacy requests, legacy 5xx, target requests, target 5xx).
    pub(super) requests: [u64; 4],
    /// Per side: request durations in fine buckets (`metrics::quantiles`).
    pub(super) durations: [Sparse; 2],
    /// Shadow copies compared: (matches, mismatches).
    pub(super) shadow: (u64, u64),
}

struct Sample {
    at: Instant,
    counts: HashMap<String, Counts>,
}

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
    pub history: History,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SideRate {
    pub rps: f64,
    /// 5xx answers / requests over the window; `None` without requests.
    pub error_rate: Option<f64>,
    /// The 99th percentile of request durations over the window, in milliseconds (within
    /// 2 %); `None` without requests.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteRates {
    pub legacy: SideRate,
    pub target: SideRate,
    pub window_seconds: f64,
}

/// One route's counters now (also a ramp's reading).
pub(super) fn route_counts(r: &CompiledRoute) -> Counts {
    let (lr, le) = r.metrics.totals(Backend::Legacy);
    let (tr, te) = r.metrics.totals(Backend::Target);
    Counts {
        requests: [lr, le, tr, te],
        durations: [
            r.metrics.durations(Backend::Legacy),
            r.metrics.durations(Backend::Target),
        ],
        shadow: r.metrics.shadow.compared(),
    }
}

fn counts(snapshot: &Snapshot) -> HashMap<String, Counts> {
    snapshot
        .routes
        .iter()
        .chain([&snapshot.default_route])
        .map(|r| (r.name.clone(), route_counts(r)))
        .collect()
}

fn side(requests: u64, errors: u64, seconds: f64, p99_ms: Option<f64>) -> SideRate {
    SideRate {
        rps: requests as f64 / seconds,
        error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
        p99_ms,
    }
}

/// A route's figures between two readings `seconds` apart.
pub(super) fn between(now: &Counts, then: &Counts, seconds: f64) -> RouteRates {
    let d = |i: usize| now.requests[i].saturating_sub(then.requests[i]);
    let p99 = |i: usize| quantiles::between(&now.durations[i], &then.durations[i], 0.99);
    RouteRates {
        legacy: side(d(0), d(1), seconds, p99(0)),
        target: side(d(2), d(3), seconds, p99(1)),
        window_seconds: seconds,
    }
}

/// Both sides of one route over the sampled window, as sketches other replicas add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sides {
    pub seconds: f64,
    pub legacy: Sketch,
    pub target: Sketch,
}

fn sketch(now: &Counts, then: &Counts, side: usize) -> Sketch {
    let mut out = Sketch {
        requests: now.requests[2 * side].saturating_sub(then.requests[2 * side]),
        errors: now.requests[2 * side + 1].saturating_sub(then.requests[2 * side + 1]),
        latency: Vec::new(),
    };
    for (b, n) in &now.durations[side] {
        let before = then.durations[side]
            .iter()
            .find(|(i, _)| i == b)
            .map_or(0, |(_, c)| *c);
        if *n > before {
            out.add_latency(quantiles::value(usize::from(*b)) as u64, n - before);
        }
    }
    out
}

impl Rates {
    /// Each route with requests in the sampled window: both sides' counts and latency.
    pub fn sides(&self) -> BTreeMap<String, Sides> {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (s.front(), s.back()) else {
            return BTreeMap::new();
        };
        let seconds = last.at.duration_since(first.at).as_secs_f64();
        if seconds <= 0.0 {
            return BTreeMap::new();
        }
        last.counts
            .iter()
            .filter_map(|(route, now)| {
                let then = first.counts.get(route).cloned().unwrap_or_default();
                let sides = Sides {
                    seconds,
                    legacy: sketch(now, &then, 0),
                    target: sketch(now, &then, 1),
                };
                (sides.legacy.requests + sides.target.requests > 0).then(|| (route.clone(), sides))
            })
            .collect()
    }

    pub fn sample(&self, snapshot: &Snapshot) {
        self.push(Instant::now(), counts(snapshot));
    }

    fn push(&self, at: Instant, counts: HashMap<String, Counts>) {
        self.history.observe(at, &counts);
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back(Sample { at, counts });
        while s.len() > 2 && s.front().is_some_and(|f| at.duration_since(f.at) > WINDOW) {
            s.pop_front();
        }
    }

    /// Rates over the sampled window, by route; empty until two samples exist.
    pub fn current(&self) -> HashMap<String, RouteRates> {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (s.front(), s.back()) else {
            return HashMap::new();
        };
        let seconds = last.at.duration_since(first.at).as_secs_f64();
        if seconds <= 0.0 {
            return HashMap::new();
        }
        last.counts
            .iter()
            .map(|(route, now)| {
                // A route that appeared within the window counts from zero.
                let then = first.counts.get(route).cloned().unwrap_or_default();
                (route.clone(), between(now, &then, seconds))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: [u64; 4]) -> Counts {
        Counts {
            requests,
            ..Counts::default()
        }
    }

    #[test]
    fn p99_is_of_the_window_only() {
        let q = crate::metrics::quantiles::Quantiles::default();
        for _ in 0..1000 {
            q.record(2.0);
        }
        let mut then = counts([1000, 0, 0, 0]);
        then.durations[0] = q.snapshot();
        for i in 0..100 {
            q.record(if i < 98 { 0.004 } else { 0.250 });
        }
        let mut now = counts([1100, 0, 0, 0]);
        now.durations[0] = q.snapshot();
        let r = between(&now, &then, 10.0);
        let p99 = r.legacy.p99_ms.expect("p99");
        assert!((p99 - 250.0).abs() / 250.0 < 0.02, "{p99}");
        assert_eq!(r.target.p99_ms, None);
    }

    #[test]
    fn rates_are_deltas_over_the_window() {
        let r = Rates::default();
        let t0 = Instant::now();
        assert!(r.current().is_empty());
        r.push(
            t0,
            HashMap::from([("orders".to_string(), counts([100, 0, 10, 0]))]),
        );
        r.push(
            t0 + Duration::from_secs(2),
            HashMap::from([
                ("orders".to_string(), counts([300, 2, 50, 10])),
                ("new".to_string(), counts([4, 0, 0, 0])),
            ]),
        );
        let now = r.current();
        let o = now["orders"];
        assert_eq!(o.legacy.rps, 100.0);
        assert_eq!(o.legacy.error_rate, Some(0.01));
        assert_eq!(o.target.rps, 20.0);
        assert_eq!(o.target.error_rate, Some(0.25));
        assert_eq!(now["new"].legacy.rps, 2.0);
        assert_eq!(now["new"].target.error_rate, None);
        let sides = r.sides();
        assert_eq!(sides["orders"].seconds, 2.0);
        assert_eq!(
            (
                sides["orders"].legacy.requests,
                sides["orders"].legacy.errors
            ),
            (200, 2)
        );
        assert_eq!(
            (
                sides["orders"].target.requests,
                sides["orders"].target.errors
            ),
            (40, 10)
        );
    }

    #[test]
    fn a_sides_latency_is_the_windows() {
        let q = crate::metrics::quantiles::Quantiles::default();
        for _ in 0..1000 {
            q.record(2.0);
        }
        let mut then = counts([0, 0, 1000, 0]);
        then.durations[1] = q.snapshot();
        for _ in 0..100 {
            q.record(0.004);
        }
        let mut now = counts([0, 0, 1100, 0]);
        now.durations[1] = q.snapshot();
        let s = sketch(&now, &then, 1);
        assert_eq!(s.requests, 100);
        let p99 = s.stats().p99_ms.expect("p99");
        assert!((3.5..=4.1).contains(&p99), "{p99}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let r = Rates::default();
        let t0 = Instant::now();
        for i in 0..30u64 {
            r.push(
                t0 + Duration::from_secs(i),
                HashMap::from([("a".to_string(), counts([i * 10, 0, 0, 0]))]),
            );
        }
        let a = r.current()["a"];
        assert_eq!(a.legacy.rps, 10.0);
        assert!(a.window_seconds <= 11.0);
    }
}
