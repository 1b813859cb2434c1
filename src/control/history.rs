//! Fifteen minutes of each route's figures at ten-second resolution, kept in memory for
//! the dashboard's charts (`GET /api/v1/history`): per side requests/s, error rate and
//! p99, and the shadow's match rate. Built from the readings status's rates are made of,
//! so a chart's last point and the table beside it agree. Lost on restart, by design:
//! Prometheus keeps the long history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::rates::{between, Counts, SideRate};

/// One point per this long.
pub const STEP: Duration = Duration::from_secs(10);
/// Points kept per route: fifteen minutes.
pub const POINTS: usize = 90;

/// A route's figures over one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Point {
    /// When the step ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub seconds: f64,
    pub legacy: SideRate,
    pub target: SideRate,
    /// Shadow copies compared during the step, and the share that matched.
    pub compared: u64,
    pub match_rate: Option<f64>,
}

/// `GET /api/v1/history`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HistoryDoc {
    pub step_seconds: f64,
    /// How many points a route keeps at most.
    pub max_points: usize,
    /// Oldest point first.
    pub routes: BTreeMap<String, Vec<Point>>,
}

#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The readings the next point is measured from.
    base: Option<(Instant, HashMap<String, Counts>)>,
    routes: HashMap<String, VecDeque<Point>>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl History {
    /// One reading of every route (once a second); makes a point once a step has passed.
    pub(super) fn observe(&self, at: Instant, counts: &HashMap<String, Counts>) {
        self.observe_at(at, unix_ms(), counts);
    }

    fn observe_at(&self, at: Instant, wall_ms: u64, counts: &HashMap<String, Counts>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let since = match &g.base {
            Some((t, _)) if at.duration_since(*t) < STEP => return,
            Some((t, _)) => at.duration_since(*t).as_secs_f64(),
            None => {
                g.base = Some((at, counts.clone()));
                return;
            }
        };
        let base = g.base.take().map(|(_, b)| b).unwrap_or_default();
        for (route, now) in counts {
            // A route that appeared during the step counts from zero.
            let then = base.get(route).cloned().unwrap_or_default();
            let rates = between(now, &then, since);
            let matched = now.shadow.0.saturating_sub(then.shadow.0);
            let compared = matched + now.shadow.1.saturating_sub(then.shadow.1);
            let points = g.routes.entry(route.clone()).or_default();
            points.push_back(Point {
                at_ms: wall_ms,
                seconds: since,
                legacy: rates.legacy,
                target: rates.target,
                compared,
                match_rate: (compared > 0).then(|| matched as f64 / compared as f64),
            });
            while points.len() > POINTS {
                points.pop_front();
            }
        }
        g.routes.retain(|name, _| counts.contains_key(name));
        g.base = Some((at, counts.clone()));
    }

    pub fn document(&self) -> HistoryDoc {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        HistoryDoc {
            step_seconds: STEP.as_secs_f64(),
            max_points: POINTS,
            routes: g
                .routes
                .iter()
                .map(|(name, points)| (name.clone(), points.iter().cloned().collect()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(requests: [u64; 4], shadow: (u64, u64)) -> HashMap<String, Counts> {
        HashMap::from([(
            "orders".to_string(),
            Counts {
                requests,
                shadow,
                ..Counts::default()
            },
        )])
    }

    #[test]
    fn one_point_per_step_fifteen_minutes_kept() {
        let h = History::default();
        let t0 = Instant::now();
        h.observe_at(t0, 0, &reading([0, 0, 0, 0], (0, 0)));
        // Readings within the step make no point.
        h.observe_at(
            t0 + Duration::from_secs(5),
            5,
            &reading([50, 0, 0, 0], (0, 0)),
        );
        assert!(h.document().routes.is_empty());
        h.observe_at(t0 + STEP, 10, &reading([100, 5, 20, 0], (9, 1)));
        let doc = h.document();
        let p = &doc.routes["orders"][0];
        assert_eq!((p.legacy.rps, p.legacy.error_rate), (10.0, Some(0.05)));
        assert_eq!(p.target.rps, 2.0);
        assert_eq!((p.compared, p.match_rate), (10, Some(0.9)));
        for i in 2..200u64 {
            h.observe_at(
                t0 + STEP * i as u32,
                i,
                &reading([100 * i, 0, 0, 0], (9, 1)),
            );
        }
        let doc = h.document();
        assert_eq!(doc.routes["orders"].len(), POINTS);
        assert_eq!(doc.routes["orders"].last().map(|p| p.at_ms), Some(199));
        assert_eq!(doc.routes["orders"].last().map(|p| p.compared), Some(0));
        // A route that is gone leaves no history behind.
        h.observe_at(t0 + STEP * 300, 300, &HashMap::new());
        assert!(h.document().routes.is_empty());
    }
}
