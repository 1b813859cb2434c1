//! The client's request a shadow copy is made from. On Pingora's path that is the request
//! header Pingora parsed; on banyan's own HTTP/1.1 path it is the request's bytes as they
//! arrived, so the copy is written straight from them, the way the primary's request was,
//! instead of building a header map and cloning it again for every mirrored request.

use bytes::Bytes;
use http::Method;
use pingora::http::RequestHeader;

use super::request;
use crate::proxy::fast::head::{self, Forwarding, MAX_HEADERS};

pub enum Original {
    /// As Pingora parsed it.
    Parsed(Box<RequestHeader>),
    /// banyan's own path: one whole HTTP/1.1 request (head and body), which
    /// `proxy::fast::head::parse` accepted.
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

    /// The copy as bytes on the wire, for banyan's own client; `body` is the captured body
    /// and `copy` what banyan adds (`shadow` set). `None` only if bytes once accepted no
    /// longer parse, which cannot happen.
    pub fn wire(&self, copy: &Forwarding<'_>, body: &Bytes) -> Option<Vec<u8>> {
        match self {
            Original::Parsed(_) => Some(request::wire(&self.header(copy, body.len())?, body)),
            Original::Raw(raw) => {
                let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let h = head::parse(&raw.bytes, &mut hs).ok()?;
                let mut out = Vec::with_capacity(raw.bytes.len() + 192);
                head::write_upstream_request(&mut out, &h, body, copy);
                Some(out)
            }
        }
    }

    /// The copy as Pingora's request header (for TLS upstreams, through Pingora's connector).
    pub fn header(&self, copy: &Forwarding<'_>, body_len: usize) -> Option<RequestHeader> {
        let prepare = |req: &RequestHeader| {
            request::prepare(
                req,
                copy.client,
                copy.scheme,
                copy.request_id,
                body_len,
                copy.upstream_host,
            )
        };
        match self {
            Original::Parsed(req) => Some(prepare(req)),
            Original::Raw(raw) => {
                let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let h = head::parse(&raw.bytes, &mut hs).ok()?;
                let mut req =
                    RequestHeader::build(h.method, h.target.as_bytes(), Some(h.headers.len()))
                        .ok()?;
                for header in h.headers.iter() {
                    // Fields that are not valid HTTP are forwarded as they came on the raw
                    // path; Pingora's header cannot hold them.
                    let _ = req.append_header(header.name.to_string(), header.value);
                }
                Some(prepare(&req))
            }
        }
    }
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
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let h = head::parse(raw, &mut hs).expect("accepted");
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
            let h = fast.header(&copy, body.len()).expect("header");
            let via_header = fields(&request::wire(&h, &body));
            assert_eq!(via_header, a);
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
}
