//! A fleet of three replicas sharing their routing state through a real etcd: a
//! rollback through one replica is served by every replica when the command returns;
//! two concurrent writers cannot overwrite each other unseen; a killed replica leaves
//! the fleet within its lease; with etcd gone, replicas keep serving their last state
//! without failing a request, and pick etcd up again when it returns.

mod common;

use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::fleet::{fleet, fleet_view, served_by, target_user};
use common::load::Load;
use common::{wait_until, Banyan};
use serde_json::Value;

#[test]
fn a_rollback_through_one_replica_is_served_by_all_when_it_returns() {
    let etcd = Etcd::start();
    let f = fleet(&etcd, 3);
    let user = target_user();
    for b in &f.replicas {
        assert_eq!(served_by(b, &user), "orders");
    }
    for round in 0..5 {
        let out = f.replicas[round % 3].cli(&["rollback", "orders", "--reason", "fleet test"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("served by all 3 replicas"), "{text}");
        // When the command returns, every replica serves the new decision.
        for b in &f.replicas {
            assert_eq!(served_by(b, &user), "monolith", "round {round}");
        }
        let out = f.replicas[(round + 1) % 3].cli(&["resume", "orders"]);
        assert!(out.status.success(), "{out:?}");
        for b in &f.replicas {
            assert_eq!(served_by(b, &user), "orders", "round {round}");
        }
    }
    // What each replica announces, and the metrics. Each one's presence reaches this
    // replica through etcd just after the change it acknowledges.
    let view = fleet_view(&f.replicas[0]);
    assert_eq!(view["store"], "etcd");
    assert_eq!(view["up"], true);
    let revisions = || -> Vec<i64> {
        fleet_view(&f.replicas[0])["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|r| r["applied_revision"].as_i64().unwrap_or(0))
            .collect()
    };
    wait_until("every replica announcing the same revision", || {
        let r = revisions();
        r.iter().all(|v| *v == r[0] && *v > 0)
    });
    f.replicas[1].wait_metric("banyan_store_up", 1.0);
    f.replicas[1].wait_metric("banyan_fleet_replicas", 3.0);
    let out = f.replicas[2].cli(&["status", "--fleet"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("r0") && text.contains("r1") && text.contains("r2"),
        "{text}"
    );
    let check = f.replicas[0].cli(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains(&format!(
            "fleet      etcd {} under /banyan/test-",
            etcd.endpoint()
        )) && text.contains("as replica r0"),
        "{text}"
    );
    // The audit log of a replica that did not make the change names the fleet.
    let audit = std::fs::read_to_string(f.replicas[1].path("state/audit.jsonl")).expect("audit");
    assert!(audit.contains("\"source\":\"fleet\""), "{audit}");
}

#[test]
fn concurrent_writers_conflict_and_nothing_is_lost() {
    let etcd = Etcd::start();
    let f = fleet(&etcd, 2);
    let set = |b: &Banyan, percent: u32| {
        let body = format!("{{\"percent\": {percent}, \"reason\": \"writer {percent}\"}}");
        common::http_request(
            b.admin,
            "POST",
            "/api/v1/routes/orders/percent",
            None,
            &body,
        )
    };
    let mut conflicts = 0;
    let started = Instant::now();
    let mut pair = 0u32;
    while conflicts == 0 && started.elapsed() < common::DEADLINE {
        pair += 1;
        let (a, b) = (&f.replicas[0], &f.replicas[1]);
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| set(a, 2 * pair % 100));
            let hb = s.spawn(|| set(b, (2 * pair + 1) % 100));
            (ha.join().expect("writer a"), hb.join().expect("writer b"))
        });
        for (code, body) in [&ra, &rb] {
            assert!(*code == 200 || *code == 409, "{code} {body}");
            if *code == 409 {
                assert!(body.contains("changed on another replica"), "{body}");
                conflicts += 1;
            }
        }
        assert!(ra.0 == 200 || rb.0 == 200, "one writer wins: {ra:?} {rb:?}");
        // The last write that succeeded (by store revision) is what both replicas serve.
        let revision = |r: &(u16, String)| -> i64 {
            if r.0 != 200 {
                return -1;
            }
            serde_json::from_str::<Value>(&r.1).map_or(-1, |v| v["revision"].as_i64().unwrap_or(-1))
        };
        let won = if revision(&ra) > revision(&rb) {
            2 * pair % 100
        } else {
            (2 * pair + 1) % 100
        };
        let won = f64::from(won);
        wait_until("both replicas on the winner's percent", || {
            f.replicas
                .iter()
                .all(|b| b.route_status("orders")["effective_percent"].as_f64() == Some(won))
        });
    }
    assert!(conflicts > 0, "no conflict in {pair} concurrent pairs");
}

#[test]
fn a_killed_replica_leaves_and_etcd_going_away_fails_no_request() {
    let mut etcd = Etcd::start();
    let mut f = fleet(&etcd, 3);
    // A replica killed: its presence expires with its lease.
    let mut gone = f.replicas.pop().expect("a replica");
    gone.signal("KILL");
    let _ = gone.wait_exit(common::DEADLINE);
    let killed = Instant::now();
    wait_until("the killed replica's presence to expire", || {
        fleet_view(&f.replicas[0])["replicas"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    });
    assert!(
        killed.elapsed() < Duration::from_secs(3 * 3),
        "{:?}",
        killed.elapsed()
    );

    // etcd killed under load: both replicas keep serving their last state.
    let out = f.replicas[0].cli(&["set", "orders", "10", "--reason", "before the outage"]);
    assert!(out.status.success(), "{out:?}");
    let before = fleet_view(&f.replicas[0])["applied_revision"]
        .as_i64()
        .unwrap_or(0);
    let loads: Vec<Load> = f.replicas.iter().map(|b| Load::start(b.proxy, 2)).collect();
    etcd.kill();
    wait_until("both replicas to see the store down", || {
        f.replicas
            .iter()
            .all(|b| b.metric("banyan_store_up") == Some(0.0))
    });
    for b in &f.replicas {
        assert_eq!(b.route_status("orders")["effective_percent"], 10.0);
        let view = fleet_view(b);
        assert_eq!(view["up"], false, "{view}");
        assert!(view["down_since"].is_string(), "{view}");
    }
    // A change while the store is away applies where it was made and says so.
    let (code, body) = common::http_request(
        f.replicas[0].admin,
        "POST",
        "/api/v1/routes/orders/percent",
        None,
        r#"{"percent": 5}"#,
    );
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("not persisted"), "{body}");
    assert_eq!(
        f.replicas[1].route_status("orders")["effective_percent"],
        10.0
    );
    // The emergency path: each replica's own admin API, from the fleet it last knew.
    let out = f.replicas[1].cli(&["rollback", "--direct", "orders", "--reason", "etcd is down"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rolled back on 2 replicas"), "{text}");
    for b in &f.replicas {
        assert_eq!(b.route_status("orders")["effective_percent"], 0.0);
        assert_eq!(
            b.route_status("orders")["override"]["reason"],
            "etcd is down"
        );
    }
    etcd.start_again();
    wait_until("both replicas back on the store", || {
        f.replicas
            .iter()
            .all(|b| b.metric("banyan_store_up") == Some(1.0))
    });
    for load in loads {
        let (served, failures) = load.stop();
        assert!(served > 0);
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
    // Reconciled: the rollback made during the outage, changed nowhere else meanwhile,
    // is the fleet's once etcd is back, and a later change reaches everyone again.
    wait_until(
        "every replica on the store's revision of the outage's rollback",
        || {
            let own: Vec<i64> = f
                .replicas
                .iter()
                .map(|b| fleet_view(b)["applied_revision"].as_i64().unwrap_or(0))
                .collect();
            own.iter().all(|r| *r == own[0] && *r > before)
        },
    );
    for b in &f.replicas {
        assert_eq!(b.route_status("orders")["effective_percent"], 0.0);
    }
    let out = f.replicas[0].cli(&["resume", "orders"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("served by all 2 replicas"),
        "{out:?}"
    );
    for b in &f.replicas {
        assert_eq!(b.route_status("orders")["effective_percent"], 25.0);
    }
}
