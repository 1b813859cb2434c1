//! Requests per second, error rates and p99 latency per route and side, for status and
//! the dashboard: the control service samples each route's counters and latency
//! histograms once a second and keeps ten seconds of samples.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::metrics::LATENCY_BUCKETS;
use crate::routes::Backend;
use crate::snapshot::Snapshot;

const WINDOW: Duration = Duration::from_secs(10);

/// One route's counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    /// (legacy requests, legacy 5xx, target requests, target 5xx).
    requests: [u64; 4],
    /// Per side: observations and cumulative bucket counts of the latency histogram.
    latency: [(u64, Vec<u64>); 2],
}

struct Sample {
    at: Instant,
    counts: HashMap<String, Counts>,
}

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SideRate {
    pub rps: f64,
    /// 5xx answers / requests over the window; `None` without requests.
    pub error_rate: Option<f64>,
    /// The upper bound of the histogram bucket holding the 99th percentile of request
    /// durations over the window, in milliseconds; `None` without requests (or above
    /// the last bucket, 30 s).
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteRates {
    pub legacy: SideRate,
    pub target: SideRate,
    pub window_seconds: f64,
}

fn counts(snapshot: &Snapshot) -> HashMap<String, Counts> {
    snapshot
        .routes
        .iter()
        .chain([&snapshot.default_route])
        .map(|r| {
            let (lr, le) = r.metrics.totals(Backend::Legacy);
            let (tr, te) = r.metrics.totals(Backend::Target);
            let counts = Counts {
                requests: [lr, le, tr, te],
                latency: [
                    r.metrics.latency(Backend::Legacy),
                    r.metrics.latency(Backend::Target),
                ],
            };
            (r.name.clone(), counts)
        })
        .collect()
}

/// The p99 bucket's upper bound (ms) between two readings of one histogram.
fn p99_ms(now: &(u64, Vec<u64>), then: &(u64, Vec<u64>)) -> Option<f64> {
    let total = now.0.saturating_sub(then.0);
    if total == 0 {
        return None;
    }
    let rank = (total * 99).div_ceil(100);
    now.1
        .iter()
        .enumerate()
        .find(|(i, c)| c.saturating_sub(then.1.get(*i).copied().unwrap_or(0)) >= rank)
        .and_then(|(i, _)| LATENCY_BUCKETS.get(i))
        .map(|s| s * 1000.0)
}

fn side(requests: u64, errors: u64, seconds: f64, p99_ms: Option<f64>) -> SideRate {
    SideRate {
        rps: requests as f64 / seconds,
        error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
        p99_ms,
    }
}

impl Rates {
    pub fn sample(&self, snapshot: &Snapshot) {
        self.push(Instant::now(), counts(snapshot));
    }

    fn push(&self, at: Instant, counts: HashMap<String, Counts>) {
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
                let d = |i: usize| now.requests[i].saturating_sub(then.requests[i]);
                (
                    route.clone(),
                    RouteRates {
                        legacy: side(
                            d(0),
                            d(1),
                            seconds,
                            p99_ms(&now.latency[0], &then.latency[0]),
                        ),
                        target: side(
                            d(2),
                            d(3),
                            seconds,
                            p99_ms(&now.latency[1], &then.latency[1]),
                        ),
                        window_seconds: seconds,
                    },
                )
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
    fn p99_is_the_bucket_holding_the_99th_percentile_of_the_window() {
        let n = LATENCY_BUCKETS.len();
        let cumulative = |per_bucket: &[(usize, u64)]| {
            let mut v = vec![0u64; n];
            for &(i, c) in per_bucket {
                for x in v.iter_mut().skip(i) {
                    *x += c;
                }
            }
            v
        };
        // Before: 1,000 fast requests. In the window: 98 at ≤ 5 ms, 2 at ≤ 250 ms.
        let then = (1000, cumulative(&[(1, 1000)]));
        let now = (1100, cumulative(&[(1, 1000), (3, 98), (8, 2)]));
        assert_eq!(LATENCY_BUCKETS[8], 0.25);
        assert_eq!(p99_ms(&now, &then), Some(250.0));
        let now = (1100, cumulative(&[(1, 1000), (3, 100)]));
        assert_eq!(p99_ms(&now, &then), Some(5.0));
        assert_eq!(p99_ms(&then, &then), None);
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
