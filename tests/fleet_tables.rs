//! The fleet's route tables and audit log in a real etcd (`[state] routes = "store"`): the
//! first replica seeds the store with its folder; `banyan push` reaches every replica
//! before it returns; an invalid table is refused and no replica changes; two pushes at
//! once cannot overwrite each other; `history` and `revert` restore an old table; a
//! replica restarted while etcd is away serves the fleet's table, not its folder; the
//! audit log is the fleet's. And etcd over https with client certificates.

mod common;

use common::etcd::Etcd;
use common::fleet::{fleet_view, fleet_with, served_by};
use common::pki::Ca;
use common::{wait_until, Banyan};
use serde_json::Value;

/// A user the declared 25 % keeps on legacy.
fn legacy_user() -> String {
    (0..10_000)
        .map(|i| format!("l-{i}"))
        .find(|u| banyan::routes::split::bucket("orders", u.as_bytes()) >= 2500)
        .expect("a legacy-bound user")
}

fn tables_of(b: &Banyan) -> Vec<u64> {
    let (code, body) = b.admin_get("/api/v1/tables");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["number"].as_u64().unwrap_or(0))
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A folder of route files beside replica `b`'s own.
fn folder(b: &Banyan, name: &str, files: &[(&str, String)]) -> String {
    let dir = b.path(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (f, t) in files {
        std::fs::write(dir.join(f), t).expect("write");
    }
    dir.display().to_string()
}

#[test]
fn pushed_tables_reach_every_replica_and_revert() {
    let mut etcd = Etcd::start();
    let mut f = fleet_with(&etcd, 3, "routes = \"store\"");
    let user = legacy_user();
    // Seeded: the store's first table is a replica's folder, and every replica says so.
    wait_until("every replica on table 1", || {
        f.replicas.iter().all(|b| {
            fleet_view(b)["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().all(|p| p["table"] == 1))
        })
    });
    let out = f.replicas[1].cli(&["history"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("* ") && text(&out).contains("seed"),
        "{}",
        text(&out)
    );

    // A push through one replica is served by all of them when it returns.
    let next = folder(
        &f.replicas[0],
        "next",
        &[("orders.toml", common::orders_route(100.0))],
    );
    let out = f.replicas[0].cli(&["push", &next, "--reason", "orders to 100"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("route table 2"), "{said}");
    assert!(said.contains("~ orders: 25 % → 100 %"), "{said}");
    assert!(said.contains("served by all 3 replicas"), "{said}");
    for b in &f.replicas {
        assert_eq!(served_by(b, &user), "orders");
    }

    // A reload of a replica's folder cannot undo the fleet's table.
    let (code, body) =
        common::http_request(f.replicas[2].admin, "POST", "/api/v1/reload", None, "{}");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("serves route table 2"), "{body}");

    // An invalid table is refused by the CLI before it leaves, and by the replica.
    let bad = folder(
        &f.replicas[0],
        "bad",
        &[(
            "orders.toml",
            common::orders_route(50.0).replace("target = \"orders\"", "target = \"nope\""),
        )],
    );
    let out = f.replicas[0].cli(&["push", &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nope"), "{}", text(&out));
    let files = serde_json::json!({ "files": { "orders.toml":
        common::orders_route(50.0).replace("target = \"orders\"", "target = \"nope\"") } });
    let (code, body) = common::http_request(
        f.replicas[1].admin,
        "POST",
        "/api/v1/tables",
        None,
        &files.to_string(),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("orders.toml:") && body.contains("nope"),
        "{body}"
    );
    for b in &f.replicas {
        assert_eq!(tables_of(b)[0], 2, "nothing was stored");
        assert_eq!(b.route_status("orders")["effective_percent"], 100.0);
    }

    // Two pushes at once through two replicas: one wins, the other is told.
    let push = |b: &Banyan, percent: f64| {
        let body = serde_json::json!({ "files": { "orders.toml": common::orders_route(percent) } });
        common::http_request(b.admin, "POST", "/api/v1/tables", None, &body.to_string())
    };
    let mut conflicts = 0;
    let mut round = 0;
    let started = std::time::Instant::now();
    while conflicts == 0 && started.elapsed() < common::DEADLINE {
        round += 1;
        let (a, b) = (&f.replicas[0], &f.replicas[1]);
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| push(a, 60.0));
            let hb = s.spawn(|| push(b, 70.0));
            (ha.join().expect("a"), hb.join().expect("b"))
        });
        for (code, body) in [&ra, &rb] {
            assert!(*code == 200 || *code == 409, "{code} {body}");
            if *code == 409 {
                conflicts += 1;
            }
        }
        assert!(ra.0 == 200 || rb.0 == 200, "one push wins: {ra:?} {rb:?}");
        // Each success is one more table; nothing numbered twice.
        let numbers = tables_of(&f.replicas[2]);
        let mut unique = numbers.clone();
        unique.dedup();
        assert_eq!(numbers, unique, "round {round}");
    }
    assert!(conflicts > 0, "no conflict in {round} concurrent pairs");
    let newest = tables_of(&f.replicas[0])[0];
    wait_until("every replica on the newest table", || {
        f.replicas.iter().all(|b| {
            fleet_view(b)["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().all(|p| p["table"] == newest))
        })
    });

    // Back to table 2, stored as the newest.
    let out = f.replicas[1].cli(&["revert", "2", "--reason", "back to 100"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!("route table {}", newest + 1)),
        "{said}"
    );
    assert!(said.contains("served by all 3 replicas"), "{said}");
    for b in &f.replicas {
        assert_eq!(b.route_status("orders")["effective_percent"], 100.0);
    }
    let out = f.replicas[2].cli(&["history"]);
    let said = text(&out);
    assert!(said.contains("revert to 2: back to 100"), "{said}");
    assert!(said.contains("orders to 100"), "{said}");
    let out = f.replicas[2].cli(&["history", "--show", "2"]);
    assert!(text(&out).contains("# orders.toml") && text(&out).contains("percent = 100"));
    let out = f.replicas[0].cli(&["revert", "999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no route table number 999"),
        "{}",
        text(&out)
    );

    // The audit log is the fleet's: what r0 and r1 did, read through r2.
    let out = f.replicas[2].cli(&["audit", "--limit", "50"]);
    let said = text(&out);
    assert!(
        said.contains("orders to 100") && said.contains("(on r0)"),
        "{said}"
    );
    assert!(
        said.contains("back to 100") && said.contains("(on r1)"),
        "{said}"
    );
    assert!(
        said.contains(&format!("(from etcd {}", etcd.endpoint())),
        "{said}"
    );

    // Restarted while etcd is away: the fleet's table (100 %), never the folder's 25 %.
    etcd.kill();
    let r2 = &mut f.replicas[2];
    r2.restart();
    assert_eq!(r2.route_status("orders")["effective_percent"], 100.0);
    assert_eq!(served_by(r2, &user), "orders");
    let out = r2.cli(&["audit"]);
    assert!(text(&out).contains("this replica only"), "{}", text(&out));
    etcd.start_again();
    wait_until("every replica back on the store", || {
        f.replicas
            .iter()
            .all(|b| b.metric("banyan_store_up") == Some(1.0))
    });
    let out = f.replicas[2].cli(&["status", "--fleet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("TABLE"), "{}", text(&out));
}

#[test]
fn etcd_over_https_with_client_certificates() {
    common::pki::install_crypto();
    let ca = Ca::new("etcd test CA");
    let etcd = Etcd::start_tls(&ca);
    let certs = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write(certs.path(), "ca");
    let client = ca.client("banyan", certs.path(), "banyan");
    let state = format!(
        "tls = {{ ca = \"{}\", client_cert = \"{}\", client_key = \"{}\" }}",
        ca_file.display(),
        client.cert.display(),
        client.key.display()
    );
    let f = fleet_with(&etcd, 2, &state);
    let out = f.replicas[0].cli(&["rollback", "orders", "--reason", "over tls"]);
    assert!(
        text(&out).contains("served by all 2 replicas"),
        "{}",
        text(&out)
    );
    for b in &f.replicas {
        b.wait_metric("banyan_store_up", 1.0);
        assert_eq!(b.route_status("orders")["effective_percent"], 0.0);
    }

    // Another CA's certificate is not trusted: the replica stays off the store, and says why.
    let other = Ca::new("someone else");
    let other_ca = other.write(certs.path(), "other");
    let tail = format!(
        "[state]\nstore = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{}\"\nreplica = \"stranger\"\ntls = {{ ca = \"{}\", client_cert = \"{}\", client_key = \"{}\" }}\n",
        etcd.endpoint(),
        f.prefix,
        other_ca.display(),
        client.cert.display(),
        client.key.display()
    );
    let (m, o) = (
        common::upstream::Upstream::start("monolith"),
        common::upstream::Upstream::start("orders"),
    );
    let mut setup = common::Setup::new(
        vec![("monolith", vec![m.addr]), ("orders", vec![o.addr])],
        "monolith",
    )
    .route_file("orders.toml", common::orders_route(25.0));
    setup.tail = &tail;
    let stranger = setup.start();
    wait_until("the stranger to report the store down", || {
        let v = fleet_view(&stranger);
        v["up"] == false && v["replicas"][0]["error"].is_string()
    });
    assert_eq!(stranger.metric("banyan_store_up"), Some(0.0));
    assert_eq!(
        stranger.route_status("orders")["effective_percent"],
        25.0,
        "its own state, not the fleet's"
    );
    assert_eq!(
        fleet_view(&f.replicas[0])["replicas"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
