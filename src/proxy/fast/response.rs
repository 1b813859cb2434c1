//! The fast path's response side, pure: an upstream's response head, how its body is
//! framed, the head the client gets, and where a chunked body ends. Bodies are relayed
//! as they come (chunked ones with their framing), never held whole.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::head::{connection_tokens, content_length, hop_by_hop, push_header};
use crate::proxy::headers::tokens;
use crate::shadow::compare::Rules;

pub const MAX_HEADERS: usize = 128;

/// How the response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: HEAD, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    #[error("the response head is not valid HTTP/1.x: {0}")]
    Invalid(String),
    #[error("the response head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("conflicting Content-Length headers")]
    Length,
    #[error("the upstream switched protocols on a request that asked for no upgrade")]
    Switched,
}

/// What the proxy needs of a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream will not take another request on this connection.
    pub close: bool,
    /// 1xx other than 101: a response to skip before the real one.
    pub informational: bool,
    /// The body has a Transfer-Encoding.
    pub transfer_coded: bool,
    /// The headers a shadow comparison reads, when `parse` was asked to keep them: taken
    /// in the same pass instead of parsing the head again.
    pub kept: HeaderMap,
}

/// Parses a response head from `buf`; `Ok(None)` while incomplete. With `keep`, the
/// headers those comparison rules read are kept in `Parsed::kept`.
pub fn parse(
    buf: &[u8],
    head_request: bool,
    limit: usize,
    keep: Option<&Rules>,
) -> Result<Option<Parsed>, BadResponse> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limit => {
            return Err(BadResponse::TooLarge(limit))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BadResponse::Invalid(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(BadResponse::Switched);
    }
    let mut close = resp.version == Some(0);
    let mut length = None;
    let mut chunked = false;
    let mut coded = false;
    let mut kept = HeaderMap::new();
    for h in resp.headers.iter() {
        if keep.is_some_and(|rules| rules.reads_header(h.name)) {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                kept.append(n, v);
            }
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(BadResponse::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::Length);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                    close = false;
                }
            }
        }
    }
    let informational = (100..200).contains(&status);
    let framing = if informational || head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if coded {
        // RFC 9112 6.3: Transfer-Encoding overrides Content-Length; a coding that does not
        // end in chunked runs until close.
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Parsed {
        status,
        head_len,
        framing,
        close: close || framing == Framing::UntilClose,
        informational,
        transfer_coded: coded,
        kept,
    }))
}

/// What banyan adds to a response it relays.
pub struct Additions<'a> {
    pub request_id: &'a HeaderValue,
    /// `x-banyan-*` debug headers as (name, value).
    pub debug: &'a [(&'static str, &'a [u8])],
    /// Tell the client this connection closes after the response.
    pub close: bool,
}

/// Writes the head the client gets: the upstream's status and headers minus hop-by-hop
/// fields (framing fields stay: the body is relayed as framed), `X-Request-Id` when the
/// upstream set none, debug headers, and `Connection: close` when closing.
pub fn write_client_head(out: &mut Vec<u8>, head: &[u8], parsed: &Parsed, add: &Additions) {
    let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    // `head` parsed before; a failure here would leave only what banyan adds.
    let _ = resp.parse(head);
    let reason = resp.reason.unwrap_or("");
    let mut line = String::with_capacity(32);
    let _ = write!(line, "HTTP/1.1 {} {}\r\n", parsed.status, reason);
    out.extend_from_slice(line.as_bytes());
    let connection = connection_tokens(resp.headers);
    let mut has_id = false;
    for h in resp.headers.iter() {
        let name = h.name;
        // Transfer-Encoding describes the body as relayed; a Content-Length beside it is
        // wrong (RFC 9112 6.3) and dropped.
        let keep = if name.eq_ignore_ascii_case("transfer-encoding") {
            true
        } else if name.eq_ignore_ascii_case("content-length") {
            !parsed.transfer_coded
        } else {
            !hop_by_hop(name, &connection)
        };
        if keep {
            has_id |= name.eq_ignore_ascii_case("x-request-id");
            push_header(out, name.as_bytes(), h.value);
        }
    }
    if !has_id {
        push_header(out, b"X-Request-Id", add.request_id.as_bytes());
    }
    for (name, value) in add.debug {
        push_header(out, name.as_bytes(), value);
    }
    if add.close {
        push_header(out, b"Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the chunked body is malformed")]
pub struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// Follows a chunked body as it streams, to know where it ends; data spans are reported
/// for callers that keep a decoded copy (shadow comparison).
#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
        }
    }
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes `buf` up to the end of the body; returns how many bytes belong to it.
    /// `data` receives each piece of chunk data.
    pub fn feed(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            let b = buf[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(BadChunk);
                        }
                        self.size = self.size * 16 + u64::from(digit);
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = State::Extension,
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(BadChunk),
                },
                State::Extension => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take =
                        (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(&buf[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(BadChunk);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.digits = 0;
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::TrailerLine
                    };
                }
                State::TrailerLine => {
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.state = State::Done;
                }
                State::Done => break,
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(raw: &[u8], head: bool) -> Result<Option<Parsed>, BadResponse> {
        parse(raw, head, 1 << 16, None)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &[u8]| {
            framing(raw, false)
                .expect("valid")
                .expect("complete")
                .framing
        };
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"),
            Framing::Length(12)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Framing::UntilClose
        );
        assert_eq!(f(b"HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(f(b"HTTP/1.1 204 No Content\r\n\r\n"), Framing::Empty);
        assert_eq!(
            f(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
            Framing::Empty
        );
        let head = framing(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(
            head.expect("valid").expect("complete").framing,
            Framing::Empty
        );
        let cont = framing(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", false);
        let cont = cont.expect("valid").expect("complete");
        assert!(cont.informational);
        assert_eq!(cont.head_len, 25);
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let close = |raw: &[u8]| framing(raw, false).expect("valid").expect("complete").close;
        assert!(!close(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(close(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(close(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!close(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(
            close(b"HTTP/1.1 200 OK\r\n\r\n"),
            "a body until close ends the connection"
        );
    }

    #[test]
    fn bad_heads_are_errors_and_partial_ones_wait() {
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\nConte", false), Ok(None));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nX: y", false, 8, None),
            Err(BadResponse::TooLarge(8))
        );
        assert!(matches!(
            framing(b"HTTP/9 nope\r\n\r\n", false),
            Err(BadResponse::Invalid(_))
        ));
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            Err(BadResponse::Length)
        );
        assert_eq!(
            framing(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(BadResponse::Switched)
        );
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_fields_and_adds_banyans() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\n";
        let parsed = framing(raw, false).expect("valid").expect("complete");
        let id = HeaderValue::from_static("rid");
        let mut out = Vec::new();
        let debug: [(&'static str, &[u8]); 1] = [("X-Banyan-Route", b"orders")];
        write_client_head(
            &mut out,
            raw,
            &parsed,
            &Additions {
                request_id: &id,
                debug: &debug,
                close: true,
            },
        );
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             X-Request-Id: rid\r\nX-Banyan-Route: orders\r\nConnection: close\r\n\r\n"
        );
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nx-request-id: up\r\n\r\n";
        let parsed = framing(raw, false).expect("valid").expect("complete");
        let mut out = Vec::new();
        let add = Additions {
            request_id: &id,
            debug: &[],
            close: false,
        };
        write_client_head(&mut out, raw, &parsed, &add);
        assert_eq!(
            String::from_utf8(out).expect("text"),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-request-id: up\r\n\r\n"
        );
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let end = body.len() - 4;
        // Every split point: the tracker sees the same body in two reads.
        for split in 0..=end {
            let mut c = Chunked::default();
            let mut data = Vec::new();
            let a = c
                .feed(&body[..split], |d| data.extend_from_slice(d))
                .expect("valid");
            assert_eq!(a, split);
            let b = c
                .feed(&body[split..], |d| data.extend_from_slice(d))
                .expect("valid");
            assert_eq!(split + b, end, "split at {split}");
            assert!(c.done());
            assert_eq!(data, b"hello!");
        }
        let mut c = Chunked::default();
        assert_eq!(c.feed(b"0\r\n\r\n", |_| {}), Ok(5));
        assert!(c.done());
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"ffffffffffffffff\r\n",
        ] {
            assert_eq!(
                Chunked::default().feed(bad, |_| {}),
                Err(BadChunk),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_parse_keeps_only_the_headers_the_comparison_reads() {
        use crate::shadow::pattern::Patterns;
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 05:00:00 GMT\r\n\
            Content-Type: application/json\r\nContent-Encoding: gzip\r\nX-Version: 7\r\n\
            x-version: 8\r\nContent-Length: 2\r\nSet-Cookie: s=1\r\n\r\n";
        let rules = Rules {
            compare_headers: vec![HeaderName::from_static("x-version")],
            ignore_headers: vec![],
            ignore: Patterns::parse(std::iter::empty()),
            max_body: 1 << 20,
        };
        let parsed = parse(head, false, 1 << 16, Some(&rules))
            .expect("valid")
            .expect("whole");
        let mut names: Vec<&str> = parsed.kept.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["content-encoding", "content-type", "x-version"]);
        let versions: Vec<&[u8]> = parsed
            .kept
            .get_all("x-version")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(versions, [&b"7"[..], &b"8"[..]]);
        assert_eq!(parsed.framing, Framing::Length(2));
        let unkept = parse(head, false, 1 << 16, None)
            .expect("valid")
            .expect("whole");
        assert!(unkept.kept.is_empty(), "nothing kept unless asked");
    }
}
