//! Forced cohorts (`[[route.cohort]]`) with the real binary, on both transports: a
//! header or cookie cohort reaches the target at 0 %, an address-range cohort stays on
//! legacy at 100 %, a rollback sends everyone to legacy, cohort traffic is counted apart
//! from the split's (metrics, guard), and explain names the cohort.

mod common;

use std::net::SocketAddr;

use common::upstream::Upstream;
use common::{ok, Banyan, Setup, Transport};
use serde_json::Value;

const ROUTES: &str = r#"
[[route]]
name = "orders"
match.path_prefix = "/api/orders"
legacy = "monolith"
target = "orders"
percent = 0
sticky = "header:x-user-id"

[[route.cohort]]
side = "target"
header = "x-banyan-cohort"
values = ["beta-testers", "staff"]

[[route.cohort]]
side = "target"
cookie = "cohort"
values = ["beta"]

[route.guard]
max_error_rate = 0.5
min_requests = 1

[[route]]
name = "users"
match.path_prefix = "/api/users"
legacy = "monolith"
target = "orders"
percent = 100

[[route.cohort]]
side = "legacy"
cidr = ["127.0.0.0/8"]

[[route]]
name = "carts"
match.path_prefix = "/api/carts"
legacy = "monolith"
target = "orders"
percent = 100

[[route.cohort]]
side = "legacy"
cidr = ["10.0.0.0/8", "2001:db8::/32"]
"#;

/// The upstream that answered `path` with `headers`, by its own answer.
fn side(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, body) =
        common::try_http_request_with_headers(proxy, "GET", path, headers).expect("an answer");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("echo json");
    v["upstream"].as_str().unwrap_or("").to_string()
}

fn start(t: Transport) -> (Upstream, Upstream, Banyan) {
    let monolith = Upstream::start("monolith");
    let orders = Upstream::start("orders");
    let b = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![orders.addr]),
        ],
        "monolith",
    )
    .via(t)
    .route_file("routes.toml", ROUTES)
    .start();
    (monolith, orders, b)
}

#[test]
fn cohorts_are_forced_to_their_side_whatever_the_percent() {
    for t in Transport::BOTH {
        let (_m, _o, b) = start(t);
        let p = b.proxy;
        let tester = [("x-user-id", "u1"), ("x-banyan-cohort", "beta-testers")];
        assert_eq!(
            side(p, "/api/orders/1", &[("x-user-id", "u1")]),
            "monolith",
            "{t:?}"
        );
        assert_eq!(side(p, "/api/orders/1", &tester), "orders", "{t:?}");
        assert_eq!(
            side(p, "/api/orders/1", &[("cookie", "a=1; cohort=beta")]),
            "orders"
        );
        assert_eq!(
            side(p, "/api/orders/1", &[("cookie", "cohort=alpha")]),
            "monolith"
        );
        assert_eq!(
            side(p, "/api/orders/1", &[("x-banyan-cohort", "Beta-Testers")]),
            "monolith"
        );
        // Loopback clients are a legacy cohort on users at 100 %; not on carts.
        assert_eq!(side(p, "/api/users/1", &[]), "monolith", "{t:?}");
        assert_eq!(side(p, "/api/carts/1", &[]), "orders", "{t:?}");

        // Counted apart: 3 forced to the target on orders, 1 forced to legacy on users.
        let cohort = |route: &str, backend: &str| {
            format!("banyan_cohort_requests_total{{backend=\"{backend}\",route=\"{route}\",status_class=\"2xx\"}}")
        };
        b.wait_metric(&cohort("orders", "target"), 2.0);
        b.wait_metric(&cohort("users", "legacy"), 1.0);
        b.wait_metric(
            "banyan_requests_total{backend=\"legacy\",route=\"orders\",status_class=\"2xx\"}",
            3.0,
        );
        b.wait_metric(
            "banyan_requests_total{backend=\"target\",route=\"carts\",status_class=\"2xx\"}",
            1.0,
        );
        assert_eq!(
            b.metric(
                "banyan_requests_total{backend=\"target\",route=\"orders\",status_class=\"2xx\"}"
            ),
            None
        );
        let orders = b.route_status("orders");
        assert_eq!(orders["cohort_requests"]["target"], 2);
        assert_eq!(orders["stats"]["target"]["requests"], 0, "{orders}");
        // The guard's window saw none of the testers' requests.
        assert_eq!(orders["guard"]["requests"], 0, "{orders}");
        assert_eq!(
            orders["cohorts"][0],
            "header x-banyan-cohort in [beta-testers, staff] → target"
        );
    }
}

#[test]
fn a_rollback_sends_cohorts_to_legacy_and_explain_names_them() {
    let (_m, _o, b) = start(Transport::Banyan);
    let p = b.proxy;
    let tester = [("x-banyan-cohort", "staff")];
    let url = format!("http://{}/api/orders/7", b.proxy);

    let text = ok(&b.cli(&["explain", "GET", &url, "-H", "x-banyan-cohort: staff"]));
    assert!(
        text.contains("cohort    header x-banyan-cohort in [beta-testers, staff] → target"),
        "{text}"
    );
    assert!(text.contains("backend   target → orders"), "{text}");
    let json: Value = serde_json::from_str(&ok(&b.cli(&[
        "explain",
        "--json",
        "GET",
        &url,
        "-H",
        "x-banyan-cohort: staff",
    ])))
    .expect("json");
    assert_eq!(json["split"], "target");
    assert_eq!(json["backend"], "target");

    // `set 0` keeps the cohort; a rollback takes everyone to the monolith.
    ok(&b.cli(&["set", "orders", "0", "--reason", "hold"]));
    assert_eq!(side(p, "/api/orders/1", &tester), "orders");
    ok(&b.cli(&["rollback", "orders", "--reason", "bad totals"]));
    assert_eq!(side(p, "/api/orders/1", &tester), "monolith");
    let text = ok(&b.cli(&["explain", "GET", &url, "-H", "x-banyan-cohort: staff"]));
    assert!(text.contains("backend   legacy → monolith"), "{text}");
    assert!(text.contains("forced cohorts go to legacy too"), "{text}");
    ok(&b.cli(&["resume", "orders"]));
    assert_eq!(side(p, "/api/orders/1", &tester), "orders");
}
