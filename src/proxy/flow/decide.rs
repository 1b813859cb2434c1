//! Deciding and admitting a request, for both transports: the route and side from the
//! snapshot's table, then the route's rate limit, then whether the target can take it
//! (circuit, health) — falling back to legacy or refusing with 503 — and whether the
//! request is mirrored. `admission` is the rule, pure; `Proxy::admit` gathers its inputs
//! from one snapshot and writes the outcome into the request's state.

use std::sync::Arc;
use std::time::Duration;

use super::Ctx;
use crate::compare::SkipReason;
use crate::metrics::FallbackReason;
use crate::proxy::Proxy;
use crate::ratelimit;
use crate::routes::{Backend, Decision, RequestView};
use crate::snapshot::{CompiledRoute, Snapshot};
use crate::upstream::circuit::Admit;
use crate::upstream::UpstreamPool;

/// What becomes of a decided request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Refused by the route's rate limit: 429, with `Retry-After` in seconds.
    Limited { retry_after: u64 },
    /// Bound for a target that cannot take it, on a route that does not fall back: 503.
    Unavailable,
    /// Sent on to `backend`; `fallback` says why a target-bound request goes to legacy.
    /// `mirror`: a legacy-bound request on a route, which its shadow plan may sample.
    Proceed {
        backend: Backend,
        fallback: Option<FallbackReason>,
        mirror: bool,
    },
}

/// The rule, over plain data: `decided` is the table's side, `routed` whether a route
/// matched, `limited` the rate limit's wait when it refused, `target_down` why the target
/// cannot take requests now.
pub fn admission(
    decided: Backend,
    routed: bool,
    limited: Option<Duration>,
    target_down: Option<FallbackReason>,
    falls_back: bool,
) -> Admission {
    if let Some(wait) = limited {
        return Admission::Limited {
            retry_after: ratelimit::retry_after_seconds(wait),
        };
    }
    match (decided, target_down) {
        (Backend::Target, Some(reason)) if falls_back => Admission::Proceed {
            backend: Backend::Legacy,
            fallback: Some(reason),
            mirror: false,
        },
        (Backend::Target, Some(_)) => Admission::Unavailable,
        (Backend::Target, None) => Admission::Proceed {
            backend: Backend::Target,
            fallback: None,
            mirror: false,
        },
        (Backend::Legacy, _) => Admission::Proceed {
            backend: Backend::Legacy,
            fallback: None,
            mirror: routed,
        },
    }
}

/// The admission of a decided request on `route`, and why its target cannot take it
/// (when target-bound and not rate limited): the one rule a served request
/// (`Proxy::admit`, asking the breaker with `admit`) and an explained one
/// (`explain::preview`, with `peek_admit`) go through.
pub fn judge(
    snap: &Snapshot,
    route: &CompiledRoute,
    decision: &Decision,
    limited: Option<Duration>,
    breaker: impl FnOnce(&UpstreamPool) -> Admit,
) -> (Admission, Option<FallbackReason>) {
    let decided = decision.backend();
    let target_down = match (limited, decided) {
        (None, Backend::Target) => target_state(
            snap.upstream(route.upstream_index(Backend::Target)),
            breaker,
        ),
        _ => None,
    };
    let admission = admission(
        decided,
        decision.route.is_some(),
        limited,
        target_down,
        route.falls_back(),
    );
    (admission, target_down)
}

/// Why the target cannot take a request now: `Some(reason)` when health checks have
/// every peer out of rotation or its circuit (asked with `breaker`) is open.
fn target_state(
    pool: &UpstreamPool,
    breaker: impl FnOnce(&UpstreamPool) -> Admit,
) -> Option<FallbackReason> {
    if pool.all_checked_down() {
        return Some(FallbackReason::Unhealthy);
    }
    match breaker(pool) {
        Admit::Open => Some(FallbackReason::CircuitOpen),
        Admit::Closed | Admit::Probe => None,
    }
}

impl Proxy {
    /// The one place a request's side is settled: `decision` is the route table's
    /// (`RouteTable::decide` on `snap`); admits it and records the outcome in `ctx`
    /// (which then holds the snapshot).
    pub(crate) fn admit(
        &self,
        ctx: &mut Ctx,
        snap: Arc<Snapshot>,
        decision: Decision,
        view: &RequestView,
    ) -> Admission {
        let route = snap.route(decision.route);
        ctx.route = decision.route;
        ctx.cohort = decision.split.is_some_and(|s| s.cohort.is_some());
        let decided = decision.backend();
        let limited = route
            .limiter
            .as_ref()
            .and_then(|l| l.check(l.key(view.headers, view.client_ip)).err());
        let (admission, _) = judge(&snap, route, &decision, limited, UpstreamPool::admit);
        match admission {
            Admission::Limited { .. } => ctx.limited = true,
            Admission::Unavailable => {
                ctx.backend = Backend::Target;
                ctx.upstream = route.upstream_index(Backend::Target);
                ctx.refused_target = true;
            }
            Admission::Proceed {
                backend, fallback, ..
            } => {
                ctx.backend = decided;
                ctx.upstream = route.upstream_index(decided);
                if let Some(reason) = fallback {
                    self.fall_back(ctx, route, reason);
                }
                ctx.backend = backend;
            }
        }
        ctx.snapshot = Some(snap);
        admission
    }

    /// The body cap for a shadow copy of this request, when the route mirrors it; a body
    /// known to be over the cap is counted as skipped instead, and a copy the shadow
    /// worker has no room for as dropped, before anything is captured for it.
    pub(crate) fn shadow_cap(
        &self,
        route: &CompiledRoute,
        view: &RequestView,
        body_len: Option<u64>,
    ) -> Option<usize> {
        let plan = route.shadow.as_deref()?;
        if route.shadow_paused || !plan.samples(view) {
            return None;
        }
        let cap = self.shadower.limits().max_body_bytes;
        if body_len.is_some_and(|n| n > cap as u64) {
            route
                .metrics
                .shadow
                .record_skip(&self.metrics, SkipReason::RequestTooLarge);
            return None;
        }
        if let Some(reason) = self.shadower.full() {
            route.metrics.shadow.record_drop(&self.metrics, reason);
            return None;
        }
        Some(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(1500);

    #[test]
    fn the_rate_limit_comes_first() {
        for side in [Backend::Legacy, Backend::Target] {
            let got = admission(
                side,
                true,
                Some(WAIT),
                Some(FallbackReason::CircuitOpen),
                true,
            );
            assert_eq!(got, Admission::Limited { retry_after: 2 });
        }
    }

    #[test]
    fn a_target_that_cannot_take_requests_falls_back_or_is_refused() {
        for reason in [FallbackReason::CircuitOpen, FallbackReason::Unhealthy] {
            let got = admission(Backend::Target, true, None, Some(reason), true);
            assert_eq!(
                got,
                Admission::Proceed {
                    backend: Backend::Legacy,
                    fallback: Some(reason),
                    mirror: false
                }
            );
            let got = admission(Backend::Target, true, None, Some(reason), false);
            assert_eq!(got, Admission::Unavailable);
        }
    }

    #[test]
    fn only_legacy_bound_routed_requests_may_be_mirrored() {
        let to_target = admission(Backend::Target, true, None, None, true);
        assert_eq!(
            to_target,
            Admission::Proceed {
                backend: Backend::Target,
                fallback: None,
                mirror: false
            }
        );
        let legacy = |routed| admission(Backend::Legacy, routed, None, None, true);
        assert!(matches!(
            legacy(true),
            Admission::Proceed { mirror: true, .. }
        ));
        // No route matched: the monolith's default, nothing to compare with.
        assert!(matches!(
            legacy(false),
            Admission::Proceed { mirror: false, .. }
        ));
    }
}
