//! The copy sent to the shadow: the client's request as the primary saw it, with
//! banyan's forwarding headers, `X-Banyan-Shadow: 1`, hop-by-hop fields removed, and
//! framing rewritten for the captured body (always sent whole, with a length).

use std::net::IpAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::proxy::headers::{self, HeaderBlock};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Builds the copy. `body_len` is the captured body's length; `host` replaces the Host
/// header when the shadow's upstream sets one.
pub fn prepare(
    original: &RequestHeader,
    client: Option<IpAddr>,
    scheme: &'static str,
    request_id: &HeaderValue,
    body_len: usize,
    host: Option<&HeaderValue>,
) -> RequestHeader {
    let mut req = original.clone();
    let nominated = headers::connection_nominated(&req.headers);
    for name in nominated.iter().chain(&[
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        EXPECT,
        CONTENT_LENGTH,
    ]) {
        if req.headers.contains_key(name) {
            req.remove_header(name);
        }
    }
    let original_host = headers::original_host(&original.headers, &original.uri);
    headers::apply_forwarding(&mut req, client, scheme, original_host.clone(), request_id);
    req.set("X-Banyan-Shadow", HeaderValue::from_static("1"));
    if body_len > 0 || original.headers.contains_key(CONTENT_LENGTH) {
        req.set("Content-Length", HeaderValue::from(body_len));
    }
    // The client's Host (or HTTP/2 authority) unless the upstream sets its own.
    if let Some(h) = host.cloned().or(original_host) {
        req.set("Host", h);
    }
    req
}

/// The copy as bytes on the wire (HTTP/1.1, lower-case field names), body included, for
/// banyan's own upstream client.
pub fn wire(req: &RequestHeader, body: &[u8]) -> Vec<u8> {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &req.headers {
        crate::proxy::fast::head::push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_marked_framed_and_free_of_hop_by_hop_fields() {
        let mut orig = RequestHeader::build("POST", b"/api/orders?x=1", None).expect("req");
        for (n, v) in [
            ("Host", "shop.example.com"),
            ("Connection", "keep-alive, x-hop"),
            ("X-Hop", "secret-hop"),
            ("Transfer-Encoding", "chunked"),
            ("Expect", "100-continue"),
            ("X-Banyan-Shadow", "0"),
            ("X-User-Id", "alice"),
            ("traceparent", "00-abc-def-01"),
        ] {
            orig.insert_header(n, v).expect("header");
        }
        let id = HeaderValue::from_static("req-1");
        let copy = prepare(&orig, Some([10, 0, 0, 9].into()), "http", &id, 42, None);
        let h = &copy.headers;
        assert_eq!(copy.method, "POST");
        assert_eq!(copy.uri, "/api/orders?x=1");
        for gone in ["connection", "x-hop", "transfer-encoding", "expect"] {
            assert!(h.get(gone).is_none(), "{gone} should be removed");
        }
        assert_eq!(h["x-banyan-shadow"], "1");
        assert_eq!(h["content-length"], "42");
        assert_eq!(h["x-request-id"], "req-1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-host"], "shop.example.com");
        assert_eq!(h["host"], "shop.example.com");
        assert_eq!(h["x-user-id"], "alice");
        assert_eq!(h["traceparent"], "00-abc-def-01");

        let wire = wire(&copy, b"0123456789");
        let text = String::from_utf8(wire).expect("text");
        assert!(
            text.starts_with("POST /api/orders?x=1 HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nx-banyan-shadow: 1\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n0123456789"), "{text}");

        let get = RequestHeader::build("GET", b"/a", None).expect("req");
        let host = HeaderValue::from_static("orders.internal");
        let copy = prepare(&get, None, "http", &id, 0, Some(&host));
        assert!(copy.headers.get("content-length").is_none());
        assert_eq!(copy.headers["host"], "orders.internal");
    }
}
