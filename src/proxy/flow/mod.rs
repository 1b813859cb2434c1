//! One request's life, for both transports (banyan's own HTTP/1.1 path in `proxy::fast`,
//! Pingora's callbacks in `proxy::pingora`), which only do I/O and call these:
//!
//! 1. `decide.rs`: `Proxy::admit` — route and side, rate limit, target availability
//!    (fall back or 503), whether the request is mirrored.
//! 2. `attempt.rs`: `next` — after a failed attempt: another peer, legacy, the answer as
//!    it is, or banyan's 502/504; one attempt budget (`MAX_ATTEMPTS`).
//! 3. `outcome.rs`: `Proxy::finish` — metrics, the guard window, the shadow hand-off, the
//!    access log; banyan's own error bodies and debug headers.
//!
//! `Ctx` is the request's state between them: plain data, one per request.

pub mod attempt;
pub mod decide;
pub mod explain;
pub mod grpc;
pub mod outcome;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method};

use crate::http1::framing::Refusal;
use crate::metrics::FallbackReason;
use crate::proxy::Proxy;
use crate::routes::Backend;
use crate::shadow::quiet::Busy;
use crate::shadow::ShadowCtx;
use crate::snapshot::{CompiledRoute, Snapshot};
use attempt::{Failed, Next, Standing};

/// Per-request state: the snapshot the request started with and the decision taken on it.
pub struct Ctx {
    pub(crate) snapshot: Option<Arc<Snapshot>>,
    pub(crate) route: Option<usize>,
    pub(crate) backend: Backend,
    pub(crate) upstream: usize,
    pub(crate) client: Option<IpAddr>,
    pub(crate) request_id: HeaderValue,
    /// `https` when the client came through the TLS listener.
    pub(crate) scheme: &'static str,
    pub(crate) started: Instant,
    /// Why a target-bound request is served by legacy.
    pub(crate) fallback: Option<FallbackReason>,
    /// When the target failed this request (time since start), if it did.
    pub(crate) target_failed: Option<Duration>,
    /// Answered by banyan itself without asking the target (circuit open, fallback off).
    pub(crate) refused_target: bool,
    /// Refused by the rate limit.
    pub(crate) limited: bool,
    /// Its side was forced by a cohort, not the split: counted apart.
    pub(crate) cohort: bool,
    /// Refused before routing: a request no hop could frame without doubt.
    pub(crate) refused: Option<Refusal>,
    /// The request's body was refused as it streamed (it was routed, and is logged).
    pub(crate) body_refused: Option<Refusal>,
    /// Attempts so far (connections tried), for retries and body replay.
    pub(crate) attempts: usize,
    pub(crate) connect_failures: usize,
    /// The peer of the current attempt, and when the attempt started.
    pub(crate) peer: usize,
    pub(crate) attempt_started: Instant,
    /// Time from sending the request to the upstream's response head.
    pub(crate) upstream_ms: Option<f64>,
    /// Set when a target's 502–504 answer was turned into a retry on legacy (Pingora's
    /// path: the retry is decided in one callback and carried out after another).
    pub(crate) retry_on_legacy: bool,
    /// A gRPC call (`content-type: application/grpc*`), and the status it ended with.
    pub(crate) grpc: bool,
    pub(crate) grpc_status: Option<u8>,
    /// The call is one the route's `fallback_methods` names: retried on legacy after the
    /// target failed it (UNAVAILABLE before any message included).
    pub(crate) grpc_retry: bool,
    /// When the call's `grpc-timeout` runs out.
    pub(crate) deadline: Option<Instant>,
    /// Present when this request is mirrored.
    pub(crate) shadow: Option<Box<ShadowCtx>>,
    pub(crate) shadowed: bool,
    /// Counts this request as in progress until it is finished for the client, so that
    /// shadow copies wait for a moment without any (`shadow::quiet`).
    pub(crate) busy: Option<Busy>,
}

impl Ctx {
    pub fn new(busy: Option<Busy>) -> Ctx {
        let now = Instant::now();
        Ctx {
            snapshot: None,
            route: None,
            backend: Backend::Legacy,
            upstream: 0,
            client: None,
            request_id: HeaderValue::from_static(""),
            scheme: "http",
            started: now,
            fallback: None,
            target_failed: None,
            refused_target: false,
            limited: false,
            cohort: false,
            refused: None,
            body_refused: None,
            attempts: 0,
            connect_failures: 0,
            peer: 0,
            attempt_started: now,
            upstream_ms: None,
            retry_on_legacy: false,
            grpc: false,
            grpc_status: None,
            grpc_retry: false,
            deadline: None,
            shadow: None,
            shadowed: false,
            busy,
        }
    }

    pub(crate) fn decided(&self) -> Option<(&Snapshot, &CompiledRoute)> {
        let snap = self.snapshot.as_deref()?;
        Some((snap, snap.route(self.route)))
    }

    /// A new attempt on `peer` of the current upstream.
    pub(crate) fn begin_attempt(&mut self, peer: usize) {
        self.attempts += 1;
        self.peer = peer;
        self.attempt_started = Instant::now();
        self.upstream_ms = None;
    }

    /// The upstream's response head arrived.
    pub(crate) fn upstream_answered(&mut self) {
        self.upstream_ms = Some(self.attempt_started.elapsed().as_secs_f64() * 1000.0);
    }
}

impl Proxy {
    /// Moves a target-bound request to legacy and counts why.
    pub(crate) fn fall_back(&self, ctx: &mut Ctx, route: &CompiledRoute, reason: FallbackReason) {
        route.metrics.record_fallback(&self.metrics, reason);
        ctx.target_failed = Some(ctx.started.elapsed());
        ctx.backend = Backend::Legacy;
        ctx.upstream = route.legacy;
        ctx.fallback = Some(reason);
    }

    /// After a failed attempt (already observed by the caller): asks `attempt::next` and,
    /// when it hands the request to legacy, records the fallback. `replayable`: the
    /// request can be sent again (body held, nothing written to the client).
    pub(crate) fn after_failure(
        &self,
        ctx: &mut Ctx,
        failed: Failed,
        method: &Method,
        replayable: bool,
    ) -> Next {
        let Some(snap) = ctx.snapshot.clone() else {
            return Next::Fail(502);
        };
        let route = snap.route(ctx.route);
        if matches!(failed, Failed::Connect { .. }) {
            ctx.connect_failures += 1;
        }
        let standing = Standing {
            on_target: ctx.backend == Backend::Target,
            falls_back: route.falls_back(),
            retries_method: if ctx.grpc {
                ctx.grpc_retry
            } else {
                route.retries_method(method)
            },
            replayable,
            attempts: ctx.attempts,
            connect_failures: ctx.connect_failures,
            peers: snap.upstream(ctx.upstream).peer_count(),
        };
        let next = attempt::next(&standing, failed);
        if let Next::FallBack(reason) = next {
            self.fall_back(ctx, route, reason);
        }
        next
    }
}
