//! `banyan explain` answers what the running proxy then serves: for 1,000 users, after
//! `set`, after `rollback`, after a guard trip and with the target's peers out of
//! rotation, each user's explanation (from the admin API and from the CLI) is checked
//! against a real request through the proxy. `--offline` reads the files and says so.

mod common;

use std::net::SocketAddr;

use common::upstream::{Behavior, Upstream};
use common::{banyan_cmd, wait_until, Banyan, Setup};
use serde_json::Value;

const USERS: usize = 1000;

fn world() -> (Vec<Upstream>, Banyan) {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start("orders");
    let broken = Upstream::start_with(
        "broken",
        Behavior {
            status: Some(500),
            ..Behavior::default()
        },
    );
    // Nothing listens here: active checks take its one peer out of rotation.
    let gone: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let mut setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders.addr]),
            ("broken", vec![broken.addr]),
            ("gone", vec![gone]),
        ],
        "monolith",
    );
    setup.upstream_extra = vec![(
        "gone",
        "health = { path = \"/healthz\", interval = \"1s\" }",
    )];
    let b = setup
        .route_file("orders.toml", common::orders_route(25.0))
        .route_file(
            "payments.toml",
            "[[route]]\nname = \"payments\"\nmatch.path_prefix = \"/api/payments\"\nlegacy = \"monolith\"\ntarget = \"broken\"\npercent = 50\nsticky = \"header:x-user-id\"\nfallback = false\n\n[route.guard]\nmax_error_rate = 0.5\nmin_requests = 20\nwindow = \"60s\"\n",
        )
        .route_file(
            "carts.toml",
            "[[route]]\nname = \"carts\"\nmatch.path_prefix = \"/api/carts\"\nlegacy = \"monolith\"\ntarget = \"gone\"\npercent = 50\nsticky = \"header:x-user-id\"\n",
        )
        .start();
    (vec![monolith, orders, broken], b)
}

fn explain_api(b: &Banyan, path: &str, user: &str) -> Value {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("method", "GET")
        .append_pair("url", path)
        .append_pair("header", &format!("x-user-id: {user}"))
        .finish();
    let (code, body) = b.admin_get(&format!("/api/v1/explain?{query}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("explain json")
}

/// The upstream that really served `user`.
fn served(b: &Banyan, path: &str, user: &str) -> (u16, String) {
    let (code, body) =
        common::try_http_request_with_headers(b.proxy, "GET", path, &[("x-user-id", user)])
            .expect("an answer");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (code, v["upstream"].as_str().unwrap_or("").to_string())
}

/// Every user's explanation against the request it describes; returns how many went to
/// the route's target.
fn check_users(b: &Banyan, path: &str, phase: &str) -> usize {
    let mut to_target = 0;
    for i in 0..USERS {
        let user = format!("{phase}-user-{i}");
        let e = explain_api(b, path, &user);
        assert_eq!(e["answered_by"], "proxy", "{e}");
        let (code, got) = served(b, path, &user);
        assert_eq!(code, 200, "{phase} {user}: {e}");
        assert_eq!(
            e["upstream"].as_str(),
            Some(got.as_str()),
            "{phase}: explain and the proxy disagree for {user}: {e}"
        );
        if e["backend"] == "target" {
            to_target += 1;
        }
    }
    to_target
}

fn cli_explain(b: &Banyan, path: &str, user: &str) -> (Value, String) {
    let header = format!("x-user-id: {user}");
    let json = b.cli(&["explain", "--json", "GET", path, "-H", &header]);
    assert!(json.status.success(), "{json:?}");
    let text = b.cli(&["explain", "GET", path, "-H", &header]);
    assert!(text.status.success(), "{text:?}");
    (
        serde_json::from_slice(&json.stdout).expect("json"),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

#[test]
fn explain_answers_what_the_proxy_serves_after_set_rollback_guard_and_health() {
    let (_ups, b) = world();
    let orders = "/api/orders/42";

    let declared = check_users(&b, orders, "declared");
    assert!(
        (150..350).contains(&declared),
        "25 % of 1,000 users: {declared}"
    );

    // An override: the proxy's answer changes, and so must explain's.
    let out = b.cli(&["set", "orders", "1", "--reason", "incident 42"]);
    assert!(out.status.success(), "{out:?}");
    let set = check_users(&b, orders, "set");
    assert!(set < 40, "1 % of 1,000 users: {set}");
    // One user the declared 25 % sends to the target and 1 % does not, through the CLI.
    let user = (0..USERS)
        .map(|i| format!("cli-user-{i}"))
        .find(|u| {
            let bucket = banyan::routes::split::bucket("orders", u.as_bytes());
            (100..2500).contains(&bucket)
        })
        .expect("a user between 1 % and 25 %");
    let (e, text) = cli_explain(&b, orders, &user);
    assert_eq!(
        (e["backend"].as_str(), e["percent"].as_f64()),
        (Some("legacy"), Some(1.0))
    );
    assert_eq!(e["declared_percent"], 25.0);
    assert_eq!(e["override"]["reason"], "incident 42");
    assert!(text.contains("answered  by the proxy at http://"), "{text}");
    assert!(
        text.contains("override  1.00% instead of the files' 25.00%"),
        "{text}"
    );
    assert!(text.contains("backend   legacy → monolith"), "{text}");
    assert_eq!(served(&b, orders, &user).1, "monolith");

    // Offline reads the files and overrides.json, and says that live state may differ.
    let off = b.cli(&[
        "explain",
        "--offline",
        "--json",
        "GET",
        orders,
        "-H",
        &format!("x-user-id: {user}"),
    ]);
    let off: Value = serde_json::from_slice(&off.stdout).expect("offline json");
    assert_eq!(off["answered_by"], "files");
    assert_eq!(off["percent"], 1.0, "overrides.json is read: {off}");
    let text = b.cli(&["explain", "--offline", "GET", orders]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("overrides in force may differ"),
        "{text:?}"
    );

    let out = b.cli(&["rollback", "orders"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(check_users(&b, orders, "rollback"), 0);

    // The guard trips on the failing target; explain sees its override.
    let payments = "/api/payments/7";
    let mut i = 0;
    wait_until("the guard's rollback", || {
        i += 1;
        let _ = served(&b, payments, &format!("trip-{i}"));
        b.route_status("payments")["override"]["trigger"] == "guard"
    });
    assert_eq!(check_users(&b, payments, "guard"), 0);
    let e = explain_api(&b, payments, "anyone");
    assert_eq!(e["override"]["trigger"], "guard", "{e}");

    // The target's only peer is out of rotation: target-bound users fall back to legacy.
    wait_until("the dead peer out of rotation", || {
        b.status()["upstreams"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["name"] == "gone").cloned())
            .is_some_and(|u| u["health"][0]["healthy"] == false)
    });
    let carts = "/api/carts/1";
    assert_eq!(check_users(&b, carts, "health"), 0);
    let user = (0..USERS)
        .map(|i| format!("h-{i}"))
        .find(|u| banyan::routes::split::bucket("carts", u.as_bytes()) < 5000)
        .expect("a target-bound user");
    let e = explain_api(&b, carts, &user);
    assert_eq!(
        (
            e["split"].as_str(),
            e["backend"].as_str(),
            e["fallback"].as_str()
        ),
        (Some("target"), Some("legacy"), Some("unhealthy")),
        "{e}"
    );
}

#[test]
fn explain_refuses_what_no_request_could_be_and_needs_a_proxy_without_offline() {
    let (_ups, b) = world();
    let out = b.cli(&["explain", "FOO", "/x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`FOO` is not an HTTP method"), "{err}");
    let (code, body) = b.admin_get("/api/v1/explain?method=GET");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("missing `url`"), "{body}");

    // Without a proxy, explain says where it looked and how to explain offline.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let out = banyan_cmd(
        dir.path(),
        &[
            "explain",
            "--admin",
            &format!("http://127.0.0.1:{port}"),
            "GET",
            "/x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach the admin API at http://127.0.0.1:{port}"
        )) && err.contains("--offline"),
        "{err}"
    );
}
