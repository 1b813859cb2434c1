//! The control service's periodic work: the guard loop (roll back a target past its
//! limits), the listener's certificate reloaded when it changed, rate limiters' idle
//! buckets forgotten.

use std::collections::BTreeMap;

use crate::guard::{Sketch, WindowStats};
use crate::model::Trigger;
use audit::Source;

use super::*;

impl Control {
    /// Reads each guarded route's window and rolls back every route whose target is past
    /// its limits. Routes at 0 % and routes the guard already rolled back are skipped.
    /// Returns the routes rolled back.
    pub fn check_guards(&self) -> Vec<String> {
        let now = crate::clock::now_ms();
        self.judge_guards("guard", |r| r.guard.as_ref().map(|w| w.stats(now)))
    }

    /// This replica's guard windows, for the fleet's aggregates.
    pub fn guard_sketches(&self) -> BTreeMap<String, Sketch> {
        let now = crate::clock::now_ms();
        self.shared
            .load()
            .routes
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.guard.as_ref()?.sketch(now))))
            .collect()
    }

    /// The elected replica's judgement on the fleet's windows added up (`fleet`: each
    /// route's sketches of `replicas` replicas): a fleet whose replicas each see too
    /// few requests to judge still rolls back a failing target. The rollback is the
    /// fleet's, through the store, as a local guard's is.
    pub fn check_fleet_guards(
        &self,
        fleet: &BTreeMap<String, Sketch>,
        replicas: usize,
    ) -> Vec<String> {
        let label = format!("guard (the fleet's {replicas} replicas)");
        self.judge_guards(&label, |r| fleet.get(&r.name).map(Sketch::stats))
    }

    fn judge_guards(
        &self,
        label: &str,
        stats_of: impl Fn(&crate::snapshot::CompiledRoute) -> Option<WindowStats>,
    ) -> Vec<String> {
        let snap = self.shared.load_full();
        let mut tripped = Vec::new();
        for r in &snap.routes {
            let Some(limits) = r.def.as_ref().and_then(|d| d.guard.as_ref()) else {
                continue;
            };
            if r.effective_bp == 0
                || r.target.is_none()
                || r.override_
                    .as_ref()
                    .is_some_and(|o| o.trigger == Trigger::Guard)
            {
                continue;
            }
            let Some(stats) = stats_of(r) else { continue };
            let Some(reason) = crate::guard::verdict(limits, &stats) else {
                continue;
            };
            let reason = match reason.strip_prefix("guard") {
                Some(rest) if label != "guard" => format!("{label}{rest}"),
                _ => reason,
            };
            tracing::error!(route = %r.name, "rolling back: {reason}");
            // The rollback also empties the window (every override change does).
            let sel = Selection::Routes(vec![r.name.clone()]);
            match self.rollback(&sel, &reason, Source::Guard, Trigger::Guard) {
                Ok(_) => tripped.push(r.name.clone()),
                Err(e) => tracing::error!(route = %r.name, "the guard could not roll back: {e}"),
            }
        }
        tripped
    }

    /// Serves the listener's certificate files anew when they changed on disk.
    pub fn reload_certificate(&self) {
        let Some(c) = &self.certificate else { return };
        match c.reload_if_changed() {
            None => {}
            Some(Ok(serving)) => tracing::info!("TLS certificate reloaded: now serving {serving}"),
            Some(Err(e)) => {
                tracing::error!("TLS certificate not reloaded, the previous one keeps serving: {e}")
            }
        }
    }

    /// Lets rate limiters forget clients whose buckets are full again.
    pub fn forget_idle_clients(&self) {
        for r in &self.shared.load().routes {
            if let Some(l) = &r.limiter {
                l.forget_idle();
            }
        }
    }
}
