//! The admin listener: health, Prometheus metrics and the JSON API. It runs on its own
//! Pingora service and runtime, so nothing here can slow the data path.

pub mod status;

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::snapshot::SharedSnapshot;

pub struct AdminApp {
    shared: SharedSnapshot,
    metrics: Arc<Metrics>,
    token: Option<String>,
}

impl AdminApp {
    pub fn new(shared: SharedSnapshot, metrics: Arc<Metrics>, token: Option<String>) -> Self {
        AdminApp {
            shared,
            metrics,
            token,
        }
    }

    /// Whether an `/api/` request carries the configured bearer token (always, without one).
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
            return false;
        };
        given.trim_ascii().ct_eq(token.as_bytes()).into()
    }

    /// Routes one request. Pure over (method, path, authorization) so it is testable.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Response<Vec<u8>> {
        if path.starts_with("/api/") && !self.authorized(authorization) {
            return json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
        match (method, path) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok\n".to_vec(),
            ),
            (&Method::GET | &Method::HEAD, "/metrics") => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            (&Method::GET | &Method::HEAD, "/api/v1/status") => {
                let snap = self.shared.load_full();
                json(StatusCode::OK, &status::build(&snap, &self.metrics))
            }
            (_, "/healthz" | "/metrics" | "/api/v1/status") => {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let auth = req
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        // Nothing served here reads a body; drain it so the connection stays usable.
        if let Err(e) = session.drain_request_body().await {
            tracing::debug!("admin: could not drain a request body: {e}");
        }
        let mut resp = self.handle(&method, &path, auth.as_deref());
        if method == Method::HEAD {
            resp.body_mut().clear();
        }
        resp
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Vec<u8>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            text(status, "application/json", body)
        }
        Err(e) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({ "error": message })
        .to_string()
        .into_bytes();
    text(status, "application/json", body)
}
