//! The per-request header work of the proxy on Pingora's own header types: forwarding
//! headers on the upstream request, hop-by-hop stripping and the request id on the
//! response. Run: `cargo bench --bench headers`.

use std::hint::black_box;

use banyan::upstream::forward as headers;
use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};

fn request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/api/orders/42", None).expect("request");
    for (k, v) in [
        ("Host", "shop.example.com"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ("Accept", "application/json"),
        ("X-User-Id", "user-12345"),
    ] {
        r.append_header(k, v).expect("header");
    }
    r
}

fn response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, None).expect("response");
    for (k, v) in [
        ("Content-Type", "application/json"),
        ("Content-Length", "34"),
        ("Date", "Sun, 22 Nov 2026 21:00:00 GMT"),
        ("Connection", "keep-alive"),
    ] {
        r.append_header(k, v).expect("header");
    }
    r
}

fn bench(c: &mut Criterion) {
    let ip = Some("127.0.0.1".parse().expect("ip"));
    let host = Some(HeaderValue::from_static("shop.example.com"));
    let base = request();
    c.bench_function("headers/request_id_new", |b| {
        b.iter(|| black_box(headers::request_id(None)))
    });
    c.bench_function("headers/upstream_request", |b| {
        b.iter_batched(
            || (base.clone(), headers::request_id(None)),
            |(mut req, id)| {
                headers::apply_forwarding(&mut req, ip, "http", host.clone(), &id);
                black_box(req)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let client: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    c.bench_function("headers/forwarded_for", |b| {
        b.iter(|| black_box(headers::forwarded_for(None, black_box(client))))
    });
    c.bench_function("headers/one_insert", |b| {
        b.iter_batched(
            || base.clone(),
            |mut req| {
                let _ = req.insert_header("X-Forwarded-Proto", HeaderValue::from_static("http"));
                black_box(req)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("headers/clone_only", |b| {
        b.iter_batched(
            || (),
            |_| black_box(base.clone()),
            criterion::BatchSize::SmallInput,
        )
    });
    let resp = response();
    c.bench_function("headers/response", |b| {
        b.iter_batched(
            || resp.clone(),
            |mut r| {
                headers::strip_response_hop_by_hop(&mut r);
                black_box(r)
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
