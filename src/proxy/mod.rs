//! The data path: Pingora's `ProxyHttp` callbacks. The routing decision is made once, in
//! `request_filter`, from one load of the snapshot; later callbacks read it from the
//! request context. Bodies stream through Pingora untouched.

pub mod access_log;
pub mod checked;
pub mod fast;
pub mod follow;
pub mod listener;
pub mod strict;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::clock::now_ms;
use crate::compare::{Answer, SkipReason};
use crate::config::ClientLimits;
use crate::http1::framing::{self, BadFraming};
use crate::metrics::{FallbackReason, Metrics};
use crate::ratelimit;
use crate::routes::{Backend, RequestView};
use crate::shadow::copy::Original;
use crate::shadow::{Job, ShadowCtx, Shadower};
use crate::snapshot::{CompiledRoute, SharedSnapshot, Snapshot};
use crate::upstream::circuit::Admit;
use crate::upstream::forward as headers;
use crate::upstream::UpstreamPool;
use access_log::{AccessLog, Line};

#[derive(Clone)]
pub struct Proxy {
    shared: SharedSnapshot,
    metrics: Arc<Metrics>,
    shadower: Arc<Shadower>,
    access_log: Arc<AccessLog>,
    debug_headers: bool,
    limits: ClientLimits,
}

impl Proxy {
    pub fn new(
        shared: SharedSnapshot,
        metrics: Arc<Metrics>,
        shadower: Arc<Shadower>,
        access_log: Arc<AccessLog>,
        debug_headers: bool,
        limits: ClientLimits,
    ) -> Self {
        Proxy {
            shared,
            metrics,
            shadower,
            access_log,
            debug_headers,
            limits,
        }
    }

    /// Starts capturing for a shadow copy when the route mirrors this request.
    fn sample_shadow(
        &self,
        session: &Session,
        route: &CompiledRoute,
        view: &RequestView,
    ) -> Option<Box<ShadowCtx>> {
        if session.is_upgrade_req() {
            return None;
        }
        let req = session.req_header();
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let cap = self.shadow_cap(route, view, declared)?;
        Some(ShadowCtx::new(Original::Parsed(Box::new(req.clone())), cap))
    }

    /// The body cap for a shadow copy of this request, when the route mirrors it; a body
    /// known to be over the cap is counted as skipped instead, and a copy the shadow
    /// worker has no room for as dropped, before anything is captured for it.
    fn shadow_cap(
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

    /// Moves a target-bound request to legacy and counts why.
    fn fall_back(&self, ctx: &mut Ctx, route: &CompiledRoute, reason: FallbackReason) {
        route.metrics.record_fallback(&self.metrics, reason);
        ctx.target_failed = Some(ctx.started.elapsed());
        ctx.backend = Backend::Legacy;
        ctx.upstream = route.legacy;
        ctx.fallback = Some(reason);
    }

    /// An upstream answer whose framing is in doubt: counted, the upstream connection is
    /// not reused (an error ends the exchange), and the request is handled as a broken
    /// exchange: retried on legacy where the route allows, else a 502.
    fn bad_response(&self, session: &Session, ctx: &mut Ctx, bad: BadFraming) -> Box<Error> {
        self.metrics
            .bad_responses_total
            .with_label_values(&[bad.as_str()])
            .inc();
        let mut e = Error::explain(
            ErrorType::HTTPStatus(502),
            format!("the upstream's answer cannot be framed: {bad}"),
        );
        e.set_retry(false);
        if let Some(snap) = ctx.snapshot.clone() {
            let route = snap.route(ctx.route);
            snap.upstream(ctx.upstream).observe(ctx.peer, false, false);
            if ctx.may_retry_on_legacy(route, &session.req_header().method)
                && !session.as_ref().retry_buffer_truncated()
            {
                self.fall_back(ctx, route, FallbackReason::Error);
                ctx.retry_on_legacy = true;
            }
        }
        e
    }

    /// Why the target cannot take a request now: `Some(reason)` when its circuit is open
    /// or health checks have every peer out of rotation.
    fn target_unavailable(pool: &UpstreamPool) -> Option<FallbackReason> {
        if pool.all_checked_down() {
            return Some(FallbackReason::Unhealthy);
        }
        match pool.admit() {
            Admit::Open => Some(FallbackReason::CircuitOpen),
            Admit::Closed | Admit::Probe => None,
        }
    }
}

/// Per-request state: the snapshot the request started with and the decision taken on it.
pub struct Ctx {
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    backend: Backend,
    upstream: usize,
    client: Option<IpAddr>,
    request_id: HeaderValue,
    /// `https` when the client came through the TLS listener.
    scheme: &'static str,
    started: Instant,
    /// Why a target-bound request is served by legacy.
    fallback: Option<FallbackReason>,
    /// When the target failed this request (time since start), if it did.
    target_failed: Option<Duration>,
    /// Answered by banyan itself without asking the target (circuit open, fallback off).
    refused_target: bool,
    /// Refused by the rate limit.
    limited: bool,
    /// Refused before routing: a request no hop could frame without doubt.
    refused: Option<framing::Refusal>,
    /// The request's body was refused as it streamed (it was routed, and is logged).
    body_refused: Option<framing::Refusal>,
    /// Attempts so far (connections tried), for retries and body replay.
    attempts: usize,
    connect_failures: usize,
    /// The peer of the current attempt, and when the attempt started.
    peer: usize,
    attempt_started: Instant,
    /// Time from sending the request to the upstream's response header.
    upstream_ms: Option<f64>,
    /// Set when `upstream_response_filter` turned a target's 502/503/504 into a retry.
    retry_on_legacy: bool,
    /// Present when this request is mirrored.
    shadow: Option<Box<ShadowCtx>>,
    shadowed: bool,
    /// Counts this request as in progress until it is finished for the client, so that
    /// shadow copies wait for a moment without any (`shadow::quiet`).
    busy: Option<crate::shadow::quiet::Busy>,
}

impl Ctx {
    fn decided(&self) -> Option<(&Snapshot, &CompiledRoute)> {
        let snap = self.snapshot.as_deref()?;
        Some((snap, snap.route(self.route)))
    }

    /// A new attempt on `peer` of the current upstream.
    fn begin_attempt(&mut self, peer: usize) {
        self.attempts += 1;
        self.peer = peer;
        self.attempt_started = Instant::now();
        self.upstream_ms = None;
    }

    /// The upstream's response head arrived.
    fn upstream_answered(&mut self) {
        self.upstream_ms = Some(self.attempt_started.elapsed().as_secs_f64() * 1000.0);
    }

    /// A target that could not be connected to may hand the request to legacy: nothing was
    /// sent, so whatever the method.
    fn may_fall_back_on_connect(&self, route: &CompiledRoute) -> bool {
        self.backend == Backend::Target && route.falls_back() && self.fallback.is_none()
    }

    /// A target that failed after the request was sent (502–504, an error, a timeout) may
    /// have it retried on legacy, for the route's listed methods and once only.
    fn may_retry_on_legacy(&self, route: &CompiledRoute, method: &http::Method) -> bool {
        self.backend == Backend::Target && self.fallback.is_none() && route.retries_method(method)
    }
}

fn no_decision() -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        "request reached the upstream phase without a routing decision",
    )
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
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
            refused: None,
            body_refused: None,
            attempts: 0,
            connect_failures: 0,
            peer: 0,
            attempt_started: now,
            upstream_ms: None,
            retry_on_legacy: false,
            shadow: None,
            shadowed: false,
            busy: Some(self.shadower.busy()),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Pingora sets each HTTP/1 request's keep-alive from the client's own `Keep-Alive`
        // (unbounded by default): banyan's limits apply instead, and bytes a client
        // pipelines behind this request are kept for the next one, not refused.
        let downstream = session.as_downstream_mut();
        downstream.set_keepalive(Some(listener::seconds(self.limits.keepalive_timeout)));
        downstream.set_pipelining_enabled(true);
        downstream.set_write_timeout(Some(self.limits.send_timeout));
        if let Err(why) = strict::check_request(session.as_downstream()) {
            self.metrics
                .bad_requests_total
                .with_label_values(&[why.as_str()])
                .inc();
            ctx.refused = Some(why);
            respond_error(session, why.status(), ctx, None).await;
            return Ok(true);
        }
        let snap = self.shared.load_full();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        ctx.request_id = headers::request_id(req.headers.get(headers::X_REQUEST_ID));
        ctx.client = client;
        if session.digest().is_some_and(|d| d.ssl_digest.is_some()) {
            ctx.scheme = "https";
        }
        if session.is_upgrade_req() {
            // A tunnel for as long as it is open: counted as a request in progress, it
            // would leave shadow copies no quiet moment to wait for.
            ctx.busy = None;
        }
        let view = RequestView::new(&req.method, &req.uri, &req.headers, client);
        let decision = snap.table.decide(&view);
        let route = snap.route(decision.route);
        ctx.route = decision.route;
        if let Some(limiter) = &route.limiter {
            if let Err(wait) = limiter.check(limiter.key(&req.headers, client)) {
                ctx.limited = true;
                ctx.snapshot = Some(snap);
                let retry = ratelimit::retry_after_seconds(wait);
                respond_error(session, 429, ctx, Some(retry)).await;
                return Ok(true);
            }
        }
        ctx.backend = decision.backend();
        ctx.upstream = route.upstream_index(ctx.backend);
        if ctx.backend == Backend::Target {
            if let Some(reason) = Self::target_unavailable(snap.upstream(ctx.upstream)) {
                if route.falls_back() {
                    self.fall_back(ctx, route, reason);
                } else {
                    ctx.refused_target = true;
                    ctx.snapshot = Some(snap);
                    respond_error(session, 503, ctx, None).await;
                    return Ok(true);
                }
            }
        } else if decision.route.is_some() {
            ctx.shadow = self.sample_shadow(session, route, &view);
        }
        ctx.snapshot = Some(snap);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.attempts > 0 {
            // A retry replays the request body through `request_body_filter`.
            if let Some(sh) = ctx.shadow.as_mut() {
                sh.request_body.reset();
            }
        }
        let (snap, _) = ctx.decided().ok_or_else(no_decision)?;
        let pool = snap.upstream(ctx.upstream);
        let (i, peer) = pool.pick_or_any();
        let peer = Box::new(peer.clone());
        ctx.begin_attempt(i);
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(snap) = ctx.snapshot.clone() else {
            return e;
        };
        let route = snap.route(ctx.route);
        let pool = snap.upstream(ctx.upstream);
        pool.observe(ctx.peer, false, false);
        ctx.connect_failures += 1;
        if matches!(
            e.etype(),
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError
        ) {
            let text = e.to_string();
            let what = if text.contains("invalid peer certificate") {
                "certificate verification failed"
            } else {
                "TLS handshake failed"
            };
            tracing::error!(
                upstream = %pool.name,
                peer = %pool.config.peers.get(ctx.peer).map_or("", |p| p.spec.as_str()),
                "TLS to the upstream: {what}: {text}"
            );
        }
        if ctx.may_fall_back_on_connect(route) {
            self.fall_back(ctx, route, FallbackReason::Connect);
            e.set_retry(true);
        } else if ctx.connect_failures < pool.peer_count() {
            // Another peer of the same upstream may take it.
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (snap, _) = ctx.decided().ok_or_else(no_decision)?;
        strict::reframe_request(session.req_header(), upstream_request);
        let host = headers::original_host(&session.req_header().headers, &session.req_header().uri);
        headers::apply_forwarding(
            upstream_request,
            ctx.client,
            ctx.scheme,
            host,
            &ctx.request_id,
        );
        if let Some(h) = &snap.upstream(ctx.upstream).host {
            upstream_request.insert_header(http::header::HOST, h.clone())?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let (Some(sh), Some(chunk)) = (ctx.shadow.as_mut(), body.as_ref()) {
            sh.request_body.push(chunk);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if (100..200).contains(&status) {
            return Ok(());
        }
        ctx.upstream_answered();
        let head_request = session.req_header().method == http::Method::HEAD;
        if let Err(bad) = strict::check_response(upstream_response, head_request) {
            return Err(self.bad_response(session, ctx, bad));
        }
        let retry_on_legacy = ctx.decided().is_some_and(|(snap, route)| {
            snap.upstream(ctx.upstream)
                .observe(ctx.peer, true, status < 500);
            matches!(status, 502..=504)
                && ctx.may_retry_on_legacy(route, &session.req_header().method)
                && !session.as_ref().retry_buffer_truncated()
        });
        if retry_on_legacy {
            if let Some(snap) = ctx.snapshot.clone() {
                self.fall_back(ctx, snap.route(ctx.route), FallbackReason::Status);
            }
            ctx.retry_on_legacy = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "the target failed; retrying on legacy",
            ));
        }
        if let Some(sh) = ctx.shadow.as_mut() {
            sh.response = Some(Answer {
                status,
                headers: upstream_response.headers.clone(),
                body: Bytes::new(),
                complete: true,
            });
            sh.response_body.reset();
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if let (Some(sh), Some(chunk)) = (ctx.shadow.as_mut(), body.as_ref()) {
            sh.response_body.push(chunk);
        }
        if let Some((snap, _)) = ctx.decided() {
            if let Some(total) = snap.upstream(ctx.upstream).config.total_timeout {
                if ctx.attempt_started.elapsed() > total {
                    let mut e = Error::explain(
                        ErrorType::ReadTimedout,
                        "the upstream's total_timeout passed while its body was streaming",
                    );
                    e.set_retry(false);
                    return Err(e.into_up());
                }
            }
        }
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {peer}"));
        if checked::refusal_in(&e).is_some() {
            // The client's own bytes were refused: nothing to try again.
            e.set_retry(false);
            return e;
        }
        if std::mem::take(&mut ctx.retry_on_legacy) {
            e.set_retry(true);
            return e;
        }
        // Pingora's policy: only idempotent requests whose body can be replayed, and a
        // reused connection's failure (a stale keep-alive) is retried once.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if replayable {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        if e.esource() != &ErrorSource::Upstream {
            return e;
        }
        let Some(snap) = ctx.snapshot.clone() else {
            return e;
        };
        let route = snap.route(ctx.route);
        let stale_keepalive = client_reused && e.retry();
        if !stale_keepalive && ctx.upstream_ms.is_none() {
            snap.upstream(ctx.upstream).observe(ctx.peer, false, false);
        }
        if !stale_keepalive
            && session.response_written().is_none()
            && ctx.may_retry_on_legacy(route, &session.req_header().method)
            && !session.as_ref().retry_buffer_truncated()
        {
            let reason = if is_timeout(&e) {
                FallbackReason::Timeout
            } else {
                FallbackReason::Error
            };
            self.fall_back(ctx, route, reason);
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        headers::strip_response_hop_by_hop(response);
        if !response.headers.contains_key(headers::X_REQUEST_ID) {
            response.insert_header(headers::X_REQUEST_ID, ctx.request_id.clone())?;
        }
        if self.debug_headers {
            if let Some((snap, route)) = ctx.decided() {
                let name = route.name_header.clone();
                response.insert_header(headers::X_BANYAN_ROUTE, name)?;
                response.insert_header(headers::X_BANYAN_BACKEND, ctx.backend.as_str())?;
                response.insert_header(headers::X_BANYAN_SNAPSHOT, snap.version)?;
                if let Some(reason) = ctx.fallback {
                    response.insert_header(headers::X_BANYAN_FALLBACK, reason.as_str())?;
                }
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError
                    | ErrorType::ReadError
                    | ErrorType::ConnectionClosed
                    | ErrorType::WriteTimedout
                    | ErrorType::ReadTimedout => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // A body the client sent that banyan's rules refuse, stopped as Pingora read it.
        let code = match checked::refusal_in(e) {
            Some(follow::Stop::Refused(why)) => {
                self.metrics
                    .bad_requests_total
                    .with_label_values(&[why.as_str()])
                    .inc();
                ctx.body_refused = Some(why);
                why.status()
            }
            _ => code,
        };
        if code > 0 && session.response_written().is_none() {
            respond_error(session, code, ctx, None).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Pingora's error lines name the request this way: no query string (it may carry
    /// tokens), the request id to find it in the access log.
    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .map(HeaderValue::as_bytes);
        crate::logging::request_summary(
            req.method.as_str(),
            req.uri.path(),
            host.or(req.uri.host().map(str::as_bytes)),
            ctx.request_id.as_bytes(),
        )
    }

    /// A client that leaves mid-request, or is cut by a client limit (counted in
    /// `banyan_client_timeouts_total`), is normal traffic, counted as status class `none`;
    /// failures towards upstreams are still logged.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed
                    | ErrorType::ReadError
                    | ErrorType::WriteError
                    | ErrorType::WriteTimedout
                    | ErrorType::ReadTimedout
            )
    }

    /// A fallback is counted (`banyan_fallbacks_total`) and marked in the access log; a
    /// warning per request would flood the log exactly when a target is down. The
    /// breaker opening and peers leaving rotation are logged once each instead.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &Ctx,
        _error: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        context == ProxyWarnLogContext::UpstreamRetry && ctx.fallback.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if e.is_some_and(|e| {
            e.esource() == &ErrorSource::Downstream && e.etype() == &ErrorType::WriteTimedout
        }) {
            self.metrics
                .client_timeouts_total
                .with_label_values(&["send"])
                .inc();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let ending = Ending {
            status,
            failed: e.is_some(),
            upstream_failed: e.is_some_and(|e| e.esource() == &ErrorSource::Upstream),
            transport: "pingora",
        };
        self.finish(ctx, ending, &req.method, req.uri.path());
    }
}

/// How a request ended, for the bookkeeping both paths share.
#[derive(Debug, Clone, Copy)]
struct Ending {
    /// The status the client got; 0 when it got none.
    status: u16,
    /// The exchange failed somewhere (the primary's answer is not whole).
    failed: bool,
    /// It failed on the upstream's side.
    upstream_failed: bool,
    /// `banyan` or `pingora`, for the access log.
    transport: &'static str,
}

impl Proxy {
    /// A finished request's metrics, guard window, shadow hand-off and access log line.
    fn finish(&self, ctx: &mut Ctx, end: Ending, method: &http::Method, path: &str) {
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
        let status = end.status;
        let elapsed = ctx.started.elapsed();
        if ctx.limited {
            route.metrics.record_rate_limited(&self.metrics);
        } else {
            route
                .metrics
                .record(&self.metrics, ctx.backend, status, elapsed.as_secs_f64());
        }
        if let Some(window) = &route.guard {
            // The target's outcome for this request, if it had one: a failure when it fell
            // back or was refused, else the answer's class. A client that left before any
            // answer says nothing about the target.
            let outcome = if let Some(at) = ctx.target_failed {
                Some((
                    false,
                    (!matches!(
                        ctx.fallback,
                        Some(FallbackReason::CircuitOpen | FallbackReason::Unhealthy)
                    ))
                    .then_some(at),
                ))
            } else if ctx.refused_target {
                Some((false, None))
            } else if ctx.backend == Backend::Target && !ctx.limited {
                let upstream_failed = end.upstream_failed;
                (status != 0 || upstream_failed)
                    .then_some((status < 500 && !upstream_failed, Some(elapsed)))
            } else {
                None
            };
            if let Some((ok, latency)) = outcome {
                window.record(now_ms(), ok, latency);
            }
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
                status,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_ms: ctx.upstream_ms,
                fallback: ctx.fallback.map(FallbackReason::as_str),
                shadow: ctx.shadowed,
                transport: end.transport,
            });
        }
    }
}

/// Writes the JSON error response; the connection is not reused afterwards.
async fn respond_error(session: &mut Session, code: u16, ctx: &Ctx, retry_after: Option<u64>) {
    let body = error_body(code, ctx, retry_after);
    let Ok(mut resp) = ResponseHeader::build(code, Some(5)) else {
        return;
    };
    let ok = retry_after.is_none_or(|s| resp.insert_header(http::header::RETRY_AFTER, s).is_ok())
        && resp
            .insert_header(http::header::CONTENT_TYPE, "application/json")
            .is_ok()
        && resp
            .insert_header(http::header::CONTENT_LENGTH, body.len())
            .is_ok()
        && resp
            .insert_header(http::header::CACHE_CONTROL, "no-store")
            .is_ok()
        && resp
            .insert_header(headers::X_REQUEST_ID, ctx.request_id.clone())
            .is_ok();
    if ok {
        session.set_keepalive(None);
        if let Err(err) = session.write_error_response(resp, body).await {
            tracing::debug!("could not send the error response: {err}");
        }
    }
}

/// A short JSON error naming the route and the upstream; never request content.
fn error_body(code: u16, ctx: &Ctx, retry_after: Option<u64>) -> Bytes {
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
