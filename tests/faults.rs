//! Faults with real servers that the tests kill and start: a target killed under load, a
//! target answering 503, refusing connections or never answering, a failing target the
//! guard rolls back, health checks, the circuit breaker and rate limits.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::upstream::{Behavior, Silent, Upstream};
use common::{free_port, wait_until, Banyan, Setup};
use serde_json::Value;

/// A loopback address where nothing listens.
fn dead_addr() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

fn route(extra: &str) -> String {
    format!(
        "[[route]]\nname = \"orders\"\nmatch.path_prefix = \"/api/orders\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = 100\nsticky = \"header:x-user-id\"\n{extra}\n"
    )
}

fn setup<'a>(monolith: SocketAddr, orders: SocketAddr, orders_extra: &'a str) -> Setup<'a> {
    let mut s = Setup::new(
        vec![("monolith", vec![monolith]), ("orders", vec![orders])],
        "monolith",
    );
    s.upstream_extra = vec![("orders", orders_extra)];
    s
}

/// One request with `Connection: close`: (status, parsed JSON body or Null).
fn send(b: &Banyan, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (code, text) = common::http_request(b.proxy, method, path, None, body);
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(b: &Banyan, path: &str) -> (u16, Value) {
    send(b, "GET", path, "")
}

crate::both_transports! {
fn killing_the_target_under_load_fails_no_get(t) {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start("orders");
    let b = setup(monolith.addr, orders.addr, "")
        .route_file("orders.toml", route(""))
        .via(t)
        .start();
    // Four keep-alive clients, so requests are in flight on pooled connections when the
    // target dies.
    let load = common::load::Load::start(b.proxy, 4);
    wait_until("load through the target", || {
        load.served() >= 500 && orders.hits() >= 100
    });
    let target_hits = orders.hits();
    drop(orders);
    let at_kill = load.served();
    wait_until("load after the kill", || load.served() >= at_kill + 1000);
    let (_, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed GETs: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(target_hits > 0);
    // The breaker opened, so later requests went straight to legacy.
    b.wait_metric("banyan_circuit_open{upstream=\"orders\"}", 1.0);
    b.wait_metric_at_least(
        "banyan_fallbacks_total{reason=\"circuit_open\",route=\"orders\"}",
        1.0,
    );
    b.wait_metric_at_least(
        "banyan_fallbacks_total{reason=\"connect\",route=\"orders\"}",
        1.0,
    );
}
}

crate::both_transports! {
fn a_target_answering_503_gives_clients_legacy_answers(t) {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start_with(
        "orders",
        Behavior {
            status: Some(503),
            ..Behavior::default()
        },
    );
    let mut s = setup(monolith.addr, orders.addr, "circuit = { failures = 0 }")
        .route_file("orders.toml", route(""))
        .route_file(
            "writes.toml",
            "[[route]]\nname = \"writes\"\nmatch.path_prefix = \"/api/carts\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = 100\nfallback_methods = [\"GET\", \"POST\"]\n",
        );
    s.server_extra = "debug_headers = true\naccess_log = \"access.log\"";
    let b = s.via(t).start();
    for i in 0..10 {
        let (code, body) = get(&b, &format!("/api/orders/{i}"));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["upstream"], "monolith", "{body}");
    }
    assert_eq!(orders.hits(), 10, "each was tried on the target first");
    b.wait_metric(
        "banyan_fallbacks_total{reason=\"status\",route=\"orders\"}",
        10.0,
    );
    // Served by legacy, counted as legacy answers.
    b.wait_metric(
        "banyan_requests_total{backend=\"legacy\",route=\"orders\",status_class=\"2xx\"}",
        10.0,
    );
    // A POST is not retried unless the route lists it: the client sees the target's 503.
    let (code, body) = send(&b, "POST", "/api/orders/1", "{\"qty\":1}");
    assert_eq!((code, &body["upstream"]), (503, &Value::from("orders")));
    // Where it is listed, the body is replayed to legacy.
    let (code, body) = send(&b, "POST", "/api/carts/1", "{\"qty\":1}");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body_bytes"], 9);
    // The access log marks each fallback.
    let log = b.path("access.log");
    wait_until("access log lines", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 12)
    });
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .expect("access log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let first = &lines[0];
    assert_eq!(first["route"], "orders");
    // Every request went through the transport under test.
    assert!(lines.iter().all(|l| l["transport"] == t.name()), "{lines:?}");
    assert_eq!(first["backend"], "legacy");
    assert_eq!(first["fallback"], "status");
    assert_eq!(first["status"], 200);
    assert!(first["duration_ms"].is_number() && first["upstream_ms"].is_number());
    assert!(first["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let post = lines
        .iter()
        .find(|l| l["method"] == "POST" && l["route"] == "orders")
        .expect("the POST");
    assert_eq!(
        (post["backend"].as_str(), post["status"].as_u64()),
        (Some("target"), Some(503))
    );
    assert!(post["fallback"].is_null());
}
}

crate::both_transports! {
fn a_post_to_a_target_refusing_connections_reaches_legacy(t) {
    let monolith = Upstream::start("monolith");
    let b = setup(monolith.addr, dead_addr(), "circuit = { failures = 0 }")
        .route_file("orders.toml", route(""))
        .via(t)
        .start();
    let body = "x".repeat(100_000);
    let (code, answer) = send(&b, "POST", "/api/orders", &body);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["upstream"], "monolith");
    assert_eq!(answer["body_bytes"], 100_000);
    b.wait_metric(
        "banyan_fallbacks_total{reason=\"connect\",route=\"orders\"}",
        1.0,
    );
}
}

crate::both_transports! {
fn a_target_that_stops_answering_falls_back_within_its_timeout(t) {
    let monolith = Upstream::start("monolith");
    let silent = Silent::start();
    let slow = Upstream::start_with(
        "slow",
        Behavior {
            delay: Duration::from_secs(30),
            ..Behavior::default()
        },
    );
    let mut s = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![silent.addr]),
            ("slow", vec![slow.addr]),
        ],
        "monolith",
    )
    .route_file("orders.toml", route(""))
    .route_file(
        "slow.toml",
        "[[route]]\nname = \"slow\"\nmatch.path_prefix = \"/api/slow\"\nlegacy = \"monolith\"\ntarget = \"slow\"\npercent = 100\n",
    );
    s.upstream_extra = vec![
        ("orders", "read_timeout = \"400ms\""),
        ("slow", "total_timeout = \"300ms\""),
    ];
    let b = s.via(t).start();
    for (path, route, limit) in [
        ("/api/orders/1", "orders", Duration::from_millis(400)),
        ("/api/slow/1", "slow", Duration::from_millis(300)),
    ] {
        let started = Instant::now();
        let (code, body) = get(&b, path);
        let took = started.elapsed();
        assert_eq!(
            (code, &body["upstream"]),
            (200, &Value::from("monolith")),
            "{body}"
        );
        assert!(
            took >= limit,
            "{route}: answered after {took:?}, before its timeout"
        );
        b.wait_metric(
            &format!("banyan_fallbacks_total{{reason=\"timeout\",route=\"{route}\"}}"),
            1.0,
        );
    }
    assert!(silent.accepted.load(Ordering::Relaxed) >= 1);
}
}

crate::both_transports! {
fn the_guard_rolls_back_a_failing_target_until_resumed(t) {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start_with(
        "orders",
        Behavior {
            status: Some(500),
            ..Behavior::default()
        },
    );
    let guarded = route(
        "fallback = false\n\n[route.guard]\nmax_error_rate = 0.5\nmin_requests = 20\nwindow = \"60s\"\n",
    );
    let b = setup(monolith.addr, orders.addr, "")
        .route_file("orders.toml", guarded)
        .via(t)
        .start();
    // Below min_requests nothing happens.
    for i in 0..19 {
        let (code, _) = get(&b, &format!("/api/orders/{i}"));
        assert!(
            code >= 500,
            "fallback is off: the client sees the target's failure"
        );
    }
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(b.route_status("orders")["effective_percent"], 100.0);
    assert_eq!(b.route_status("orders")["guard"]["requests"], 19);
    // The twentieth request reaches min_requests: rolled back.
    let _ = get(&b, "/api/orders/19");
    wait_until("the guard's rollback", || {
        b.route_status("orders")["effective_percent"] == 0.0
    });
    let r = b.route_status("orders");
    assert_eq!(r["override"]["trigger"], "guard", "{r}");
    let reason = r["override"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("error rate 100.0 %") && reason.contains("max_error_rate 50 %"),
        "{reason}"
    );
    b.wait_metric(
        "banyan_rollbacks_total{route=\"orders\",trigger=\"guard\"}",
        1.0,
    );
    // Persisted and audited.
    let overrides: Value = serde_json::from_str(
        &std::fs::read_to_string(b.path("state/overrides.json")).expect("overrides"),
    )
    .expect("json");
    assert_eq!(overrides["orders"]["trigger"], "guard");
    assert_eq!(overrides["orders"]["percent"], 0.0);
    let audit = std::fs::read_to_string(b.path("state/audit.jsonl")).expect("audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"source\":\"guard\"") && l.contains("rollback")),
        "{audit}"
    );
    let out = b.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("guard") && text.contains("error rate 100.0 %"),
        "{text}"
    );
    // Legacy serves everyone until a person resumes.
    let (code, body) = get(&b, "/api/orders/x");
    assert_eq!((code, &body["upstream"]), (200, &Value::from("monolith")));
    let out = b.cli(&["resume", "orders"]);
    assert!(out.status.success(), "{out:?}");
    wait_until("resumed", || {
        b.route_status("orders")["effective_percent"] == 100.0
    });
    assert_eq!(
        b.route_status("orders")["guard"]["requests"],
        0,
        "a fresh window"
    );
}
}

crate::both_transports! {
fn health_checks_take_a_dead_peer_out_and_bring_it_back(t) {
    let monolith = Upstream::start("monolith");
    let a = Upstream::start("orders-a");
    let c = Upstream::start("orders-b");
    let (a_addr, c_addr) = (a.addr, c.addr);
    let mut s = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![a_addr, c_addr]),
        ],
        "monolith",
    )
    .route_file("orders.toml", route(""));
    s.upstream_extra = vec![(
        "orders",
        "health = { path = \"/healthz\", interval = \"1s\" }",
    )];
    let b = s.via(t).start();
    let series = format!("banyan_upstream_healthy{{peer=\"{a_addr}\",upstream=\"orders\"}}");
    b.wait_metric(&series, 1.0);
    wait_until("checks reach the peer", || a.hits() >= 1);

    let killed = Instant::now();
    drop(a);
    b.wait_metric(&series, 0.0);
    let took = killed.elapsed();
    // Within two intervals (plus the time to read the metric on a busy machine).
    assert!(took < Duration::from_millis(2500), "marked after {took:?}");
    let status = b.status();
    let orders = status["upstreams"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == "orders"))
        .expect("orders upstream");
    assert_eq!(orders["health"][0]["healthy"], false, "{orders}");
    assert_eq!(orders["health"][1]["healthy"], true);
    // Out of rotation: every request goes to the other peer, none to legacy.
    for i in 0..10 {
        let (code, body) = get(&b, &format!("/api/orders/{i}"));
        assert_eq!((code, &body["upstream"]), (200, &Value::from("orders-b")));
    }

    let a = Upstream::start_on(a_addr, "orders-a", Behavior::default());
    b.wait_metric(&series, 1.0);
    wait_until("the peer back in rotation", || {
        get(&b, "/api/orders/again").1["upstream"] == "orders-a"
    });
    assert!(a.hits() >= 1);
}
}

crate::both_transports! {
fn the_circuit_opens_sends_traffic_to_legacy_and_closes_after_a_good_probe(t) {
    let monolith = Upstream::start("monolith");
    let failing = Upstream::start_with(
        "orders",
        Behavior {
            status: Some(503),
            ..Behavior::default()
        },
    );
    let addr = failing.addr;
    let b = setup(
        monolith.addr,
        addr,
        "circuit = { failures = 3, cooldown = \"1s\" }",
    )
    .route_file("orders.toml", route(""))
    .via(t)
    .start();
    for i in 0..10 {
        let (code, body) = get(&b, &format!("/api/orders/{i}"));
        assert_eq!((code, &body["upstream"]), (200, &Value::from("monolith")));
    }
    assert_eq!(
        failing.hits(),
        3,
        "open after three failures: not tried again"
    );
    b.wait_metric("banyan_circuit_open{upstream=\"orders\"}", 1.0);
    let out = b.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("orders: circuit open"), "{text}");
    assert!(
        text.contains("fallbacks to legacy: circuit_open 7, status 3"),
        "{text}"
    );
    b.wait_metric(
        "banyan_fallbacks_total{reason=\"circuit_open\",route=\"orders\"}",
        7.0,
    );
    // The service recovers; after the cool-down one probe closes the circuit.
    drop(failing);
    let fixed = Upstream::start_on(addr, "orders", Behavior::default());
    wait_until("the target serving again", || {
        get(&b, "/api/orders/p").1["upstream"] == "orders"
    });
    b.wait_metric("banyan_circuit_open{upstream=\"orders\"}", 0.0);
    assert!(fixed.hits() >= 1);
}
}

crate::both_transports! {
fn rate_limits_answer_429_with_retry_after_per_key(t) {
    let monolith = Upstream::start("monolith");
    let b = Setup::new(vec![("monolith", vec![monolith.addr])], "monolith")
        .route_file(
            "api.toml",
            "[[route]]\nname = \"api\"\nmatch.path_prefix = \"/api\"\n\n[route.rate_limit]\nrate = 0.5\nburst = 3\nkey = \"header:x-api-key\"\n",
        )
        .via(t)
        .start();
    let call = |key: &str| {
        common::try_http_request_with_headers(b.proxy, "GET", "/api/x", &[("x-api-key", key)])
            .expect("answer")
    };
    for _ in 0..3 {
        assert_eq!(call("alice").0, 200);
    }
    let raw = common::raw_exchange(
        b.proxy,
        b"GET /api/x HTTP/1.1\r\nHost: t\r\nx-api-key: alice\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    let retry_after = raw
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .or(l.strip_prefix("Retry-After: "))
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{raw}");
    let body: Value =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or("")).expect("json");
    assert_eq!(body["route"], "api");
    assert_eq!(body["error"], "rate limit exceeded");
    // Another key has its own bucket.
    assert_eq!(call("bob").0, 200);
    b.wait_metric("banyan_rate_limited_total{route=\"api\"}", 1.0);
    assert_eq!(
        monolith.hits(),
        4,
        "the refused request never reached the upstream"
    );
    assert_eq!(b.route_status("api")["rate_limit"]["limited"], 1);
}
}

crate::both_transports! {
fn without_health_checks_a_refusing_peer_is_taken_out_by_its_errors(t) {
    let monolith = Upstream::start("monolith");
    let alive = Upstream::start("orders-a");
    let dead = dead_addr();
    let b = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![alive.addr, dead]),
        ],
        "monolith",
    )
    .route_file("orders.toml", route(""))
    .via(t)
    .start();
    let series = format!("banyan_upstream_healthy{{peer=\"{dead}\",upstream=\"orders\"}}");
    b.wait_metric(&series, 1.0);
    let mut served_by = Vec::new();
    for i in 0..30 {
        let (code, body) = get(&b, &format!("/api/orders/{i}"));
        assert_eq!(code, 200, "{body}");
        served_by.push(body["upstream"].as_str().unwrap_or("").to_string());
    }
    // Requests that met the dead peer went to legacy; three of them took it out.
    b.wait_metric(&series, 0.0);
    b.wait_metric(
        "banyan_fallbacks_total{reason=\"connect\",route=\"orders\"}",
        3.0,
    );
    assert_eq!(
        served_by.iter().filter(|s| *s == "monolith").count(),
        3,
        "{served_by:?}"
    );
    // From then on the live peer takes everything.
    assert!(served_by[served_by.len() - 10..]
        .iter()
        .all(|s| s == "orders-a"));
}
}

#[test]
fn the_access_log_is_reopened_on_sigusr1_for_logrotate() {
    let monolith = Upstream::start("monolith");
    let mut s = Setup::new(vec![("monolith", vec![monolith.addr])], "monolith");
    s.server_extra = "access_log = \"access.log\"";
    let b = s.start();
    let log = b.path("access.log");
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let _ = get(&b, "/before?secret=1");
    wait_until("the first line", || lines(&log) == 1);
    let first = std::fs::read_to_string(&log).expect("log");
    assert!(
        first.contains("\"path\":\"/before\"") && !first.contains("secret"),
        "{first}"
    );
    // logrotate: move the file away, then tell banyan.
    let rotated = b.path("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    b.signal("USR1");
    // Lines written before the reopen may still land in the old file; once the new file
    // exists, every later line goes there.
    wait_until("a new access.log", || {
        let _ = get(&b, "/after");
        lines(&log) >= 1
    });
    assert!(lines(&rotated) >= 1);
    let now = std::fs::read_to_string(&log).expect("new log");
    assert!(
        now.lines().all(|l| l.contains("\"path\":\"/after\"")),
        "{now}"
    );
}
