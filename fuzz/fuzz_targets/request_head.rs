//! Request heads and framing: banyan's own parse (the fast path) and the check Pingora's
//! path runs on raw heads never panic, agree on what they refuse, and what the fast path
//! forwards parses again, by its own rules, as the same one request.
#![no_main]

use banyan::http1::request::{self as head, Handoff, MAX_HEADERS};
use banyan::upstream::forward::{self, Forwarding};
use banyan::http1::framing::Refusal;
use banyan::proxy::strict;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict_verdict = strict::check_raw_request(data);
    let mut hs = head::slots();
    let parsed = head::parse(data, &mut hs);
    if let Err(Handoff::Refused(why)) = &parsed {
        // What the fast path refuses for its head, Pingora's path refuses too. (A chunked
        // body is Pingora's own to decode on its path.)
        if *why != Refusal::BadChunk {
            assert!(strict_verdict.is_err(), "only the fast path refused: {why}");
        }
    }
    let Ok(h) = parsed else {
        return;
    };
    assert!(
        strict_verdict.is_ok(),
        "only Pingora's path refused: {strict_verdict:?}"
    );
    let body = h.body(data).to_vec();
    let id = HeaderValue::from_static("fuzz");
    let upstream = HeaderValue::from_static("upstream.internal");
    for upstream_host in [None, Some(&upstream)] {
        let fwd = Forwarding {
            client: None,
            scheme: "http",
            request_id: &id,
            upstream_host,
            shadow: true,
        };
        let mut out = Vec::new();
        forward::write_request(&mut out, h.line(), || h.fields(), &body, &fwd);
        let mut hs = [httparse::EMPTY_HEADER; 2 * MAX_HEADERS];
        let mut again = httparse::Request::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = again.parse(&out) else {
            panic!(
                "banyan wrote a head it cannot parse: {:?}",
                String::from_utf8_lossy(&out)
            );
        };
        assert_eq!(
            &out[n..],
            &body[..],
            "the body follows the head, nothing after it"
        );
        let lengths: Vec<&[u8]> = again
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("content-length"))
            .map(|f| f.value)
            .collect();
        assert!(lengths.len() <= 1, "one length at most");
        assert!(!again
            .headers
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case("transfer-encoding")));
        if !body.is_empty() {
            assert_eq!(lengths, [body.len().to_string().as_bytes()]);
        }
    }
});
