//! The command line as a user runs it: `check`, `explain`, `run` refusing bad files,
//! usage errors, signals, and `demo` with the repository's own example files.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use banyan::routes::split;
use common::upstream::Upstream;
use common::{banyan_cmd, free_port, Banyan, Setup};
use serde_json::Value;

const ORDERS: &str = r#"[[route]]
name = "orders"
match.path_prefix = "/api/orders"
legacy = "monolith"
target = "orders"
percent = 25
sticky = "header:x-user-id"
"#;

fn setup() -> Setup<'static> {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    Setup::new(
        vec![("monolith", vec![addr]), ("orders", vec![addr])],
        "monolith",
    )
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

#[test]
fn check_prints_a_summary_of_valid_files() {
    let dir = setup()
        .route_file("orders.toml", ORDERS)
        .write(local(18080), local(19090));
    let out = banyan_cmd(dir.path(), &["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("config     config/banyan.toml"), "{text}");
    assert!(
        text.contains(&format!(
            "routes     {}",
            dir.path().join("routes").display()
        )),
        "{text}"
    );
    assert!(text.contains("monolith → orders 25.00%"), "{text}");
    assert!(text.contains("[path_prefix /api/orders]"), "{text}");
    assert!(text.contains("sticky header:x-user-id"), "{text}");
    assert!(text.contains("(routes/orders.toml:2)"), "{text}");
    assert!(text.contains("_default"), "{text}");
    assert!(text.contains("ok: 1 route, 2 upstreams"), "{text}");
    // The open-file limit `run` will raise to, against max_connections (10,000 by default).
    assert!(text.contains("           open files "), "{text}");
    assert!(text.contains("max_connections = 10000"), "{text}");
}

#[test]
fn check_refuses_broken_files_with_every_error_located() {
    let dir = setup()
        .route_file("a.toml", ORDERS.replace("percent = 25", "precent = 25"))
        .route_file(
            "b.toml",
            "[[route]]\nname = \"users\"\nmatch.path_prefix = \"users\"\ntarget = \"nowhere\"\npercent = 10\nsticky = \"session\"\n",
        )
        .route_file("c.toml", "[[route]\n")
        .write(local(18080), local(19090));
    let out = banyan_cmd(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        "routes/a.toml:6:1: error: unknown field `precent`",
        "routes/b.toml:3:21: error: match.path_prefix `users` must start with '/'",
        "routes/b.toml:4:10: error: target: unknown upstream `nowhere`",
        "routes/b.toml:6:10: error: sticky `session`",
        "routes/c.toml:1:",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e)),
            "no line starting {e:?} in:\n{err}"
        );
    }
    assert!(err.contains("check failed: 5 errors"), "{err}");
    assert!(stdout(&out).is_empty(), "no summary for a broken set");
}

#[test]
fn run_refuses_to_start_on_broken_files() {
    let dir = setup()
        .route_file("a.toml", ORDERS.replace("percent = 25", "percent = 250"))
        .write(local(free_port()), local(free_port()));
    let out = banyan_cmd(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("routes/a.toml:6:11: error: percent 250 must be between 0 and 100"),
        "{err}"
    );
    assert!(err.contains("not starting: 1 error"), "{err}");
}

#[test]
fn a_broken_config_file_is_reported_with_its_position() {
    let dir = setup()
        .route_file("orders.toml", ORDERS)
        .write(local(18080), local(19090));
    let cfg = dir.path().join("config/banyan.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace("threads = 2", "threads = 2\nworkers = 4"),
    )
    .expect("write");
    let out = banyan_cmd(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("config/banyan.toml:4:1: error: unknown field `workers`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn explain_shows_route_bucket_and_backend() {
    let dir = setup()
        .route_file("orders.toml", ORDERS)
        .write(local(18080), local(19090));
    for user in ["alice", "user-1", "bob"] {
        let bucket = split::bucket("orders", user.as_bytes());
        let backend = if bucket < 2500 { "target" } else { "legacy" };
        let out = banyan_cmd(
            dir.path(),
            &[
                "explain",
                "--offline",
                "GET",
                "http://shop.example.com/api/orders/7?x=1",
                "-H",
                &format!("X-User-Id: {user}"),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("route     orders  (routes/orders.toml:2)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("key       header x-user-id = \"{user}\"")),
            "{text}"
        );
        assert!(
            text.contains(&format!("bucket    {bucket} of 10000")),
            "{text}"
        );
        assert!(text.contains(&format!("backend   {backend} → ")), "{text}");

        let out = banyan_cmd(
            dir.path(),
            &[
                "explain",
                "--offline",
                "--json",
                "GET",
                "/api/orders/7",
                "-H",
                &format!("x-user-id: {user}"),
            ],
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["route"], "orders");
        assert_eq!(v["bucket"], bucket);
        assert_eq!(v["backend"], backend);
    }
    // Known bucket from the formula (see split.rs): alice → 5440 → legacy at 25 %.
    let out = banyan_cmd(
        dir.path(),
        &[
            "explain",
            "--offline",
            "--json",
            "GET",
            "/api/orders",
            "-H",
            "x-user-id: alice",
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["bucket"].as_u64(), v["upstream"].as_str()),
        (Some(5440), Some("monolith"))
    );

    let out = banyan_cmd(dir.path(), &["explain", "--offline", "GET", "/other"]);
    assert!(stdout(&out).contains("route     _default  (no route matched)"));
    assert!(stdout(&out).contains("backend   legacy → monolith"));

    let out = banyan_cmd(dir.path(), &["explain", "--offline", "GET", "/api/orders"]);
    assert!(
        stdout(&out).contains("backend   random per request"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert_eq!(banyan_cmd(here, &[]).status.code(), Some(2));
    assert_eq!(banyan_cmd(here, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(banyan_cmd(here, &["explain", "GET"]).status.code(), Some(2));
    let out = banyan_cmd(here, &["explain", "GET", "/x", "-H", "no-colon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not 'name: value'"));
    assert!(banyan_cmd(here, &["--help"]).status.success());
}

#[test]
fn the_repository_example_files_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = banyan_cmd(root, &["check"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

fn stop_within(sig: &str, limit: Duration) {
    let up = Upstream::start("monolith");
    let mut b = Setup::new(vec![("monolith", vec![up.addr])], "monolith").start();
    // An idle keep-alive connection must not hold the process open.
    let mut idle = std::net::TcpStream::connect(b.proxy).expect("connect");
    std::io::Write::write_all(&mut idle, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").expect("write");
    common::wait_until("the request to be served", || up.hits() == 1);
    b.signal(sig);
    let (status, took) = b
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("still running {limit:?} after SIG{sig}"));
    assert!(
        status.success() || status.code().is_none(),
        "exit status {status}"
    );
    eprintln!("SIG{sig}: stopped in {took:?}");
}

/// An upstream that answers one request only when told to: it says when the request has
/// arrived, and answers `done` when `release` is sent.
fn gated_upstream() -> (SocketAddr, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let listener = common::bind_loopback();
    let addr = listener.local_addr().expect("addr");
    let (arrived, arrival) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let _ = arrived.send(());
        if released.recv().is_ok() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
        }
    });
    (addr, arrival, release)
}

/// SIGTERM: the plain listener stops taking connections at once, and a request in flight
/// is still answered during the grace period, on both transports.
#[test]
fn sigterm_answers_the_request_in_flight_and_takes_no_new_connection() {
    for transport in common::Transport::BOTH {
        let (up, arrival, release) = gated_upstream();
        let mut setup = Setup::new(vec![("monolith", vec![up])], "monolith").via(transport);
        setup.server_extra = "grace_period = \"30s\"";
        let b = setup.start();
        let proxy = b.proxy;
        let client = std::thread::spawn(move || common::http_get(proxy, "/slow"));
        arrival
            .recv_timeout(Duration::from_secs(30))
            .expect("the request reached the upstream");
        b.signal("TERM");
        common::wait_until("the listener to close", || {
            std::net::TcpStream::connect(proxy).is_err()
        });
        release.send(()).expect("release");
        let answer = client.join().expect("client");
        assert_eq!(
            answer,
            Some((200, "done".to_string())),
            "{}",
            transport.name()
        );
    }
}

#[test]
fn sigterm_stops_within_two_seconds() {
    stop_within("TERM", Duration::from_secs(2));
}

#[test]
fn sigint_stops_within_two_seconds() {
    stop_within("INT", Duration::from_secs(2));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = common::bind_loopback();
    let port = taken.local_addr().expect("addr").port();
    let dir = setup().write(local(port), local(free_port()));
    let out = banyan_cmd(dir.path(), &["run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port} for the proxy")),
        "{}",
        stderr(&out)
    );
}

/// `banyan demo` with the repository's own config and routes, moved to free ports.
#[test]
fn demo_serves_the_example_with_builtin_upstreams() {
    let (dir, [proxy, admin, mono, orders]) = common::demo_folder();
    let b = Banyan::spawn(dir, proxy, admin, &["demo"]);
    common::wait_until("the demo upstreams", || {
        common::http_get(mono, "/healthz").is_some()
            && common::http_get(orders, "/healthz").is_some()
    });
    let (status, body) = common::http_get(b.proxy, "/api/users/7").expect("answer");
    assert_eq!(status, 200);
    assert!(body.contains("\"served_by\": \"monolith\""), "{body}");
    let mut targets = 0;
    for i in 0..40 {
        let user = format!("demo-user-{i}");
        let out = banyan_cmd(
            b.dir.path(),
            &[
                "explain",
                "--json",
                "GET",
                "/api/orders/42",
                "-H",
                &format!("x-user-id: {user}"),
            ],
        );
        let want: Value = serde_json::from_slice(&out.stdout).expect("explain json");
        let mut s = std::net::TcpStream::connect(b.proxy).expect("connect");
        std::io::Write::write_all(
            &mut s,
            format!("GET /api/orders/42 HTTP/1.1\r\nHost: demo\r\nx-user-id: {user}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("write");
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).expect("read");
        let served_by = want["upstream"].as_str().expect("upstream");
        assert!(
            answer.contains(&format!("\"served_by\": \"{served_by}\"")),
            "{user}: {answer}"
        );
        if served_by == "orders" {
            targets += 1;
        }
    }
    assert!(
        targets > 0 && targets < 40,
        "{targets} of 40 on the orders service"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let monolith = common::upstream::Upstream::start("monolith");
    let mut s = common::Setup::new(vec![("monolith", vec![monolith.addr])], "monolith");
    s.env = vec![("BANYAN_LOG_FORMAT", "json")];
    s.capture_log = true;
    let b = s.start();
    common::wait_until("the start-up line", || {
        b.log().contains("banyan serving on")
    });
    for line in b.log().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}
