//! The request decision (match + split) over route tables of 10, 1,000 and 10,000 routes.
//! Targets: ≤ 200 ns at 10 routes, ≤ 1 µs at 10,000. Run: `cargo bench --bench decision`.

use std::hint::black_box;
use std::path::PathBuf;

use banyan::config::Config;
use banyan::routes::{load_sources, RequestView, RouteSet, RouteTable};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
default_upstream = "monolith"
[upstreams.monolith]
peers = ["127.0.0.1:8081"]
[upstreams.orders]
peers = ["127.0.0.1:8082"]
"#;

/// `n` routes in one file: mostly prefixes of different shapes, every tenth with a method
/// condition, every fiftieth a regex, as a large monolith's table would look.
fn routes(n: usize) -> RouteSet {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("banyan.toml");
    std::fs::write(&file, CONFIG).expect("config");
    let (config, _) = Config::load(&file, dir.path()).expect("config loads");
    let mut text = String::new();
    for i in 0..n {
        let matcher = if i % 50 == 49 {
            format!("match.path_regex = \"^/re{i}/v[0-9]+/items\"")
        } else if i % 10 == 9 {
            format!("match.path_prefix = \"/svc{i}/api\"\nmatch.methods = [\"GET\", \"POST\"]")
        } else {
            format!("match.path_prefix = \"/svc{i}/api\"")
        };
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\n{matcher}\ntarget = \"orders\"\npercent = 20\nsticky = \"header:x-user-id\"\n\n"
        ));
    }
    let (set, _) =
        load_sources(&[(PathBuf::from("routes/bench.toml"), text)], &config).expect("routes load");
    set
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    for n in [10usize, 1_000, 10_000] {
        let set = routes(n);
        let percents: Vec<u16> = set.routes.iter().map(|r| r.percent_bp).collect();
        let table = RouteTable::new(&set.routes, &percents).expect("compiles");
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("shop.example.com"));
        headers.insert("x-user-id", HeaderValue::from_static("user-12345"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
        // The request matches one of the last prefix routes.
        let last = (n - 2..n)
            .find(|i| i % 10 != 9 && i % 50 != 49)
            .unwrap_or(n - 1);
        let hit: Uri = format!("/svc{last}/api/items/42?expand=lines")
            .parse()
            .expect("uri");
        let miss: Uri = "/static/css/site.css".parse().expect("uri");
        let method = Method::GET;
        let ip = Some("10.1.2.3".parse().expect("ip"));
        group.bench_with_input(BenchmarkId::new("match_and_split", n), &n, |b, _| {
            b.iter(|| {
                let view = RequestView::new(&method, black_box(&hit), &headers, ip);
                black_box(table.decide(&view))
            })
        });
        group.bench_with_input(BenchmarkId::new("unmatched", n), &n, |b, _| {
            b.iter(|| {
                let view = RequestView::new(&method, black_box(&miss), &headers, ip);
                black_box(table.decide(&view))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
