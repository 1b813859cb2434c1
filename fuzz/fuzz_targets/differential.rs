//! The same bytes to banyan's fast-path framing decision and to an independent reference
//! framer (`banyan_fuzz::frame_request`, RFC 9112 alone). Fails when banyan accepts a
//! request the reference frames differently, or forwards bytes the reference does not
//! read as exactly that one request.
#![no_main]

use banyan::http1::request as head;
use banyan::upstream::forward::{self, Forwarding};
use banyan_fuzz::{frame_request, Framed};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut hs = head::slots();
    let Ok(h) = head::parse(data, &mut hs) else {
        return;
    };
    let body = h.body(data).to_vec();
    match frame_request(data) {
        Framed::Whole {
            head_len,
            wire_len,
            body: reference,
            ..
        } => {
            assert_eq!(h.head_len, head_len, "where the head ends");
            assert_eq!(h.wire_len(), wire_len, "where the request ends");
            assert_eq!(body, reference, "the body");
        }
        other => panic!("banyan accepted a request the reference frames as {other:?}"),
    }
    let id = HeaderValue::from_static("fuzz");
    let fwd = Forwarding {
        client: Some([127, 0, 0, 1].into()),
        scheme: "http",
        request_id: &id,
        upstream_host: None,
        shadow: false,
    };
    let mut out = Vec::new();
    forward::write_request(&mut out, h.line(), || h.fields(), &body, &fwd);
    match frame_request(&out) {
        Framed::Whole {
            method,
            target,
            wire_len,
            body: forwarded,
            ..
        } => {
            assert_eq!(wire_len, out.len(), "the forwarded bytes are one request");
            assert_eq!(forwarded, body, "the forwarded body");
            assert_eq!((method.as_str(), target.as_str()), (h.method, h.target));
        }
        other => panic!("the upstream would read banyan's request as {other:?}"),
    }
});
