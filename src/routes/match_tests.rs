//! The route table's precedence and decisions, on route files loaded as the proxy loads them.

use http::{HeaderMap, HeaderValue, Method, Uri};

use super::tests::{config, load, ORDERS};
use super::*;

// ---- precedence and the decision -----------------------------------------------------

struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Req {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    Req {
        method: method.parse().expect("method"),
        uri: uri.parse().expect("uri"),
        headers: h,
    }
}

fn route_of(set: &RouteSet, r: &Req) -> String {
    let percents: Vec<u16> = set.routes.iter().map(|d| d.percent_bp).collect();
    let table = RouteTable::new(&set.routes, &percents).expect("compiles");
    let view = RequestView::new(&r.method, &r.uri, &r.headers, None);
    table
        .decide(&view)
        .route
        .map_or(DEFAULT_ROUTE.to_string(), |i| set.routes[i].name.clone())
}

fn route(name: &str, matcher: &str) -> String {
    format!("[[route]]\nname = \"{name}\"\n{matcher}\ntarget = \"orders\"\n")
}

#[test]
fn precedence_exact_then_longest_prefix_then_regex_in_order() {
    let a = [
        route("regex-late", "match.path_regex = \"^/api/\""),
        route("api", "match.path_prefix = \"/api\""),
        route("orders", "match.path_prefix = \"/api/orders\""),
        route("orders-exact", "match.path = \"/api/orders/special\""),
    ]
    .join("\n");
    let b = [
        route("regex-first", "match.path_regex = \"^/v[12]/\""),
        route("regex-second", "match.path_regex = \"^/v1/\""),
    ]
    .join("\n");
    // Files by name: a.toml's regex comes before b.toml's.
    let set = load(&[("routes/a.toml", &a), ("routes/b.toml", &b)]).expect("valid");
    let cases = [
        ("/api/orders/special", "orders-exact"),
        ("/api/orders/special/x", "orders"),
        ("/api/orders/7", "orders"),
        ("/api/orders", "orders"),
        ("/api/orders?x=1", "orders"),
        ("/api/ordersx", "api"),
        ("/api/users", "api"),
        ("/api", "api"),
        ("/apix", DEFAULT_ROUTE),
        ("/v1/a", "regex-first"),
        ("/v2/a", "regex-first"),
        ("/", DEFAULT_ROUTE),
    ];
    for (path, want) in cases {
        assert_eq!(route_of(&set, &req("GET", path, &[])), want, "{path}");
    }
    // A regex only wins when no exact path or prefix matched.
    let set = load(&[
        (
            "a.toml",
            &route("re", "match.path_regex = \"^/api/orders\""),
        ),
        ("b.toml", &route("p", "match.path_prefix = \"/api\"")),
    ])
    .expect("valid");
    assert_eq!(route_of(&set, &req("GET", "/api/orders/1", &[])), "p");
}

#[test]
fn prefixes_match_whole_segments_and_trailing_slashes_mean_below() {
    let set = load(&[(
        "a.toml",
        &[
            route("root", "match.path_prefix = \"/\""),
            route("docs-below", "match.path_prefix = \"/docs/\""),
        ]
        .join("\n"),
    )])
    .expect("valid");
    assert_eq!(route_of(&set, &req("GET", "/docs/a", &[])), "docs-below");
    assert_eq!(route_of(&set, &req("GET", "/docs/", &[])), "docs-below");
    assert_eq!(route_of(&set, &req("GET", "/docs", &[])), "root");
    assert_eq!(route_of(&set, &req("GET", "/", &[])), "root");
    assert_eq!(route_of(&set, &req("GET", "/anything/else", &[])), "root");
}

#[test]
fn more_conditions_win_and_fall_back_when_they_fail() {
    let set = load(&[(
        "a.toml",
        &[
            route("orders", "match.path_prefix = \"/api/orders\""),
            route("orders-get", "match.path_prefix = \"/api/orders\"\nmatch.methods = [\"GET\"]"),
            route(
                "orders-acme-get",
                "match.path_prefix = \"/api/orders\"\nmatch.methods = [\"GET\"]\nmatch.headers = { \"x-tenant\" = \"acme\" }",
            ),
            route("shop", "match.path_prefix = \"/api/orders\"\nmatch.host = \"Shop.Example.com\"\nmatch.methods = [\"PUT\"]"),
        ]
        .join("\n"),
    )])
    .expect("valid");
    assert_eq!(
        route_of(&set, &req("GET", "/api/orders", &[("x-tenant", "acme")])),
        "orders-acme-get"
    );
    assert_eq!(
        route_of(&set, &req("GET", "/api/orders", &[("x-tenant", "other")])),
        "orders-get"
    );
    assert_eq!(
        route_of(&set, &req("POST", "/api/orders", &[("x-tenant", "acme")])),
        "orders"
    );
    assert_eq!(
        route_of(
            &set,
            &req("PUT", "/api/orders", &[("host", "shop.example.com:8080")])
        ),
        "shop"
    );
    assert_eq!(
        route_of(
            &set,
            &req("PUT", "/api/orders", &[("host", "other.example.com")])
        ),
        "orders"
    );
    assert_eq!(
        route_of(&set, &req("PUT", "http://SHOP.example.com/api/orders", &[])),
        "shop"
    );
}

#[test]
fn a_longer_prefix_whose_conditions_fail_yields_to_a_shorter_one() {
    let set = load(&[(
        "a.toml",
        &[
            route("api", "match.path_prefix = \"/api\""),
            route(
                "orders-post",
                "match.path_prefix = \"/api/orders\"\nmatch.methods = [\"POST\"]",
            ),
        ]
        .join("\n"),
    )])
    .expect("valid");
    assert_eq!(route_of(&set, &req("GET", "/api/orders", &[])), "api");
    assert_eq!(
        route_of(&set, &req("POST", "/api/orders/1", &[])),
        "orders-post"
    );
}

#[test]
fn the_decision_splits_by_the_sticky_key() {
    let set = load(&[("a.toml", ORDERS)]).expect("valid");
    let table = RouteTable::new(&set.routes, &[2500]).expect("compiles");
    // Buckets from the contract's formula (see split.rs): user-1 → 396, alice → 5440.
    for (user, bucket, backend) in [
        ("user-1", 396, Backend::Target),
        ("alice", 5440, Backend::Legacy),
    ] {
        let r = req("GET", "/api/orders/1", &[("x-user-id", user)]);
        let d = table.decide(&RequestView::new(&r.method, &r.uri, &r.headers, None));
        assert_eq!(d.route, Some(0));
        let split = d.split.expect("a route splits");
        assert_eq!(
            (split.bucket, split.keyed, split.backend),
            (bucket, true, backend)
        );
    }
    let r = req("GET", "/api/orders/1", &[]);
    let d = table.decide(&RequestView::new(&r.method, &r.uri, &r.headers, None));
    assert!(!d.split.expect("split").keyed);

    let r = req("GET", "/elsewhere", &[("x-user-id", "user-1")]);
    let d = table.decide(&RequestView::new(&r.method, &r.uri, &r.headers, None));
    assert_eq!((d.route, d.backend()), (None, Backend::Legacy));
}

#[test]
fn without_a_key_the_split_is_random_but_proportional() {
    let set = load(&[("a.toml", &ORDERS.replace("percent = 25", "percent = 50"))]).expect("valid");
    let table = RouteTable::new(&set.routes, &[5000]).expect("compiles");
    let r = req("GET", "/api/orders", &[]);
    let view = RequestView::new(&r.method, &r.uri, &r.headers, None);
    let target = (0..10_000)
        .filter(|_| table.decide(&view).backend() == Backend::Target)
        .count();
    assert!((4500..=5500).contains(&target), "{target}");
}

#[test]
fn a_route_file_that_cannot_be_read_fails_the_load() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("orders.toml"), ORDERS).expect("write");
    let (set, _) = load_dir(dir.path(), &config()).expect("a good folder loads");
    assert_eq!(set.routes.len(), 1);
    // A dangling symlink (a ConfigMap key removed, a file deleted behind a link): its
    // routes must not silently vanish from a reload that says ok.
    std::os::unix::fs::symlink(dir.path().join("gone.toml"), dir.path().join("users.toml"))
        .expect("symlink");
    let report = load_dir(dir.path(), &config()).expect_err("refused");
    let errors: Vec<String> = report.errors().map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("users.toml") && errors[0].contains("cannot read"),
        "{errors:?}"
    );
    // A folder named like a route file is not one.
    std::fs::remove_file(dir.path().join("users.toml")).expect("rm");
    std::fs::create_dir(dir.path().join("old.toml")).expect("mkdir");
    assert!(load_dir(dir.path(), &config()).is_ok());
}
