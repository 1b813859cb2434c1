//! The fast path's request side, pure: which plain HTTP/1.1 requests banyan serves itself
//! (whole head and body already read, no upgrade, no `Expect`, no chunked body), and the
//! bytes it sends upstream for them. Everything else goes to Pingora unchanged.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::proxy::chunked;
use crate::proxy::framing::{self, hop_by_hop, tokens, Body, Refusal};
use crate::proxy::headers::forwarded_for;

/// Headers read per request; a request with more goes to Pingora.
pub const MAX_HEADERS: usize = 64;

/// Why a request is left to Pingora. Nothing was consumed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// The head is not all in the bytes read.
    PartialHead,
    /// The head is, but not all of the body it declares.
    PartialBody,
    /// Not HTTP/1.1, or not a request Pingora would accept as is (it answers 400).
    Unusual,
    /// Chunked or otherwise framed bodies, `Expect`, upgrades.
    Framing,
    /// Something of the route or upstream the fast path does not do (TLS upstream, a
    /// refusal answered by Pingora).
    Route,
    /// A request no hop could frame without doubt: refused before anything is forwarded.
    Refused(Refusal),
}

/// One parsed request head, borrowed from the bytes read.
#[derive(Debug)]
pub struct Head<'b> {
    pub method: &'b str,
    /// Origin form: starts with `/`.
    pub target: &'b str,
    pub headers: &'b [httparse::Header<'b>],
    pub head_len: usize,
    /// The body's bytes on the wire (chunked: with its framing).
    pub body_len: usize,
    /// A chunked body, decoded: forwarded with banyan's own length.
    pub decoded: Option<Vec<u8>>,
    /// The client asked to close after this request.
    pub close: bool,
}

impl Head<'_> {
    /// The request's bytes, head and body: where a pipelined next request starts.
    pub fn wire_len(&self) -> usize {
        self.head_len + self.body_len
    }

    /// The body to forward: `req` holds the request's bytes from its first.
    pub fn body<'r>(&'r self, req: &'r [u8]) -> &'r [u8] {
        match &self.decoded {
            Some(data) => data,
            None => req.get(self.head_len..self.wire_len()).unwrap_or_default(),
        }
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(self.target)
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The headers as a `HeaderMap` for routing. `raw` is the buffer the head was parsed
    /// from and `head` a copy of it, which the values share. Names and values that are not
    /// valid are skipped: no route can match them, and they are forwarded as they came.
    pub fn header_map(&self, head: &Bytes, raw: &[u8]) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.headers.len());
        let base = raw.as_ptr() as usize;
        for h in self.headers {
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                continue;
            };
            let start = (h.value.as_ptr() as usize).wrapping_sub(base);
            let end = start.wrapping_add(h.value.len());
            if start > end || end > head.len() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_maybe_shared(head.slice(start..end)) {
                map.append(name, value);
            }
        }
        map
    }
}

/// Parses the request in `buf` (everything read so far) into `headers`. Framing follows
/// `framing::request`: what it refuses is refused here, before any byte is forwarded.
pub fn parse<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<Head<'b>, Handoff> {
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Handoff::PartialHead),
        Err(httparse::Error::TooManyHeaders) => return Err(Handoff::Framing),
        Err(_) => return Err(Handoff::Unusual),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(Handoff::Unusual);
    };
    if !target.starts_with('/') {
        return Err(Handoff::Unusual);
    }
    let fields = req.headers.iter().map(|h| (h.name, h.value));
    let framed = framing::request(1, fields).map_err(Handoff::Refused)?;
    if framed.expects || framed.upgrade {
        return Err(Handoff::Framing);
    }
    // A chunked body that is all here is decoded (strictly: a malformed one is refused)
    // and sent on with a length; one still arriving waits, a larger one goes to Pingora.
    let (body_len, decoded) = match framed.body {
        Body::None => (0, None),
        Body::Length(n) => (usize::try_from(n).map_err(|_| Handoff::Framing)?, None),
        Body::Chunked => match chunked::decode_whole(&buf[head_len..]) {
            Ok(Some((n, data))) => (n, Some(data)),
            Ok(None) => return Err(Handoff::PartialBody),
            Err(_) => return Err(Handoff::Refused(Refusal::BadChunk)),
        },
        Body::UntilClose => return Err(Handoff::Framing),
    };
    let total = head_len.checked_add(body_len).ok_or(Handoff::Framing)?;
    if buf.len() < total {
        return Err(Handoff::PartialBody);
    }
    Ok(Head {
        method,
        target,
        headers: req.headers,
        head_len,
        body_len,
        decoded,
        close: framed.close,
    })
}

/// Every token the message's `Connection` headers carry.
pub fn connection_tokens<'b>(headers: &'b [httparse::Header<'b>]) -> Vec<&'b [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .collect()
}

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

/// Writes the request as sent upstream: the client's request line and headers in their
/// order and case, minus hop-by-hop fields, framing fields and the ones banyan sets, then
/// banyan's forwarding headers (the same rules as `headers::apply_forwarding` on the
/// Pingora path), banyan's own `Content-Length` for `body`, then the body. The client's
/// `Connection` header can take away neither the length nor the Host.
pub fn write_upstream_request(out: &mut Vec<u8>, head: &Head, body: &[u8], fwd: &Forwarding) {
    const OWN: [&str; 6] = [
        "content-length",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "x-banyan-shadow",
    ];
    let connection = connection_tokens(head.headers);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut previous_xff = None;
    let mut host = None;
    let mut declared_length = false;
    for h in head.headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") && previous_xff.is_none() {
            previous_xff = Some(h.value);
        }
        declared_length |= name.eq_ignore_ascii_case("content-length");
        if name.eq_ignore_ascii_case("host") {
            host = host.or(Some(h.value));
            if fwd.upstream_host.is_some() {
                continue;
            }
        }
        if hop_by_hop(name, &connection) || OWN.iter().any(|o| name.eq_ignore_ascii_case(o)) {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if let Some(h) = fwd.upstream_host {
        push_header(out, b"Host", h.as_bytes());
    }
    if !body.is_empty() || declared_length {
        let mut digits = [0u8; 20];
        push_header(out, b"Content-Length", format_len(&mut digits, body.len()));
    }
    if let Some(ip) = fwd.client {
        let prev = previous_xff.and_then(|v| HeaderValue::from_bytes(v).ok());
        push_header(
            out,
            b"X-Forwarded-For",
            forwarded_for(prev.as_ref(), ip).as_bytes(),
        );
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

/// `n` in decimal, written at the end of `buf`.
pub fn format_len(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed<T>(raw: &[u8], f: impl FnOnce(Result<Head, Handoff>) -> T) -> T {
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        f(parse(raw, &mut hs))
    }

    #[test]
    fn plain_requests_are_taken_whole() {
        let raw = b"GET /api/orders?id=7 HTTP/1.1\r\nHost: shop\r\nX-User-Id: u1\r\n\r\n";
        parsed(raw, |h| {
            let h = h.expect("fast");
            assert_eq!(
                (h.method, h.target, h.path()),
                ("GET", "/api/orders?id=7", "/api/orders")
            );
            assert_eq!((h.head_len, h.body_len, h.close), (raw.len(), 0, false));
            assert_eq!(h.header("x-user-id"), Some(&b"u1"[..]));
        });
        let post =
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        parsed(post, |h| {
            let h = h.expect("fast");
            assert_eq!((h.body_len, h.close), (5, true));
        });
        // A whole chunked body is decoded; the next request stays.
        let chunked = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\n\r\nGET /";
        parsed(chunked, |h| {
            let h = h.expect("fast");
            assert_eq!(h.decoded.as_deref(), Some(&b"hello"[..]));
            assert_eq!(h.wire_len(), chunked.len() - 5);
            assert_eq!(h.body(chunked), b"hello");
        });
        // A pipelined next request is left for the next parse.
        let two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        parsed(two, |h| assert_eq!(h.expect("fast").wire_len(), 28));
    }

    #[test]
    fn everything_else_goes_to_pingora() {
        let cases: [(&[u8], Handoff); 14] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Handoff::PartialHead),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc",
                Handoff::PartialBody,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", Handoff::Unusual),
            (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", Handoff::Unusual),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
                Handoff::Refused(Refusal::RepeatedLength),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
                Handoff::Refused(Refusal::BadLength),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                Handoff::Refused(Refusal::BadLength),
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Handoff::Refused(Refusal::MissingHost)),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                Handoff::Refused(Refusal::RepeatedHost),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
                Handoff::Refused(Refusal::LengthAndEncoding),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                Handoff::PartialBody,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\nx\r\n0\r\n\r\n",
                Handoff::Refused(Refusal::BadChunk),
            ),
            (
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                Handoff::Framing,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
                Handoff::Framing,
            ),
        ];
        for (raw, want) in cases {
            parsed(raw, |h| {
                assert_eq!(h.err(), Some(want), "{}", String::from_utf8_lossy(raw))
            });
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        parsed(&many, |h| assert_eq!(h.err(), Some(Handoff::Framing)));
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
            let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
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

    #[test]
    fn the_routing_map_shares_the_head() {
        let raw =
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: uid=1\r\nCookie: t=2\r\nBad Name: x\r\n\r\n";
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse(raw, &mut hs) {
            // httparse refuses the space in a name; Pingora answers such requests.
            Err(e) => assert_eq!(e, Handoff::Unusual),
            Ok(_) => panic!("a name with a space parsed"),
        }
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: uid=1\r\nCookie: t=2\r\n\r\n";
        let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let h = parse(raw, &mut hs).expect("fast");
        let bytes = Bytes::copy_from_slice(&raw[..h.head_len]);
        let map = h.header_map(&bytes, raw);
        assert_eq!(map["host"], "a");
        assert_eq!(map.get_all("cookie").iter().count(), 2);
    }
}
