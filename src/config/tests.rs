use super::*;

fn load_text(text: &str) -> Result<(Config, Report), Report> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("banyan.toml");
    std::fs::write(&file, text).expect("write");
    Config::load(&file, dir.path())
}

fn errors(text: &str) -> Vec<String> {
    match load_text(text) {
        Ok(_) => Vec::new(),
        Err(r) => r.errors().map(|d| d.to_string()).collect(),
    }
}

const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
threads = 2
routes_dir = "routes"
state_dir = "state"
default_upstream = "monolith"

[admin]
listen = "127.0.0.1:9090"

[upstreams.monolith]
peers = ["127.0.0.1:8081", "localhost:8083"]
connect_timeout = "250ms"
host = "legacy.internal"

[upstreams.orders]
peers = ["127.0.0.1:8082"]

[shadow]
max_body_bytes = 1048576
max_in_flight = 256
timeout = "5s"
"#;

#[test]
fn the_contract_example_loads() {
    let (c, report) = load_text(GOOD).expect("valid");
    assert!(!report.has_errors());
    assert_eq!(
        c.server.listen,
        vec!["127.0.0.1:8080".parse().expect("addr")]
    );
    assert_eq!(c.server.threads, 2);
    assert!(c.server.routes_dir.ends_with("routes") && c.server.routes_dir.is_absolute());
    assert_eq!(c.server.default_upstream, "monolith");
    let m = c.upstream("monolith").expect("monolith");
    assert_eq!(m.peers.len(), 2);
    assert_eq!(m.peers[1].addr, "127.0.0.1:8083".parse().expect("addr"));
    assert_eq!(m.connect_timeout, Duration::from_millis(250));
    assert_eq!(m.read_timeout, DEFAULT_READ_TIMEOUT);
    assert_eq!(m.host.as_deref(), Some("legacy.internal"));
    assert_eq!(c.server.grace_period, DEFAULT_GRACE_PERIOD);
    assert_eq!(c.shadow.max_in_flight, 256);
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let text = GOOD.replace("threads = 2", "threads = 2\nthreds = 3");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("banyan.toml:5:1: error: unknown field `threds`"),
        "{e:?}"
    );
}

#[test]
fn a_typo_does_not_hide_the_rest_of_its_section() {
    // Before, serde stopped each section at its first unknown key.
    let text = GOOD
        .replace("threads = 2", "threads = 2\nthreds = 3")
        .replace(
            "default_upstream = \"monolith\"",
            "default_upstream = \"legacy\"",
        )
        .replace(
            "connect_timeout = \"250ms\"",
            "connect_timeout = \"250ms\"\nconect_timeout = \"1s\"\nread_timeout = \"soon\"",
        );
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(e.iter().any(|l| l.contains("unknown field `threds`") && l.ends_with("did you mean `threads`?")), "{e:#?}");
    assert!(
        e.iter()
            .any(|l| l.contains("unknown field `conect_timeout`")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|l| l.contains("`soon` is not a duration")),
        "{e:#?}"
    );
    assert!(e.iter().any(|l| l.contains("legacy")), "{e:#?}");
}

#[test]
fn unknown_default_upstream_is_named() {
    let e = errors(&GOOD.replace(
        "default_upstream = \"monolith\"",
        "default_upstream = \"legacy\"",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(":7:20: error: server.default_upstream: unknown upstream `legacy` (known: monolith, orders)"), "{e:?}");
}

#[test]
fn several_errors_are_all_reported() {
    let text = GOOD
        .replace("threads = 2", "threads = 0")
        .replace("\"127.0.0.1:8082\"", "\"nope\"")
        .replace("\"250ms\"", "\"fast\"");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e.iter().any(|l| l.contains("server.threads: 0")));
    assert!(e.iter().any(|l| l.contains("`nope` needs a port")));
    assert!(e.iter().any(|l| l.contains("`fast` is not a duration")));
}

#[test]
fn public_admin_needs_a_token() {
    let e = errors(&GOOD.replace("listen = \"127.0.0.1:9090\"", "listen = \"0.0.0.0:9090\""));
    assert!(
        e.iter()
            .any(|l| l.contains("not a loopback address and no admin token")),
        "{e:?}"
    );
}

#[test]
fn upstream_tls_needs_sni_and_readable_files() {
    for (tls, needle) in [
        ("tls = { ca = \"ca.pem\" }", "sni is required"),
        ("tls = { sni = \"\" }", "not a server name"),
        (
            "tls = { sni = \"orders.internal\", ca = \"/nonexistent/ca.pem\" }",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "tls = { sni = \"o\", client_cert = \"c.pem\" }",
            "go together",
        ),
    ] {
        let e = errors(&GOOD.replace(
            "[upstreams.orders]\npeers = [\"127.0.0.1:8082\"]",
            &format!("[upstreams.orders]\npeers = [\"127.0.0.1:8082\"]\n{tls}"),
        ));
        assert!(
            e.iter()
                .any(|l| l.contains("upstreams.orders.tls") && l.contains(needle)),
            "{tls}: {e:?}"
        );
    }
}

#[test]
fn the_tls_listener_needs_a_matching_readable_pair() {
    let e = errors(&GOOD.replace(
            "[admin]",
            "[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n\n[admin]",
        ));
    assert!(
        e.iter()
            .any(|l| l.contains("server.tls: cannot read /nonexistent/c.pem")),
        "{e:?}"
    );
}

#[test]
fn syntax_errors_have_positions() {
    let e = errors("[server\nlisten = 1\n");
    assert!(!e.is_empty());
    assert!(e[0].contains("banyan.toml:1:"), "{e:?}");
}

#[test]
fn a_missing_file_is_one_clear_error() {
    let r =
        Config::load(Path::new("/nonexistent/banyan.toml"), Path::new("/")).expect_err("missing");
    let lines: Vec<String> = r.errors().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("cannot read the config file"));
}

#[test]
fn names_are_restricted_to_label_safe_characters() {
    assert!(valid_name("orders-v2.eu_1"));
    assert!(!valid_name(""));
    assert!(!valid_name("orders v2"));
    assert!(!valid_name("orders/x"));
}

#[test]
fn the_state_store_is_files_unless_etcd_is_configured() {
    let (c, _) = load_text(GOOD).expect("valid");
    assert_eq!(c.state, state::Store::Files);
    let etcd = format!(
        "{GOOD}\n[state]\nstore = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/banyan/prod/\"\nreplica = \"banyan-0\"\n"
    );
    let (c, _) = load_text(&etcd).expect("valid");
    let state::Store::Etcd(e) = c.state else {
        panic!("etcd expected")
    };
    assert_eq!(
        (
            e.endpoints.as_slice(),
            e.prefix.as_str(),
            e.replica.as_str()
        ),
        (
            &["http://127.0.0.1:2379".to_string()][..],
            "/banyan/prod",
            "banyan-0"
        )
    );
    // The default replica name is the host's and the first proxy port.
    let (c, _) = load_text(&etcd.replace("replica = \"banyan-0\"\n", "")).expect("valid");
    let state::Store::Etcd(e) = c.state else {
        panic!("etcd expected")
    };
    assert!(e.replica.ends_with("-8080"), "{}", e.replica);
}

#[test]
fn a_bad_state_section_names_every_problem() {
    let bad = format!(
        "{GOOD}\n[state]\nstore = \"etcd\"\nendpoints = [\"127.0.0.1:2379\"]\nprefix = \"banyan\"\nreplica = \"a b\"\n"
    );
    let e = errors(&bad);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].contains("must start with http://"), "{e:#?}");
    assert!(
        e[1].contains("state.prefix `banyan` must start with '/'"),
        "{e:#?}"
    );
    assert!(e[2].contains("state.replica `a b`"), "{e:#?}");
    let e = errors(&format!("{GOOD}\n[state]\nstore = \"consul\"\n"));
    assert!(e[0].contains("expected \"files\" or \"etcd\""), "{e:#?}");
    let e = errors(&format!("{GOOD}\n[state]\nstore = \"etcd\"\n"));
    assert!(e[0].contains("needs state.endpoints"), "{e:#?}");
}

#[test]
fn upstream_protocols_are_checked_against_tls() {
    let h2c = GOOD.replace(
        "[upstreams.orders]\npeers = [\"127.0.0.1:8082\"]",
        "[upstreams.orders]\npeers = [\"127.0.0.1:8082\"]\nprotocol = \"h2c\"",
    );
    let (c, _) = load_text(&h2c).expect("valid");
    assert_eq!(
        c.upstream("orders").map(|u| u.protocol),
        Some(Protocol::H2c)
    );
    assert_eq!(
        c.upstream("monolith").map(|u| u.protocol),
        Some(Protocol::Http1)
    );
    let h2 = h2c.replace("\"h2c\"", "\"h2\"");
    let e = errors(&h2);
    assert!(
        e.len() == 1 && e[0].contains("protocol = \"h2\" is HTTP/2 over TLS"),
        "{e:?}"
    );
    let e = errors(&h2c.replace("\"h2c\"", "\"http2\""));
    assert!(
        e.len() == 1 && e[0].contains("expected \"http1\", \"h2\" or \"h2c\""),
        "{e:?}"
    );
}
