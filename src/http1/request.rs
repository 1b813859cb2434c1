//! An HTTP/1.1 request head as banyan's own path reads it, pure: which plain requests
//! banyan serves itself (whole head and body already read, no upgrade, no `Expect`, no
//! chunked body still arriving), parsed in place. Everything else goes to Pingora
//! unchanged. The request sent upstream is written by `upstream::forward`.

use std::mem::MaybeUninit;

use super::chunked;
use super::framing::{self, Body, Refusal};

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

impl<'b> Head<'b> {
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

    /// The request line to write upstream.
    pub fn line(&self) -> super::Line<'b> {
        super::Line {
            method: self.method,
            target: self.target,
            authority: None,
        }
    }

    /// Every field as (name, value), in order and case as they came.
    pub fn fields(&self) -> impl Iterator<Item = (&'b str, &'b [u8])> + Clone + '_ {
        self.headers.iter().map(|h| (h.name, h.value))
    }
}

/// Room for a request head's fields (`super::field_slots`).
pub type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn slots<'b>() -> Slots<'b> {
    super::field_slots()
}

/// Parses the request in `buf` (everything read so far) into `headers`. Framing follows
/// `framing::request`: what it refuses is refused here, before any byte is forwarded.
pub fn parse<'b>(buf: &'b [u8], headers: &'b mut Slots<'b>) -> Result<Head<'b>, Handoff> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, headers) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed<T>(raw: &[u8], f: impl FnOnce(Result<Head, Handoff>) -> T) -> T {
        let mut hs = slots();
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
    fn a_name_httparse_refuses_goes_to_pingora() {
        let raw =
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: uid=1\r\nCookie: t=2\r\nBad Name: x\r\n\r\n";
        let mut hs = slots();
        match parse(raw, &mut hs) {
            // httparse refuses the space in a name; Pingora answers such requests.
            Err(e) => assert_eq!(e, Handoff::Unusual),
            Ok(_) => panic!("a name with a space parsed"),
        }
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: uid=1\r\nCookie: t=2\r\n\r\n";
        let mut hs = slots();
        let h = parse(raw, &mut hs).expect("fast");
        assert_eq!(h.header("host"), Some(&b"a"[..]));
        assert_eq!(h.headers.len(), 3);
    }
}
