//! The data path: Pingora's `ProxyHttp` callbacks. The routing decision is made once, in
//! `request_filter`, from one load of the snapshot; later callbacks read it from the
//! request context. Bodies stream through Pingora untouched.

pub mod headers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::metrics::Metrics;
use crate::routes::{Backend, RequestView};
use crate::shadow::compare::{Answer, SkipReason};
use crate::shadow::{Job, ShadowCtx, Shadower};
use crate::snapshot::{CompiledRoute, SharedSnapshot, Snapshot};

pub struct Proxy {
    shared: SharedSnapshot,
    metrics: Arc<Metrics>,
    shadower: Arc<Shadower>,
    debug_headers: bool,
    scheme: &'static str,
}

impl Proxy {
    pub fn new(
        shared: SharedSnapshot,
        metrics: Arc<Metrics>,
        shadower: Arc<Shadower>,
        debug_headers: bool,
    ) -> Self {
        Proxy {
            shared,
            metrics,
            shadower,
            debug_headers,
            scheme: "http",
        }
    }

    /// Starts capturing for a shadow copy when the route mirrors this request.
    fn sample_shadow(
        &self,
        session: &Session,
        route: &CompiledRoute,
        view: &RequestView,
    ) -> Option<Box<ShadowCtx>> {
        let plan = route.shadow.as_deref()?;
        if route.shadow_paused || !plan.samples(view) || session.is_upgrade_req() {
            return None;
        }
        let req = session.req_header();
        let cap = self.shadower.limits().max_body_bytes;
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            route
                .metrics
                .shadow
                .record_skip(&self.metrics, SkipReason::RequestTooLarge);
            return None;
        }
        Some(ShadowCtx::new(req.clone(), cap))
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
    started: Instant,
    fell_back: bool,
    connect_failures: usize,
    /// Present when this request is mirrored.
    shadow: Option<Box<ShadowCtx>>,
}

impl Ctx {
    fn decided(&self) -> Option<(&Snapshot, &CompiledRoute)> {
        let snap = self.snapshot.as_deref()?;
        Some((snap, snap.route(self.route)))
    }
}

fn no_decision() -> Box<Error> {
    Error::explain(
        ErrorType::InternalError,
        "request reached the upstream phase without a routing decision",
    )
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            snapshot: None,
            route: None,
            backend: Backend::Legacy,
            upstream: 0,
            client: None,
            request_id: HeaderValue::from_static(""),
            started: Instant::now(),
            fell_back: false,
            connect_failures: 0,
            shadow: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = self.shared.load_full();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        let view = RequestView::new(&req.method, &req.uri, &req.headers, client);
        let decision = snap.table.decide(&view);
        let route = snap.route(decision.route);
        ctx.backend = decision.backend();
        if ctx.backend == Backend::Legacy && decision.route.is_some() {
            ctx.shadow = self.sample_shadow(session, route, &view);
        }
        ctx.upstream = route.upstream_index(ctx.backend);
        ctx.route = decision.route;
        ctx.client = client;
        ctx.request_id = headers::request_id(req.headers.get(headers::X_REQUEST_ID));
        ctx.snapshot = Some(snap);
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if ctx.connect_failures > 0 {
            // A retry replays the request body through `request_body_filter`.
            if let Some(sh) = ctx.shadow.as_mut() {
                sh.request_body.reset();
            }
        }
        let (snap, _) = ctx.decided().ok_or_else(no_decision)?;
        Ok(Box::new(snap.upstream(ctx.upstream).pick().clone()))
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
        ctx.connect_failures += 1;
        if ctx.backend == Backend::Target && route.falls_back() && !ctx.fell_back {
            // Nothing was sent, so any method can go to legacy instead.
            route.metrics.record_fallback_connect(&self.metrics);
            ctx.backend = Backend::Legacy;
            ctx.upstream = route.legacy;
            ctx.fell_back = true;
            e.set_retry(true);
        } else if ctx.connect_failures < snap.upstream(ctx.upstream).peer_count() {
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
        let host = headers::original_host(&session.req_header().headers, &session.req_header().uri);
        headers::apply_forwarding(
            upstream_request,
            ctx.client,
            self.scheme,
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
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(sh) = ctx.shadow.as_mut() {
            let status = upstream_response.status.as_u16();
            if !(100..200).contains(&status) {
                sh.response = Some(Answer {
                    status,
                    headers: upstream_response.headers.clone(),
                    body: Bytes::new(),
                    complete: true,
                });
                sh.response_body.reset();
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(sh), Some(chunk)) = (ctx.shadow.as_mut(), body.as_ref()) {
            sh.response_body.push(chunk);
        }
        Ok(None)
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
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            respond_error(session, code, ctx).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// A client that leaves mid-request is normal traffic, counted as status class `none`;
    /// failures towards upstreams are still logged.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let shadow = ctx.shadow.take();
        let Some((_, route)) = ctx.decided() else {
            return;
        };
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        route.metrics.record(
            &self.metrics,
            ctx.backend,
            status,
            ctx.started.elapsed().as_secs_f64(),
        );
        if let Some(shadow) = shadow {
            if e.is_some() {
                route
                    .metrics
                    .shadow
                    .record_skip(&self.metrics, SkipReason::NoPrimary);
            } else if let (Some(snapshot), Some(index)) = (ctx.snapshot.clone(), ctx.route) {
                self.shadower.dispatch(Job {
                    snapshot,
                    route: index,
                    client: ctx.client,
                    request_id: ctx.request_id.clone(),
                    ctx: shadow,
                });
            }
        }
    }
}

/// Writes the JSON error response; the connection is not reused afterwards.
async fn respond_error(session: &mut Session, code: u16, ctx: &Ctx) {
    let body = error_body(code, ctx);
    let Ok(mut resp) = ResponseHeader::build(code, Some(4)) else {
        return;
    };
    let ok = resp
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
fn error_body(code: u16, ctx: &Ctx) -> Bytes {
    let (route, upstream) = ctx
        .decided()
        .map(|(snap, r)| (r.name.as_str(), snap.upstream(ctx.upstream).name.as_str()))
        .unwrap_or(("", ""));
    let error = match code {
        502 => format!("upstream `{upstream}` is unavailable"),
        504 => format!("upstream `{upstream}` did not answer in time"),
        400 => "bad request".to_string(),
        _ => "the proxy could not complete the request".to_string(),
    };
    let body = serde_json::json!({
        "error": error,
        "route": route,
        "upstream": upstream,
        "request_id": ctx.request_id.to_str().unwrap_or(""),
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}
