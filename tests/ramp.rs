//! Ramps (`[route.ramp]`) with the real binary, real upstreams and real load, with short
//! holds: a healthy target climbs every step to 100 % with each step audited with its
//! figures; a target with 10 % 5xx is rolled back at its first judged step; a target that
//! answers other JSON never passes `min_match_rate`; too little traffic holds without
//! failing; a restart resumes at the same step with the hold's time kept; the verbs.

mod common;

use std::process::Output;

use common::load::Load;
use common::upstream::{Behavior, Upstream};
use common::{ok, wait_until, Banyan, Setup};
use serde_json::Value;

fn refused(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    text
}

fn route(ramp: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"orders\"\nmatch.path_prefix = \"/api/orders\"\nlegacy = \"monolith\"\ntarget = \"orders\"\npercent = 0\nsticky = \"header:x-user-id\"\n{extra}\n[route.ramp]\n{ramp}\n"
    )
}

struct World {
    _monolith: Upstream,
    _orders: Upstream,
    b: Banyan,
}

fn world(target: Behavior, route_file: String) -> World {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start_with("orders", target);
    let b = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders.addr]),
        ],
        "monolith",
    )
    .route_file("orders.toml", route_file)
    .start();
    World {
        _monolith: monolith,
        _orders: orders,
        b,
    }
}

fn ramp(b: &Banyan) -> Value {
    b.route_status("orders")["ramp"].clone()
}

/// The audit log's ramp entries, oldest first.
fn ramp_audit(b: &Banyan) -> Vec<Value> {
    std::fs::read_to_string(b.path("state/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("ramp") || a == "promote")
        })
        .collect()
}

#[test]
fn a_healthy_target_climbs_every_step_each_audited_with_its_figures() {
    let w = world(
        Behavior::default(),
        route(
            "steps = [10, 50, 100]\nhold = \"1s\"\nmin_requests = 20\nmax_error_delta = 0.01\nmax_p99_ratio = 50",
            "",
        ),
    );
    let b = &w.b;
    assert_eq!(ramp(b)["state"], "ready");
    let load = Load::start(b.proxy, 2);
    let text = ok(&b.cli(&["ramp", "start", "orders", "--reason", "orders v2 is out"]));
    assert!(
        text.contains("orders: ramp running, step 1: 0.0% → 10.0%"),
        "{text}"
    );
    assert_eq!(b.route_status("orders")["effective_percent"], 10.0);
    wait_until("the ramp done", || ramp(b)["state"] == "done");
    let (served, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} of {served} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let st = b.route_status("orders");
    assert_eq!(st["effective_percent"], 100.0);
    assert_eq!(st["ramp"]["step"], 3);

    // Each move is audited just after it is served.
    wait_until("the last step audited", || {
        ramp_audit(b).iter().any(|e| e["action"] == "ramp-done")
    });
    let entries = ramp_audit(b);
    let moves: Vec<(&str, f64, f64)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["percent_before"].as_f64().unwrap_or(-1.0),
                e["percent_after"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            ("ramp-start", 0.0, 10.0),
            ("ramp-step", 10.0, 50.0),
            ("ramp-done", 50.0, 100.0)
        ]
    );
    for step in &entries[1..] {
        assert_eq!(step["source"], "ramp");
        let gates = step["gates"].as_array().expect("gates");
        let names: Vec<&str> = gates.iter().filter_map(|g| g["gate"].as_str()).collect();
        assert_eq!(names, ["requests", "error_delta", "p99_ratio"]);
        assert!(gates.iter().all(|g| g["result"] == "pass"), "{step}");
        assert!(gates[0]["figure"].as_f64().unwrap_or(0.0) >= 20.0, "{step}");
    }
    // The gauges.
    b.wait_metric("banyan_ramp_step{route=\"orders\"}", 3.0);
    b.wait_metric("banyan_ramp_state{route=\"orders\",state=\"done\"}", 1.0);
    assert!(b
        .metric("banyan_ramp_gate{gate=\"requests\",route=\"orders\"}")
        .is_some_and(|v| v >= 20.0));
}

#[test]
fn a_target_with_ten_percent_5xx_is_rolled_back_at_its_first_judged_step() {
    let w = world(
        Behavior {
            fail_every: 10,
            ..Behavior::default()
        },
        route(
            "steps = [20, 100]\nhold = \"1h\"\nmin_requests = 50\nmax_error_delta = 0.02",
            "",
        ),
    );
    let b = &w.b;
    let load = Load::start(b.proxy, 2);
    ok(&b.cli(&["ramp", "start", "orders"]));
    wait_until("the ramp failed", || ramp(b)["state"] == "failed");
    let _ = load.stop();
    let st = b.route_status("orders");
    assert_eq!(st["effective_percent"], 0.0);
    assert_eq!(st["override"]["trigger"], "ramp");
    let reason = st["override"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("ramp: step 1 failed: error_delta 0.") && reason.contains("> 0.02"),
        "{reason}"
    );
    // The move is audited just after it is served.
    let failed = || {
        ramp_audit(b)
            .into_iter()
            .find(|e| e["action"] == "ramp-fail")
    };
    wait_until("the failure audited", || failed().is_some());
    let fail = failed().unwrap_or_default();
    assert!(fail["gates"]
        .as_array()
        .is_some_and(|g| g.iter().any(|g| g["result"] == "fail")));
    // status exits 3: a person is needed.
    let out = b.cli(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders: rolled back by its ramp"));
    b.wait_metric(
        "banyan_rollbacks_total{route=\"orders\",trigger=\"ramp\"}",
        1.0,
    );
}

#[test]
fn wrong_answers_never_pass_the_match_rate_and_too_little_traffic_holds() {
    // Every shadow copy differs: the echo names the upstream that answered.
    let w = world(
        Behavior::default(),
        route(
            "steps = [5, 100]\nhold = \"1s\"\nmin_requests = 1\nmin_match_rate = 0.99\nmin_compared = 10\non_failure = \"pause\"",
            "\n[route.shadow]\npercent = 100\n",
        ),
    );
    let b = &w.b;
    ok(&b.cli(&["ramp", "start", "orders"]));
    // No traffic: holds, past its hold, without failing.
    wait_until("judged without evidence past the hold", || {
        let r = ramp(b);
        r["at_step_seconds"].as_f64().unwrap_or(0.0) >= 2.0
            && r["verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with("not enough evidence"))
    });
    let r = ramp(b);
    assert_eq!(
        (r["state"].as_str(), r["step"].as_u64()),
        (Some("running"), Some(1)),
        "{r}"
    );
    assert!(
        r["gates"]
            .as_array()
            .is_some_and(|g| g.iter().all(|g| g["result"] != "fail")),
        "{r}"
    );
    let text = ok(&b.cli(&["status"]));
    assert!(
        text.contains("orders: running at 5%, step 1 of 2 [5 → 100]"),
        "{text}"
    );
    assert!(
        text.contains("inconclusive match_rate n/a of 0.99"),
        "{text}"
    );

    let load = Load::start(b.proxy, 1);
    wait_until("paused by the match rate", || ramp(b)["state"] == "paused");
    let _ = load.stop();
    let r = ramp(b);
    assert_eq!(r["step"], 1);
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("failed: match_rate 0.0000 < 0.99")),
        "{r}"
    );
    assert_eq!(b.route_status("orders")["effective_percent"], 5.0);
}

#[test]
fn the_verbs_and_a_restart_mid_ramp() {
    let mut w = world(
        Behavior::default(),
        route(
            "steps = [1, 5, 25, 100]\nhold = \"1h\"\nmin_requests = 1000000",
            "",
        ),
    );
    let b = &mut w.b;
    assert!(refused(&b.cli(&["ramp", "pause", "orders"])).contains("is not started, not running"));
    assert!(refused(&b.cli(&["ramp", "start", "nope"])).contains("no route named `nope`"));
    ok(&b.cli(&["ramp", "start", "orders"]));
    assert!(refused(&b.cli(&["ramp", "start", "orders"])).contains("abort it to start again"));
    let text = ok(&b.cli(&["promote", "orders", "--reason", "looks fine"]));
    assert!(text.contains("step 2: 1.0% → 5.0%"), "{text}");
    wait_until("a second at step 2", || {
        ramp(b)["at_step_seconds"].as_f64().unwrap_or(0.0) >= 1.0
    });
    let url = format!("http://{}/api/orders/1", b.proxy);
    let text = ok(&b.cli(&["explain", "GET", &url]));
    assert!(
        text.contains("the percent is the ramp's step 2 of 4 (running)"),
        "{text}"
    );

    // A manual set wins and pauses the ramp; resuming the route, then the ramp, goes on.
    ok(&b.cli(&["set", "orders", "3", "--reason", "slow down"]));
    wait_until("paused by the override", || ramp(b)["state"] == "paused");
    assert_eq!(b.route_status("orders")["effective_percent"], 3.0);
    assert!(refused(&b.cli(&["ramp", "resume", "orders"])).contains("resume the route first"));
    ok(&b.cli(&["resume", "orders"]));
    assert_eq!(b.route_status("orders")["effective_percent"], 5.0);
    ok(&b.cli(&["ramp", "resume", "orders"]));

    b.restart();
    let r = ramp(b);
    assert_eq!(
        (r["state"].as_str(), r["step"].as_u64()),
        (Some("running"), Some(2)),
        "{r}"
    );
    assert!(r["at_step_seconds"].as_f64().unwrap_or(0.0) >= 1.0, "{r}");
    assert_eq!(b.route_status("orders")["effective_percent"], 5.0);

    ok(&b.cli(&["promote", "orders", "--full"]));
    assert_eq!(ramp(b)["state"], "done");
    assert_eq!(b.route_status("orders")["effective_percent"], 100.0);
    ok(&b.cli(&["ramp", "abort", "orders", "--reason", "back to the file"]));
    assert_eq!(b.route_status("orders")["effective_percent"], 0.0);
    let actions: Vec<String> = ramp_audit(b)
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions,
        [
            "ramp-start",
            "promote",
            "ramp-pause",
            "ramp-resume",
            "promote",
            "ramp-abort"
        ]
    );
}
