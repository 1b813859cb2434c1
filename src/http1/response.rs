//! An upstream's response head, pure: its status, how its body is framed
//! (`framing::response`), whether the connection stays open, and the headers a shadow
//! comparison reads, taken in the same pass.

use std::ops::Range;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::framing::{self, BadFraming, Body};
use crate::compare::Rules;

pub const MAX_HEADERS: usize = 128;

/// How the response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body: HEAD, 204, 304.
    #[default]
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    #[error("the response head is not valid HTTP/1.x: {0}")]
    Invalid(String),
    #[error("the response head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the response cannot be framed without doubt: {0}")]
    Framing(#[from] BadFraming),
    #[error("the upstream switched protocols on a request that asked for no upgrade")]
    Switched,
}

/// What the proxy needs of a response head. (`Default` is a place for one not yet read:
/// the fast path keeps it in its request's state and lends it to the exchange, so the
/// few hundred bytes are written once instead of copied at every step that returns.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub status: u16,
    /// Where the reason phrase is in the head (empty when it had none, or one httparse
    /// would not read as text).
    pub reason: Range<usize>,
    /// Where its fields are, when there are few enough to note.
    pub spans: Option<FieldSpans>,
    pub head_len: usize,
    pub framing: Framing,
    /// The upstream will not take another request on this connection.
    pub close: bool,
    /// 1xx other than 101: a response to skip before the real one.
    pub informational: bool,
    /// A chunked body's `Transfer-Encoding` names codings before `chunked`, which the
    /// client gets as they are.
    pub coded: bool,
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
    let mut hs = super::field_slots::<MAX_HEADERS>();
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut hs);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limit => {
            return Err(BadResponse::TooLarge(limit))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BadResponse::Invalid(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        // "012" parses as 12; a status outside the five classes frames nothing.
        return Err(BadResponse::Invalid(format!("status {status}")));
    }
    if status == 101 {
        return Err(BadResponse::Switched);
    }
    let minor = resp.version.unwrap_or(0);
    let informational = (100..200).contains(&status);
    let no_body = informational || head_request || status == 204 || status == 304;
    let fields = resp.headers.iter().map(|h| (h.name, h.value));
    let framed = framing::response(minor, no_body, fields)?;
    let mut kept = HeaderMap::new();
    if let Some(rules) = keep {
        for h in resp.headers.iter().filter(|h| rules.reads_header(h.name)) {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                kept.append(n, v);
            }
        }
    }
    let framing = match framed.body {
        Body::None => Framing::Empty,
        Body::Length(n) => Framing::Length(n),
        Body::Chunked => Framing::Chunked,
        Body::UntilClose => Framing::UntilClose,
    };
    Ok(Some(Parsed {
        status,
        reason: resp.reason.map_or(0..0, |r| span(buf, r.as_bytes())),
        spans: FieldSpans::of(buf, resp.headers),
        head_len,
        framing,
        close: framed.close,
        informational,
        coded: framed.coded,
        kept,
    }))
}

/// Where `part` lies in `buf`, when it was taken from it.
fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= buf.len() => start..end,
        _ => 0..0,
    }
}

/// Fields whose place `parse` notes; a head with more is parsed again when written.
const SPANS: usize = 24;

/// Where each field of a head lies in it (name start and end, value start and end), noted
/// by the parse that accepted it: the client's head is written from these, so that an
/// answer's head is parsed once. Heads over 64 KiB or with more than 24 fields have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpans {
    len: u8,
    at: [[u16; 4]; SPANS],
}

impl FieldSpans {
    fn of(buf: &[u8], headers: &[httparse::Header]) -> Option<FieldSpans> {
        if headers.len() > SPANS {
            return None;
        }
        let mut at = [[0u16; 4]; SPANS];
        for (slot, h) in at.iter_mut().zip(headers) {
            let (name, value) = (span(buf, h.name.as_bytes()), span(buf, h.value));
            let ends = [name.start, name.end, value.start, value.end];
            for (to, from) in slot.iter_mut().zip(ends) {
                *to = u16::try_from(from).ok()?;
            }
        }
        let len = u8::try_from(headers.len()).ok()?;
        Some(FieldSpans { len, at })
    }

    /// The fields as `parse` read them from `head`: (name, value) in order. A name is a
    /// token httparse checked: ASCII.
    pub fn fields<'h>(
        &'h self,
        head: &'h [u8],
    ) -> impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone + 'h {
        self.at[..usize::from(self.len)]
            .iter()
            .filter_map(move |&[ns, ne, vs, ve]| {
                let name = head.get(usize::from(ns)..usize::from(ne))?;
                let value = head.get(usize::from(vs)..usize::from(ve))?;
                Some((name, value))
            })
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
            f(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
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
        for (raw, why) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"[..],
                BadFraming::RepeatedLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                BadFraming::LengthAndEncoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                BadFraming::Encoding,
            ),
        ] {
            assert_eq!(framing(raw, false), Err(BadResponse::Framing(why)));
        }
        assert_eq!(
            framing(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false),
            Err(BadResponse::Switched)
        );
        for status in [&b"012"[..], b"099", b"600"] {
            let mut raw = b"HTTP/1.0 ".to_vec();
            raw.extend_from_slice(status);
            raw.extend_from_slice(b"\r\n\r\n");
            assert!(
                matches!(framing(&raw, false), Err(BadResponse::Invalid(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_parse_keeps_only_the_headers_the_comparison_reads() {
        use crate::compare::pattern::Patterns;
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 05:00:00 GMT\r\n\
            Content-Type: application/json\r\nContent-Encoding: gzip\r\nX-Version: 7\r\n\
            x-version: 8\r\nContent-Length: 2\r\nSet-Cookie: s=1\r\n\r\n";
        let rules = Rules {
            compare_headers: vec![HeaderName::from_static("x-version")],
            ignore_headers: vec![],
            ignore: Patterns::parse(std::iter::empty()),
            max_body: 1 << 20,
            ..Default::default()
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

    #[test]
    fn noted_fields_are_httparse_s() {
        let many: Vec<u8> = (0..SPANS + 1)
            .flat_map(|i| format!("X-{i}: {i}\r\n").into_bytes())
            .collect();
        let many = [&b"HTTP/1.1 200 OK\r\n"[..], &many, b"\r\n"].concat();
        let heads: [&[u8]; 7] = [
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nX-Empty:\r\nX-Blank: \t \r\n\r\n",
            b"HTTP/1.1 200 OK\nX-Bare: lf \t\nContent-Length: 0\n\n",
            b"HTTP/1.1 404 Not  Found\r\nX-A:  a b \r\nx-a:\tc\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 204\r\n\r\n",
            b"HTTP/1.0 200 \xe9t\xe9\r\nX-Obs: \xff\xfe\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-After: 1\r\n\r\n",
            &many,
        ];
        for raw in heads {
            let p = framing(raw, false).expect("valid").expect("whole");
            let head = &raw[..p.head_len];
            let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut want = httparse::Response::new(&mut hs);
            assert!(want.parse(head).is_ok());
            let want_fields: Vec<(&[u8], &[u8])> = want
                .headers
                .iter()
                .map(|h| (h.name.as_bytes(), h.value))
                .collect();
            match &p.spans {
                Some(spans) => {
                    assert_eq!(
                        spans.fields(head).collect::<Vec<_>>(),
                        want_fields,
                        "{raw:?}"
                    )
                }
                None => assert!(want_fields.len() > SPANS, "{raw:?}"),
            }
            assert_eq!(
                &head[p.reason.clone()],
                want.reason.unwrap_or("").as_bytes()
            );
        }
    }
}
