//! The per-request bookkeeping functions of the data path, one criterion bench each:
//! what a request pays beside the decision (`decision`) and header work (`headers`).
//! Run: `cargo bench --bench hot`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use banyan::config::Circuit;
use banyan::guard::Window;
use banyan::metrics::Metrics;
use banyan::proxy::access_log::Line;
use banyan::ratelimit::Limiter;
use banyan::routes::def::{RateKey, RateLimitDef};
use banyan::routes::request::Headers;
use banyan::routes::Backend;
use banyan::upstream::circuit::Breaker;
use banyan::upstream::forward as headers;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use prometheus::IntGauge;

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new().expect("metrics");
    let route = metrics.route("orders");
    c.bench_function("metrics: count a request and observe its duration", |b| {
        b.iter(|| route.record(&metrics, black_box(Backend::Target), 200, black_box(0.0012)))
    });

    let window = Window::new(Duration::from_secs(60));
    let mut now = 1_000_000u64;
    c.bench_function("guard: record an outcome in the window", |b| {
        b.iter(|| {
            now += 1;
            window.record(black_box(now), true, Some(Duration::from_micros(1200)))
        })
    });

    let breaker = Breaker::new(&Circuit::default(), IntGauge::new("b", "b").expect("gauge"));
    c.bench_function("circuit: admit and record a success", |b| {
        b.iter(|| {
            black_box(breaker.admit(black_box(1_000)));
            breaker.record(true, 1_000)
        })
    });

    let limiter = Limiter::new(&RateLimitDef {
        rate: 1e9,
        burst: 1_000_000,
        key: RateKey::Ip,
    })
    .expect("limiter");
    let client = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let empty = HeaderMap::new();
    c.bench_function("rate limit: key and check a client", |b| {
        b.iter(|| limiter.check(limiter.key(black_box(Headers::Map(&empty)), black_box(client))))
    });

    c.bench_function("request id: generate", |b| {
        b.iter(|| headers::request_id(black_box(None)))
    });

    let line = Line {
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        request_id: HeaderValue::from_static("0b8f3c2e-6d1a-4f0e-9a77-5c1d2e3f4a5b"),
        method: Method::GET,
        path: "/api/orders/42".to_string(),
        route: "orders".to_string(),
        backend: "target",
        status: 200,
        duration_ms: 1.234,
        upstream_ms: Some(1.1),
        fallback: None,
        shadow: false,
        transport: "banyan",
        grpc_status: None,
    };
    let mut out = Vec::with_capacity(512);
    c.bench_function("access log: format one line", |b| {
        b.iter(|| {
            out.clear();
            black_box(&line).write(&mut out).expect("write");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
