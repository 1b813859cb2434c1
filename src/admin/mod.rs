//! The admin listener: health, Prometheus metrics and the JSON API. It runs on its own
//! Pingora service and runtime, so nothing here can slow the data path; changes it asks
//! for go through the control plane like any other.

pub mod bodies;
pub mod explain;
pub mod openapi;
pub mod origin;
mod ramps;
pub mod status;
pub mod tables;
pub mod tokens;

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::control::audit::{Source, Who};
use crate::control::{Control, ControlError, Outcome, Selection};
use crate::model::Trigger;
use crate::routes::split::percent_to_bp;
use crate::shadow::ShadowShared;
use bodies::{Diffs, ErrorBody, NotPersisted, PercentBody, ReasonBody, ReloadRefused, Reloaded};
use tokens::{Tokens, Verdict};

/// The migration dashboard, served at `/`.
const DASHBOARD: &str = include_str!("dashboard.html");

/// An actor's name is cut to this many characters in the audit log.
const MAX_ACTOR: usize = 64;
/// Admin request bodies are small JSON documents, but for a route table.
const MAX_BODY: usize = 64 * 1024;
const MAX_TABLE_BODY: usize = 2 * crate::control::tables::MAX_TABLE_BYTES + 64 * 1024;
/// Sent by `banyan` commands so the audit log can tell them from other API clients.
pub const CLIENT_HEADER: &str = "x-banyan-client";
/// Who acts, as the CLI names them (`--actor`, `BANYAN_ACTOR`, the OS user): for the audit.
pub const ACTOR_HEADER: &str = "x-banyan-actor";

pub struct AdminApp {
    control: Arc<Control>,
    /// The data path's shadow service, read for status and the diff log.
    shadow: Arc<ShadowShared>,
    tokens: Tokens,
    /// Where the admin API listens: a tokenless API answers only requests that name it.
    listen: std::net::SocketAddr,
}

/// One admin request, as plain data.
pub struct AdminRequest {
    pub method: Method,
    pub path: String,
    /// The query string, without '?'.
    pub query: String,
    pub authorization: Option<Vec<u8>>,
    pub from_cli: bool,
    /// Who the client says is acting (`x-banyan-actor`), for the audit log.
    pub actor: Option<String>,
    pub body: Vec<u8>,
    pub host: Option<Vec<u8>>,
    pub origin: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
}

impl AdminApp {
    pub fn new(
        control: Arc<Control>,
        shadow: Arc<ShadowShared>,
        tokens: Tokens,
        listen: std::net::SocketAddr,
    ) -> Self {
        AdminApp {
            control,
            shadow,
            tokens,
            listen,
        }
    }
}

/// An optional JSON body: empty means the defaults.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    raw: &[u8],
) -> Result<T, serde_json::Error> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw)
}

fn bad_body(e: serde_json::Error) -> Response<Vec<u8>> {
    json_error(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}"))
}

/// How long an override change waits for the fleet's replicas to apply it.
pub(crate) const FLEET_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn outcome(control: &Control, result: Result<Outcome, ControlError>) -> Response<Vec<u8>> {
    match result {
        Ok(o) if o.persist_error.is_some() => {
            let err = o.persist_error.clone().unwrap_or_default();
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &NotPersisted {
                    error: format!("applied in this process, but not persisted: {err}"),
                    applied: true,
                    version: o.version,
                    changes: o.changes,
                },
            )
        }
        Ok(mut o) => {
            if control.etcd.is_some() && o.revision > 0 {
                // Answered once every live replica serves the change, or after the wait.
                o.fleet = Some(control.store.wait_applied(o.revision, FLEET_WAIT));
            }
            json(StatusCode::OK, &o)
        }
        Err(e @ ControlError::UnknownRoute(_)) => json_error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ ControlError::NoTarget(_)) => json_error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ ControlError::Conflict(_)) => json_error(StatusCode::CONFLICT, &e.to_string()),
    }
}

/// Routes one request. Blocking (overrides are fsync'ed before the answer), so the
/// service runs it off the async threads. `listen` is the admin's address: without a
/// token, requests from other sites or through other names are refused (`origin`).
pub fn handle(
    control: &Control,
    shadow: &ShadowShared,
    tokens: &Tokens,
    listen: std::net::SocketAddr,
    req: &AdminRequest,
) -> Response<Vec<u8>> {
    let path = req.path.as_str();
    if tokens.is_empty() {
        let seen = origin::Seen {
            method: &req.method,
            path,
            host: req.host.as_deref(),
            origin: req.origin.as_deref(),
            content_type: req.content_type.as_deref(),
        };
        if let Err(why) = origin::check(&seen, listen) {
            let status = match why {
                origin::Foreign::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                origin::Foreign::Host | origin::Foreign::Origin => StatusCode::FORBIDDEN,
            };
            return json_error(status, &why.to_string());
        }
    }
    let token = match tokens.check(req.authorization.as_deref()) {
        Verdict::Refused if path.starts_with("/api/") => {
            return json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
        }
        Verdict::Named(name) => Some(name),
        Verdict::Open | Verdict::Refused => None,
    };
    let source = Who {
        source: if req.from_cli {
            Source::Cli
        } else {
            Source::Api
        },
        actor: req.actor.clone(),
        token,
        here_only: req.method == Method::POST
            && form_urlencoded::parse(req.query.as_bytes())
                .any(|(k, v)| k == "direct" && (v == "true" || v == "1")),
    };
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let post = req.method == Method::POST;
    match path {
        "/" | "/index.html" if get => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            dashboard(control, shadow, tokens).into_bytes(),
        ),
        "/healthz" if get && !control.is_ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            b"starting\n".to_vec(),
        ),
        "/healthz" if get => text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            b"ok\n".to_vec(),
        ),
        "/metrics" if get => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            control.metrics.render(),
        ),
        "/api/v1/status" if get => json(StatusCode::OK, &status::build(control, shadow)),
        "/api/v1/diffs" if get => diffs(control, shadow, &req.query),
        "/api/v1/explain" if get => explain_request(control, &req.query),
        "/api/v1/openapi.json" if get => json(StatusCode::OK, &*openapi::DOCUMENT),
        "/api/v1/history" if get => json(StatusCode::OK, &control.rates.history.document()),
        "/api/v1/fleet" if get => json(StatusCode::OK, &control.store.fleet()),
        "/api/v1/tables" if get => tables::history(control),
        "/api/v1/tables" if post => tables::push(control, req, &source),
        "/api/v1/audit" if get => tables::audit(control, &req.query),
        "/api/v1/reload" if post => match control.reload(source.clone(), "reload requested") {
            Ok(generation) => json(StatusCode::OK, &Reloaded { generation }),
            Err(e) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ReloadRefused {
                    error: "the route files have errors; the last good routes keep serving"
                        .to_string(),
                    errors: e.errors,
                },
            ),
        },
        "/api/v1/rollback" if post => match optional_body::<ReasonBody>(&req.body) {
            Ok(b) => outcome(
                control,
                control.rollback(
                    &Selection::All,
                    &reason_or(b.reason, "rollback of all routes"),
                    source.clone(),
                    Trigger::Manual,
                ),
            ),
            Err(e) => bad_body(e),
        },
        "/api/v1/resume" if post => {
            outcome(control, control.resume(&Selection::All, source.clone()))
        }
        "/healthz"
        | "/metrics"
        | "/api/v1/status"
        | "/api/v1/diffs"
        | "/api/v1/explain"
        | "/api/v1/openapi.json"
        | "/api/v1/reload"
        | "/api/v1/rollback"
        | "/api/v1/resume"
        | "/api/v1/fleet"
        | "/api/v1/tables"
        | "/api/v1/audit" => json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        p if p.starts_with("/api/v1/tables/") => {
            tables::one(control, req, &p["/api/v1/tables/".len()..], &source)
        }
        _ => route_action(control, req, &source),
    }
}

/// The dashboard's page. Without a token (loopback only) the first status and history are
/// embedded, so the first paint has data; with one, the page holds none and reads
/// everything from `/api/` with the token the person enters.
fn dashboard(control: &Control, shadow: &ShadowShared, tokens: &Tokens) -> String {
    if !tokens.is_empty() {
        return DASHBOARD.to_string();
    }
    let initial = serde_json::json!({
        "status": status::build(control, shadow),
        "history": control.rates.history.document(),
    });
    // Inside <script>, a "</" could end the element early; `<` only occurs in JSON
    // strings, where \u003c is the same character.
    let data = initial.to_string().replace('<', "\\u003c");
    DASHBOARD.replacen(
        "<!--initial-->",
        &format!("<script id=\"initial\" type=\"application/json\">{data}</script>"),
        1,
    )
}

/// Mismatches answered per call unless `limit` says otherwise.
const DEFAULT_DIFFS: usize = 50;

/// `GET /api/v1/diffs?route=&limit=`: the newest mismatches first.
fn diffs(control: &Control, shadow: &ShadowShared, query: &str) -> Response<Vec<u8>> {
    let mut route = None;
    let mut limit = DEFAULT_DIFFS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "route" if !value.is_empty() => route = Some(value),
            "route" => {}
            "limit" => match value.parse::<usize>() {
                Ok(n) if n > 0 => limit = n.min(crate::shadow::difflog::RECENT),
                _ => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        &format!("limit `{value}` is not a positive number"),
                    )
                }
            },
            other => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!("unknown parameter `{other}` (expected route, limit)"),
                )
            }
        }
    }
    if let Some(name) = route {
        let snap = control.snapshot();
        if !snap.routes.iter().any(|r| r.name == name) {
            return json_error(StatusCode::NOT_FOUND, &format!("no route named `{name}`"));
        }
    }
    let recent = shadow.diffs.recent(route, limit);
    json(
        StatusCode::OK,
        &Diffs {
            diffs: recent.iter().map(|d| (**d).clone()).collect(),
            file: shadow.diffs.path().display().to_string(),
        },
    )
}

/// `GET /api/v1/explain`: the data path's decision on the described request, now.
fn explain_request(control: &Control, query: &str) -> Response<Vec<u8>> {
    let snap = control.snapshot();
    match explain::Query::parse(query, &explain::route_methods(&snap)) {
        Ok(q) => json(StatusCode::OK, &explain::explain(&snap, &q, true)),
        Err(e) => json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

fn reason_or(reason: Option<String>, default: &str) -> String {
    reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `/api/v1/routes/{name}/{percent|rollback|resume}`.
fn route_action(control: &Control, req: &AdminRequest, source: &Who) -> Response<Vec<u8>> {
    let Some(rest) = req.path.strip_prefix("/api/v1/routes/") else {
        return json_error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    if let Some(answer) = ramps::handle(control, req, rest, source) {
        return answer;
    }
    let Some((name, action)) = rest.rsplit_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "no such endpoint");
    };
    if req.method != Method::POST {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let one = Selection::Routes(vec![name.to_string()]);
    match action {
        "percent" => {
            let b: PercentBody = match serde_json::from_slice(&req.body) {
                Ok(b) => b,
                Err(e) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        &format!("expected {{\"percent\": 25, \"reason\": \"...\"}}: {e}"),
                    )
                }
            };
            let Some(bp) = percent_to_bp(b.percent) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "percent {} is not between 0 and 100 with two decimals",
                        b.percent
                    ),
                );
            };
            let reason = reason_or(b.reason, &format!("set to {}%", b.percent));
            outcome(
                control,
                control.set_percent(name, bp, &reason, source.clone()),
            )
        }
        "rollback" => match optional_body::<ReasonBody>(&req.body) {
            Ok(b) => outcome(
                control,
                control.rollback(
                    &one,
                    &reason_or(b.reason, "rollback"),
                    source.clone(),
                    Trigger::Manual,
                ),
            ),
            Err(e) => bad_body(e),
        },
        "resume" => outcome(control, control.resume(&one, source.clone())),
        _ => json_error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let h = session.req_header();
        let mut req = AdminRequest {
            method: h.method.clone(),
            path: h.uri.path().to_string(),
            query: h.uri.query().unwrap_or("").to_string(),
            authorization: h
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec()),
            from_cli: h
                .headers
                .get(CLIENT_HEADER)
                .is_some_and(|v| v.as_bytes() == b"cli"),
            actor: h
                .headers
                .get(ACTOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(MAX_ACTOR).collect()),
            body: Vec::new(),
            host: field(h, header::HOST),
            origin: field(h, header::ORIGIN),
            content_type: field(h, header::CONTENT_TYPE),
        };
        let max_body = if req.path == "/api/v1/tables" {
            MAX_TABLE_BODY
        } else {
            MAX_BODY
        };
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if req.body.len() + chunk.len() > max_body {
                        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                    }
                    req.body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return json_error(StatusCode::BAD_REQUEST, &format!("unreadable body: {e}"))
                }
            }
        }
        let head = req.method == Method::HEAD;
        let control = Arc::clone(&self.control);
        let shadow = Arc::clone(&self.shadow);
        let tokens = self.tokens.clone();
        let listen = self.listen;
        let mut resp = match tokio::task::spawn_blocking(move || {
            crate::priority::lower_this_thread();
            handle(&control, &shadow, &tokens, listen, &req)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the request failed: {e}"),
            ),
        };
        if head {
            resp.body_mut().clear();
        }
        resp
    }
}

/// A request header's value (the first, when repeated).
fn field(h: &pingora::http::RequestHeader, name: header::HeaderName) -> Option<Vec<u8>> {
    h.headers.get(name).map(|v| v.as_bytes().to_vec())
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
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_string(),
    })
    .unwrap_or_else(|_| b"{}".to_vec());
    text(status, "application/json", body)
}
