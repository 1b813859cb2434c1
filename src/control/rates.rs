//! Requests per second and error rates per route and side, for status: the control
//! service samples each route's counters once a second and keeps ten seconds of samples.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::routes::Backend;
use crate::snapshot::Snapshot;

const WINDOW: Duration = Duration::from_secs(10);

/// (legacy requests, legacy 5xx, target requests, target 5xx) at one instant.
type Counts = [u64; 4];

struct Sample {
    at: Instant,
    counts: HashMap<String, Counts>,
}

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SideRate {
    pub rps: f64,
    /// 5xx answers / requests over the window; `None` without requests.
    pub error_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
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
            (r.name.clone(), [lr, le, tr, te])
        })
        .collect()
}

fn side(requests: u64, errors: u64, seconds: f64) -> SideRate {
    SideRate {
        rps: requests as f64 / seconds,
        error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
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
                let then = first.counts.get(route).copied().unwrap_or_default();
                let d = |i: usize| now[i].saturating_sub(then[i]);
                (
                    route.clone(),
                    RouteRates {
                        legacy: side(d(0), d(1), seconds),
                        target: side(d(2), d(3), seconds),
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

    #[test]
    fn rates_are_deltas_over_the_window() {
        let r = Rates::default();
        let t0 = Instant::now();
        assert!(r.current().is_empty());
        r.push(t0, HashMap::from([("orders".to_string(), [100, 0, 10, 0])]));
        r.push(
            t0 + Duration::from_secs(2),
            HashMap::from([
                ("orders".to_string(), [300, 2, 50, 10]),
                ("new".to_string(), [4, 0, 0, 0]),
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
                HashMap::from([("a".to_string(), [i * 10, 0, 0, 0])]),
            );
        }
        let a = r.current()["a"];
        assert_eq!(a.legacy.rps, 10.0);
        assert!(a.window_seconds <= 11.0);
    }
}
