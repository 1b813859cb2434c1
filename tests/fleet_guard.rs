//! One decision for the fleet: the replica elected through etcd adds up every replica's
//! guard window and rolls a failing target back for all of them, though no replica alone
//! has seen enough requests to judge it.

mod common;

use common::etcd::Etcd;
use common::fleet::{fleet_of, fleet_view};
use common::load::Load;
use common::upstream::{Behavior, Upstream};
use common::wait_until;

#[test]
fn the_elected_replica_judges_the_fleets_window() {
    let etcd = Etcd::start();
    let failing = Upstream::start_with(
        "orders",
        Behavior {
            status: Some(500),
            ..Behavior::default()
        },
    );
    let route = format!(
        "{}fallback = false\n\n[route.guard]\nmax_error_rate = 0.5\nmin_requests = 20\nwindow = \"60s\"\n",
        common::orders_route(100.0)
    );
    let mut f = fleet_of(&etcd, 2, "", failing, &route);
    wait_until("a replica elected", || {
        f.replicas
            .iter()
            .all(|b| fleet_view(b)["leader"].is_string())
    });
    let leader = fleet_view(&f.replicas[0])["leader"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(fleet_view(&f.replicas[1])["leader"], leader.as_str());

    // 12 failing target requests on each replica: under min_requests = 20 for either.
    for b in &f.replicas {
        for i in 0..12 {
            let (code, _) = common::try_http_request_with_headers(
                b.proxy,
                "GET",
                &format!("/api/orders/{i}"),
                &[("x-user-id", &format!("u{i}"))],
            )
            .expect("an answer");
            // The target's 500, or 503 once its circuit opens: both count as failures.
            assert!(code >= 500, "{code}");
        }
    }
    // Together up to 24 of 24 failed: the elected replica rolls the route back everywhere
    // (as soon as the windows it adds up reach 20).
    wait_until("every replica rolled back by the fleet's guard", || {
        f.replicas.iter().all(|b| {
            let r = b.route_status("orders");
            r["effective_percent"] == 0.0 && r["override"]["trigger"] == "guard"
        })
    });
    let reason = f.replicas[0].route_status("orders")["override"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("guard (the fleet's 2 replicas): target error rate 100.0 % (2"),
        "{reason}"
    );
    // Both sides' figures, added up over the replicas: under load, now on legacy.
    let loads: Vec<Load> = f.replicas.iter().map(|b| Load::start(b.proxy, 1)).collect();
    wait_until("the fleet's figures for orders from both replicas", || {
        let a = &fleet_view(&f.replicas[1])["aggregates"]["orders"];
        a["replicas"] == 2 && a["legacy"]["rps"].as_f64().is_some_and(|r| r > 0.0)
    });
    let a = fleet_view(&f.replicas[1])["aggregates"]["orders"].clone();
    assert_eq!(a["legacy"]["error_rate"], 0.0, "{a}");
    assert!(a["legacy"]["p99_ms"].is_number(), "{a}");
    let out = f.replicas[0].cli(&["status", "--fleet"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{leader} judges the fleet's aggregates"))
            && text.contains("the fleet's last 10 s"),
        "{text}"
    );
    for load in loads {
        let (served, failures) = load.stop();
        assert!(served > 0 && failures.is_empty(), "{failures:?}");
    }

    // The leader gone: the other replica is elected once its lease expires.
    let at = if leader == "r0" { 0 } else { 1 };
    let mut gone = f.replicas.remove(at);
    gone.signal("KILL");
    let _ = gone.wait_exit(common::DEADLINE);
    let other = if at == 0 { "r1" } else { "r0" };
    wait_until("the other replica elected", || {
        fleet_view(&f.replicas[0])["leader"] == other
    });
    // Campaigning all along (longer than a request may take) never cost it the store.
    let log = f.replicas[0].log();
    assert!(!log.contains("cannot be reached"), "{log}");
}
