//! Route files end to end without sockets: each validation rule with its message, and the
//! contract's precedence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri};

use super::*;
use crate::config::{AccessLog, Admin, Config, Peer, Server, ShadowLimits, Upstream};

fn config() -> Config {
    let upstream = |name: &str, port: u16| Upstream {
        name: name.to_string(),
        peers: vec![Peer {
            spec: format!("127.0.0.1:{port}"),
            addr: ([127, 0, 0, 1], port).into(),
        }],
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(30),
        total_timeout: None,
        tls: None,
        idle_timeout: Duration::from_secs(4),
        host: None,
        health: None,
        circuit: None,
    };
    let mut upstreams = BTreeMap::new();
    for (name, port) in [("monolith", 8081), ("orders", 8082), ("users", 8083)] {
        upstreams.insert(name.to_string(), upstream(name, port));
    }
    Config {
        file: PathBuf::from("config/banyan.toml"),
        server: Server {
            listen: vec![([127, 0, 0, 1], 8080).into()],
            threads: 1,
            routes_dir: PathBuf::from("routes"),
            state_dir: PathBuf::from("state"),
            default_upstream: "monolith".to_string(),
            access_log: AccessLog::Off,
            debug_headers: false,
            grace_period: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            work_stealing: true,
            reload_debounce: Duration::from_millis(100),
            tls: None,
            limits: Default::default(),
        },
        admin: Admin {
            listen: ([127, 0, 0, 1], 9090).into(),
            token_file: None,
        },
        upstreams,
        shadow: ShadowLimits {
            max_body_bytes: 1 << 20,
            max_in_flight: 256,
            timeout: Duration::from_secs(5),
            diff_log_max_bytes: 1 << 20,
            log_query: false,
            sensitive_headers: Vec::new(),
        },
    }
}

fn load(files: &[(&str, &str)]) -> Result<RouteSet, Vec<String>> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    match load_sources(&sources, &config()) {
        Ok((set, _)) => Ok(set),
        Err(report) => Err(report.errors().map(|d| d.to_string()).collect()),
    }
}

fn errors_of(text: &str) -> Vec<String> {
    load(&[("routes/a.toml", text)]).expect_err("should be refused")
}

fn one_error(text: &str) -> String {
    let e = errors_of(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap_or_default()
}

const ORDERS: &str = r#"
[[route]]
name = "orders"
match.path_prefix = "/api/orders"
match.methods = ["GET", "POST"]
legacy = "monolith"
target = "orders"
percent = 25
sticky = "header:x-user-id"
"#;

// ---- validation rules ----------------------------------------------------------------

#[test]
fn the_contract_example_is_valid() {
    let set = load(&[("routes/orders.toml", ORDERS)]).expect("valid");
    let r = &set.routes[0];
    assert_eq!(r.name, "orders");
    assert_eq!(r.percent_bp, 2500);
    assert_eq!(r.salt, "orders");
    assert_eq!(r.sticky, Sticky::Header("x-user-id".parse().expect("name")));
    assert_eq!(r.line, 3);
    assert!(r.fallback);
    assert_eq!(r.fallback_methods, ["GET", "HEAD", "OPTIONS"]);
}

#[test]
fn a_misspelt_key_is_an_error_at_its_line() {
    let e = one_error(&ORDERS.replace("percent = 25", "precent = 25"));
    assert!(
        e.starts_with("routes/a.toml:8:1: error: unknown field `precent`"),
        "{e}"
    );
}

#[test]
fn a_misspelt_match_key_is_an_error() {
    let e = one_error(&ORDERS.replace("match.path_prefix", "match.path_prefx"));
    assert!(e.contains("unknown field `path_prefx`"), "{e}");
}

#[test]
fn an_unknown_top_level_key_is_an_error() {
    let e = one_error("[[routes]]\nname = \"x\"\n");
    assert!(
        e.starts_with("routes/a.toml:1:3: error: unknown key `routes`"),
        "{e}"
    );
}

#[test]
fn names_are_unique_across_files() {
    let e = load(&[
        ("routes/a.toml", ORDERS),
        ("routes/b.toml", &ORDERS.replace("/api/orders", "/api/o2")),
    ])
    .expect_err("duplicate");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(
            "routes/b.toml:3:8: error: route name `orders` is already used at routes/a.toml:3"
        ),
        "{e:?}"
    );
}

#[test]
fn reserved_and_malformed_names_are_refused() {
    assert!(
        one_error(&ORDERS.replace("name = \"orders\"", "name = \"_default\"")).contains("reserved")
    );
    assert!(
        one_error(&ORDERS.replace("name = \"orders\"", "name = \"my orders\""))
            .contains("use letters, digits")
    );
}

#[test]
fn upstreams_must_be_known() {
    let e = one_error(&ORDERS.replace("target = \"orders\"", "target = \"ordres\""));
    assert!(
        e.contains(
            ":7:10: error: target: unknown upstream `ordres` (known: monolith, orders, users)"
        ),
        "{e}"
    );
    let e = one_error(&ORDERS.replace("legacy = \"monolith\"", "legacy = \"mono\""));
    assert!(e.contains("legacy: unknown upstream `mono`"), "{e}");
}

#[test]
fn percent_is_zero_to_hundred_with_two_decimals() {
    for bad in ["120", "-1", "12.345", "100.5"] {
        let e = one_error(&ORDERS.replace("percent = 25", &format!("percent = {bad}")));
        assert!(
            e.contains("must be between 0 and 100 with at most two decimals"),
            "{bad}: {e}"
        );
        assert!(e.contains(":8:11:"), "{e}");
    }
    for good in ["0", "0.01", "12.34", "100", "50.5"] {
        load(&[(
            "r.toml",
            &ORDERS.replace("percent = 25", &format!("percent = {good}")),
        )])
        .expect(good);
    }
    let e = one_error(&ORDERS.replace("percent = 25", "percent = \"25\""));
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn a_percent_needs_a_target() {
    let e = one_error(&ORDERS.replace("target = \"orders\"\n", ""));
    assert!(
        e.contains("percent is above 0 but the route has no `target`"),
        "{e}"
    );
}

#[test]
fn sticky_syntax_is_checked() {
    for bad in ["header", "session:x", "cookie:", "header:bad name", "IP"] {
        let e = one_error(&ORDERS.replace("header:x-user-id", bad));
        assert!(
            e.contains("expected \"header:NAME\", \"cookie:NAME\", \"ip\" or \"none\""),
            "{bad}: {e}"
        );
    }
    for good in ["ip", "none", "cookie:uid", "header:X-User-Id"] {
        let set = load(&[("r.toml", &ORDERS.replace("header:x-user-id", good))]).expect(good);
        assert_ne!(set.routes[0].sticky.describe(), "");
    }
}

#[test]
fn paths_start_with_a_slash() {
    let e = one_error(&ORDERS.replace("\"/api/orders\"", "\"api/orders\""));
    assert!(
        e.contains("match.path_prefix `api/orders` must start with '/'"),
        "{e}"
    );
    let e = one_error(&ORDERS.replace(
        "match.path_prefix = \"/api/orders\"",
        "match.path = \"orders\"",
    ));
    assert!(e.contains("match.path `orders` must start with '/'"), "{e}");
}

#[test]
fn regexes_must_compile() {
    let e = one_error(&ORDERS.replace(
        "match.path_prefix = \"/api/orders\"",
        "match.path_regex = \"^/api/(v1\"",
    ));
    assert!(e.contains("match.path_regex does not compile"), "{e}");
}

#[test]
fn exactly_one_path_kind() {
    let e = one_error(&ORDERS.replace("match.methods", "match.path = \"/x\"\nmatch.methods"));
    assert!(e.contains("use only one of"), "{e}");
    let e = one_error(&ORDERS.replace("match.path_prefix = \"/api/orders\"\n", ""));
    assert!(e.contains("the match needs one of"), "{e}");
}

#[test]
fn methods_are_upper_case_tokens() {
    let e = one_error(&ORDERS.replace("\"GET\", \"POST\"", "\"get\""));
    assert!(e.contains("methods are case-sensitive; write `GET`"), "{e}");
}

#[test]
fn ambiguous_matches_are_refused() {
    let twin = ORDERS.replace("name = \"orders\"", "name = \"orders-twin\"");
    let e = load(&[("routes/a.toml", ORDERS), ("routes/b.toml", &twin)]).expect_err("ambiguous");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("routes/b.toml:3:8: error: route `orders-twin` is ambiguous with `orders` (routes/a.toml:3)"), "{e:?}");
}

#[test]
fn same_path_with_disjoint_or_more_conditions_is_not_ambiguous() {
    let gets = ORDERS.replace("[\"GET\", \"POST\"]", "[\"GET\"]");
    let posts = ORDERS
        .replace("name = \"orders\"", "name = \"orders-writes\"")
        .replace("[\"GET\", \"POST\"]", "[\"POST\"]");
    load(&[("a.toml", &gets), ("b.toml", &posts)]).expect("methods are disjoint");

    let tenant = ORDERS
        .replace("name = \"orders\"", "name = \"orders-acme\"")
        .replace(
            "sticky",
            "match.headers = { \"x-tenant\" = \"acme\" }\nsticky",
        );
    load(&[("a.toml", ORDERS), ("b.toml", &tenant)]).expect("more conditions win");
}

#[test]
fn every_error_of_a_file_set_is_reported() {
    let a = format!(
        "{}\n{}",
        ORDERS.replace("percent = 25", "percent = 101"),
        ORDERS
            .replace("name = \"orders\"", "name = \"b\"")
            .replace("header:x-user-id", "nope")
            .replace("/api/orders", "/b")
    );
    let b = "[[route]]\nname = \"c\"\nmatch.path = \"/c\"\ntarget = \"zzz\"\npercent = 1\n\n[[route]]\nname = \"d\"\nmatch.path_regex = \"(\"\n";
    let c = "this is not toml";
    let e = load(&[
        ("routes/a.toml", &a),
        ("routes/b.toml", b),
        ("routes/c.toml", c),
    ])
    .expect_err("broken");
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(
        e[0].starts_with("routes/a.toml:8:11: error: percent 101"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("routes/a.toml:19:10: error: sticky `nope`"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("routes/b.toml:4:10: error: target: unknown upstream `zzz`"),
        "{e:#?}"
    );
    assert_eq!(
        e[3],
        "routes/b.toml:9:20: error: match.path_regex does not compile: unclosed group"
    );
    assert!(e[4].starts_with("routes/c.toml:1:6: error: "), "{e:#?}");
}

#[test]
fn an_empty_file_set_is_valid() {
    let set = load(&[("routes/empty.toml", "")]).expect("empty is fine");
    assert!(set.routes.is_empty());
}

#[test]
fn a_route_without_target_defaults_to_legacy_only() {
    let set = load(&[(
        "a.toml",
        "[[route]]\nname = \"admin\"\nmatch.path_prefix = \"/admin\"\nlegacy = \"users\"\n",
    )])
    .expect("valid");
    assert_eq!(set.routes[0].legacy, "users");
    assert_eq!(set.routes[0].target, None);
    assert_eq!(set.routes[0].percent_bp, 0);
}

#[test]
fn optional_sections_are_validated() {
    let shadow = format!("{ORDERS}\n[route.shadow]\npercent = 100\nmethods = [\"GET\"]\nignore = [\"/meta/x\", \"header:date\", \"bad\"]\n");
    let e = one_error(&shadow);
    assert!(e.contains("shadow.ignore `bad`"), "{e}");
    let guard = format!("{ORDERS}\n[route.guard]\nmax_error_rate = 5\n");
    assert!(one_error(&guard).contains("guard.max_error_rate is a fraction"));
    let rate = format!("{ORDERS}\n[route.rate_limit]\nrate = 100\nkey = \"cookie:x\"\n");
    assert!(one_error(&rate).contains("rate_limit.key"));
}

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
