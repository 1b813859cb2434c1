//! The shadow copy, built one way: the client's request as the primary saw it, written by
//! the forwarding rules (`upstream::forward::write_request`) with `X-Banyan-Shadow: 1`,
//! hop-by-hop fields removed and framing rewritten for the captured body (always sent
//! whole, with a length). On Pingora's path the request is the header Pingora parsed; on
//! banyan's own path it is the request's bytes as they arrived, written straight from
//! them. A TLS upstream gets the same bytes through Pingora's connector, their head read
//! back into Pingora's request header (`pingora_header`).

use bytes::Bytes;
use http::Method;
use pingora::http::RequestHeader;

use crate::http1::request::{self, MAX_HEADERS};
use crate::http1::Line;
use crate::upstream::forward::{self, Forwarding};

pub enum Original {
    /// As Pingora parsed it.
    Parsed(Box<RequestHeader>),
    /// banyan's own path: one whole HTTP/1.1 request (head and body), which
    /// `http1::request::parse` accepted.
    Raw(Raw),
}

pub struct Raw {
    bytes: Bytes,
    method: Method,
}

impl Raw {
    /// `bytes` holds the whole request, from its first byte; `method` is its method.
    pub fn new(bytes: Bytes, method: Method) -> Raw {
        Raw { bytes, method }
    }
}

impl Original {
    pub fn method(&self) -> &Method {
        match self {
            Original::Parsed(req) => &req.method,
            Original::Raw(raw) => &raw.method,
        }
    }

    /// The request target: path and query string.
    pub fn target(&self) -> &str {
        match self {
            Original::Parsed(req) => req
                .uri
                .path_and_query()
                .map_or_else(|| req.uri.path(), |p| p.as_str()),
            // The request line is `METHOD SP target SP version`, single spaces: the parse
            // that accepted it allows no other.
            Original::Raw(raw) => raw
                .bytes
                .split(|&b| b == b' ')
                .nth(1)
                .and_then(|t| std::str::from_utf8(t).ok())
                .unwrap_or("/"),
        }
    }

    /// The copy as bytes on the wire; `body` is the captured body and `copy` what banyan
    /// adds (`shadow` set). `None` only if bytes once accepted no longer parse, which
    /// cannot happen.
    pub fn wire(&self, copy: &Forwarding<'_>, body: &[u8]) -> Option<Vec<u8>> {
        match self {
            Original::Parsed(req) => {
                let line = Line {
                    method: req.method.as_str(),
                    target: self.target(),
                    authority: req.uri.authority().map(|a| a.as_str().as_bytes()),
                };
                let fields = || req.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
                let mut out = Vec::with_capacity(256 + body.len());
                forward::write_request(&mut out, line, fields, body, copy);
                Some(out)
            }
            Original::Raw(raw) => {
                let mut hs = request::slots();
                let h = request::parse(&raw.bytes, &mut hs).ok()?;
                let mut out = Vec::with_capacity(raw.bytes.len() + 192);
                forward::write_request(&mut out, h.line(), || h.fields(), body, copy);
                Some(out)
            }
        }
    }
}

/// A copy's head (`Original::wire`) read back as Pingora's request header, for TLS
/// upstreams through Pingora's connector, and where its body starts.
pub fn pingora_header(wire: &[u8]) -> Option<(RequestHeader, usize)> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut req = httparse::Request::new(&mut hs);
    let head_len = match req.parse(wire) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let (method, target) = (req.method?, req.path?);
    let mut header =
        RequestHeader::build(method, target.as_bytes(), Some(req.headers.len())).ok()?;
    for h in req.headers.iter() {
        // Fields that are not valid HTTP are forwarded as they came on banyan's own
        // client; Pingora's header cannot hold them.
        let _ = header.append_header(h.name.to_string(), h.value);
    }
    Some((header, head_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Every (lower-case name, value) of a request's head, sorted, and the body.
    fn fields(wire: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        let n = match req.parse(wire) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("copy does not parse: {other:?}"),
        };
        let line = format!("{} {}", req.method.unwrap_or(""), req.path.unwrap_or(""));
        let mut all: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        all.sort();
        (line, all, wire[n..].to_vec())
    }

    fn both(raw: &'static [u8]) -> (Original, Original) {
        let mut hs = request::slots();
        let h = request::parse(raw, &mut hs).expect("accepted");
        let method = Method::from_bytes(h.method.as_bytes()).expect("method");
        // A copy, as the fast path makes one of the bytes it read.
        let bytes = Bytes::copy_from_slice(raw);
        let fast = Original::Raw(Raw::new(bytes, method));
        let mut req = RequestHeader::build(h.method, h.target.as_bytes(), None).expect("req");
        for x in h.headers.iter() {
            req.append_header(x.name.to_string(), x.value)
                .expect("header");
        }
        (fast, Original::Parsed(Box::new(req)))
    }

    #[test]
    fn a_copy_from_the_raw_request_is_the_copy_from_the_parsed_one() {
        let raw: &'static [u8] = b"POST /api/orders?x=1 HTTP/1.1\r\nHost: shop.example.com\r\n\
            Connection: keep-alive, x-hop\r\nX-Hop: secret\r\nX-Banyan-Shadow: 0\r\n\
            X-Forwarded-For: 192.0.2.1\r\nX-User-Id: alice\r\nContent-Length: 5\r\n\
            traceparent: 00-abc-def-01\r\n\r\nhello";
        let (fast, parsed) = both(raw);
        assert_eq!(fast.method(), "POST");
        assert_eq!(fast.target(), "/api/orders?x=1");
        assert_eq!(parsed.target(), "/api/orders?x=1");
        let id = HeaderValue::from_static("req-1");
        let orders = HeaderValue::from_static("orders.internal");
        for host in [None, Some(&orders)] {
            let copy = Forwarding {
                client: Some([10, 0, 0, 9].into()),
                scheme: "https",
                request_id: &id,
                upstream_host: host,
                shadow: true,
            };
            let body = Bytes::from_static(b"hello");
            let a = fields(&fast.wire(&copy, &body).expect("wire"));
            let b = fields(&parsed.wire(&copy, &body).expect("wire"));
            assert_eq!(a, b, "host {host:?}");
            let names: Vec<&str> = a.1.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.contains(&"x-banyan-shadow"), "{names:?}");
            assert!(!names.contains(&"x-hop") && !names.contains(&"connection"));
            assert!(a.1.contains(&("x-banyan-shadow".into(), "1".into())));
            assert!(a
                .1
                .contains(&("x-forwarded-for".into(), "192.0.2.1, 10.0.0.9".into())));
            // The Pingora header for TLS upstreams holds the same fields.
            let wire = fast.wire(&copy, &body).expect("wire");
            let (h, at) = pingora_header(&wire).expect("header");
            assert_eq!(&wire[at..], b"hello");
            let mut again: Vec<(String, String)> = h
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            again.sort();
            assert_eq!(again, a.1);
            assert_eq!(
                (h.method.as_str(), h.uri.to_string()),
                ("POST", "/api/orders?x=1".into())
            );
        }
    }

    #[test]
    fn a_get_without_a_body_is_copied_without_one() {
        let (fast, parsed) = both(b"GET /a HTTP/1.1\r\nHost: shop\r\n\r\n");
        let id = HeaderValue::from_static("req-2");
        let copy = Forwarding {
            client: None,
            scheme: "http",
            request_id: &id,
            upstream_host: None,
            shadow: true,
        };
        let a = fields(&fast.wire(&copy, &Bytes::new()).expect("wire"));
        assert_eq!(a, fields(&parsed.wire(&copy, &Bytes::new()).expect("wire")));
        assert!(a.2.is_empty());
        assert!(!a.1.iter().any(|(n, _)| n == "content-length"));
    }

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
        let copy = Forwarding {
            client: Some([10, 0, 0, 9].into()),
            scheme: "http",
            request_id: &id,
            upstream_host: None,
            shadow: true,
        };
        let parsed = Original::Parsed(Box::new(orig));
        let wire = parsed.wire(&copy, b"0123456789").expect("wire");
        let (line, all, body) = fields(&wire);
        assert_eq!(line, "POST /api/orders?x=1");
        assert_eq!(body, b"0123456789");
        let get = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        for gone in ["connection", "x-hop", "transfer-encoding", "expect"] {
            assert!(get(gone).is_none(), "{gone} should be removed");
        }
        assert_eq!(get("x-banyan-shadow"), Some("1"));
        assert_eq!(get("content-length"), Some("10"));
        assert_eq!(get("x-request-id"), Some("req-1"));
        assert_eq!(get("x-forwarded-for"), Some("10.0.0.9"));
        assert_eq!(get("x-forwarded-host"), Some("shop.example.com"));
        assert_eq!(get("host"), Some("shop.example.com"));
        assert_eq!(get("x-user-id"), Some("alice"));
        assert_eq!(get("traceparent"), Some("00-abc-def-01"));

        // HTTP/2: no Host field, the authority becomes one; the upstream's own wins.
        let mut h2 = RequestHeader::build("GET", b"/a", None).expect("req");
        h2.set_uri(http::Uri::from_static("https://shop.example.com/a"));
        let h2 = Original::Parsed(Box::new(h2));
        let (line, all, _) = fields(&h2.wire(&copy, b"").expect("wire"));
        assert_eq!(line, "GET /a");
        assert!(all.contains(&("host".into(), "shop.example.com".into())));
        assert!(all.contains(&("x-forwarded-host".into(), "shop.example.com".into())));
        assert!(!all.iter().any(|(n, _)| n == "content-length"));
        let host = HeaderValue::from_static("orders.internal");
        let to_orders = Forwarding {
            upstream_host: Some(&host),
            ..copy
        };
        let (_, all, _) = fields(&h2.wire(&to_orders, b"").expect("wire"));
        let hosts: Vec<_> = all.iter().filter(|(n, _)| n == "host").collect();
        assert_eq!(
            hosts,
            [&("host".to_string(), "orders.internal".to_string())]
        );
    }
}
