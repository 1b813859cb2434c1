//! The control plane with the real binary: hot reload (write, rename, Kubernetes symlink
//! swap, SIGHUP, API), overrides through the CLI and the API, persistence across
//! restarts, the proxy being down, tokens, the audit log, and zero failed or misrouted
//! requests while all of that happens under load.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banyan::routes::split;
use common::upstream::Upstream;
use common::{ok, wait_until, Banyan, Setup};
use serde_json::Value;

fn orders(percent: f64) -> String {
    common::orders_route(percent)
}

struct World {
    _monolith: Upstream,
    _orders: Upstream,
    b: Banyan,
}

fn world(percent: f64) -> World {
    world_via(common::Transport::Banyan, percent)
}

/// The same, its requests served through transport `t`.
fn world_via(t: common::Transport, percent: f64) -> World {
    let (monolith, orders_up, setup) = common::orders_world(percent);
    World {
        _monolith: monolith,
        _orders: orders_up,
        b: setup.via(t).start(),
    }
}

/// Which upstream served `/api/orders/1` for `user`, by the upstream's own answer.
fn served_by(proxy: SocketAddr, user: &str) -> String {
    let answer = common::raw_exchange(
        proxy,
        format!("GET /api/orders/1 HTTP/1.1\r\nHost: t\r\nx-user-id: {user}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: Value = serde_json::from_str(body).expect("echo json");
    v["upstream"].as_str().unwrap_or("").to_string()
}

fn effective(b: &Banyan) -> f64 {
    b.route_status("orders")["effective_percent"]
        .as_f64()
        .unwrap_or(-1.0)
}

/// Atomic replacement, as editors and config tools write.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

crate::both_transports! {
fn once_rollback_exits_the_next_request_goes_to_legacy(t) {
    let w = world_via(t, 100.0);
    assert_eq!(served_by(w.b.proxy, "u1"), "orders");
    for i in 0..20 {
        ok(&w.b.cli(&["rollback", "orders", "--reason", "incident"]));
        assert_eq!(
            served_by(w.b.proxy, &format!("u{i}")),
            "monolith",
            "cycle {i}: after rollback"
        );
        ok(&w.b.cli(&["resume", "orders"]));
        assert_eq!(
            served_by(w.b.proxy, &format!("u{i}")),
            "orders",
            "cycle {i}: after resume"
        );
    }
    let out = ok(&w.b.cli(&["set", "orders", "0", "--reason", "hold"]));
    assert!(out.contains("orders set to 0% until resumed"), "{out}");
    assert_eq!(served_by(w.b.proxy, "u1"), "monolith");
    w.b.wait_metric(
        "banyan_rollbacks_total{route=\"orders\",trigger=\"manual\"}",
        20.0,
    );
    w.b.wait_metric("banyan_route_override{route=\"orders\"}", 1.0);
    w.b.wait_metric("banyan_route_target_percent{route=\"orders\"}", 0.0);
}
}

#[test]
fn status_shows_declared_and_effective_percent_with_the_reason() {
    let w = world(25.0);
    ok(&w
        .b
        .cli(&["rollback", "orders", "--reason", "p99 regression"]));
    let r = w.b.route_status("orders");
    assert_eq!(r["declared_percent"], 25.0);
    assert_eq!(r["effective_percent"], 0.0);
    assert_eq!(r["override"]["reason"], "p99 regression");
    assert_eq!(r["override"]["trigger"], "manual");
    assert_eq!(r["override"]["shadow"], false);
    let out = ok(&w.b.cli(&["status"]));
    let line = out
        .lines()
        .find(|l| l.starts_with("orders "))
        .expect("orders row");
    assert!(line.contains("25.00 → 0.00"), "{line}");
    assert!(
        line.contains("manual") && line.contains("p99 regression"),
        "{line}"
    );
    let json: Value = serde_json::from_slice(&w.b.cli(&["status", "--json"]).stdout).expect("json");
    assert_eq!(json["routes"][0]["override"]["reason"], "p99 regression");
}

#[test]
fn a_rollback_survives_a_restart_and_a_reload() {
    let mut w = world(100.0);
    ok(&w.b.cli(&["rollback", "orders"]));
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(w.b.path("state/overrides.json")).expect("file"),
    )
    .expect("json");
    assert_eq!(saved["orders"]["percent"], 0.0);
    assert_eq!(saved["orders"]["shadow"], false);
    w.b.restart();
    assert_eq!(served_by(w.b.proxy, "u1"), "monolith");
    assert_eq!(effective(&w.b), 0.0);
    // A route-file change does not undo it either.
    write_atomically(&w.b.path("routes/orders.toml"), &orders(90.0));
    wait_until("the new declared percent", || {
        w.b.route_status("orders")["declared_percent"] == 90.0
    });
    assert_eq!(effective(&w.b), 0.0);
    ok(&w.b.cli(&["resume", "orders"]));
    assert_eq!(effective(&w.b), 90.0);
}

#[test]
fn a_rollback_written_while_the_proxy_is_down_is_honoured_at_start() {
    let mut w = world(100.0);
    w.b.signal("INT");
    w.b.wait_exit(common::DEADLINE).expect("stopped");
    let out = ok(&w
        .b
        .cli(&["rollback", "orders", "--reason", "deploy went bad"]));
    assert!(out.contains("cannot be reached"), "{out}");
    assert!(
        out.contains("wrote") && out.contains("overrides.json directly"),
        "{out}"
    );
    w.b.start_again();
    assert_eq!(served_by(w.b.proxy, "u1"), "monolith");
    assert_eq!(
        w.b.route_status("orders")["override"]["reason"],
        "deploy went bad"
    );
    // And a resume written while it runs is picked up from the file too: stop, resume
    // offline, and start.
    w.b.signal("INT");
    w.b.wait_exit(common::DEADLINE).expect("stopped");
    ok(&w.b.cli(&["resume", "orders"]));
    w.b.start_again();
    assert_eq!(served_by(w.b.proxy, "u1"), "orders");
}

#[test]
fn an_overrides_file_written_by_another_instance_is_applied() {
    let w = world(100.0);
    let text = r#"{"orders": {"percent": 0, "shadow": false, "trigger": "manual", "reason": "from instance b", "at": "2026-11-22T10:00:00Z"}}"#;
    write_atomically(&w.b.path("state/overrides.json"), text);
    wait_until("the shared override", || effective(&w.b) == 0.0);
    assert_eq!(served_by(w.b.proxy, "u1"), "monolith");
    assert_eq!(
        w.b.route_status("orders")["override"]["reason"],
        "from instance b"
    );
}

crate::both_transports! {
fn route_file_changes_are_live_within_a_second(t) {
    let w = world_via(t, 0.0);
    for (i, percent) in [100.0, 0.0, 50.0, 100.0].into_iter().enumerate() {
        let path = w.b.path("routes/orders.toml");
        let start = Instant::now();
        if i % 2 == 0 {
            std::fs::write(&path, orders(percent)).expect("write in place");
        } else {
            write_atomically(&path, &orders(percent));
        }
        wait_until("the change", || effective(&w.b) == percent);
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{percent}% went live after {took:?}"
        );
    }
    assert_eq!(served_by(w.b.proxy, "u1"), "orders");
    let s = w.b.status();
    assert!(
        s["generation"].as_u64().unwrap_or(0) >= 5,
        "{}",
        s["generation"]
    );
    let (_, metrics) = w.b.admin_get("/metrics");
    let generation = s["generation"].as_f64().unwrap_or(0.0);
    w.b.wait_metric("banyan_config_generation", generation);
    assert!(metrics.contains("banyan_config_reloads_total{result=\"ok\"}"));
}
}

#[test]
fn a_kubernetes_configmap_symlink_swap_is_picked_up() {
    let monolith = Upstream::start("monolith");
    let orders_up = Upstream::start("orders");
    let setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders_up.addr]),
        ],
        "monolith",
    );
    let proxy: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let dir = setup.write(proxy, admin);
    // The layout kubelet makes for a ConfigMap volume.
    let routes = dir.path().join("routes");
    let v1 = routes.join("..2026_11_22_10_00_00.000000001");
    std::fs::create_dir(&v1).expect("v1");
    std::fs::write(v1.join("orders.toml"), orders(0.0)).expect("v1 file");
    std::os::unix::fs::symlink("..2026_11_22_10_00_00.000000001", routes.join("..data"))
        .expect("..data");
    std::os::unix::fs::symlink("..data/orders.toml", routes.join("orders.toml"))
        .expect("file link");
    let b = Banyan::spawn(dir, proxy, admin, &["run"]);
    assert_eq!(served_by(b.proxy, "u1"), "monolith");

    // kubelet's update: a new timestamped folder, a new `..data_tmp` link, renamed over `..data`.
    let v2 = routes.join("..2026_11_22_10_05_00.000000002");
    std::fs::create_dir(&v2).expect("v2");
    std::fs::write(v2.join("orders.toml"), orders(100.0)).expect("v2 file");
    std::os::unix::fs::symlink("..2026_11_22_10_05_00.000000002", routes.join("..data_tmp"))
        .expect("tmp link");
    let start = Instant::now();
    std::fs::rename(routes.join("..data_tmp"), routes.join("..data")).expect("swap");
    std::fs::remove_dir_all(&v1).expect("old version removed");
    wait_until("the swapped ConfigMap", || effective(&b) == 100.0);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "live after {:?}",
        start.elapsed()
    );
    assert_eq!(served_by(b.proxy, "u1"), "orders");
}

#[test]
fn sighup_and_the_reload_endpoint_reload() {
    let w = world(0.0);
    let g0 = w.b.status()["generation"].as_u64().unwrap_or(0);
    w.b.signal("HUP");
    wait_until("SIGHUP reload", || {
        w.b.status()["generation"].as_u64().unwrap_or(0) > g0
    });
    let g1 = w.b.status()["generation"].as_u64().unwrap_or(0);
    let resp = admin_http::post(w.b.admin, "/api/v1/reload", "");
    assert_eq!(resp.0, 200, "{}", resp.1);
    let v: Value = serde_json::from_str(&resp.1).expect("json");
    assert_eq!(v["generation"].as_u64(), Some(g1 + 1));
}

/// Admin POSTs, with an optional bearer token.
mod admin_http {
    use std::net::SocketAddr;

    pub fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
        super::common::http_request(addr, "POST", path, None, body)
    }

    pub fn post_with(
        addr: SocketAddr,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let auth = token.map(|t| format!("Bearer {t}"));
        super::common::http_request(addr, "POST", path, auth.as_deref(), body)
    }
}

#[test]
fn the_api_changes_overrides_and_answers_errors_in_json() {
    let w = world(100.0);
    let (code, body) = admin_http::post(
        w.b.admin,
        "/api/v1/routes/orders/percent",
        r#"{"percent": 12.5, "reason": "canary"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["changes"][0]["percent_after"], 12.5);
    assert_eq!(effective(&w.b), 12.5);
    for (path, body, want) in [
        ("/api/v1/routes/nosuch/rollback", "", 404),
        ("/api/v1/routes/orders/percent", r#"{"percent": 101}"#, 400),
        ("/api/v1/routes/orders/percent", r#"{"percnt": 1}"#, 400),
        ("/api/v1/routes/orders/percent", "not json", 400),
        ("/api/v1/routes/orders/explode", "", 404),
    ] {
        let (code, text) = admin_http::post(w.b.admin, path, body);
        assert_eq!(code, want, "{path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json error");
        assert!(v["error"].is_string(), "{text}");
    }
    assert_eq!(
        admin_http::post(w.b.admin, "/api/v1/rollback", r#"{"reason": "all"}"#).0,
        200
    );
    assert_eq!(effective(&w.b), 0.0);
    assert_eq!(admin_http::post(w.b.admin, "/api/v1/resume", "").0, 200);
    assert_eq!(effective(&w.b), 100.0);
}

#[test]
fn tokenless_calls_get_401_and_change_nothing() {
    let (_monolith, _orders, mut setup) = common::orders_world(100.0);
    setup.env = vec![("BANYAN_ADMIN_TOKEN", "tok-3")];
    let b = setup.start();
    for path in [
        "/api/v1/routes/orders/rollback",
        "/api/v1/rollback",
        "/api/v1/reload",
        "/api/v1/resume",
    ] {
        let (code, body) = admin_http::post(b.admin, path, "");
        assert_eq!(code, 401, "{path}: {body}");
        assert!(serde_json::from_str::<Value>(&body).expect("json")["error"].is_string());
    }
    assert_eq!(served_by(b.proxy, "u1"), "orders");
    // The CLI without the token is refused (and does not fall back to the file)...
    let out = b.cli(&["rollback", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HTTP 401"), "{err}");
    assert_eq!(served_by(b.proxy, "u1"), "orders");
    // ...and with it, works.
    ok(&b.cli(&["rollback", "orders", "--token", "tok-3"]));
    assert_eq!(served_by(b.proxy, "u1"), "monolith");
    assert_eq!(
        admin_http::post_with(b.admin, "/api/v1/resume", "", Some("tok-3")).0,
        200
    );
    assert_eq!(served_by(b.proxy, "u1"), "orders");
}

#[test]
fn the_audit_log_records_reloads_and_override_changes() {
    let w = world(25.0);
    std::fs::write(w.b.path("routes/orders.toml"), "[[route]\n").expect("broken");
    wait_until("the refused reload", || {
        !w.b.status()["last_reload_error"].is_null()
    });
    write_atomically(&w.b.path("routes/orders.toml"), &orders(30.0));
    wait_until("the good reload", || {
        w.b.status()["last_reload_error"].is_null() && effective(&w.b) == 30.0
    });
    ok(&w.b.cli(&["rollback", "orders", "--reason", "audit me"]));
    ok(&w.b.cli(&["resume", "orders"]));
    let text = std::fs::read_to_string(w.b.path("state/audit.jsonl")).expect("audit log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let find = |pred: &dyn Fn(&Value) -> bool| lines.iter().find(|l| pred(l)).cloned();
    let start = find(&|l| l["action"] == "reload" && l["reason"] == "start").expect("start");
    assert_eq!(start["changes"][0]["percent_after"], 25.0);
    let bad = find(&|l| l["action"] == "reload" && l["result"] == "error").expect("error line");
    assert!(
        bad["error"]
            .as_str()
            .unwrap_or("")
            .contains("orders.toml:1:"),
        "{bad}"
    );
    assert_eq!(bad["source"], "file");
    let good = find(&|l| l["action"] == "reload" && l["result"] == "ok" && l["reason"] != "start")
        .expect("good");
    assert_eq!(good["changes"][0]["percent_before"], 25.0);
    assert_eq!(good["changes"][0]["percent_after"], 30.0);
    let rb = find(&|l| l["action"] == "rollback").expect("rollback line");
    assert_eq!(
        (rb["source"].as_str(), rb["route"].as_str()),
        (Some("cli"), Some("orders"))
    );
    assert_eq!(
        (rb["percent_before"].as_f64(), rb["percent_after"].as_f64()),
        (Some(30.0), Some(0.0))
    );
    assert_eq!(rb["reason"], "audit me");
    let rs = find(&|l| l["action"] == "resume").expect("resume line");
    assert_eq!(rs["percent_after"], 30.0);
    for l in &lines {
        assert!(
            humantime::parse_rfc3339_weak(l["at"].as_str().unwrap_or("")).is_ok(),
            "{l}"
        );
    }
    w.b.wait_metric("banyan_config_reloads_total{result=\"error\"}", 1.0);
}

/// What a response showed, for checking against the timeline of changes afterwards.
struct Observation {
    user: String,
    start: Instant,
    end: Instant,
    served_by: String,
    snapshot: String,
}

/// Percent in force over time: before a change starts the old one, after it is
/// confirmed the new one, in between either.
struct Timeline {
    initial: f64,
    changes: Vec<(Instant, Instant, f64, f64)>,
}

impl Timeline {
    fn possible(&self, start: Instant, end: Instant) -> Vec<f64> {
        let mut out = vec![self.initial];
        for &(began, confirmed, before, after) in &self.changes {
            if began <= end && confirmed >= start {
                out.push(before);
                out.push(after);
            }
            if confirmed < start {
                out.clear();
                out.push(after);
            }
        }
        out
    }
}

struct Controller {
    timeline: Timeline,
    current: f64,
}

impl Controller {
    /// Makes a change and waits until status shows it in force, recording both instants.
    fn change(&mut self, b: &Banyan, label: &str, after: f64, act: impl FnOnce()) {
        let began = Instant::now();
        act();
        wait_until(label, || effective(b) == after);
        self.timeline
            .changes
            .push((began, Instant::now(), self.current, after));
        self.current = after;
    }
}

crate::both_transports! {
fn under_load_100_rewrites_and_50_rollback_cycles_fail_and_misroute_nothing(t) {
    let w = world_via(t, 0.0);
    let proxy = w.b.proxy;
    let stop = Arc::new(AtomicBool::new(false));
    let observations = Arc::new(Mutex::new(Vec::<Observation>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut load = Vec::new();
    for worker in 0..4u32 {
        let (stop, observations, failures) = (
            Arc::clone(&stop),
            Arc::clone(&observations),
            Arc::clone(&failures),
        );
        load.push(rt.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0u32;
            // Bounded: stops when the controller is done, or after a million requests.
            while !stop.load(Ordering::Relaxed) && i < 1_000_000 {
                i += 1;
                let user = format!("user-{}", (worker * 7919 + i * 31) % 400);
                let start = Instant::now();
                let resp = client
                    .get(format!("http://{proxy}/api/orders/{i}"))
                    .header("x-user-id", &user)
                    .send()
                    .await;
                let resp = match resp {
                    Ok(r) if r.status() == 200 => r,
                    Ok(r) => {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{user}: status {}", r.status()));
                        continue;
                    }
                    Err(e) => {
                        failures.lock().expect("lock").push(format!("{user}: {e}"));
                        continue;
                    }
                };
                let snapshot = resp
                    .headers()
                    .get("x-banyan-snapshot")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body: Value = match resp.json().await {
                    Ok(b) => b,
                    Err(e) => {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{user}: body {e}"));
                        continue;
                    }
                };
                observations.lock().expect("lock").push(Observation {
                    user,
                    start,
                    end: Instant::now(),
                    served_by: body["upstream"].as_str().unwrap_or("").to_string(),
                    snapshot,
                });
            }
        }));
    }

    let mut c = Controller {
        timeline: Timeline {
            initial: 0.0,
            changes: Vec::new(),
        },
        current: 0.0,
    };
    let percents = [20.0, 65.5, 100.0, 5.0, 0.0, 42.0, 90.0, 33.33];
    let path = w.b.path("routes/orders.toml");
    let mut cycles = 0;
    for i in 0..100 {
        let p = percents[i % percents.len()];
        c.change(&w.b, &format!("rewrite {i} to {p}%"), p, || {
            write_atomically(&path, &orders(p))
        });
        if i % 2 == 1 {
            let declared = c.current;
            c.change(&w.b, &format!("rollback {cycles}"), 0.0, || {
                ok(&w.b.cli(&["rollback", "orders", "--reason", "load test"]));
            });
            c.change(&w.b, &format!("resume {cycles}"), declared, || {
                ok(&w.b.cli(&["resume", "orders"]));
            });
            cycles += 1;
        }
    }
    let timeline = c.timeline;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        rt.block_on(l).expect("load task");
    }
    assert_eq!(cycles, 50);
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    let observations = observations.lock().expect("lock");
    assert!(
        observations.len() > 1000,
        "only {} requests were made",
        observations.len()
    );
    let mut misrouted = Vec::new();
    for o in observations.iter() {
        let bucket = split::bucket("orders", o.user.as_bytes());
        let allowed = timeline.possible(o.start, o.end);
        let fits = allowed.iter().any(|&p| {
            let want = if split::in_target(bucket, split::percent_to_bp(p).unwrap_or(0)) {
                "orders"
            } else {
                "monolith"
            };
            want == o.served_by
        });
        if !fits {
            misrouted.push(format!(
                "{} (bucket {bucket}) → {} at snapshot {}, allowed {allowed:?}",
                o.user, o.served_by, o.snapshot
            ));
        }
    }
    assert!(
        misrouted.is_empty(),
        "{} of {} misrouted, e.g. {:?}",
        misrouted.len(),
        observations.len(),
        &misrouted[..misrouted.len().min(3)]
    );
    eprintln!(
        "{} requests, 0 failed, 0 misrouted, {} changes",
        observations.len(),
        timeline.changes.len()
    );
}
}
