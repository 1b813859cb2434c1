//! Decisions that need the whole fleet's figures. Every second each replica publishes,
//! under `{prefix}/windows/{replica}` and bound to its lease, its guard windows (target
//! side) and both sides of every route with traffic over the last ten seconds (counts and
//! a latency sketch) — when they changed, so an idle fleet writes nothing. Every replica
//! keeps the others' from its watch: `GET /api/v1/fleet` shows the fleet's figures per
//! route and side. With them go its counts of every running ramp step (since it began
//! serving the step) and, from the elected replica, its last judgement of each ramp, for
//! the others' status. One replica, elected through etcd's election API on
//! `{prefix}/leader`, adds up the guard windows and judges each route's guard on the sum,
//! and adds up the step counts and judges the ramps (`control::ramp`).
//! Only windows taken under the overrides this replica serves are added: a window from
//! before a rollback or a resume must not judge the route after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use etcd_client::{Client, PutOptions};
use serde::{Deserialize, Serialize};

use super::{Etcd, Revision, SessionError};
use crate::control::ramp::counts::{Judged, PublishedStep};
use crate::control::rates::{SideRate, Sides};
use crate::control::Control;
use crate::guard::Sketch;

/// One replica's windows, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Published {
    replica: String,
    /// The overrides revision the windows were taken under.
    revision: Revision,
    /// Route → its target side's guard window.
    routes: BTreeMap<String, Sketch>,
    /// Route → both sides over the last ten seconds.
    #[serde(default)]
    sides: BTreeMap<String, Sides>,
    /// Route → this replica's counts of its ramp's running step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) steps: BTreeMap<String, PublishedStep>,
    /// Route → the elected replica's last judgement of its ramp (the elected one only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) judged: BTreeMap<String, Judged>,
}

/// The fleet's figures for one route, added up over the replicas that published them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FleetRoute {
    /// Replicas with traffic on the route in their last ten seconds.
    pub replicas: usize,
    pub legacy: SideRate,
    pub target: SideRate,
}

fn rate(sketches: &[(f64, &Sketch)]) -> SideRate {
    let mut sum = Sketch::default();
    let mut rps = 0.0;
    for (seconds, s) in sketches {
        sum.add(s);
        if *seconds > 0.0 {
            rps += s.requests as f64 / seconds;
        }
    }
    SideRate {
        rps,
        error_rate: (sum.requests > 0).then(|| sum.errors as f64 / sum.requests as f64),
        p99_ms: sum.stats().p99_ms,
    }
}

/// Every route's figures over the replicas' last published windows.
pub(super) fn fleet_routes(windows: &BTreeMap<String, Published>) -> BTreeMap<String, FleetRoute> {
    let mut by_route: BTreeMap<&str, Vec<&Sides>> = BTreeMap::new();
    for p in windows.values() {
        for (route, sides) in &p.sides {
            by_route.entry(route).or_default().push(sides);
        }
    }
    by_route
        .into_iter()
        .map(|(route, all)| {
            let legacy: Vec<(f64, &Sketch)> = all.iter().map(|s| (s.seconds, &s.legacy)).collect();
            let target: Vec<(f64, &Sketch)> = all.iter().map(|s| (s.seconds, &s.target)).collect();
            let r = FleetRoute {
                replicas: all.len(),
                legacy: rate(&legacy),
                target: rate(&target),
            };
            (route.to_string(), r)
        })
        .collect()
}

impl Etcd {
    pub(super) fn leader_key(&self) -> String {
        format!("{}/leader", self.settings.prefix)
    }

    pub(super) fn windows_prefix(&self) -> String {
        format!("{}/windows/", self.settings.prefix)
    }

    /// Publishes this replica's guard windows under its lease.
    pub(super) async fn publish_windows(
        &self,
        client: &mut Client,
        lease: i64,
        control: &Arc<Control>,
    ) -> Result<(), SessionError> {
        let (revision, leading) = {
            let g = self.lock();
            (g.overrides_revision, g.leader)
        };
        let (steps, judged) = control.ramp_published();
        let published = Published {
            replica: self.settings.replica.clone(),
            revision,
            routes: control.guard_sketches(),
            sides: control.rates.sides(),
            steps,
            judged: if leading { judged } else { BTreeMap::new() },
        };
        let idle = published.sides.is_empty()
            && published.steps.is_empty()
            && published.judged.is_empty()
            && published.routes.values().all(|s| s.requests == 0);
        {
            // Written when it changed; an idle replica that said so once writes nothing.
            let mut last = self.published.lock().unwrap_or_else(|p| p.into_inner());
            let unchanged = match last.as_ref() {
                Some(l) => {
                    *l == published
                        || (idle
                            && l.sides.is_empty()
                            && l.steps.is_empty()
                            && l.judged.is_empty()
                            && l.routes.values().all(|s| s.requests == 0))
                }
                None => idle,
            };
            if unchanged {
                return Ok(());
            }
            *last = Some(published.clone());
        }
        let value = serde_json::to_string(&published).unwrap_or_default();
        let key = format!("{}{}", self.windows_prefix(), self.settings.replica);
        client
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(())
    }

    /// The elected replica's turn: the fleet's windows added up, and judged.
    pub(super) async fn judge_fleet(&self, control: &Arc<Control>) {
        let (fleet, replicas) = {
            let g = self.lock();
            let mut fleet: BTreeMap<String, Sketch> = BTreeMap::new();
            let mut replicas = 0;
            for p in g
                .windows
                .values()
                .filter(|p| p.revision == g.overrides_revision)
            {
                replicas += 1;
                for (route, sketch) in &p.routes {
                    fleet.entry(route.clone()).or_default().add(sketch);
                }
            }
            (fleet, replicas)
        };
        if replicas < 2 {
            // One replica's windows are judged by that replica's own guard already.
            return;
        }
        let c = Arc::clone(control);
        let _ = tokio::task::spawn_blocking(move || c.check_fleet_guards(&fleet, replicas)).await;
    }

    /// A replica's windows, published (`Some`) or gone with its lease.
    pub(super) fn windows_changed(&self, name: &str, value: Option<&[u8]>) {
        let mut g = self.lock();
        match value.map(serde_json::from_slice::<Published>) {
            Some(Ok(p)) => {
                g.windows.insert(name.to_string(), p);
            }
            Some(Err(_)) => {}
            None => {
                g.windows.remove(name);
            }
        }
    }
}
