//! Pingora's transport: the `ProxyHttp` callbacks, for every request banyan's own path
//! does not take (TLS and HTTP/2 clients, bodies that stream, upgrades, TLS upstreams).
//! They do Pingora's I/O and call the request's flow (`flow`) for every decision: the
//! decision is made once, in `request_filter`, from one load of the snapshot; later
//! callbacks read it from the request context. Bodies stream through Pingora untouched.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::flow::attempt::{Failed, Next};
use super::flow::decide::Admission;
use super::flow::outcome::Ending;
use super::flow::{grpc, Ctx};
use super::{checked, listener, strict, Proxy};
use crate::compare::Answer;
use crate::http1::follow;
use crate::routes::RequestView;
use crate::shadow::copy::Original;
use crate::shadow::ShadowCtx;
use crate::upstream::followed::{self, Stale};
use crate::upstream::forward as headers;
use errors::{is_timeout, no_decision, respond_error};

impl Proxy {
    /// Starts capturing for a shadow copy when the route mirrors this request.
    fn sample_shadow(
        &self,
        session: &Session,
        ctx: &Ctx,
        view: &RequestView,
    ) -> Option<Box<ShadowCtx>> {
        if session.is_upgrade_req() {
            return None;
        }
        let (_, route) = ctx.decided()?;
        let req = session.req_header();
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let cap = self.shadow_cap(route, view, declared)?;
        Some(ShadowCtx::new(Original::Parsed(Box::new(req.clone())), cap))
    }
}

mod errors;

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(Some(self.shadower.busy()))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Pingora sets each HTTP/1 request's keep-alive from the client's own `Keep-Alive`
        // (unbounded by default): banyan's limits apply instead, and bytes a client
        // pipelines behind this request are kept for the next one, not refused.
        let downstream = session.as_downstream_mut();
        downstream.set_keepalive(Some(listener::seconds(self.limits.keepalive_timeout)));
        downstream.set_pipelining_enabled(true);
        downstream.set_write_timeout(Some(self.limits.send_timeout));
        // 1xx the client did not ask for are not relayed (a 100 it asked for with
        // `Expect`, and 101, are), as on banyan's own path.
        downstream.set_ignore_info_resp(true);
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
        ctx.request_id =
            headers::request_id(req.headers.get(headers::X_REQUEST_ID).map(|v| v.as_bytes()));
        ctx.client = client;
        ctx.grpc = grpc::is_call(&req.headers);
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
        match self.admit(ctx, snap, decision, &view) {
            Admission::Proceed { mirror, .. } => {
                if ctx.grpc {
                    ctx.grpc_retry = ctx
                        .decided()
                        .is_some_and(|(_, r)| r.retries_call(req.uri.path()));
                    ctx.deadline = grpc::timeout_in(&req.headers).map(|t| ctx.started + t);
                }
                if mirror {
                    ctx.shadow = self.sample_shadow(session, ctx, &view);
                    if let Some(sh) = ctx.shadow.as_mut() {
                        sh.grpc = ctx.grpc;
                    }
                }
                Ok(false)
            }
            Admission::Limited { retry_after } => {
                respond_error(session, 429, ctx, Some(retry_after)).await;
                Ok(true)
            }
            Admission::Unavailable => {
                respond_error(session, 503, ctx, None).await;
                Ok(true)
            }
        }
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
        let mut peer = Box::new(peer.clone());
        if let Some(deadline) = ctx.deadline {
            // No wait towards the upstream outlasts the call's own deadline.
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let mut e =
                    Error::explain(ErrorType::HTTPStatus(504), "the call's grpc-timeout passed");
                e.set_retry(false);
                return Err(e);
            }
            let o = &mut peer.options;
            for t in [
                &mut o.read_timeout,
                &mut o.write_timeout,
                &mut o.connection_timeout,
                &mut o.total_connection_timeout,
            ] {
                *t = Some(t.map_or(left, |t| t.min(left)));
            }
        }
        ctx.begin_attempt(i);
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(snap) = ctx.snapshot.clone() else {
            return e;
        };
        let pool = snap.upstream(ctx.upstream);
        pool.observe(ctx.peer, false, false);
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
        let failed = Failed::Connect {
            timed_out: e.etype() == &ErrorType::ConnectTimedout,
        };
        // Nothing was sent: the request can go anywhere.
        match self.after_failure(ctx, failed, &session.req_header().method, true) {
            Next::OtherPeer | Next::FallBack(_) => e.set_retry(true),
            // Pingora's own verdict on the error stands.
            Next::PassOn | Next::Fail(_) => {}
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
        if ctx.grpc {
            // A trailers-only answer (an error before any message) says it in its head.
            ctx.grpc_status = grpc::status_in(&upstream_response.headers);
        }
        let head_request = session.req_header().method == http::Method::HEAD;
        if let Err(bad) = strict::check_response(upstream_response, head_request) {
            return Err(self.bad_response(session, ctx, bad.as_str(), &bad));
        }
        // UNAVAILABLE before any message is gRPC's 503.
        let unavailable = ctx.grpc && ctx.grpc_status == Some(grpc::UNAVAILABLE);
        if let Some((snap, _)) = ctx.decided() {
            snap.upstream(ctx.upstream)
                .observe(ctx.peer, true, status < 500 && !unavailable);
        }
        if matches!(status, 502..=504) || unavailable {
            let replayable = !session.as_ref().retry_buffer_truncated();
            let method = &session.req_header().method;
            let failed = Failed::Status(if unavailable { 503 } else { status });
            if let Next::FallBack(_) = self.after_failure(ctx, failed, method, replayable) {
                ctx.retry_on_legacy = true;
                return Err(Error::explain(
                    ErrorType::HTTPStatus(status),
                    "the target failed; retrying on legacy",
                ));
            }
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

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.grpc {
            if let Some(code) = grpc::status_in(trailers) {
                ctx.grpc_status = Some(code);
            }
        }
        // A gRPC answer's trailers are compared with its headers (`grpc-status`, metadata).
        if let Some(answer) = ctx.shadow.as_mut().and_then(|sh| sh.response.as_mut()) {
            answer.headers.extend(trailers.clone());
        }
        Ok(())
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
        if let Some(bad) = self.answer_refused(session, ctx, &e) {
            return bad;
        }
        // A connection banyan kept (`upstream::followed`) that was closed meanwhile is a
        // stale keep-alive, as one of Pingora's own would be.
        let client_reused = client_reused || followed::io_cause::<Stale>(&e).is_some();
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
        let stale_keepalive = client_reused && e.retry();
        if stale_keepalive {
            // Pingora sends it again on a new connection to the same peer.
            return e;
        }
        if ctx.upstream_ms.is_none() {
            snap.upstream(ctx.upstream).observe(ctx.peer, false, false);
        }
        let can_resend =
            session.response_written().is_none() && !session.as_ref().retry_buffer_truncated();
        let failed = Failed::Exchange {
            timed_out: is_timeout(&e),
        };
        let method = &session.req_header().method;
        if let Next::FallBack(_) = self.after_failure(ctx, failed, method, can_resend) {
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
        if response.status.is_informational() && response.status.as_u16() != 101 {
            // An interim answer (a 100 the client asked for): passed on as it came.
            return Ok(());
        }
        headers::strip_response_hop_by_hop(response);
        if !response.headers.contains_key(headers::X_REQUEST_ID) {
            response.insert_header(headers::X_REQUEST_ID, ctx.request_id.clone())?;
        }
        for (name, value) in self.debug_fields(ctx) {
            response.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = errors::status_for(e);
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
