//! The real binary against real upstream servers: the split, stickiness, default routing,
//! bodies, forwarding headers, WebSocket, peers, failures and metrics.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use banyan::routes::split;
use common::upstream::{pattern, Upstream};
use common::{raw_exchange, read_response, Banyan, Setup, Transport};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use xxhash_rust::xxh3::xxh3_64;

const ORDERS_20: &str = r#"
[[route]]
name = "orders"
match.path_prefix = "/api/orders"
legacy = "monolith"
target = "orders"
percent = 20
sticky = "header:x-user-id"
"#;

struct World {
    monolith: Upstream,
    orders: Upstream,
    other: Upstream,
    banyan: Banyan,
}

/// monolith (route legacy), orders (target), other (the default upstream for `_default`).
fn world(routes: &str) -> World {
    world_via(Transport::Banyan, routes)
}

/// The same, its requests served through transport `t`.
fn world_via(t: Transport, routes: &str) -> World {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start("orders");
    let other = Upstream::start("other");
    let banyan = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders.addr]),
            ("other", vec![other.addr]),
        ],
        "other",
    )
    .route_file("orders.toml", routes)
    .via(t)
    .start();
    World {
        monolith,
        orders,
        other,
        banyan,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()
        .expect("client")
}

async fn get_json(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (reqwest::header::HeaderMap, Value) {
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("response");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let h = resp.headers().clone();
    (h, resp.json().await.expect("json"))
}

crate::both_transports! {
async fn the_split_is_exact_sticky_and_proportional(t) {
    let w = world_via(t, ORDERS_20);
    let c = client();
    let users = 2000;
    let mut on_target = 0;
    for i in 0..users {
        let user = format!("user-{i}");
        let expected = if split::in_target(split::bucket("orders", user.as_bytes()), 2000) {
            "orders"
        } else {
            "monolith"
        };
        // Twice per user, on pooled connections: the same user always gets the same side.
        for round in 0..2 {
            let (h, body) = get_json(
                &c,
                &w.banyan.url(&format!("/api/orders/{i}")),
                &[("x-user-id", &user)],
            )
            .await;
            assert_eq!(body["upstream"], expected, "{user}, round {round}");
            assert_eq!(h["x-banyan-route"], "orders");
            let backend = if expected == "orders" {
                "target"
            } else {
                "legacy"
            };
            assert_eq!(h["x-banyan-backend"], backend);
        }
        if expected == "orders" {
            on_target += 1;
        }
    }
    let share = f64::from(on_target) / f64::from(users);
    assert!((share - 0.20).abs() < 0.03, "target share {share}");
    assert_eq!(w.orders.hits(), 2 * on_target as u64);
    assert_eq!(w.monolith.hits(), 2 * (users - on_target) as u64);
    assert_eq!(w.other.hits(), 0);

    // What the proxy counted agrees with what the upstreams saw.
    let b = &w.banyan;
    b.wait_metric(
        "banyan_requests_total{backend=\"target\",route=\"orders\",status_class=\"2xx\"}",
        f64::from(2 * on_target),
    );
    b.wait_metric(
        "banyan_request_duration_seconds_count{backend=\"legacy\",route=\"orders\"}",
        f64::from(2 * (users - on_target)),
    );
    b.wait_metric("banyan_route_target_percent{route=\"orders\"}", 20.0);

    let (_, status) = w.banyan.admin_get("/api/v1/status");
    let status: Value = serde_json::from_str(&status).expect("status json");
    let orders = &status["routes"][0];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["effective_percent"], 20.0);
    assert_eq!(orders["stats"]["target"]["requests"], 2 * on_target);
}
}

crate::both_transports! {
async fn requests_without_a_key_are_split_at_random(t) {
    let w = world_via(t, &ORDERS_20.replace("percent = 20", "percent = 50"));
    let c = client();
    let mut target = 0;
    for i in 0..400 {
        let (_, body) = get_json(&c, &w.banyan.url(&format!("/api/orders/{i}")), &[]).await;
        if body["upstream"] == "orders" {
            target += 1;
        }
    }
    // 400 draws at 50 %: 6 standard deviations either side.
    assert!((140..=260).contains(&target), "{target} of 400 on target");
}
}

crate::both_transports! {
async fn unmatched_requests_go_to_the_default_upstream(t) {
    let w = world_via(t, ORDERS_20);
    let c = client();
    for path in ["/", "/api/users/1", "/api/ordersx", "/api"] {
        let (h, body) = get_json(&c, &w.banyan.url(path), &[("x-user-id", "user-1")]).await;
        assert_eq!(body["upstream"], "other", "{path}");
        assert_eq!(h["x-banyan-route"], "_default");
        assert_eq!(h["x-banyan-backend"], "legacy");
    }
    w.banyan.wait_metric(
        "banyan_requests_total{backend=\"legacy\",route=\"_default\",status_class=\"2xx\"}",
        4.0,
    );
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_post_arrives_byte_identical() {
    let w = world(ORDERS_20);
    let body: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let want = format!("{:016x}", xxh3_64(&body));
    let resp = client()
        .post(w.banyan.url("/api/orders"))
        .header("x-user-id", "user-1")
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"], body.len());
    assert_eq!(echo["body_xxh3"], want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_and_response_bodies_stream_through() {
    let w = world(ORDERS_20);
    let parts: Vec<Vec<u8>> = (0..50)
        .map(|i| pattern(i * 1000, 1000 + i as usize))
        .collect();
    let all: Vec<u8> = parts.concat();
    let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let resp = client()
        .put(w.banyan.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("chunked put");
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["headers"]["transfer-encoding"], "chunked");
    assert_eq!(echo["body_bytes"], all.len());
    assert_eq!(echo["body_xxh3"], format!("{:016x}", xxh3_64(&all)));

    let resp = client()
        .get(w.banyan.url("/chunked"))
        .send()
        .await
        .expect("chunked get");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let text = resp.text().await.expect("body");
    assert_eq!(text, "part-0\npart-1\npart-2\npart-3\npart-4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_is_streamed_not_buffered() {
    let w = world(ORDERS_20);
    const SIZE: u64 = 100 * 1024 * 1024;
    let c = client();

    let resp = c
        .get(w.banyan.url(&format!("/download?bytes={SIZE}")))
        .send()
        .await
        .expect("download");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let (mut got, mut mismatch) = (0u64, false);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        mismatch |= chunk.as_ref() != pattern(got, chunk.len()).as_slice();
        got += chunk.len() as u64;
    }
    assert_eq!(got, SIZE);
    assert!(
        !mismatch,
        "downloaded bytes differ from what the upstream sent"
    );

    const CHUNK: u64 = 1024 * 1024;
    let upload = futures_util::stream::iter(
        (0..SIZE / CHUNK).map(|i| Ok::<_, std::io::Error>(pattern(i * CHUNK, CHUNK as usize))),
    );
    let resp = c
        .post(w.banyan.url("/upload"))
        .body(reqwest::Body::wrap_stream(upload))
        .send()
        .await
        .expect("upload");
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["body_bytes"], SIZE);

    let peak = w.banyan.peak_rss();
    assert!(
        peak < 64 * 1024 * 1024,
        "peak RSS {} MiB after moving 200 MiB",
        peak >> 20
    );
}

/// One `Key: value` figure of a /proc file of the proxy process.
fn proc_figure(pid: u32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect("proc file");
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
}

/// Transparent huge pages make each 4 KiB the allocator touches cost up to 2 MiB of
/// resident memory (66 instead of 48 MiB with 1,000 idle clients after load), so the proxy
/// turns them off for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_runs_without_transparent_huge_pages() {
    let w = world(ORDERS_20);
    let c = client();
    for i in 0..200 {
        let resp = c
            .get(w.banyan.url(&format!("/api/orders/{i}")))
            .header("X-User-Id", format!("u{i}"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
    }
    let pid = w.banyan.pid();
    assert_eq!(proc_figure(pid, "status", "THP_enabled:"), "0");
    // On a kernel that hands out huge pages to every mapping (`always`), a page may be
    // faulted before `main` turns them off; in `madvise` mode (Debian's default) none may be.
    let mode =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !mode.contains("[always]") {
        assert_eq!(proc_figure(pid, "smaps_rollup", "AnonHugePages:"), "0 kB");
    }
}

crate::both_transports! {
async fn forwarding_headers_request_ids_and_hop_by_hop(t) {
    let w = world_via(t, ORDERS_20);
    let c = client();
    let resp = c
        .get(w.banyan.url("/echo?x=1"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-request-id", "client-chosen-id")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("x-banyan-shadow", "1")
        .send()
        .await
        .expect("echo");
    assert!(
        resp.headers().get("x-upstream-hop").is_none(),
        "response hop-by-hop field leaked"
    );
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-id");
    let echo: Value = resp.json().await.expect("json");
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");
    assert_eq!(
        h["host"], "shop.example.com",
        "the client's Host goes upstream unchanged"
    );
    assert_eq!(h["x-request-id"], "client-chosen-id");
    assert_eq!(
        h["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(
        h.get("x-client-hop").is_none(),
        "nominated hop-by-hop header reached the upstream"
    );
    assert!(h.get("keep-alive").is_none());
    assert!(
        h.get("x-banyan-shadow").is_none(),
        "a client must not pose as a shadow copy"
    );
    assert_eq!(echo["query"], "x=1");

    // Without an id, one is made (a UUID v4) and sent both ways.
    let resp = c.get(w.banyan.url("/echo")).send().await.expect("echo");
    let id = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
}
}

crate::both_transports! {
async fn an_upstream_host_setting_replaces_the_host_header(t) {
    let legacy = Upstream::start("legacy");
    let mut setup = Setup::new(vec![("legacy", vec![legacy.addr])], "legacy");
    setup.upstream_extra = vec![("legacy", "host = \"legacy.internal\"")];
    let banyan = setup.via(t).start();
    let resp = client()
        .get(banyan.url("/x"))
        .header("host", "shop.example.com")
        .send()
        .await
        .expect("get");
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["headers"]["host"], "legacy.internal");
    assert_eq!(echo["headers"]["x-forwarded-host"], "shop.example.com");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let w = world(ORDERS_20);
    let url = format!("ws://{}/ws", w.banyan.proxy);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let text = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
            .await
            .expect("send");
        let echo = ws.next().await.expect("a message").expect("ok");
        assert_eq!(echo.into_text().expect("text").as_str(), text);
    }
    let big = vec![7u8; 256 * 1024];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(big.clone()))
        .await
        .expect("send");
    let echo = ws.next().await.expect("a message").expect("ok");
    assert_eq!(echo.into_data().as_ref(), big.as_slice());
    ws.close(None).await.expect("close");
}

crate::both_transports! {
async fn several_peers_are_balanced_round_robin(t) {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let banyan = Setup::new(vec![("pool", vec![a.addr, b.addr])], "pool")
        .via(t)
        .start();
    let c = client();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..100 {
        let (_, body) = get_json(&c, &banyan.url("/x"), &[]).await;
        *seen
            .entry(body["upstream"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    assert_eq!(seen.get("a"), Some(&50), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&50), "{seen:?}");
}
}

fn dead_addr() -> SocketAddr {
    ([127, 0, 0, 1], common::free_port()).into()
}

crate::both_transports! {
async fn a_target_that_refuses_connections_falls_back_to_legacy(t) {
    let monolith = Upstream::start("monolith");
    let banyan = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![dead_addr()]),
        ],
        "monolith",
    )
    .route_file("r.toml", ORDERS_20.replace("percent = 20", "percent = 100"))
    .via(t)
    .start();
    let c = client();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let resp = c
            .request(method.clone(), banyan.url("/api/orders/1"))
            .header("x-user-id", "u")
            .body("payload")
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status(), 200, "{method}");
        let echo: Value = resp.json().await.expect("json");
        assert_eq!(echo["upstream"], "monolith", "{method}");
        assert_eq!(echo["body_bytes"], 7, "{method}: the body reached legacy");
    }
    banyan.wait_metric(
        "banyan_fallbacks_total{reason=\"connect\",route=\"orders\"}",
        3.0,
    );
}
}

crate::both_transports! {
async fn legacy_down_is_a_fast_502_naming_route_and_upstream(t) {
    let banyan = Setup::new(vec![("monolith", vec![dead_addr()])], "monolith")
        .via(t)
        .start();
    let resp = client()
        .get(banyan.url("/anything"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["route"], "_default");
    assert_eq!(body["upstream"], "monolith");
    assert!(body["error"].as_str().unwrap_or("").contains("unavailable"));
    banyan.wait_metric(
        "banyan_requests_total{backend=\"legacy\",route=\"_default\",status_class=\"5xx\"}",
        1.0,
    );
}
}

#[test]
fn malformed_and_oversized_requests_get_a_4xx_and_the_proxy_keeps_serving() {
    let w = world(ORDERS_20);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2 * 1024 * 1024)
    );
    let garbage: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        huge.as_bytes(),
    ];
    for req in garbage {
        let answer = raw_exchange(w.banyan.proxy, req);
        let status: u16 = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(
            (400..500).contains(&status),
            "{:?} got {:?}",
            String::from_utf8_lossy(&req[..req.len().min(40)]),
            &answer[..answer.len().min(80)]
        );
    }
    // Control bytes in the target are percent-encoded by Pingora before routing, so an
    // upstream never sees them raw.
    let answer = raw_exchange(
        w.banyan.proxy,
        b"GET /a\x01\x02 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"path\":\"/a%01%02\""), "{answer}");
    let (status, _) = common::http_get(w.banyan.proxy, "/still-alive").expect("answer");
    assert_eq!(status, 200);
}

#[test]
fn keep_alive_requests_split_across_writes_or_larger_than_one_read_are_served() {
    use std::io::Write;
    let w = world(ORDERS_20);
    let mut s = std::net::TcpStream::connect(w.banyan.proxy).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");

    s.write_all(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let (head, body) = read_response(&mut s).expect("a response on the kept connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"path\":\"/one\""), "{body}");

    // The next request's head in three writes: banyan waits for the first bytes of each
    // keep-alive request itself and hands them to Pingora's parser.
    for piece in [
        &b"GET /tw"[..],
        b"o HTTP/1.1\r\nHo",
        b"st: a\r\nX-Request-Id: split-1\r\n\r\n",
    ] {
        s.write_all(piece).expect("write");
        s.flush().expect("flush");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (head, body) = read_response(&mut s).expect("a response on the kept connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"path\":\"/two\""), "{body}");
    assert!(
        head.to_ascii_lowercase().contains("x-request-id: split-1"),
        "{head}"
    );

    // A head larger than the first read (4 KiB) and than Pingora's first buffer (4 KiB).
    let big = "b".repeat(6000);
    let request = format!("GET /three HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    s.write_all(request.as_bytes()).expect("write");
    let (head, body) = read_response(&mut s).expect("a response on the kept connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"path\":\"/three\""), "{body}");

    // A body on a reused connection arrives whole.
    let payload = "p".repeat(10_000);
    let request = format!(
        "POST /four HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(request.as_bytes()).expect("write");
    let (head, _) = read_response(&mut s).expect("a response on the kept connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        w.other.hits(),
        4,
        "all four on one connection reached the default upstream"
    );
}
