//! Upstream response heads: parsed without panic, the fields the parse noted are the ones
//! httparse reads, and the head banyan writes for the client parses again to the same
//! status and framing.
#![no_main]

use banyan::http1::response::{self, Framing};
use banyan::proxy::fast::response::{write_client_head, Additions};
use banyan::http1::framing::{self, Body};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let Ok(Some(p)) = response::parse(data, head_request, 64 * 1024, None) else {
        return;
    };
    if p.informational {
        return;
    }
    let head = &data[..p.head_len];
    let mut hs = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
    let mut first = httparse::Response::new(&mut hs);
    assert!(first.parse(head).is_ok());
    if let Some(spans) = &p.spans {
        let noted: Vec<(&[u8], &[u8])> = spans.fields(head).collect();
        let read: Vec<(&[u8], &[u8])> =
            first.headers.iter().map(|h| (h.name.as_bytes(), h.value)).collect();
        assert_eq!(noted, read);
    }
    assert_eq!(head.get(p.reason.clone()), first.reason.map(str::as_bytes).or(Some(&b""[..])));
    let id = HeaderValue::from_static("fuzz");
    let mut out = Vec::new();
    let add = Additions {
        request_id: &id,
        debug: &[],
        close: flags & 2 == 2,
    };
    write_client_head(&mut out, &data[..p.head_len], &p, &add);
    // Read back with room for the fields banyan adds.
    let mut hs = [httparse::EMPTY_HEADER; 2 * response::MAX_HEADERS];
    let mut again = httparse::Response::new(&mut hs);
    let text = || String::from_utf8_lossy(&out).into_owned();
    match again.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "{}", text()),
        other => panic!("banyan wrote a head it cannot read ({other:?}): {}", text()),
    }
    assert_eq!(again.code, Some(p.status));
    let no_body = head_request || p.framing == Framing::Empty;
    let fields = again.headers.iter().map(|h| (h.name, h.value));
    let framed = framing::response(1, no_body, fields)
        .unwrap_or_else(|e| panic!("banyan wrote framing it refuses ({e}): {}", text()));
    let want = match p.framing {
        Framing::Empty => Body::None,
        Framing::Length(n) => Body::Length(n),
        Framing::Chunked => Body::Chunked,
        Framing::UntilClose => Body::UntilClose,
    };
    assert_eq!(framed.body, want, "{}", text());
});
