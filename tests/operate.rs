//! The operator's command line as it is used during an incident: from any folder (admin
//! discovery), `set` with the proxy down, `check` reporting every error in one pass,
//! `status` exit codes for scripts, and an audit log that names who acted.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use common::upstream::{Behavior, Upstream};
use common::{free_port, wait_until, Banyan, Setup};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_banyan");

/// `banyan ARGS` in `dir` with exactly these BANYAN_* variables set.
fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    for var in [
        "BANYAN_ADMIN",
        "BANYAN_CONFIG",
        "BANYAN_ADMIN_TOKEN",
        "BANYAN_ACTOR",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("run banyan")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn audit(b: &Banyan) -> Vec<Value> {
    std::fs::read_to_string(b.path("state/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_cli_finds_the_admin_from_any_folder() {
    let (_m, _o, setup) = common::orders_world(25.0);
    let b = setup.start();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let url = format!("http://{}", b.admin);
    let config = b.path("config/banyan.toml");
    let config = config.to_str().expect("utf-8 path");

    let by_flag = cli(elsewhere.path(), &["status", "--admin", &url], &[]);
    assert_eq!(by_flag.status.code(), Some(0), "{}", err(&by_flag));
    assert!(out(&by_flag).contains("orders"), "{}", out(&by_flag));
    let by_env = cli(elsewhere.path(), &["status"], &[("BANYAN_ADMIN", &url)]);
    assert_eq!(by_env.status.code(), Some(0), "{}", err(&by_env));
    let by_config = cli(elsewhere.path(), &["status"], &[("BANYAN_CONFIG", config)]);
    assert_eq!(by_config.status.code(), Some(0), "{}", err(&by_config));
    // The flag wins over the environment.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let both = cli(
        elsewhere.path(),
        &["status", "--admin", &url],
        &[("BANYAN_ADMIN", &dead)],
    );
    assert_eq!(both.status.code(), Some(0), "{}", err(&both));

    // Unreachable: the message names the URL and where it came from.
    let down = cli(elsewhere.path(), &["status"], &[("BANYAN_ADMIN", &dead)]);
    assert_eq!(down.status.code(), Some(1));
    assert!(
        err(&down).contains(&format!(
            "cannot reach the admin API at {dead} (from BANYAN_ADMIN)"
        )),
        "{}",
        err(&down)
    );
    // A named config that is not there is an error, not a silent default.
    let missing = cli(elsewhere.path(), &["status", "--config", "nope.toml"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        err(&missing).contains("no config file at nope.toml (from --config"),
        "{}",
        err(&missing)
    );

    // `run` outside the repository says where it looked and what to pass.
    let run = cli(elsewhere.path(), &["run"], &[]);
    assert_eq!(run.status.code(), Some(1));
    let text = err(&run);
    assert!(
        text.contains("looked for config/banyan.toml in") && text.contains("--config"),
        "{text}"
    );
}

#[test]
fn set_writes_the_overrides_file_when_the_admin_is_down() {
    let (_m, _o, setup) = common::orders_world(25.0);
    let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dir = setup.write(proxy, admin);
    let set = cli(
        dir.path(),
        &["set", "orders", "5", "--reason", "before the deploy"],
        &[("BANYAN_ACTOR", "erin")],
    );
    assert_eq!(set.status.code(), Some(0), "{}", err(&set));
    assert!(out(&set).contains("wrote"), "{}", out(&set));
    assert!(
        out(&set).contains("orders: 5.00% until resumed"),
        "{}",
        out(&set)
    );
    let unknown = cli(dir.path(), &["set", "ordrs", "5"], &[]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        err(&unknown).contains("no route `ordrs`"),
        "{}",
        err(&unknown)
    );

    // The proxy starts with the override in force.
    let b = Banyan::spawn(dir, proxy, admin, &["run"]);
    let r = b.route_status("orders");
    assert_eq!(r["effective_percent"], 5.0, "{r}");
    assert_eq!(r["override"]["reason"], "before the deploy");
    let line = audit(&b)
        .into_iter()
        .find(|e| e["action"] == "set")
        .expect("the set is audited");
    assert_eq!(line["actor"], "erin", "{line}");
    assert_eq!(line["source"], "cli");
}

#[test]
fn check_reports_every_independent_error_in_one_pass() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let dir = Setup::new(
        vec![("monolith", vec![addr]), ("orders", vec![addr])],
        "monolith",
    )
    .route_file(
        "typo.toml",
        "[[route]]\nname = \"users\"\nmatch.path_prefix = \"/api/users\"\nlegacy = \"monolith\"\ntarget = \"ordrs\"\nprecent = 20\n\n[[route]]\nname = \"users\"\nmatch.path_prefix = \"/api/users\"\nsticky = \"hedaer:x\"\n\n[[route]]\nname = \"carts\"\nmatch.path_prefix = \"/api/carts\"\ntarget = \"orders\"\n",
    )
    .write(addr, addr);
    let check = cli(dir.path(), &["check"], &[]);
    assert_eq!(check.status.code(), Some(1));
    let text = err(&check);
    for want in [
        "routes/typo.toml:6:1: error: unknown field `precent`",
        "did you mean `percent`?",
        "routes/typo.toml:5:10: error: target: unknown upstream `ordrs`",
        "routes/typo.toml:11:10: error: sticky `hedaer:x`",
        "routes/typo.toml:9:8: error: route name `users` is already used",
        "error: route `users` is ambiguous with `users`",
        "routes/typo.toml:16:10: warning: the route has a target but no `percent`",
        "5 errors",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }
}

#[test]
fn status_exits_3_when_a_person_is_needed() {
    let monolith = Upstream::start("monolith");
    let broken = Upstream::start_with(
        "orders",
        Behavior {
            status: Some(500),
            ..Behavior::default()
        },
    );
    let gone: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("orders", vec![broken.addr]),
            ("gone", vec![gone]),
        ],
        "monolith",
    )
    .route_file(
        "orders.toml",
        format!(
            "{}fallback = false\n\n[route.guard]\nmax_error_rate = 0.5\nmin_requests = 5\nwindow = \"60s\"\n",
            common::orders_route(100.0)
        ),
    );
    setup.upstream_extra = vec![(
        "gone",
        "health = { path = \"/healthz\", interval = \"1s\" }",
    )];
    // Without `gone` first: a clean status exits 0.
    let healthy = Setup::new(vec![("monolith", vec![monolith.addr])], "monolith").start();
    let ok = healthy.cli(&["status"]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", out(&ok), err(&ok));

    let b = setup.start();
    // An upstream with no peer in rotation.
    wait_until("the dead peer out of rotation", || {
        b.cli(&["status"]).status.code() == Some(3)
    });
    let s = b.cli(&["status"]);
    assert!(out(&s).contains("gone: no peer in rotation"), "{}", out(&s));
    let json = b.cli(&["status", "--json"]);
    assert_eq!(json.status.code(), Some(3));
    assert!(serde_json::from_slice::<Value>(&json.stdout).is_ok());

    // A guard rollback.
    for i in 0..5 {
        let _ = common::try_http_request_with_headers(
            b.proxy,
            "GET",
            "/api/orders/1",
            &[("x-user-id", &format!("u{i}"))],
        );
    }
    wait_until("the guard's rollback", || {
        b.route_status("orders")["override"]["trigger"] == "guard"
    });
    let s = b.cli(&["status"]);
    assert_eq!(s.status.code(), Some(3));
    assert!(
        out(&s).contains("orders: rolled back by its guard"),
        "{}",
        out(&s)
    );

    // A refused reload.
    std::fs::write(b.path("routes/bad.toml"), "[[route]]\nname = 1\n").expect("write");
    wait_until("the refused reload", || {
        !b.status()["last_reload_error"].is_null()
    });
    let s = b.cli(&["status"]);
    assert_eq!(s.status.code(), Some(3));
    assert!(
        out(&s).contains("the last reload was refused"),
        "{}",
        out(&s)
    );
}

#[test]
fn the_audit_log_names_the_token_and_the_actor() {
    let (_m, _o, mut setup) = common::orders_world(25.0);
    setup.admin_extra = "tokens = { ci = \"config/ci.token\", erin = \"config/erin.token\" }";
    let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dir = setup.write(proxy, admin);
    std::fs::write(dir.path().join("config/ci.token"), "ci-secret\n").expect("token");
    std::fs::write(dir.path().join("config/erin.token"), "erin-secret\n").expect("token");
    let b = Banyan::spawn(dir, proxy, admin, &["run"]);
    let here = b.dir.path();

    let none = cli(here, &["set", "orders", "10"], &[]);
    assert_eq!(none.status.code(), Some(1), "a token is needed");
    let erin = cli(
        here,
        &[
            "set",
            "orders",
            "10",
            "--token",
            "erin-secret",
            "--actor",
            "erin@laptop",
        ],
        &[],
    );
    assert_eq!(erin.status.code(), Some(0), "{}", err(&erin));
    let ci = cli(
        here,
        &["rollback", "orders"],
        &[("BANYAN_ADMIN_TOKEN", "ci-secret"), ("USER", "deploy-bot")],
    );
    assert_eq!(ci.status.code(), Some(0), "{}", err(&ci));
    let lines = audit(&b);
    let set = lines.iter().find(|e| e["action"] == "set").expect("set");
    assert_eq!(
        (&set["token"], &set["actor"]),
        (&Value::from("erin"), &Value::from("erin@laptop"))
    );
    let rb = lines
        .iter()
        .find(|e| e["action"] == "rollback")
        .expect("rollback");
    assert_eq!(
        (&rb["token"], &rb["actor"]),
        (&Value::from("ci"), &Value::from("deploy-bot"))
    );
    // The secrets are nowhere in the state folder.
    let state = std::fs::read_to_string(b.path("state/audit.jsonl")).expect("audit");
    assert!(!state.contains("secret"), "{state}");
}
