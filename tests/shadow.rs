//! Shadow traffic end to end: the real binary mirrors to real upstream servers and
//! compares their answers; mismatches reach the API, the CLI and the diff log.

mod common;

use std::time::Duration;

use common::upstream::{Behavior, Silent, Upstream};
use common::{free_port, http_request, try_http_request, wait_until, Banyan, Setup};
use serde_json::Value;

fn route(name: &str, prefix: &str, shadow: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nmatch.path_prefix = \"{prefix}\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = 0\n\n[route.shadow]\npercent = 100\n{shadow}\n"
    )
}

/// `monolith` (deterministic) and `orders` (as `orders` says) servers, and a setup naming
/// them.
fn services(orders: Behavior) -> (Upstream, Upstream, Setup<'static>) {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start_with("orders", orders);
    let setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders.addr]),
        ],
        "monolith",
    );
    (monolith, orders, setup)
}

fn shadow_stats(b: &Banyan, route: &str) -> Value {
    b.route_status(route)["shadow"]["stats"].clone()
}

fn outcomes(b: &Banyan, route: &str) -> u64 {
    let s = shadow_stats(b, route);
    ["match", "mismatch", "errors", "dropped", "skipped"]
        .iter()
        .map(|k| s[*k].as_u64().unwrap_or(0))
        .sum()
}

fn wait_outcomes(b: &Banyan, route: &str, n: u64) -> Value {
    wait_until(&format!("{n} shadow outcomes on {route}"), || {
        outcomes(b, route) >= n
    });
    shadow_stats(b, route)
}

/// Copies handed to the shadow worker before it catches up, at most: below
/// `shadow::MAX_WAITING`, so a worker kept off the core by other tests delays the
/// copies instead of dropping them, and the counts below are exact.
const BATCH: u64 = 16;

/// Calls `send(i)` for `i` in `0..n`, waiting after every `BATCH` requests until
/// `route` has an outcome for each copy sent so far.
fn send_paced(b: &Banyan, route: &str, n: u64, mut send: impl FnMut(u64)) {
    let base = outcomes(b, route);
    for i in 0..n {
        send(i);
        if (i + 1) % BATCH == 0 || i + 1 == n {
            wait_outcomes(b, route, base + i + 1);
        }
    }
}

fn get(b: &Banyan, path: &str) -> (u16, String) {
    http_request(b.proxy, "GET", path, None, "")
}

crate::both_transports! {
fn identical_answers_match_and_clients_never_see_the_shadow(t) {
    // Same documents, keys in another order and 7.0 for 7: equal as JSON.
    let (_monolith, orders, setup) = services(Behavior {
        reorder: true,
        ..Behavior::default()
    });
    let setup = setup.route_file(
        "catalog.toml",
        route("catalog", "/catalog", "methods = [\"GET\", \"HEAD\"]")
            + &route("chunked", "/chunked", ""),
    );
    let b = setup.via(t).start();
    send_paced(&b, "catalog", 300, |i| {
        let (code, body) = get(&b, &format!("/catalog/{i}"));
        assert_eq!(code, 200);
        // The client gets legacy's bytes, in legacy's key order.
        assert!(body.starts_with(&format!("{{\"id\":\"{i}\"")), "{body}");
    });
    let stats = shadow_stats(&b, "catalog");
    assert_eq!(stats["mismatch"], 0, "{stats}");
    assert_eq!(stats["match"], 300, "{stats}");
    assert_eq!(stats["match_rate"], 1.0);
    assert_eq!(orders.hits(), 300);

    // HEAD answers have no body to compare; a chunked text body compares as bytes.
    let (code, _) = http_request(b.proxy, "HEAD", "/catalog/1", None, "");
    assert_eq!(code, 200);
    wait_outcomes(&b, "catalog", 301);
    for _ in 0..3 {
        assert_eq!(get(&b, "/chunked").0, 200);
    }
    let chunked = wait_outcomes(&b, "chunked", 3);
    assert_eq!(chunked["match"], 3, "{chunked}");
    b.wait_metric(
        "banyan_shadow_requests_total{outcome=\"match\",route=\"catalog\"}",
        301.0,
    );
    let (_, metrics) = b.admin_get("/metrics");
    assert!(
        metrics.contains("banyan_shadow_duration_seconds_count{route=\"catalog\"} 301"),
        "the new service's latency is measured"
    );
    let catalog = b.route_status("catalog");
    assert_eq!(catalog["shadow"]["active"], true);

    // A rollback pauses shadows until resumed.
    let out = b.cli(&["rollback", "catalog", "--reason", "test"]);
    assert!(out.status.success(), "{out:?}");
    let hits = orders.hits();
    for i in 0..10 {
        assert_eq!(get(&b, &format!("/catalog/{i}")).0, 200);
    }
    b.wait_metric(
        "banyan_requests_total{backend=\"legacy\",route=\"catalog\",status_class=\"2xx\"}",
        311.0,
    );
    assert_eq!(orders.hits(), hits);
    assert_eq!(b.route_status("catalog")["shadow"]["paused"], true);

    // The copies have a thread of their own, below the data path's priority.
    #[cfg(target_os = "linux")]
    assert_eq!(thread_nice(b.pid(), "banyan-shadow"), vec![10]);
}
}

/// The nice value of each of `pid`'s threads named `name`.
#[cfg(target_os = "linux")]
fn thread_nice(pid: u32, name: &str) -> Vec<i64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut found = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
        // Fields after the parenthesised name: state is the 3rd of stat(5), nice the 19th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let nice = rest.split_whitespace().nth(16).and_then(|v| v.parse().ok());
        found.push(nice.expect("nice in stat"));
    }
    found
}

crate::both_transports! {
fn a_changed_field_is_named_in_the_diff_log_api_and_cli(t) {
    let (_monolith, _orders, setup) = services(Behavior {
        price: 13.0,
        ..Behavior::default()
    });
    let setup = setup.route_file("catalog.toml", route("catalog", "/catalog", ""));
    let b = setup.via(t).start();
    send_paced(&b, "catalog", 50, |i| {
        let (code, _) = common::try_http_request_with_headers(
            b.proxy,
            "GET",
            &format!("/catalog/{i}?token=secret-query"),
            &[
                ("Authorization", "Bearer secret-token"),
                ("Cookie", "session=secret-cookie"),
                ("X-Request-Id", &format!("req-{i}")),
            ],
        )
        .expect("answer");
        assert_eq!(code, 200);
    });
    let stats = shadow_stats(&b, "catalog");
    assert_eq!(stats["mismatch"], 50, "{stats}");
    assert_eq!(stats["match_rate"], 0.0);

    let (code, body) = b.admin_get("/api/v1/diffs?route=catalog&limit=10");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let diffs = v["diffs"].as_array().expect("list");
    assert_eq!(diffs.len(), 10);
    for d in diffs {
        assert_eq!(
            d["differences"],
            serde_json::json!([{"field": "/price", "legacy": "12.5", "shadow": "13.0"}]),
            "{d}"
        );
        assert_eq!(d["method"], "GET");
        assert_eq!(d["legacy_status"], 200);
        assert!(d["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/catalog/") && !p.contains('?')));
    }
    // Newest first, with the client's request ids. Copies run concurrently, so the last
    // request sent need not be the last compared: check the order by time instead.
    let times: Vec<&str> = diffs.iter().filter_map(|d| d["time"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let ids: Vec<&str> = diffs
        .iter()
        .filter_map(|d| d["request_id"].as_str())
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("req-")), "{ids:?}");
    let newest = ids[0].to_string();
    assert_eq!(b.admin_get("/api/v1/diffs?route=nope").0, 404);
    assert_eq!(b.admin_get("/api/v1/diffs?limit=x").0, 400);

    let out = b.cli(&["diffs", "catalog", "--limit", "3"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("/price").count(), 3, "{text}");
    assert!(
        text.contains("legacy 12.5") && text.contains("shadow 13.0"),
        "{text}"
    );
    assert!(text.contains(&newest), "{text}");

    // The file has every mismatch and none of the secrets.
    let log = b.path("state/diffs.jsonl");
    wait_until("50 lines in the diff log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 50)
    });
    let text = std::fs::read_to_string(&log).expect("diff log");
    assert!(!text.contains("secret"), "{text}");

    // Still readable from the file when no proxy answers.
    let mut b = b;
    b.signal("INT");
    b.wait_exit(common::DEADLINE).expect("stopped");
    let out = common::banyan_cmd(b.dir.path(), &["diffs", "--limit", "2"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("/price").count(), 2, "{text}");
}
}

crate::both_transports! {
fn noise_learned_from_legacy_is_left_out(t) {
    let (monolith, _orders, setup) = services(Behavior::default());
    let setup = setup.route_file("noisy.toml", route("noisy", "/noisy", "noise = true"));
    let b = setup.via(t).start();
    send_paced(&b, "noisy", 300, |i| {
        assert_eq!(get(&b, &format!("/noisy/{i}")).0, 200);
    });
    let stats = shadow_stats(&b, "noisy");
    let mismatches = stats["mismatch"].as_u64().unwrap_or(0);
    assert!(mismatches < 15, "mismatch rate {mismatches}/300: {stats}");
    let fields: Vec<&str> = stats["noisy_fields"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"/nonce") && fields.contains(&"/served_at"),
        "{fields:?}"
    );
    assert!(!fields.contains(&"/price"), "{fields:?}");
    // Legacy saw the learning samples too: at least the first hundred twice.
    assert!(monolith.hits() >= 400, "{}", monolith.hits());
    let out = b.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("noisy fields") && text.contains("/nonce"),
        "{text}"
    );
}
}

crate::both_transports! {
fn writes_are_mirrored_only_when_listed_and_upgrades_never(t) {
    let (_monolith, orders, setup) = services(Behavior::default());
    let echo_ignore = "ignore = [\"/upstream\"]";
    let mut setup = setup.route_file(
        "r.toml",
        route("reads", "/reads", echo_ignore)
            + &route(
                "writes",
                "/writes",
                &format!("methods = [\"GET\", \"POST\"]\n{echo_ignore}"),
            )
            + &route("ws", "/ws", ""),
    );
    setup.tail = "[shadow]\nmax_body_bytes = 4096\n";
    let b = setup.via(t).start();
    let body = "{\"order\": 42}".repeat(100);
    for _ in 0..20 {
        assert_eq!(
            http_request(b.proxy, "POST", "/reads/x", None, &body).0,
            200
        );
    }
    b.wait_metric(
        "banyan_requests_total{backend=\"legacy\",route=\"reads\",status_class=\"2xx\"}",
        20.0,
    );
    assert_eq!(orders.hits(), 0, "a POST was mirrored without being listed");
    assert_eq!(outcomes(&b, "reads"), 0);

    send_paced(&b, "writes", 20, |_| {
        assert_eq!(
            http_request(b.proxy, "POST", "/writes/x", None, &body).0,
            200
        );
    });
    assert_eq!(orders.hits(), 20);
    // The echo differs only where the copy is marked: the same body (by hash), the same
    // request id, and `x-banyan-shadow: 1`.
    let (_, diffs) = b.admin_get("/api/v1/diffs?route=writes&limit=1");
    let v: Value = serde_json::from_str(&diffs).expect("json");
    assert_eq!(
        v["diffs"][0]["differences"],
        serde_json::json!([{"field": "/headers/x-banyan-shadow", "legacy": null, "shadow": "\"1\""}]),
        "{v}"
    );

    // A body over `shadow.max_body_bytes` reaches legacy whole; the copy is skipped.
    let big = "x".repeat(10_000);
    let (code, echo) = http_request(b.proxy, "POST", "/writes/big", None, &big);
    assert_eq!(code, 200);
    assert!(echo.contains("\"body_bytes\":10000"), "{echo}");
    wait_outcomes(&b, "writes", 21);
    let stats = shadow_stats(&b, "writes");
    assert_eq!(
        stats["skipped_by_reason"],
        serde_json::json!([["request_body_over_cap", 1]]),
        "{stats}"
    );
    assert_eq!(orders.hits(), 20);

    // A WebSocket upgrade on a mirrored route goes to legacy only.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", b.proxy))
            .await
            .expect("websocket through banyan");
        use futures_util::{SinkExt, StreamExt};
        ws.send("hello".into()).await.expect("send");
        let echoed = ws.next().await.expect("a message").expect("ok");
        assert_eq!(echoed.into_text().expect("text").as_str(), "hello");
    });
    assert_eq!(orders.hits(), 20);
}
}

crate::both_transports! {
fn silent_slow_and_refusing_shadows_never_cost_a_client_request(t) {
    let monolith = Upstream::start("monolith");
    let silent = Silent::start();
    let slow = Upstream::start_with(
        "slow",
        Behavior {
            delay: Duration::from_secs(6),
            ..Behavior::default()
        },
    );
    let refused: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("silent", vec![silent.addr]),
            ("slow", vec![slow.addr]),
            ("refused", vec![refused]),
        ],
        "monolith",
    );
    let mut routes = String::new();
    for name in ["silent", "slow", "refused"] {
        routes.push_str(&format!(
            "[[route]]\nname = \"{name}\"\nmatch.path_prefix = \"/{name}\"\n\n[route.shadow]\nupstream = \"{name}\"\n\n"
        ));
    }
    setup = setup.route_file("r.toml", routes);
    setup.tail = "[shadow]\nmax_in_flight = 4\ntimeout = \"5s\"\n";
    let b = setup.via(t).start();

    let mut sent = 0u64;
    let mut max_seen = 0u64;
    // Until the in-flight cap has turned copies away, bounded in count.
    while sent < 3000 {
        for name in ["silent", "slow", "refused"] {
            let (code, _) = try_http_request(b.proxy, "GET", &format!("/{name}/{sent}"), None, "")
                .expect("answer");
            assert_eq!(code, 200, "{name}");
        }
        sent += 1;
        if sent % 20 == 0 {
            let s = b.status();
            max_seen = max_seen.max(s["shadow"]["in_flight"].as_u64().unwrap_or(0));
            if shadow_stats(&b, "silent")["dropped"].as_u64().unwrap_or(0) > 0 {
                break;
            }
        }
    }
    assert!(max_seen <= 4, "in flight {max_seen} above the cap");
    let silent_stats = shadow_stats(&b, "silent");
    let dropped = silent_stats["dropped"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "{silent_stats}");
    // The status says which bound turned them away.
    assert_eq!(
        silent_stats["dropped_by_reason"],
        serde_json::json!([["max_in_flight", dropped]]),
        "{silent_stats}"
    );
    let out = b.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max in flight"), "{text}");
    // Every copy ends one way or another: errors (timeout, refused) or dropped.
    for name in ["silent", "slow", "refused"] {
        wait_outcomes(&b, name, sent);
        let s = shadow_stats(&b, name);
        assert_eq!(s["match"], 0, "{name}: {s}");
        assert!(s["errors"].as_u64().unwrap_or(0) > 0, "{name}: {s}");
    }
    assert!(silent.accepted.load(std::sync::atomic::Ordering::Relaxed) <= 4 * sent);
    let rss = b.peak_rss();
    assert!(rss < 200 * 1024 * 1024, "peak RSS {rss}");
    wait_until("no shadow in flight", || {
        b.status()["shadow"]["in_flight"] == 0
    });
}
}
