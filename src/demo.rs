//! Built-in demo upstreams for `banyan demo`: a small shop API that the "monolith" and
//! each extracted service answer alike, except for `served_by`, so a person can watch
//! the split move traffic without writing a server. One deliberate bug gives shadow
//! comparison something to find: the extracted service rounds the total of orders whose
//! id ends in 7 one cent up.

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

/// Request bodies of the demo are small JSON documents; more is refused.
const MAX_BODY: usize = 64 * 1024;

pub struct DemoUpstream {
    name: String,
}

impl DemoUpstream {
    pub fn new(name: &str) -> Self {
        DemoUpstream {
            name: name.to_string(),
        }
    }

    fn order(&self, id: u64) -> Value {
        let mut total_cents = 1999 + id * 250;
        if self.name != "monolith" && id % 10 == 7 {
            total_cents += 1;
        }
        json!({
            "id": id,
            "status": if id % 3 == 0 { "shipped" } else { "processing" },
            "items": [{"sku": format!("SKU-{:04}", id * 7 % 10_000), "quantity": 1 + id % 3}],
            "total_cents": total_cents,
            "served_by": self.name,
        })
    }

    /// The demo API. Pure over (method, path, body length) for tests.
    pub fn answer(&self, method: &Method, path: &str, body_len: usize) -> (StatusCode, Value) {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, [""]) => (
                StatusCode::OK,
                json!({
                    "service": self.name,
                    "endpoints": ["/api/orders", "/api/orders/{id}", "/api/users/{id}", "/healthz"],
                    "served_by": self.name,
                }),
            ),
            (&Method::GET, ["healthz"]) => (
                StatusCode::OK,
                json!({"status": "ok", "served_by": self.name}),
            ),
            (&Method::GET, ["api", "orders"]) => (
                StatusCode::OK,
                json!({"orders": (1..=3).map(|i| self.order(i)).collect::<Vec<_>>(), "served_by": self.name}),
            ),
            (&Method::POST, ["api", "orders"]) => (
                StatusCode::CREATED,
                json!({"id": 1000 + body_len as u64, "status": "created", "served_by": self.name}),
            ),
            (&Method::GET, ["api", "orders", id]) => match id.parse::<u64>() {
                Ok(id) => (StatusCode::OK, self.order(id)),
                Err(_) => (
                    StatusCode::NOT_FOUND,
                    json!({"error": "no such order", "served_by": self.name}),
                ),
            },
            (&Method::GET, ["api", "users", id]) => (
                StatusCode::OK,
                json!({"id": id, "name": format!("user {id}"), "served_by": self.name}),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                json!({"error": "not found", "served_by": self.name}),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for DemoUpstream {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let mut body_len = 0usize;
        let (status, value) = loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body_len += chunk.len();
                    if body_len > MAX_BODY {
                        break (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            json!({"error": "body too large"}),
                        );
                    }
                }
                Ok(None) => break self.answer(&method, &path, body_len),
                Err(_) => break (StatusCode::BAD_REQUEST, json!({"error": "unreadable body"})),
            }
        };
        let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
        body.push(b'\n');
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let len = resp.body().len();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, len.into());
        if let Ok(v) = header::HeaderValue::from_str(&self.name) {
            h.insert("x-served-by", v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_answer_alike_but_for_who_served() {
        let legacy = DemoUpstream::new("monolith");
        let target = DemoUpstream::new("orders");
        let (s1, mut a) = legacy.answer(&Method::GET, "/api/orders/42", 0);
        let (s2, mut b) = target.answer(&Method::GET, "/api/orders/42", 0);
        assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
        assert_eq!(a["served_by"], "monolith");
        assert_eq!(b["served_by"], "orders");
        a["served_by"] = Value::Null;
        b["served_by"] = Value::Null;
        assert_eq!(a, b);
        // The deliberate bug, for the walkthrough's shadow step.
        let (_, a) = legacy.answer(&Method::GET, "/api/orders/17", 0);
        let (_, b) = target.answer(&Method::GET, "/api/orders/17", 0);
        assert_eq!(
            b["total_cents"].as_u64(),
            a["total_cents"].as_u64().map(|c| c + 1)
        );
        assert_eq!(
            legacy.answer(&Method::GET, "/api/orders/x", 0).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            legacy.answer(&Method::POST, "/api/orders", 10).0,
            StatusCode::CREATED
        );
        assert_eq!(
            legacy.answer(&Method::DELETE, "/nothing", 0).0,
            StatusCode::NOT_FOUND
        );
    }
}
