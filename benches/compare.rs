//! Shadow comparison of two ~100 KB JSON documents (a catalog page of 600 items).
//! Target: ≤ 1 ms per comparison. Run: `cargo bench --bench compare`.
//!
//! - `identical`: byte-equal answers (the fast path: no parsing);
//! - `reordered`: equal documents with keys in another order (both parsed and walked);
//! - `one_field`: one price changed deep inside;
//! - `noisy`: a per-item timestamp differs everywhere, ignored as learned noise.

use std::hint::black_box;

/// The allocator of the `banyan` binary, so the figures are the proxy's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use banyan::compare::pattern::Patterns;
use banyan::compare::{compare, Answer, Noise, Rules, Verdict};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::header::CONTENT_TYPE;
use http::HeaderMap;

fn item(i: usize, price: f64, stamp: u64, reorder: bool) -> String {
    if reorder {
        format!(
            r#"{{"updated_at":{stamp},"tags":["t{a}","t{b}","sale"],"stock":{{"count":{c},"warehouse":"north-{w}"}},"price":{price:?},"name":"Item number {i} with a longer descriptive name","id":{i}}}"#,
            a = i % 7,
            b = i % 11,
            c = i * 3,
            w = i % 4
        )
    } else {
        format!(
            r#"{{"id":{i},"name":"Item number {i} with a longer descriptive name","price":{price:?},"stock":{{"warehouse":"north-{w}","count":{c}}},"tags":["t{a}","t{b}","sale"],"updated_at":{stamp}}}"#,
            a = i % 7,
            b = i % 11,
            c = i * 3,
            w = i % 4
        )
    }
}

fn document(changed: Option<usize>, stamp: u64, reorder: bool) -> Bytes {
    let items: Vec<String> = (0..600)
        .map(|i| {
            let price = if Some(i) == changed {
                99.99
            } else {
                10.0 + i as f64 / 4.0
            };
            item(i, price, stamp + i as u64, reorder)
        })
        .collect();
    Bytes::from(format!(
        r#"{{"page":1,"total":600,"items":[{}],"meta":{{"generated_at":"2026-11-22T10:00:00Z"}}}}"#,
        items.join(",")
    ))
}

fn answer(body: Bytes) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, "application/json".parse().expect("ct"));
    Answer {
        status: 200,
        headers,
        body,
        complete: true,
    }
}

fn bench(c: &mut Criterion) {
    let rules = Rules {
        compare_headers: vec![CONTENT_TYPE],
        ignore_headers: vec![],
        ignore: Patterns::parse(["/meta/generated_at"]),
        max_body: 1 << 20,
        ..Default::default()
    };
    let none = Noise::default();
    let legacy = answer(document(None, 1_000, false));
    assert!(legacy.body.len() > 100_000, "{} bytes", legacy.body.len());
    let same = answer(legacy.body.clone());
    let reordered = answer(document(None, 1_000, true));
    let changed = answer(document(Some(550), 1_000, false));
    let noisy = answer(document(None, 5_000, false));
    let learned = Noise {
        json: Patterns::parse(["/items/*/updated_at"]),
        ..Noise::default()
    };
    assert_eq!(
        compare(&legacy, &reordered, false, &rules, &none),
        Verdict::Match
    );
    assert!(matches!(
        compare(&legacy, &changed, false, &rules, &none),
        Verdict::Mismatch { total: 1, .. }
    ));
    assert_eq!(
        compare(&legacy, &noisy, false, &rules, &learned),
        Verdict::Match
    );

    let mut g = c.benchmark_group("compare_100kb_json");
    g.bench_function("identical", |b| {
        b.iter(|| compare(black_box(&legacy), black_box(&same), false, &rules, &none))
    });
    g.bench_function("reordered", |b| {
        b.iter(|| {
            compare(
                black_box(&legacy),
                black_box(&reordered),
                false,
                &rules,
                &none,
            )
        })
    });
    g.bench_function("one_field", |b| {
        b.iter(|| {
            compare(
                black_box(&legacy),
                black_box(&changed),
                false,
                &rules,
                &none,
            )
        })
    });
    g.bench_function("noisy", |b| {
        b.iter(|| {
            compare(
                black_box(&legacy),
                black_box(&noisy),
                false,
                &rules,
                &learned,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
