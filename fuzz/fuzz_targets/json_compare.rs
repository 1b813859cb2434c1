//! The shadow comparison: two bodies and a list of ignore patterns (the first line) are
//! compared without panic, and any body compared with itself matches.
#![no_main]

use banyan::compare::{compare, Answer, Noise, Rules, Verdict};
use banyan::compare::pattern::Patterns;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn answer(body: &[u8]) -> Answer {
    Answer {
        status: 200,
        headers: http::HeaderMap::new(),
        body: Bytes::copy_from_slice(body),
        complete: true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (patterns, rest) = text.split_once('\n').unwrap_or((text, ""));
    let (a, b) = rest.split_once('\u{1}').unwrap_or((rest, rest));
    let rules = Rules {
        compare_headers: Vec::new(),
        ignore_headers: Vec::new(),
        ignore: Patterns::parse(patterns.split(',')),
        max_body: 1 << 20,
        ..Default::default()
    };
    let noise = Noise {
        json: Patterns::parse(patterns.split(';')),
        ..Noise::default()
    };
    let _ = compare(
        &answer(a.as_bytes()),
        &answer(b.as_bytes()),
        false,
        &rules,
        &noise,
    );
    let same = compare(
        &answer(a.as_bytes()),
        &answer(a.as_bytes()),
        false,
        &rules,
        &noise,
    );
    assert!(
        !matches!(same, Verdict::Mismatch { .. }),
        "a body differs from itself: {a:?}"
    );
});
