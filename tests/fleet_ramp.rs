//! Ramps in a fleet on a real etcd: the ramp's state is the fleet's (a verb on any replica
//! moves every replica, and a replica that joins later serves the same step), every
//! replica counts its share of a step, and the elected replica alone judges their sum —
//! so a fleet whose replicas each see too few requests still ramps, and a failing gate
//! rolls every replica back. While etcd is away a verb is refused.

mod common;

use common::etcd::Etcd;
use common::fleet::{fleet_of, Fleet};
use common::upstream::{Behavior, Upstream};
use common::{ok, wait_until, Banyan};
use serde_json::Value;

fn route(ramp: &str) -> String {
    format!(
        "{}fallback = false\n\n[route.ramp]\n{ramp}\n",
        common::orders_route(0.0)
    )
}

/// `n` users the route's split sends to the target at `percent` (or, `target = false`,
/// to legacy), distinct per `tag`.
fn users(tag: &str, n: usize, percent: f64, target: bool) -> Vec<String> {
    let bound = (percent * 100.0) as u16;
    (0..100_000)
        .map(|i| format!("{tag}-{i}"))
        .filter(|u| (banyan::routes::split::bucket("orders", u.as_bytes()) < bound) == target)
        .take(n)
        .collect()
}

/// One request per user through `b`: each answered by the side its bucket names.
fn send(b: &Banyan, users: &[String], expect: &str) {
    for u in users {
        let (code, body) = common::try_http_request_with_headers(
            b.proxy,
            "GET",
            &format!("/api/orders/{u}"),
            &[("x-user-id", u)],
        )
        .expect("an answer");
        if expect == "monolith" {
            assert_eq!(code, 200, "{body}");
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if code == 200 {
            assert_eq!(v["upstream"], expect, "{u}: {body}");
        }
    }
}

fn ramp(b: &Banyan) -> Value {
    b.route_status("orders")["ramp"].clone()
}

fn audit_of(b: &Banyan, action: &str) -> Vec<Value> {
    std::fs::read_to_string(b.path("state/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["action"] == action)
        .collect()
}

fn others(f: &Fleet, leader: usize) -> usize {
    (0..f.replicas.len())
        .find(|i| *i != leader)
        .expect("two replicas")
}

#[test]
fn the_elected_replica_ramps_on_the_sum_of_every_replicas_counts() {
    let etcd = Etcd::start();
    let f = fleet_of(
        &etcd,
        2,
        "",
        Upstream::start("orders"),
        &route("steps = [50, 100]\nhold = \"1s\"\nmin_requests = 30\nmax_error_delta = 0.01"),
    );
    let leader = f.leader();
    let other = others(&f, leader);
    let (l, o) = (&f.replicas[leader], &f.replicas[other]);

    // Started through the replica that does not judge: the fleet's ramp all the same.
    let text = ok(&o.cli(&["ramp", "start", "orders", "--reason", "orders v2"]));
    assert!(
        text.contains("orders: ramp running, step 1: 0.0% → 50.0%")
            && text.contains("served by all 2 replicas"),
        "{text}"
    );
    for b in &f.replicas {
        let st = b.route_status("orders");
        assert_eq!(st["effective_percent"], 50.0, "{st}");
        assert_eq!(st["ramp"]["state"], "running");
    }

    // 20 target-bound requests on each replica (and some for legacy, the baseline): under
    // min_requests = 30 for either alone, 40 together.
    let legacy = users("legacy", 10, 50.0, false);
    send(l, &users("l", 20, 50.0, true), "orders");
    send(l, &legacy, "monolith");
    // The leader alone holds: 20 of 30 is not evidence.
    wait_until("the leader's judgement of its own 20", || {
        ramp(l)["gates"][0]["figure"] == 20.0
    });
    assert_eq!(ramp(l)["state"], "running");
    assert!(
        ramp(l)["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("not enough evidence")),
        "{}",
        ramp(l)
    );
    send(o, &users("o", 20, 50.0, true), "orders");
    send(o, &legacy, "monolith");
    wait_until("the ramp done on every replica", || {
        f.replicas.iter().all(|b| {
            let st = b.route_status("orders");
            st["ramp"]["state"] == "done" && st["effective_percent"] == 100.0
        })
    });
    // The move was the leader's alone, on both replicas' counts (audited just after it
    // was served).
    wait_until("the move audited", || audit_of(l, "ramp-done").len() == 1);
    let done = audit_of(l, "ramp-done");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["source"], "ramp");
    let requests = done[0]["gates"][0]["figure"].as_f64().unwrap_or(0.0);
    assert!((30.0..=40.0).contains(&requests), "{}", done[0]);
    assert!(audit_of(o, "ramp-done").is_empty());
    // The other replica applied it from the store, and says whose judgement it was.
    wait_until("the fleet's change audited here", || {
        !audit_of(o, "ramps").is_empty()
    });
    assert_eq!(ramp(o)["step"], 2);
    let leader_name = format!("r{leader}");
    // The fleet's audit names the one move.
    let fleet_audit = ok(&o.cli(&["audit"]));
    let line = fleet_audit
        .lines()
        .find(|l| l.contains("ramp-done"))
        .unwrap_or_default();
    assert!(
        line.contains("50% → 100%") && line.contains(&format!("(on {leader_name})")),
        "{fleet_audit}"
    );
}

#[test]
fn a_failing_gate_rolls_the_fleet_back_a_joining_replica_agrees_and_verbs_need_the_store() {
    let mut etcd = Etcd::start();
    let failing = Upstream::start_with(
        "orders",
        Behavior {
            status: Some(500),
            ..Behavior::default()
        },
    );
    let mut f = fleet_of(
        &etcd,
        2,
        "",
        failing,
        &route("steps = [50, 100]\nhold = \"1h\"\nmin_requests = 10\nmax_error_delta = 0.05"),
    );
    let leader = f.leader();
    let other = others(&f, leader);
    ok(&f.replicas[other].cli(&["ramp", "start", "orders"]));
    // While the step runs, the other replica shows the leader's judgement.
    let leader_name = format!("r{leader}");
    wait_until("the leader's judgement shown on the other replica", || {
        ramp(&f.replicas[other])["judged_by"] == leader_name.as_str()
    });
    let out = f.replicas[other].cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("(judged by {leader_name} on ")),
        "{text}"
    );

    // 6 failing target requests per replica: 12 together, over min_requests = 10.
    for (i, b) in f.replicas.iter().enumerate() {
        send(b, &users(&format!("u{i}"), 6, 50.0, true), "orders");
    }
    wait_until("every replica rolled back by the ramp", || {
        f.replicas.iter().all(|b| {
            let st = b.route_status("orders");
            st["effective_percent"] == 0.0
                && st["override"]["trigger"] == "ramp"
                && st["ramp"]["state"] == "failed"
        })
    });
    let reason = f.replicas[other].route_status("orders")["override"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("ramp: step 1 failed: error_delta 1.0000 > 0.05"),
        "{reason}"
    );

    // A replica that joins now (empty state folder) serves the fleet's ramp and override.
    let joined = f.join();
    let b = &f.replicas[joined];
    wait_until("the joining replica has the fleet's ramp", || {
        ramp(b)["state"] == "failed"
    });
    let st = b.route_status("orders");
    assert_eq!(st["effective_percent"], 0.0);
    assert_eq!(st["override"]["trigger"], "ramp");

    // Without the store, nobody moves a ramp: refused, and nothing changes here. (A
    // failed ramp starts again once its rollback is resumed.)
    ok(&f.replicas[leader].cli(&["resume", "orders"]));
    ok(&f.replicas[leader].cli(&["ramp", "start", "orders"]));
    etcd.kill();
    wait_until("the store seen down", || {
        common::fleet::fleet_view(&f.replicas[other])["up"] == false
    });
    let out = f.replicas[other].cli(&["ramp", "pause", "orders"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot be reached") && err.contains("only through the store"),
        "{err}"
    );
    assert_eq!(ramp(&f.replicas[other])["state"], "running");
}
