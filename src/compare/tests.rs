use std::io::Write;

use super::*;
use crate::compare::pattern::Patterns;

fn answer(status: u16, content_type: &str, body: &str) -> Answer {
    let mut headers = HeaderMap::new();
    if !content_type.is_empty() {
        headers.insert(CONTENT_TYPE, content_type.parse().expect("ct"));
    }
    Answer {
        status,
        headers,
        body: Bytes::copy_from_slice(body.as_bytes()),
        complete: true,
    }
}

fn json(body: &str) -> Answer {
    answer(200, "application/json", body)
}

fn rules(ignore: &[&str]) -> Rules {
    Rules {
        compare_headers: vec![CONTENT_TYPE],
        ignore_headers: vec![],
        ignore: Patterns::parse(ignore.iter().copied()),
        max_body: 1 << 20,
        ..Default::default()
    }
}

fn fields(v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Mismatch { differences, .. } => {
            differences.iter().map(|d| d.field.name()).collect()
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

fn check(l: &Answer, s: &Answer) -> Verdict {
    compare(l, s, false, &rules(&[]), &Noise::default())
}

#[test]
fn json_compares_structurally() {
    let l = json(r#"{"id": 1, "price": 12.5, "tags": ["a", "b"], "meta": {"v": 1}}"#);
    let reordered = json(r#"{"meta":{"v":1.0},"tags":["a","b"],"price":12.50,"id":1.0}"#);
    assert_eq!(check(&l, &reordered), Verdict::Match);
    let changed =
        json(r#"{"id": 1, "price": 13, "tags": ["b", "a"], "meta": {"v": 1}, "new": null}"#);
    let v = check(&l, &changed);
    assert_eq!(fields(&v), ["/new", "/price", "/tags/0", "/tags/1"]);
    if let Verdict::Mismatch { differences, total } = &v {
        assert_eq!(*total, 4);
        assert_eq!(differences[1].legacy.as_deref(), Some("12.5"));
        assert_eq!(differences[1].shadow.as_deref(), Some("13"));
        assert_eq!(differences[0].legacy, None);
        assert_eq!(differences[0].shadow.as_deref(), Some("null"));
    }
    let shorter = json(r#"{"id": 1, "price": 12.5, "tags": ["a"], "meta": {}}"#);
    assert_eq!(fields(&check(&l, &shorter)), ["/meta/v", "/tags/1"]);
    // Big integers compare exactly, not through f64.
    assert_ne!(
        check(&json("9007199254740993"), &json("9007199254740992")),
        Verdict::Match
    );
}

#[test]
fn ignore_patterns_and_noise_leave_fields_out() {
    let l =
        json(r#"{"items":[{"id":1,"etag":"a"},{"id":2,"etag":"b"}],"meta":{"generated_at":1}}"#);
    let s =
        json(r#"{"items":[{"id":1,"etag":"x"},{"id":2,"etag":"y"}],"meta":{"generated_at":2}}"#);
    let r = rules(&["/items/*/etag", "/meta/generated_at"]);
    assert_eq!(
        compare(&l, &s, false, &r, &Noise::default()),
        Verdict::Match
    );
    // Ignoring a parent ignores what is below it, and absent keys too.
    let r = rules(&["/meta", "/items"]);
    let s2 = json(r#"{"items":[],"meta":{"other":true}}"#);
    assert_eq!(
        compare(&l, &s2, false, &r, &Noise::default()),
        Verdict::Match
    );
    let noise = Noise {
        json: Patterns::parse(["/items/*/etag", "/meta/generated_at"]),
        ..Noise::default()
    };
    assert_eq!(compare(&l, &s, false, &rules(&[]), &noise), Verdict::Match);
    // The whole body can be ignored with "".
    let text_l = answer(200, "text/plain", "one");
    let text_s = answer(200, "text/plain", "two");
    assert_eq!(
        compare(&text_l, &text_s, false, &rules(&[""]), &Noise::default()),
        Verdict::Match
    );
}

#[test]
fn status_headers_and_bytes() {
    let v = check(
        &answer(200, "text/plain", "x"),
        &answer(404, "text/plain", "y"),
    );
    // Different statuses: the bodies are not compared as well.
    assert_eq!(fields(&v), ["status"]);
    let v = check(
        &answer(200, "text/html", "x"),
        &answer(200, "text/plain", "x"),
    );
    assert_eq!(fields(&v), ["header:content-type"]);
    let v = check(&answer(200, "", "a"), &answer(200, "", "b"));
    assert_eq!(fields(&v), ["body"]);
    assert_eq!(
        check(&answer(200, "", ""), &answer(200, "", "")),
        Verdict::Match
    );
    let mut r = rules(&[]);
    r.ignore_headers.push(CONTENT_TYPE);
    let v = compare(
        &answer(200, "text/html", "x"),
        &answer(200, "text/plain", "x"),
        false,
        &r,
        &Noise::default(),
    );
    assert_eq!(v, Verdict::Match);
    // A binary body is described by its size.
    let bin_l = Answer {
        body: Bytes::from_static(&[0xff, 0xfe, 0x00]),
        ..answer(200, "", "")
    };
    let bin_s = Answer {
        body: Bytes::from_static(&[0xff, 0xfe, 0x01]),
        ..answer(200, "", "")
    };
    match check(&bin_l, &bin_s) {
        Verdict::Mismatch { differences, .. } => {
            assert_eq!(
                differences[0].legacy.as_deref(),
                Some("(3 bytes, not text)")
            )
        }
        other => panic!("{other:?}"),
    }
    // Repeated headers compare as a list.
    let mut two = answer(200, "text/plain", "");
    two.headers
        .append(CONTENT_TYPE, "text/plain".parse().expect("ct"));
    let one = answer(200, "text/plain", "");
    assert_eq!(fields(&check(&two, &one)), ["header:content-type"]);
}

#[test]
fn bad_input_has_defined_outcomes() {
    // Invalid JSON on one side: the whole body differs.
    assert_eq!(
        fields(&check(&json(r#"{"a":1}"#), &json("{oops"))),
        ["body"]
    );
    // Invalid on both sides: bytes.
    assert_eq!(check(&json("{oops"), &json("{oops")), Verdict::Match);
    assert_eq!(fields(&check(&json("{oops"), &json("{oops!"))), ["body"]);
    // JSON against text: the content type and the body.
    let v = check(&json(r#"{"a":1}"#), &answer(200, "text/plain", "a=1"));
    assert_eq!(fields(&v), ["header:content-type", "body"]);
    // Empty against JSON.
    assert_eq!(fields(&check(&json(""), &json("{}"))), ["body"]);
    // Over the cap on either side: skipped, unless something else already differs.
    let mut big = json(r#"{"a":1}"#);
    big.complete = false;
    assert_eq!(
        check(&big, &json(r#"{"a":2}"#)),
        Verdict::Skipped(SkipReason::ResponseTooLarge)
    );
    assert_eq!(
        check(&json(r#"{"a":2}"#), &big),
        Verdict::Skipped(SkipReason::ResponseTooLarge)
    );
    let mut big404 = big.clone();
    big404.status = 404;
    assert_eq!(fields(&check(&big404, &json("{}"))), ["status"]);
    // No bodies: HEAD, 1xx, 204 and 304.
    assert_eq!(
        compare(
            &json("{}"),
            &json("[]"),
            true,
            &rules(&[]),
            &Noise::default()
        ),
        Verdict::Match
    );
    for status in [101, 204, 304] {
        let l = answer(status, "", "a");
        let s = answer(status, "", "b");
        assert_eq!(check(&l, &s), Verdict::Match, "{status}");
    }
    // Deeply nested documents are refused by the parser (recursion limit), never a crash.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(fields(&check(&json(&deep), &json("[]"))), ["body"]);
}

#[test]
fn encodings_decode_or_skip() {
    let gz = |s: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(s.as_bytes()).expect("gzip");
        Bytes::from(e.finish().expect("gzip"))
    };
    let mut l = json(r#"{"a":1,"b":2}"#);
    l.body = gz(r#"{"a":1,"b":2}"#);
    l.headers
        .insert(CONTENT_ENCODING, "gzip".parse().expect("ce"));
    assert_eq!(check(&l, &json(r#"{"b":2,"a":1}"#)), Verdict::Match);
    assert_eq!(fields(&check(&l, &json(r#"{"b":3,"a":1}"#))), ["/b"]);
    let mut z = json("{}");
    z.headers
        .insert(CONTENT_ENCODING, "zstd".parse().expect("ce"));
    assert_eq!(
        check(&z, &json("[]")),
        Verdict::Skipped(SkipReason::Encoding)
    );
    let mut broken = json("{}");
    broken.body = Bytes::from_static(b"not gzip");
    broken
        .headers
        .insert(CONTENT_ENCODING, "gzip".parse().expect("ce"));
    assert_eq!(
        check(&broken, &json("{}")),
        Verdict::Skipped(SkipReason::Encoding)
    );
}

#[test]
fn differences_are_capped_and_values_shortened() {
    let l: Vec<u32> = (0..100).collect();
    let s: Vec<u32> = (1..101).collect();
    let l = json(&serde_json::to_string(&l).expect("json"));
    let s = json(&serde_json::to_string(&s).expect("json"));
    match check(&l, &s) {
        Verdict::Mismatch { differences, total } => {
            assert_eq!(differences.len(), MAX_DIFFERENCES);
            assert_eq!(total, 100);
        }
        other => panic!("{other:?}"),
    }
    let long = "é".repeat(500);
    let v = check(
        &json(&format!("{{\"t\":\"{long}\"}}")),
        &json(r#"{"t":"x"}"#),
    );
    if let Verdict::Mismatch { differences, .. } = v {
        let text = differences[0].legacy.clone().expect("value");
        assert!(text.len() <= VALUE_PREVIEW + '…'.len_utf8());
        assert!(text.ends_with('…'));
    }
}

#[test]
fn noise_fields_generalize_positions() {
    let f = Field::Json(vec![OwnedSeg::Key("a".into()), OwnedSeg::Index(3)]);
    assert_eq!(f.as_noise().name(), "/a/*");
    assert_eq!(Field::Status.as_noise(), Field::Status);
}
