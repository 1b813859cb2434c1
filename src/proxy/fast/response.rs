//! The head the client gets on banyan's own path, pure: the upstream's status and fields
//! with banyan's own framing fields. Bodies are relayed as they come, never held whole;
//! chunked ones re-chunked.

use http::HeaderValue;

use crate::http1::framing::hop_by_hop;
use crate::http1::response::{Framing, Parsed, MAX_HEADERS};
use crate::http1::{connection_tokens, field_slots, format_len, push_header};

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
    match &parsed.spans {
        // Where `response::parse` found the fields: the head is not parsed again.
        Some(spans) => write_head(out, head, parsed, add, spans.fields(head)),
        None => {
            let mut hs = field_slots::<MAX_HEADERS>();
            let mut resp = httparse::Response::new(&mut []);
            // `head` parsed before; a failure here would leave only what banyan adds.
            let _ = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, head, &mut hs);
            let fields = resp.headers.iter().map(|h| (h.name.as_bytes(), h.value));
            write_head(out, head, parsed, add, fields)
        }
    }
}

fn write_head<'h>(
    out: &mut Vec<u8>,
    head: &[u8],
    parsed: &Parsed,
    add: &Additions,
    fields: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
) {
    out.reserve(head.len() + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = [0u8; 20];
    out.extend_from_slice(format_len(&mut digits, usize::from(parsed.status)));
    out.push(b' ');
    out.extend_from_slice(head.get(parsed.reason.clone()).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
    let connection = connection_tokens(fields.clone());
    let mut has_id = false;
    for (name, value) in fields {
        let framing_field = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        // A bodiless answer's length describes the resource (HEAD, 304): passed on as it
        // was validated. Every other framing field is banyan's own, written below.
        let pass_length =
            parsed.framing == Framing::Empty && name.eq_ignore_ascii_case(b"content-length");
        if pass_length || (!framing_field && !hop_by_hop(name, &connection)) {
            has_id |= name.eq_ignore_ascii_case(b"x-request-id");
            push_header(out, name, value);
        }
        if parsed.coded && name.eq_ignore_ascii_case(b"transfer-encoding") {
            push_header(out, b"Transfer-Encoding", value);
        }
    }
    match parsed.framing {
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            push_header(out, b"Content-Length", format_len(&mut digits, n));
        }
        Framing::Chunked if !parsed.coded => push_header(out, b"Transfer-Encoding", b"chunked"),
        Framing::Chunked | Framing::Empty | Framing::UntilClose => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::response::{parse, BadResponse};

    fn framing(raw: &[u8], head: bool) -> Result<Option<Parsed>, BadResponse> {
        parse(raw, head, 1 << 16, None)
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
        let add = Additions {
            request_id: &id,
            debug: &[],
            close: false,
        };
        // banyan writes the framing fields itself, whatever their case and place upstream.
        let cases: [(&[u8], &str); 4] = [
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\nx-request-id: up\r\n\r\n",
                "HTTP/1.1 200 OK\r\nx-request-id: up\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX-Request-Id: rid\r\n\r\n",
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\ncontent-length: 007\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Request-Id: rid\r\n\r\n",
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\nX-Request-Id: rid\r\n\r\n",
            ),
        ];
        for (raw, want) in cases {
            let parsed = framing(raw, false).expect("valid").expect("complete");
            let mut out = Vec::new();
            write_client_head(&mut out, raw, &parsed, &add);
            assert_eq!(String::from_utf8(out).expect("text"), want);
        }
    }
}
