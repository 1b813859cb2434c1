//! Bad input to the control plane while requests flow: empty, truncated, binary and
//! 50 MiB route files, a route file deleted, the routes folder removed and recreated, a
//! corrupted overrides.json. Nothing panics, no request fails, the last good state serves
//! until a good one replaces it, and status says what is wrong.

mod common;

use std::time::Duration;

use common::wait_until;
use serde_json::Value;

#[test]
fn bad_route_and_override_files_never_fail_a_request() {
    let (_monolith, _orders, setup) = common::orders_world(100.0);
    let mut b = setup.start();
    let proxy = b.proxy;

    // Continuous load: every answer must be a 200 from one of the two upstreams.
    let load = common::load::Load::start(proxy, 1);
    let route = |b: &common::Banyan| b.route_status("orders");
    let errors = |b: &common::Banyan| -> String {
        b.status()["last_reload_error"]["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    let file = b.path("routes/orders.toml");
    let restore = |b: &common::Banyan| {
        std::fs::write(&file, common::orders_route(100.0)).expect("restore");
        wait_until("the good file again", || {
            route(b)["effective_percent"] == 100.0 && b.status()["last_reload_error"].is_null()
        });
    };
    let refused = |b: &common::Banyan, what: &str, needle: &str| {
        wait_until(what, || errors(b).contains(needle));
        assert_eq!(
            route(b)["effective_percent"],
            100.0,
            "{what}: the last good routes serve"
        );
    };

    // Truncated mid-line.
    let full = common::orders_route(100.0);
    std::fs::write(&file, &full[..full.len() / 2]).expect("truncated");
    refused(&b, "truncated file", "orders.toml:");
    restore(&b);

    // Binary.
    let binary: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &binary).expect("binary");
    refused(&b, "binary file", "not UTF-8");
    restore(&b);

    // 50 MiB: refused by size, without being read.
    let huge = b.path("routes/huge.toml");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&huge).expect("huge"));
        let line = format!("# {}\n", "x".repeat(1022));
        for _ in 0..50 * 1024 {
            f.write_all(line.as_bytes()).expect("write");
        }
    }
    refused(&b, "50 MiB file", "route files are limited to");
    std::fs::remove_file(&huge).expect("remove huge");
    wait_until("the huge file gone", || {
        b.status()["last_reload_error"].is_null()
    });

    // Empty: a valid, empty table, so the route is gone and its traffic goes to `_default`.
    std::fs::write(&file, "").expect("empty");
    wait_until("the empty file", || route(&b).is_null());
    restore(&b);

    // Deleted mid-run, then back.
    std::fs::remove_file(&file).expect("delete");
    wait_until("the deleted file", || route(&b).is_null());
    restore(&b);

    // The whole folder removed, then recreated: the last good routes serve meanwhile, and
    // the new folder is watched again.
    let dir = b.path("routes");
    std::fs::remove_dir_all(&dir).expect("remove folder");
    refused(&b, "the missing folder", "cannot read the routes folder");
    std::fs::create_dir(&dir).expect("recreate folder");
    std::fs::write(&file, common::orders_route(40.0)).expect("new file");
    wait_until("the recreated folder", || {
        route(&b)["effective_percent"] == 40.0
    });
    std::fs::write(&file, common::orders_route(100.0)).expect("edit in the new folder");
    wait_until("an edit in the recreated folder", || {
        route(&b)["effective_percent"] == 100.0
    });

    // overrides.json corrupted: the overrides in force stay, status and logs say so, and
    // `resume --all` repairs the file.
    let out = b.cli(&["rollback", "orders", "--reason", "before corruption"]);
    assert!(out.status.success());
    std::fs::write(
        b.path("state/overrides.json"),
        b"{\"orders\": {\"percent\": 0, \x00\xff",
    )
    .expect("corrupt");
    wait_until("the overrides error", || {
        b.status()["overrides_error"].is_string()
    });
    assert_eq!(
        route(&b)["effective_percent"],
        0.0,
        "the last good overrides stay in force"
    );
    let text = String::from_utf8_lossy(&b.cli(&["status"]).stdout).into_owned();
    assert!(text.contains("overrides file problem"), "{text}");
    let out = b.cli(&["resume", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the repaired file", || {
        let s = b.status();
        s["overrides_error"].is_null() && route(&b)["effective_percent"] == 100.0
    });
    let repaired: Value = serde_json::from_str(
        &std::fs::read_to_string(b.path("state/overrides.json")).expect("file"),
    )
    .expect("valid json");
    assert_eq!(repaired, serde_json::json!({}));

    let (served, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 200, "too little load: {served}");
    assert!(
        b.wait_exit(Duration::from_millis(1)).is_none(),
        "the proxy is still running"
    );
    assert_eq!(b.status()["last_reload_error"], Value::Null);
}

#[test]
fn an_unreadable_overrides_file_at_start_holds_every_route_at_zero() {
    let (_monolith, _orders, setup) = common::orders_world(100.0);
    let proxy: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let dir = setup.write(proxy, admin);
    std::fs::create_dir_all(dir.path().join("state")).expect("state");
    std::fs::write(dir.path().join("state/overrides.json"), "{ not json").expect("corrupt");
    let b = common::Banyan::spawn(dir, proxy, admin, &["run"]);
    let r = b.route_status("orders");
    assert_eq!(r["effective_percent"], 0.0, "legacy is the known-good side");
    assert!(r["override"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("unreadable"));
    assert!(b.status()["overrides_error"].is_string());
    let out = b.cli(&["resume", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the repaired file", || {
        b.route_status("orders")["effective_percent"] == 100.0
    });
}
