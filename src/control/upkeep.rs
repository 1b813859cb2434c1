//! The control service's periodic work: the guard loop (roll back a target past its
//! limits), the listener's certificate reloaded when it changed, rate limiters' idle
//! buckets forgotten.

use crate::model::Trigger;
use audit::Source;

use super::*;

impl Control {
    /// Reads each guarded route's window and rolls back every route whose target is past
    /// its limits. Routes at 0 % and routes the guard already rolled back are skipped.
    /// Returns the routes rolled back.
    pub fn check_guards(&self) -> Vec<String> {
        let snap = self.shared.load_full();
        let now = crate::clock::now_ms();
        let mut tripped = Vec::new();
        for r in &snap.routes {
            let (Some(window), Some(def)) = (&r.guard, &r.def) else {
                continue;
            };
            let Some(limits) = &def.guard else { continue };
            if r.effective_bp == 0
                || r.target.is_none()
                || r.override_
                    .as_ref()
                    .is_some_and(|o| o.trigger == Trigger::Guard)
            {
                continue;
            }
            let Some(reason) = crate::guard::verdict(limits, &window.stats(now)) else {
                continue;
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
