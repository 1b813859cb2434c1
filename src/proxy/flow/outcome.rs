//! A request's outcome, for both transports: the route's metrics, the guard window's
//! sample, the shadow copy handed to the worker, the access log line; and what banyan
//! tells the client itself (its JSON errors, its debug headers).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;

use super::{grpc, Ctx};
use crate::clock::now_ms;
use crate::compare::SkipReason;
use crate::metrics::FallbackReason;
use crate::proxy::access_log::Line;
use crate::proxy::Proxy;
use crate::routes::Backend;
use crate::shadow::Job;

/// How a request ended, as the transport saw it.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    /// The status the client got; 0 when it got none.
    pub status: u16,
    /// The exchange failed somewhere (the primary's answer is not whole).
    pub failed: bool,
    /// It failed on the upstream's side.
    pub upstream_failed: bool,
    /// `banyan` or `pingora`, for the access log.
    pub transport: &'static str,
}

/// What the target's part in a request says about it, for the route's guard window:
/// `Some((ok, latency))` when it had one. A fallback or a refusal is a failure (timed
/// from when it failed, unless the target was never asked: circuit open, unhealthy);
/// a request the target served counts by its answer's class; a client that left before
/// any answer says nothing about the target.
pub fn guard_sample(
    ctx: &Ctx,
    end: &Ending,
    elapsed: Duration,
) -> Option<(bool, Option<Duration>)> {
    if ctx.cohort {
        // Forced cohorts (testers at 0 %) are counted apart from the users the guard
        // protects.
        return None;
    }
    if let Some(at) = ctx.target_failed {
        let asked = !matches!(
            ctx.fallback,
            Some(FallbackReason::CircuitOpen | FallbackReason::Unhealthy)
        );
        return Some((false, asked.then_some(at)));
    }
    if ctx.refused_target {
        return Some((false, None));
    }
    if ctx.backend != Backend::Target || ctx.limited {
        return None;
    }
    (end.status != 0 || end.upstream_failed)
        .then_some((end.status < 500 && !end.upstream_failed, Some(elapsed)))
}

impl Proxy {
    /// A finished request's metrics, guard window, shadow hand-off and access log line.
    pub(crate) fn finish(&self, ctx: &mut Ctx, end: Ending, method: &http::Method, path: &str) {
        // Finished for the client: its own copy, and others, need not wait for it.
        ctx.busy = None;
        let shadow = ctx.shadow.take();
        if ctx.refused.is_some() {
            // Never routed: counted in banyan_bad_requests_total only.
            return;
        }
        let Some((_, route)) = ctx.decided() else {
            return;
        };
        let elapsed = ctx.started.elapsed();
        // A gRPC call answers 200 whatever happened: it counts by how it ended.
        let answered = end;
        let end = if ctx.grpc && (ctx.upstream_ms.is_some() || ctx.grpc_status.is_some()) {
            Ending {
                status: grpc::counted_status(end.status, ctx.grpc_status),
                ..end
            }
        } else {
            end
        };
        if let (true, Some(code)) = (ctx.grpc && !ctx.limited, ctx.grpc_status) {
            route
                .metrics
                .record_grpc(&self.metrics, ctx.backend, code, &grpc::CODES);
        }
        if ctx.limited {
            route.metrics.record_rate_limited(&self.metrics);
        } else if ctx.cohort {
            route
                .metrics
                .record_cohort(&self.metrics, ctx.backend, end.status);
        } else {
            route.metrics.record(
                &self.metrics,
                ctx.backend,
                end.status,
                elapsed.as_secs_f64(),
            );
        }
        if let (Some(window), Some((ok, latency))) =
            (&route.guard, guard_sample(ctx, &end, elapsed))
        {
            window.record(now_ms(), ok, latency);
        }
        if let Some(shadow) = shadow {
            if end.failed {
                route
                    .metrics
                    .shadow
                    .record_skip(&self.metrics, SkipReason::NoPrimary);
            } else if let (Some(snapshot), Some(index)) = (ctx.snapshot.clone(), ctx.route) {
                ctx.shadowed = true;
                self.shadower.dispatch(Job {
                    snapshot,
                    route: index,
                    client: ctx.client,
                    request_id: ctx.request_id.clone(),
                    scheme: ctx.scheme,
                    ctx: shadow,
                });
            }
        }
        if self.access_log.enabled() {
            let Some((_, route)) = ctx.decided() else {
                return;
            };
            self.access_log.log(Line {
                at: SystemTime::now(),
                request_id: ctx.request_id.clone(),
                method: method.clone(),
                path: path.to_string(),
                route: route.name.clone(),
                backend: ctx.backend.as_str(),
                status: answered.status,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_ms: ctx.upstream_ms,
                fallback: ctx.fallback.map(FallbackReason::as_str),
                shadow: ctx.shadowed,
                transport: end.transport,
                grpc_status: ctx.grpc_status.map(grpc::name),
            });
        }
    }

    /// The `X-Banyan-*` headers an answer carries when `debug_headers` is on, as
    /// (wire name, value); none when off or before routing.
    pub(crate) fn debug_fields(&self, ctx: &Ctx) -> Vec<(&'static str, HeaderValue)> {
        let Some((snap, route)) = ctx.decided().filter(|_| self.debug_headers) else {
            return Vec::new();
        };
        let mut out = vec![
            ("X-Banyan-Route", route.name_header.clone()),
            (
                "X-Banyan-Backend",
                HeaderValue::from_static(ctx.backend.as_str()),
            ),
            ("X-Banyan-Snapshot", HeaderValue::from(snap.version)),
        ];
        if let Some(reason) = ctx.fallback {
            out.push((
                "X-Banyan-Fallback",
                HeaderValue::from_static(reason.as_str()),
            ));
        }
        out
    }
}

/// banyan's own short JSON error naming the route and the upstream; never request
/// content. `retry_after`: a rate limit's wait, in seconds.
pub fn error_body(code: u16, ctx: &Ctx, retry_after: Option<u64>) -> Bytes {
    let (route, upstream) = ctx
        .decided()
        .map(|(snap, r)| (r.name.as_str(), snap.upstream(ctx.upstream).name.as_str()))
        .unwrap_or(("", ""));
    let error = match code {
        429 => "rate limit exceeded".to_string(),
        503 if ctx.refused_target => format!(
            "upstream `{upstream}` is unavailable (circuit open or no healthy peer) and the route does not fall back"
        ),
        502 => format!("upstream `{upstream}` is unavailable"),
        504 => format!("upstream `{upstream}` did not answer in time"),
        400 | 501 => match ctx.refused.or(ctx.body_refused) {
            Some(why) => format!("bad request: {why}"),
            None => "bad request".to_string(),
        },
        _ => "the proxy could not complete the request".to_string(),
    };
    let mut body = serde_json::json!({
        "error": error,
        "route": route,
        "upstream": upstream,
        "request_id": ctx.request_id.to_str().unwrap_or(""),
    });
    if let Some(s) = retry_after {
        body["retry_after_seconds"] = s.into();
        body["upstream"] = serde_json::Value::Null;
    }
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(status: u16, upstream_failed: bool) -> Ending {
        Ending {
            status,
            failed: upstream_failed,
            upstream_failed,
            transport: "fast",
        }
    }

    const TOOK: Duration = Duration::from_millis(40);

    #[test]
    fn the_target_is_judged_by_its_own_part_only() {
        let mut ctx = Ctx::new(None);
        // Legacy's answers say nothing about the target.
        assert_eq!(guard_sample(&ctx, &ending(500, false), TOOK), None);
        ctx.backend = Backend::Target;
        assert_eq!(
            guard_sample(&ctx, &ending(200, false), TOOK),
            Some((true, Some(TOOK)))
        );
        assert_eq!(
            guard_sample(&ctx, &ending(503, false), TOOK),
            Some((false, Some(TOOK)))
        );
        assert_eq!(
            guard_sample(&ctx, &ending(0, true), TOOK),
            Some((false, Some(TOOK)))
        );
        // The client left before any answer.
        assert_eq!(guard_sample(&ctx, &ending(0, false), TOOK), None);
        ctx.limited = true;
        assert_eq!(guard_sample(&ctx, &ending(429, false), TOOK), None);
    }

    #[test]
    fn a_fallback_or_a_refusal_counts_against_the_target() {
        let failed_at = Duration::from_millis(7);
        let mut ctx = Ctx::new(None);
        ctx.target_failed = Some(failed_at);
        ctx.fallback = Some(FallbackReason::Timeout);
        // Legacy then answered 200: the target still failed, at the time it did.
        assert_eq!(
            guard_sample(&ctx, &ending(200, false), TOOK),
            Some((false, Some(failed_at)))
        );
        ctx.fallback = Some(FallbackReason::CircuitOpen);
        assert_eq!(
            guard_sample(&ctx, &ending(200, false), TOOK),
            Some((false, None))
        );
        let mut refused = Ctx::new(None);
        refused.backend = Backend::Target;
        refused.refused_target = true;
        assert_eq!(
            guard_sample(&refused, &ending(503, false), TOOK),
            Some((false, None))
        );
    }

    #[test]
    fn errors_name_the_route_and_upstream_but_no_request_content() {
        let ctx = Ctx::new(None);
        let body: serde_json::Value =
            serde_json::from_slice(&error_body(502, &ctx, None)).expect("json");
        assert_eq!(body["error"], "upstream `` is unavailable");
        let limited: serde_json::Value =
            serde_json::from_slice(&error_body(429, &ctx, Some(3))).expect("json");
        assert_eq!(limited["retry_after_seconds"], 3);
        assert!(limited["upstream"].is_null());
    }
}
