//! Header rules of the request path, as pure functions over header maps: forwarding
//! headers, request ids, and hop-by-hop fields on responses. (Pingora already strips
//! hop-by-hop fields from upstream requests, including those a `Connection` header
//! nominates, and normalises WebSocket upgrades.)

use std::net::IpAddr;

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::framing::{protected, tokens};
use crate::routes::request::IpText;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_BANYAN_SHADOW: HeaderName = HeaderName::from_static("x-banyan-shadow");
pub const X_BANYAN_ROUTE: HeaderName = HeaderName::from_static("x-banyan-route");
pub const X_BANYAN_BACKEND: HeaderName = HeaderName::from_static("x-banyan-backend");
pub const X_BANYAN_SNAPSHOT: HeaderName = HeaderName::from_static("x-banyan-snapshot");
pub const X_BANYAN_FALLBACK: HeaderName = HeaderName::from_static("x-banyan-fallback");

const MAX_REQUEST_ID: usize = 200;

/// A header block that can be edited: a plain `HeaderMap` in tests, Pingora's request and
/// response headers (which keep header-name case in step) on the data path.
pub trait HeaderBlock {
    fn map(&self) -> &HeaderMap;
    /// `wire_name` is the name as written on the wire ("X-Forwarded-For"): static, so
    /// Pingora's case-preserving map takes it without a copy.
    fn set(&mut self, wire_name: &'static str, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

impl HeaderBlock for HeaderMap {
    fn map(&self) -> &HeaderMap {
        self
    }
    fn set(&mut self, wire_name: &'static str, value: HeaderValue) {
        if let Ok(name) = HeaderName::from_bytes(wire_name.as_bytes()) {
            self.insert(name, value);
        }
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
}

macro_rules! pingora_header_block {
    ($t:ty) => {
        impl HeaderBlock for $t {
            fn map(&self) -> &HeaderMap {
                &self.headers
            }
            fn set(&mut self, wire_name: &'static str, value: HeaderValue) {
                // Inserting a valid name and an already-valid value cannot fail.
                let _ = self.insert_header(wire_name, value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    };
}
pingora_header_block!(pingora::http::RequestHeader);
pingora_header_block!(pingora::http::ResponseHeader);

/// The client's request id if it is usable (visible ASCII, bounded length), else a new
/// UUID v4, so that every request can be followed through legacy, target and logs.
pub fn request_id(existing: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = existing {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c))
        {
            return v.clone();
        }
    }
    new_request_id()
}

pub fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `X-Forwarded-For` with the client appended to what earlier proxies wrote.
pub fn forwarded_for(existing: Option<&HeaderValue>, client: IpAddr) -> HeaderValue {
    let ip = IpText::new(client);
    let ip = ip.as_bytes();
    let mut value = Vec::with_capacity(existing.map_or(0, |v| v.len() + 2) + ip.len());
    if let Some(prev) = existing.filter(|p| !p.is_empty()) {
        value.extend_from_slice(prev.as_bytes());
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip);
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Sets the forwarding headers on a request bound upstream. `host` is the client's Host
/// (or HTTP/2 authority); `upstream_host` replaces the Host sent when the upstream sets one.
pub fn apply_forwarding(
    headers: &mut impl HeaderBlock,
    client: Option<IpAddr>,
    scheme: &'static str,
    host: Option<HeaderValue>,
    request_id: &HeaderValue,
) {
    if let Some(ip) = client {
        let xff = forwarded_for(headers.map().get(X_FORWARDED_FOR), ip);
        headers.set("X-Forwarded-For", xff);
    }
    headers.set("X-Forwarded-Proto", HeaderValue::from_static(scheme));
    if let Some(h) = host {
        headers.set("X-Forwarded-Host", h);
    }
    headers.set("X-Request-Id", request_id.clone());
    // Only banyan marks shadow copies; a client must not pose as one.
    if headers.map().contains_key(X_BANYAN_SHADOW) {
        headers.remove(&X_BANYAN_SHADOW);
    }
}

/// The Host a request carried: its `Host` header, or the HTTP/2 `:authority`.
pub fn original_host(headers: &HeaderMap, uri: &http::Uri) -> Option<HeaderValue> {
    headers.get(HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// Removes hop-by-hop fields from a response bound to the client: `Keep-Alive`,
/// `Proxy-Connection`, and every field the upstream's `Connection` header names except the
/// framing fields. Framing (`Connection`, `Transfer-Encoding`, `Content-Length`) and
/// `Upgrade` stay with Pingora, which frames the body for the client connection itself.
pub fn strip_response_hop_by_hop(headers: &mut impl HeaderBlock) {
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    for name in [KEEP_ALIVE, PROXY_CONNECTION] {
        if headers.map().contains_key(&name) {
            headers.remove(&name);
        }
    }
    if !headers.map().contains_key(CONNECTION) {
        return;
    }
    let nominated = connection_nominated(headers.map());
    for name in nominated {
        headers.remove(&name);
    }
}

/// The fields a `Connection` header names as hop-by-hop, besides its own tokens `close`,
/// `keep-alive` and `upgrade`, and never the framing fields or Host
/// (`framing::protected`).
pub fn connection_nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| tokens(v.as_bytes()))
        .filter(|t| {
            !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .filter(|n| !protected(n.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_usable() {
        let given = HeaderValue::from_static("req-123");
        assert_eq!(request_id(Some(&given)), given);
        let spaced = HeaderValue::from_static("has space");
        assert_ne!(request_id(Some(&spaced)), spaced);
        let long = HeaderValue::from_str(&"x".repeat(300)).expect("value");
        assert_ne!(request_id(Some(&long)), long);
        let fresh = request_id(None);
        assert_eq!(fresh.len(), 36);
        assert_eq!(fresh.as_bytes()[14], b'4', "UUID version 4");
        assert_ne!(request_id(None), fresh);
    }

    #[test]
    fn forwarded_for_appends() {
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        assert_eq!(forwarded_for(None, ip), "10.0.0.7");
        let prev = HeaderValue::from_static("203.0.113.1");
        assert_eq!(forwarded_for(Some(&prev), ip), "203.0.113.1, 10.0.0.7");
    }

    #[test]
    fn forwarding_headers_are_set_and_shadow_marks_removed() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        h.insert(X_BANYAN_SHADOW, HeaderValue::from_static("1"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        let id = HeaderValue::from_static("rid");
        apply_forwarding(
            &mut h,
            Some("127.0.0.1".parse().expect("ip")),
            "http",
            Some(HeaderValue::from_static("shop.example.com")),
            &id,
        );
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "shop.example.com");
        assert_eq!(h[X_REQUEST_ID], "rid");
        assert_eq!(h["traceparent"], "00-abc-def-01");
        assert!(h.get(X_BANYAN_SHADOW).is_none());
    }

    #[test]
    fn response_hop_by_hop_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Internal-Hop, Content-Length"),
        );
        h.insert("content-length", HeaderValue::from_static("12"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-internal-hop", HeaderValue::from_static("secret"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_response_hop_by_hop(&mut h);
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("proxy-connection").is_none());
        assert!(h.get("x-internal-hop").is_none());
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["content-length"], "12", "framing is never nominated away");
    }
}
