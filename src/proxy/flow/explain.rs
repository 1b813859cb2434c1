//! "What would banyan do with this request now?": the data path's own decision — the
//! snapshot's `RouteTable::decide`, then `admission` with the target's health and circuit —
//! on the snapshot being served, without sending anything, spending a rate-limit token or
//! taking the breaker's probe. The admin API's `/api/v1/explain` and `banyan explain
//! --offline` (on a snapshot built from the files) both answer with it.

use super::decide::{judge, Admission};
use crate::metrics::FallbackReason;
use crate::routes::{Backend, Decision, RequestView};
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::upstream::circuit::Admit;
use crate::upstream::UpstreamPool;

/// Whether the route's shadow would mirror this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror {
    /// The route has no `[route.shadow]`, or the request is not served by legacy.
    No,
    /// Paused by an override (rollback).
    Paused,
    /// The shadow's sample leaves this request out (method or percent).
    NotSampled,
    /// Sampled at random per request: no sticky key, percent between 0 and 100.
    Random,
    Yes,
}

/// The decision on one request, as the data path would take it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview {
    pub decision: Decision,
    /// Without the rate limit, which a preview does not spend: `Proceed` or `Unavailable`.
    pub admission: Admission,
    /// Why a target-bound request cannot go to the target now.
    pub target_down: Option<FallbackReason>,
    /// The target's circuit would let this request through as its one probe.
    pub probe: bool,
    pub mirror: Mirror,
}

impl Preview {
    /// The side that would serve the request; `None` when banyan would refuse it (503).
    pub fn served_by(&self) -> Option<Backend> {
        match self.admission {
            Admission::Proceed { backend, .. } => Some(backend),
            Admission::Unavailable | Admission::Limited { .. } => None,
        }
    }
}

pub fn preview(snap: &Snapshot, view: &RequestView) -> Preview {
    let decision = snap.table.decide(view);
    let route = snap.route(decision.route);
    let (admission, target_down) = judge(snap, route, &decision, None, UpstreamPool::peek_admit);
    // A target-bound request the circuit would let through as its one trial.
    let probe = decision.backend() == Backend::Target
        && target_down.is_none()
        && snap
            .upstream(route.upstream_index(Backend::Target))
            .peek_admit()
            == Admit::Probe;
    let mirror = match admission {
        Admission::Proceed { mirror: true, .. } => mirror_of(route, view),
        _ => Mirror::No,
    };
    Preview {
        decision,
        admission,
        target_down,
        probe,
        mirror,
    }
}

/// `Proxy::shadow_cap`'s sampling, less what depends on the moment (the worker's room).
fn mirror_of(route: &CompiledRoute, view: &RequestView) -> Mirror {
    let Some(plan) = route.shadow.as_deref() else {
        return Mirror::No;
    };
    if route.shadow_paused {
        return Mirror::Paused;
    }
    let keyed = crate::routes::request::sticky_key(&plan.sticky, view)
        .bytes()
        .is_some();
    let partial = plan.percent_bp > 0 && plan.percent_bp < crate::routes::split::BUCKETS;
    let method_ok = plan.methods.iter().any(|m| m.as_str() == view.method);
    if method_ok && partial && !keyed {
        return Mirror::Random;
    }
    if plan.samples(view) {
        Mirror::Yes
    } else {
        Mirror::NotSampled
    }
}
