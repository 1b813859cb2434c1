//! Route files end to end without sockets: each validation rule with its message, and the
//! contract's precedence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::{AccessLog, Admin, Config, Peer, Server, ShadowLimits, Upstream};

pub(super) fn config() -> Config {
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
        protocol: Default::default(),
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
            fast_path: true,
            grace_period: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            work_stealing: false,
            reload_debounce: Duration::from_millis(100),
            tls: None,
            limits: Default::default(),
        },
        admin: Admin {
            listen: ([127, 0, 0, 1], 9090).into(),
            token_file: None,
            tokens: Vec::new(),
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
        state: crate::config::state::Store::Files,
        notify: None,
    }
}

pub(super) fn load(files: &[(&str, &str)]) -> Result<RouteSet, Vec<String>> {
    let sources: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect();
    match load_sources(&sources, &config()) {
        Ok((set, _)) => Ok(set),
        Err(report) => Err(report.errors().map(|d| d.to_string()).collect()),
    }
}

pub(super) fn errors_of(text: &str) -> Vec<String> {
    load(&[("routes/a.toml", text)]).expect_err("should be refused")
}

pub(super) fn one_error(text: &str) -> String {
    let e = errors_of(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap_or_default()
}

pub(super) const ORDERS: &str = r#"
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

#[test]
fn forced_cohorts_are_validated() {
    let ok = format!(
        "{ORDERS}\n[[route.cohort]]\nside = \"target\"\nheader = \"x-banyan-cohort\"\nvalues = [\"beta-testers\"]\n\n[[route.cohort]]\nside = \"legacy\"\ncidr = [\"10.1.0.0/16\", \"192.0.2.7\"]\n"
    );
    let set = load(&[("routes/orders.toml", &ok)]).expect("valid");
    let c = &set.routes[0].cohorts;
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[1].describe(),
        "client in 10.1.0.0/16, 192.0.2.7/32 → legacy"
    );
    let cohort = |body: &str| format!("{ORDERS}\n[[route.cohort]]\n{body}\n");
    let typo = one_error(&cohort(
        "side = \"target\"\nheadr = \"x\"\nvalues = [\"a\"]",
    ));
    assert!(
        typo.contains("unknown field `headr`") && typo.contains("did you mean `header`"),
        "{typo}"
    );
    assert!(
        one_error(&cohort("side = \"both\"\nheader = \"x\"\nvalues = [\"a\"]"))
            .contains("cohort.side `both`")
    );
    assert!(one_error(&cohort("side = \"target\"\nheader = \"x\"")).contains("non-empty `values`"));
    assert!(one_error(&cohort(
        "side = \"target\"\nheader = \"x\"\ncookie = \"c\"\nvalues = [\"a\"]"
    ))
    .contains("exactly one of"));
    assert!(
        one_error(&cohort("side = \"target\"\ncidr = [\"10.1.0.0/33\"]"))
            .contains("cohort.cidr `10.1.0.0/33`")
    );
    assert!(one_error(&cohort(
        "side = \"target\"\ncookie = \"a b\"\nvalues = [\"x\"]"
    ))
    .contains("not a cookie name"));
    let no_target = "[[route]]\nname = \"legacy-only\"\nmatch.path_prefix = \"/old\"\n\n[[route.cohort]]\nside = \"target\"\nheader = \"x\"\nvalues = [\"a\"]\n";
    assert!(one_error(no_target).contains("the route has no `target`"));
}

#[test]
fn ramps_are_validated() {
    let ramp = |body: &str| format!("{ORDERS}\n[route.ramp]\n{body}\n");
    let set = load(&[("routes/o.toml", &ramp("steps = [1, 5, 25, 50, 100]\nhold = \"10m\"\nmax_p99_ratio = 1.25\non_failure = \"pause\""))]).expect("valid");
    let r = set.routes[0].ramp.as_ref().expect("ramp");
    assert_eq!(r.steps, [100, 500, 2500, 5000, 10_000]);
    assert_eq!(
        (r.min_requests, r.min_compared, r.max_error_delta),
        (500, 1000, 0.005)
    );
    assert_eq!(r.on_failure, ramp::OnFailure::Pause);
    assert!(one_error(&ramp("steps = [5, 5]")).contains("ramp.steps must increase"));
    assert!(one_error(&ramp("steps = [0, 5]")).contains("percents above 0"));
    assert!(one_error(&ramp("steps = []")).contains("ramp.steps is empty"));
    assert!(one_error(&ramp("steps = [5]\nmax_error_delta = 2"))
        .contains("ramp.max_error_delta is a fraction"));
    assert!(one_error(&ramp("steps = [5]\nmin_match_rate = 0.99")).contains("needs [route.shadow]"));
    assert!(
        one_error(&ramp("steps = [5]\non_failure = \"panic\"")).contains("ramp.on_failure `panic`")
    );
    let typo = one_error(&ramp("steps = [5]\nhodl = \"1m\""));
    assert!(typo.contains("did you mean `hold`"), "{typo}");
    let no_target =
        "[[route]]\nname = \"old\"\nmatch.path_prefix = \"/old\"\n\n[route.ramp]\nsteps = [5]\n";
    assert!(one_error(no_target).contains("[route.ramp] moves users to the target"));
}

#[test]
fn fallback_methods_name_grpc_calls_too() {
    let text = format!("{ORDERS}fallback_methods = [\"GET\", \"/test.Greeter/SayHello\"]\n");
    let set = load(&[("routes/o.toml", &text)]).expect("valid");
    assert_eq!(
        set.routes[0].fallback_methods,
        ["GET", "/test.Greeter/SayHello"]
    );
    let bad = format!("{ORDERS}fallback_methods = [\"/test.Greeter\"]\n");
    assert!(one_error(&bad).contains("is not a gRPC method (`/package.Service/Method`)"));
    // Only fallback_methods takes them.
    let methods = ORDERS.replace("[\"GET\", \"POST\"]", "[\"/test.Greeter/SayHello\"]");
    assert!(one_error(&methods).contains("is not an HTTP method"));
    for bad in ["test.Greeter/SayHello", "/a/b/c", "//b", "/a/ b"] {
        assert!(!validate::is_grpc_method_name(bad), "{bad}");
    }
}

#[test]
fn a_descriptor_set_must_read_as_one() {
    let with = |file: &str| format!("{ORDERS}\n[route.shadow]\ndescriptors = \"{file}\"\n");
    assert!(one_error(&with("missing.binpb")).contains("shadow.descriptors: cannot read"));
    let junk = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(junk.path(), b"\x0a\xff\xff not protobuf").expect("write");
    let e = one_error(&with(&junk.path().display().to_string()));
    assert!(e.contains("is not a protobuf descriptor set"), "{e}");
}
