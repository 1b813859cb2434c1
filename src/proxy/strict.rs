//! `framing`'s rules on Pingora's path. Pingora parses requests and responses itself and is
//! more lenient in places (it collapses `Content-Length: 5, 5`, takes two `Host` fields,
//! and lets a `Connection` header nominate `Content-Length` away), so banyan re-reads a
//! request's raw head with its own parse before routing, writes the upstream request's
//! framing fields itself, and checks each upstream answer's framing fields before relaying.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Version;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;

use crate::http1::framing::{self, BadFraming, Refusal};
use crate::upstream::forward::connection_nominated;

/// Pingora's own limit on request header fields.
const MAX_FIELDS: usize = 256;

/// Applies the request rules to an HTTP/1 request as its bytes arrived. (HTTP/2 frames
/// its messages itself, and the h2 codec refuses `Transfer-Encoding` and conflicting
/// lengths.)
pub fn check_request(session: &ServerSession) -> Result<(), Refusal> {
    let Some(h1) = session.as_http1() else {
        return Ok(());
    };
    let raw = h1.get_headers_raw_bytes();
    check_raw_request(&raw)
}

/// The request rules over a raw request head.
pub fn check_raw_request(raw: &[u8]) -> Result<(), Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(_)) => {}
        // Pingora accepted a head banyan's parse does not: not forwarded.
        _ => return Err(Refusal::Malformed),
    }
    let minor = req.version.ok_or(Refusal::Malformed)?;
    framing::request(minor, req.headers.iter().map(|h| (h.name, h.value))).map(|_| ())
}

/// Sets the framing of the request Pingora sends upstream from the client's request: the
/// nominated hop-by-hop fields go (Pingora is told not to remove them itself, since it would
/// take protected ones too), and the length is banyan's own. A body without a length goes
/// chunked (Pingora adds `Transfer-Encoding: chunked` to an unframed body).
pub fn reframe_request(client: &RequestHeader, upstream: &mut RequestHeader) {
    for name in connection_nominated(&client.headers) {
        upstream.remove_header(&name);
    }
    upstream.remove_header(&TRANSFER_ENCODING);
    let length = client
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| framing::content_length(v.as_bytes()));
    let chunked = client.headers.contains_key(TRANSFER_ENCODING);
    upstream.remove_header(&CONTENT_LENGTH);
    if let (Some(n), false) = (length, chunked) {
        // A number always makes a valid header value.
        let _ = upstream.insert_header(CONTENT_LENGTH, n);
    }
}

/// The response rules over an upstream's answer as Pingora parsed it. Pingora removes a
/// `Content-Length` sent beside `Transfer-Encoding` and frames by the latter, so that
/// one case is not seen here.
pub fn check_response(resp: &ResponseHeader, head_request: bool) -> Result<(), BadFraming> {
    let status = resp.status.as_u16();
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let minor = u8::from(resp.version != Version::HTTP_10);
    let fields = resp.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    framing::response(minor, no_body, fields).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_heads_follow_the_request_rules() {
        assert_eq!(
            check_raw_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(())
        );
        assert_eq!(check_raw_request(b"GET / HTTP/1.0\r\n\r\n"), Ok(()));
        assert_eq!(
            check_raw_request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"),
            Err(Refusal::BadLength)
        );
        assert_eq!(
            check_raw_request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            Err(Refusal::RepeatedHost)
        );
        assert_eq!(
            check_raw_request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(Refusal::LengthAndEncoding)
        );
        assert_eq!(
            check_raw_request(b"GET / HTTP/1.1\r\n\r\n"),
            Err(Refusal::MissingHost)
        );
        assert_eq!(
            check_raw_request(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn the_upstream_request_keeps_its_length_whatever_connection_says() {
        let mut client = RequestHeader::build("POST", b"/", None).expect("req");
        for (n, v) in [
            ("Host", "shop"),
            ("Connection", "Content-Length, Host, X-Hop"),
            ("X-Hop", "1"),
            ("Content-Length", "007"),
        ] {
            client.append_header(n, v).expect("header");
        }
        // What Pingora's standard policy would have left: nominated fields removed.
        let mut upstream = client.clone();
        upstream.remove_header("connection");
        upstream.remove_header("content-length");
        reframe_request(&client, &mut upstream);
        assert_eq!(upstream.headers["content-length"], "7");
        assert_eq!(upstream.headers["host"], "shop");
        assert!(upstream.headers.get("x-hop").is_none());

        let mut chunked = RequestHeader::build("POST", b"/", None).expect("req");
        chunked.append_header("Host", "shop").expect("header");
        chunked
            .append_header("Transfer-Encoding", "chunked")
            .expect("header");
        let mut upstream = chunked.clone();
        reframe_request(&chunked, &mut upstream);
        assert!(
            upstream.headers.get("transfer-encoding").is_none(),
            "Pingora chunks it"
        );
        assert!(upstream.headers.get("content-length").is_none());
    }

    #[test]
    fn answers_with_doubtful_framing_are_refused() {
        let resp = |fields: &[(&str, &str)]| {
            let mut r = ResponseHeader::build(200, None).expect("resp");
            for (n, v) in fields {
                r.append_header(n.to_string(), *v).expect("header");
            }
            r
        };
        assert_eq!(
            check_response(&resp(&[("Content-Length", "3")]), false),
            Ok(())
        );
        assert_eq!(
            check_response(
                &resp(&[("Content-Length", "3"), ("Content-Length", "3")]),
                false
            ),
            Err(BadFraming::RepeatedLength)
        );
        assert_eq!(
            check_response(&resp(&[("Transfer-Encoding", "gzip")]), false),
            Err(BadFraming::Encoding)
        );
        assert_eq!(
            check_response(&resp(&[("Content-Length", "3, 3")]), true),
            Err(BadFraming::BadLength)
        );
    }
}
