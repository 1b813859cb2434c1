//! The forwarding rules, once for every request banyan sends on: what it adds
//! (`X-Forwarded-*`, `X-Request-Id`, the shadow mark), what it never passes (hop-by-hop
//! fields, those a `Connection` header nominates except framing and Host, framing it
//! writes itself). Two forms of the same rules: `write_request` writes the bytes banyan's
//! own client sends (client requests on banyan's path, every shadow copy);
//! `apply_forwarding` edits the header Pingora sends on its path (Pingora strips the
//! hop-by-hop fields there). Pure.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http1::framing::{hop_by_hop, protected, tokens};
use crate::http1::{connection_tokens, format_len, push_header, Line};
use crate::routes::request::IpText;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_BANYAN_SHADOW: HeaderName = HeaderName::from_static("x-banyan-shadow");

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

/// What banyan adds to a request it forwards (or to a shadow copy of it).
#[derive(Clone, Copy)]
pub struct Forwarding<'a> {
    pub client: Option<IpAddr>,
    pub scheme: &'static str,
    pub request_id: &'a HeaderValue,
    /// Replaces the client's Host when the upstream sets one.
    pub upstream_host: Option<&'a HeaderValue>,
    /// A shadow copy: marked `X-Banyan-Shadow: 1`.
    pub shadow: bool,
}

/// Writes the request as sent upstream: the request line and the client's fields in their
/// order and case, minus hop-by-hop fields, framing fields, `Expect` (the body goes whole)
/// and the ones banyan sets, then banyan's forwarding headers (the rules
/// `apply_forwarding` applies on Pingora's path), banyan's own `Content-Length` for
/// `body`, then the body. The client's `Connection` header can take away neither the
/// length nor the Host.
///
/// `fields` gives the request's fields as (name, value) each time it is called (they are
/// read twice: first for the `Connection` nominations).
pub fn write_request<'h, F, I>(
    out: &mut Vec<u8>,
    line: Line<'h>,
    fields: F,
    body: &[u8],
    fwd: &Forwarding,
) where
    F: Fn() -> I,
    I: Iterator<Item = (&'h str, &'h [u8])>,
{
    const OWN: [&str; 7] = [
        "content-length",
        "expect",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "x-banyan-shadow",
    ];
    let connection = connection_tokens(fields());
    out.extend_from_slice(line.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(line.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut previous_xff = None;
    let mut host = None;
    let mut declared_length = false;
    for (name, value) in fields() {
        if name.eq_ignore_ascii_case("x-forwarded-for") && previous_xff.is_none() {
            previous_xff = Some(value);
        }
        declared_length |= name.eq_ignore_ascii_case("content-length");
        if name.eq_ignore_ascii_case("host") {
            host = host.or(Some(value));
            if fwd.upstream_host.is_some() {
                continue;
            }
        }
        if hop_by_hop(name.as_bytes(), &connection)
            || OWN.iter().any(|o| name.eq_ignore_ascii_case(o))
        {
            continue;
        }
        push_header(out, name.as_bytes(), value);
    }
    if let Some(h) = fwd.upstream_host {
        push_header(out, b"Host", h.as_bytes());
    } else if let (None, Some(authority)) = (host, line.authority) {
        // An HTTP/2 request's authority becomes the Host HTTP/1.1 needs.
        push_header(out, b"Host", authority);
    }
    let host = host.or(line.authority);
    if !body.is_empty() || declared_length {
        let mut digits = [0u8; 20];
        push_header(out, b"Content-Length", format_len(&mut digits, body.len()));
    }
    if let Some(ip) = fwd.client {
        // Written in place: no value built on the heap.
        out.extend_from_slice(b"X-Forwarded-For: ");
        push_forwarded_for(out, previous_xff, ip);
        out.extend_from_slice(b"\r\n");
    }
    push_header(out, b"X-Forwarded-Proto", fwd.scheme.as_bytes());
    if let Some(h) = host {
        push_header(out, b"X-Forwarded-Host", h);
    }
    push_header(out, b"X-Request-Id", fwd.request_id.as_bytes());
    if fwd.shadow {
        push_header(out, b"X-Banyan-Shadow", b"1");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The client's request id if it is usable (visible ASCII, bounded length), else a new
/// UUID v4, so that every request can be followed through legacy, target and logs.
pub fn request_id(existing: Option<&[u8]>) -> HeaderValue {
    if let Some(b) = existing {
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c))
        {
            if let Ok(v) = HeaderValue::from_bytes(b) {
                return v;
            }
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
    let mut value = Vec::with_capacity(existing.map_or(0, |v| v.len() + 2) + 45);
    push_forwarded_for(&mut value, existing.map(HeaderValue::as_bytes), client);
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// `X-Forwarded-For`'s value, written at the end of `out`.
fn push_forwarded_for(out: &mut Vec<u8>, existing: Option<&[u8]>, client: IpAddr) {
    if let Some(prev) = existing.filter(|p| !p.is_empty()) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(IpText::new(client).as_bytes());
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
        .filter(|n| !protected(n.as_str().as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::request::{parse, slots, Handoff, Head};

    fn parsed<T>(raw: &[u8], f: impl FnOnce(Result<Head, Handoff>) -> T) -> T {
        let mut hs = slots();
        f(parse(raw, &mut hs))
    }

    fn write_upstream_request(out: &mut Vec<u8>, h: &Head, body: &[u8], fwd: &Forwarding) {
        write_request(out, h.line(), || h.fields(), body, fwd);
    }

    #[test]
    fn request_ids_are_kept_when_usable() {
        let given = HeaderValue::from_static("req-123");
        assert_eq!(request_id(Some(given.as_bytes())), given);
        let spaced = HeaderValue::from_static("has space");
        assert_ne!(request_id(Some(spaced.as_bytes())), spaced);
        let long = HeaderValue::from_str(&"x".repeat(300)).expect("value");
        assert_ne!(request_id(Some(long.as_bytes())), long);
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

    #[test]
    fn the_upstream_request_carries_forwarding_headers_and_no_hop_by_hop_fields() {
        let raw = b"POST /o?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.1\r\nX-Forwarded-Proto: gopher\r\nX-Banyan-Shadow: 1\r\nX-Request-Id: old\r\ntraceparent: 00-abc-def-01\r\nContent-Length: 2\r\n\r\nhi";
        let id = HeaderValue::from_static("rid");
        parsed(raw, |h| {
            let h = h.expect("fast");
            let mut out = Vec::new();
            let fwd = Forwarding {
                client: Some([10, 0, 0, 9].into()),
                scheme: "http",
                request_id: &id,
                upstream_host: None,
                shadow: false,
            };
            write_upstream_request(&mut out, &h, b"hi", &fwd);
            assert_eq!(
                String::from_utf8(out).expect("text"),
                "POST /o?x=1 HTTP/1.1\r\nHost: shop.example.com\r\ntraceparent: 00-abc-def-01\r\n\
                 Content-Length: 2\r\nX-Forwarded-For: 203.0.113.1, 10.0.0.9\r\n\
                 X-Forwarded-Proto: http\r\nX-Forwarded-Host: shop.example.com\r\n\
                 X-Request-Id: rid\r\n\r\nhi"
            );
            let host = HeaderValue::from_static("orders.internal");
            let mut out = Vec::new();
            let fwd = Forwarding {
                client: None,
                upstream_host: Some(&host),
                ..fwd
            };
            write_upstream_request(&mut out, &h, b"hi", &fwd);
            let text = String::from_utf8(out).expect("text");
            assert!(
                text.starts_with("POST /o?x=1 HTTP/1.1\r\ntraceparent"),
                "{text}"
            );
            assert!(text.contains("\r\nHost: orders.internal\r\n"), "{text}");
            assert!(
                text.contains("\r\nX-Forwarded-Host: shop.example.com\r\n"),
                "{text}"
            );
            assert!(!text.contains("X-Forwarded-For"), "{text}");
        });
    }

    #[test]
    fn connection_cannot_take_the_length_or_host_away() {
        // The smuggling attempt: a body kept, its length nominated away.
        let raw = b"POST / HTTP/1.1\r\nHost: shop\r\nConnection: Content-Length, Host, Transfer-Encoding\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        let id = HeaderValue::from_static("rid");
        parsed(raw, |h| {
            let h = h.expect("fast");
            assert_eq!(h.body_len, 35);
            let mut out = Vec::new();
            let fwd = Forwarding {
                client: None,
                scheme: "http",
                request_id: &id,
                upstream_host: None,
                shadow: false,
            };
            write_upstream_request(&mut out, &h, &raw[h.head_len..], &fwd);
            let mut hs = slots();
            let sent = parse(&out, &mut hs).expect("the upstream parses one request");
            assert_eq!(
                sent.wire_len(),
                out.len(),
                "the body is the rest, nothing after it"
            );
            assert_eq!(sent.header("host"), Some(&b"shop"[..]));
            assert_eq!(sent.header("content-length"), Some(&b"35"[..]));
            assert!(sent.header("connection").is_none());
        });
        // A declared empty body keeps its length; none declared, none written.
        let zero = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
        parsed(zero, |h| {
            let mut out = Vec::new();
            let fwd = Forwarding {
                client: None,
                scheme: "http",
                request_id: &id,
                upstream_host: None,
                shadow: false,
            };
            write_upstream_request(&mut out, &h.expect("fast"), b"", &fwd);
            assert!(String::from_utf8_lossy(&out).contains("\r\nContent-Length: 0\r\n"));
        });
        let mut d = [0u8; 20];
        assert_eq!(format_len(&mut d, 0), b"0");
        assert_eq!(format_len(&mut d, 1234567), b"1234567");
        assert_eq!(
            format_len(&mut d, usize::MAX),
            usize::MAX.to_string().as_bytes()
        );
    }
}
