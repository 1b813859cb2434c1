//! gRPC through banyan with real gRPC peers (tonic): upstreams spoken to over HTTP/2 with
//! prior knowledge (`protocol = "h2c"`); unary and server-streaming calls pass with their
//! trailers; the split is per call, sticky on metadata, over one shared client
//! connection; calls are counted by grpc-status, and a server-side gRPC error counts as
//! a 5xx — for the guard too.

mod common;

use std::collections::BTreeMap;

use common::grpc::{GrpcClient, GrpcServer};
use common::{wait_until, Banyan, Setup};
use tonic::Code;

fn route(percent: f64, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"greeter\"\nmatch.path_prefix = \"/test.Greeter/\"\nlegacy = \"monolith\"\ntarget = \"greeter\"\npercent = {percent}\nsticky = \"header:x-user-id\"\n{extra}\n"
    )
}

fn start(monolith: &GrpcServer, greeter: &GrpcServer, route: String) -> Banyan {
    let mut setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("greeter", vec![greeter.addr]),
        ],
        "monolith",
    )
    .route_file("greeter.toml", route);
    setup.upstream_extra = vec![
        ("monolith", "protocol = \"h2c\""),
        ("greeter", "protocol = \"h2c\""),
    ];
    setup.server_extra = "access_log = \"access.log\"";
    setup.start()
}

#[test]
fn unary_and_streaming_calls_pass_with_their_trailers_and_are_counted_by_status() {
    let monolith = GrpcServer::start("monolith");
    let greeter = GrpcServer::start("greeter");
    let b = start(&monolith, &greeter, route(100.0, ""));
    let mut c = GrpcClient::connect(b.proxy);

    let ok = c.say_hello("ada", Some("u1"));
    assert_eq!(ok.code, Code::Ok, "{ok:?}");
    assert_eq!(ok.replies[0].message, "hello ada #0");
    assert_eq!(ok.replies[0].upstream, "greeter");

    let streamed = c.count("bob", Some("u1"));
    assert_eq!(streamed.code, Code::Ok, "{streamed:?}");
    let messages: Vec<&str> = streamed
        .replies
        .iter()
        .map(|r| r.message.as_str())
        .collect();
    assert_eq!(messages, ["hello bob #0", "hello bob #1", "hello bob #2"]);

    // An error at the end of a stream: the trailers (status, message, metadata) arrive
    // whole after the first reply.
    let cut = c.count("fail", Some("u1"));
    assert_eq!(cut.replies.len(), 1, "{cut:?}");
    assert_eq!(cut.code, Code::Unavailable);
    assert_eq!(cut.message, "gave up midway");
    assert_eq!(cut.detail.as_deref(), Some("the greeter is away"));
    // An error before any reply: a trailers-only answer.
    let refused = c.say_hello("fail", Some("u1"));
    assert_eq!(refused.code, Code::Unavailable, "{refused:?}");
    assert_eq!(refused.detail.as_deref(), Some("the greeter is away"));

    // An HTTP/1.1 client is served by the HTTP/2 upstream too (Pingora converts; the
    // call's status comes in the head of this trailers-only answer).
    let dir = tempfile::tempdir().expect("tempdir");
    let frame = dir.path().join("hello.bin");
    std::fs::write(&frame, [0, 0, 0, 0, 6, 0x0a, 4, b'f', b'a', b'i', b'l']).expect("frame");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--max-time",
            "15",
        ])
        .args(["-H", "content-type: application/grpc", "--data-binary"])
        .arg(format!("@{}", frame.display()))
        .arg(format!("http://{}/test.Greeter/SayHello", b.proxy))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        head.starts_with("http/1.1 200") && head.contains("grpc-status: 14\r\n"),
        "{head}"
    );

    // Counted by how each call ended; the UNAVAILABLE ones as 5xx.
    let series = |s: &str| {
        format!("banyan_grpc_requests_total{{backend=\"target\",grpc_status=\"{s}\",route=\"greeter\"}}")
    };
    b.wait_metric(&series("OK"), 2.0);
    b.wait_metric(&series("UNAVAILABLE"), 3.0);
    b.wait_metric(
        "banyan_requests_total{backend=\"target\",route=\"greeter\",status_class=\"5xx\"}",
        3.0,
    );
    b.wait_metric(
        "banyan_requests_total{backend=\"target\",route=\"greeter\",status_class=\"2xx\"}",
        2.0,
    );
    // The access log has the HTTP status the client got and the call's own.
    wait_until("five calls logged", || {
        std::fs::read_to_string(b.path("access.log")).is_ok_and(|l| l.lines().count() >= 5)
    });
    let log = std::fs::read_to_string(b.path("access.log")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let statuses: Vec<(&str, u64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap_or(""),
                l["status"].as_u64().unwrap_or(0),
                l["grpc_status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("/test.Greeter/SayHello", 200, "OK"),
            ("/test.Greeter/Count", 200, "OK"),
            ("/test.Greeter/Count", 200, "UNAVAILABLE"),
            ("/test.Greeter/SayHello", 200, "UNAVAILABLE"),
            ("/test.Greeter/SayHello", 200, "UNAVAILABLE"),
        ]
    );
    assert_eq!(monolith.hits(), 0);
}

#[test]
fn a_twenty_percent_split_is_sticky_per_user_over_one_shared_connection() {
    let monolith = GrpcServer::start("monolith");
    let greeter = GrpcServer::start("greeter");
    let b = start(&monolith, &greeter, route(20.0, ""));
    // Every call on one client connection: the split is per call, not per connection.
    let mut c = GrpcClient::connect(b.proxy);
    let mut served: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 0..2 {
        for i in 0..200 {
            let user = format!("user-{i}");
            let e = if round == 0 {
                c.say_hello("x", Some(&user))
            } else {
                c.count("x", Some(&user))
            };
            assert_eq!(e.code, Code::Ok, "{e:?}");
            for r in &e.replies {
                served
                    .entry(user.clone())
                    .or_default()
                    .push(r.upstream.clone());
            }
        }
    }
    let mut on_target = 0;
    for (user, sides) in &served {
        let expected = if banyan::routes::split::bucket("greeter", user.as_bytes()) < 2000 {
            on_target += 1;
            "greeter"
        } else {
            "monolith"
        };
        assert!(sides.iter().all(|s| s == expected), "{user}: {sides:?}");
    }
    // About a fifth of 200 users.
    assert!((20..=60).contains(&on_target), "{on_target}");
    assert!(greeter.hits() > 0 && monolith.hits() > 0);
}

#[test]
fn unavailable_from_the_target_counts_as_errors_and_trips_the_guard() {
    let monolith = GrpcServer::start("monolith");
    let greeter = GrpcServer::unavailable("greeter");
    let b = start(
        &monolith,
        &greeter,
        route(
            100.0,
            "fallback = false\n\n[route.guard]\nmax_error_rate = 0.5\nmin_requests = 10\nwindow = \"60s\"\n",
        ),
    );
    let mut c = GrpcClient::connect(b.proxy);
    for i in 0..10 {
        let e = c.say_hello("x", Some(&format!("u{i}")));
        assert_eq!(e.code, Code::Unavailable, "{e:?}");
    }
    wait_until("the guard rolled the route back", || {
        let r = b.route_status("greeter");
        r["effective_percent"] == 0.0 && r["override"]["trigger"] == "guard"
    });
    // Now on legacy, and answered.
    let e = c.say_hello("x", Some("u1"));
    assert_eq!(
        (e.code, e.replies[0].upstream.as_str()),
        (Code::Ok, "monolith")
    );
}

#[test]
fn a_dead_target_falls_back_and_unavailable_is_retried_on_legacy_for_listed_calls_only() {
    let monolith = GrpcServer::start("monolith");
    // Nothing listens there: any call falls back, nothing having been sent.
    let dead = GrpcServer::start("greeter");
    let dead_addr = dead.addr;
    drop(dead);
    let mut setup = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("greeter", vec![dead_addr]),
        ],
        "monolith",
    )
    .route_file("greeter.toml", route(100.0, ""));
    setup.upstream_extra = vec![
        ("monolith", "protocol = \"h2c\""),
        ("greeter", "protocol = \"h2c\""),
    ];
    let b = setup.start();
    let mut c = GrpcClient::connect(b.proxy);
    let e = c.say_hello("x", Some("u1"));
    assert_eq!(
        (e.code, e.replies[0].upstream.as_str()),
        (Code::Ok, "monolith"),
        "{e:?}"
    );
    let e = c.count("x", Some("u1"));
    assert_eq!((e.code, e.replies.len()), (Code::Ok, 3), "{e:?}");
    b.wait_metric_at_least(
        "banyan_fallbacks_total{reason=\"connect\",route=\"greeter\"}",
        2.0,
    );
    drop(c);
    drop(b);

    // UNAVAILABLE before any message: retried on legacy for SayHello, which the route
    // lists, and passed on for Count, which it does not.
    let greeter = GrpcServer::unavailable("greeter");
    let b = start(
        &monolith,
        &greeter,
        route(100.0, "fallback_methods = [\"/test.Greeter/SayHello\"]\n"),
    );
    let mut c = GrpcClient::connect(b.proxy);
    let e = c.say_hello("x", Some("u1"));
    assert_eq!(
        (e.code, e.replies[0].upstream.as_str()),
        (Code::Ok, "monolith"),
        "{e:?}"
    );
    let e = c.count("x", Some("u1"));
    assert_eq!(e.code, Code::Unavailable, "{e:?}");
    assert_eq!(e.detail.as_deref(), Some("the greeter is away"));
    b.wait_metric(
        "banyan_fallbacks_total{reason=\"status\",route=\"greeter\"}",
        1.0,
    );
    assert!(greeter.hits() >= 2);
}

#[test]
fn banyans_own_answers_are_grpc_statuses_and_the_calls_deadline_is_kept() {
    let monolith = GrpcServer::start("monolith");
    // Accepts connections and never answers.
    let silent = common::upstream::Silent::start();
    let mut setup = Setup::new(
        vec![("monolith", vec![monolith.addr]), ("greeter", vec![silent.addr])],
        "monolith",
    )
    .route_file(
        "greeter.toml",
        route(
            100.0,
            "fallback = false\n\n[route.rate_limit]\nrate = 0.01\nburst = 1\nkey = \"header:x-user-id\"\n",
        ),
    );
    setup.upstream_extra = vec![
        ("monolith", "protocol = \"h2c\""),
        ("greeter", "protocol = \"h2c\"\nread_timeout = \"20s\"\ncircuit = { failures = 100, cooldown = \"1s\" }"),
    ];
    let b = setup.start();
    // The call's own 300 ms, not the upstream's 20 s read timeout, ends the wait. curl
    // sends the grpc-timeout without keeping it itself (tonic's client would end the
    // call at the same moment, on its side).
    let dir = tempfile::tempdir().expect("tempdir");
    let frame = dir.path().join("hello.bin");
    // One uncompressed message: Hello { name: "x" }.
    std::fs::write(&frame, [0, 0, 0, 0, 3, 0x0a, 1, b'x']).expect("frame");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--max-time",
            "15",
        ])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args([
            "-H",
            "grpc-timeout: 300m",
            "-H",
            "x-user-id: u1",
            "--data-binary",
        ])
        .arg(format!("@{}", frame.display()))
        .arg(format!("http://{}/test.Greeter/SayHello", b.proxy))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{head}"
    );
    assert!(
        head.starts_with("http/2 200")
            && head.contains("grpc-status: 4\r\n")
            && head.contains("grpc-message: banyan answered 504"),
        "{head}"
    );
    let mut c = GrpcClient::connect(b.proxy);
    // The rate limit's 429 is RESOURCE_EXHAUSTED.
    let e = c.say_hello("x", Some("u1"));
    assert_eq!(e.code, Code::ResourceExhausted, "{e:?}");
    b.wait_metric(
        "banyan_grpc_requests_total{backend=\"target\",grpc_status=\"DEADLINE_EXCEEDED\",route=\"greeter\"}",
        1.0,
    );
}

#[test]
fn shadowed_calls_are_compared_by_field_number_with_noise_learned_from_legacy() {
    let monolith = GrpcServer::start("monolith");
    let greeter = GrpcServer::start("greeter");
    let b = start(
        &monolith,
        &greeter,
        route(
            0.0,
            // Listed as safe to retry: legacy may be asked twice, to learn its noise.
            "fallback_methods = [\"/test.Greeter/SayHello\", \"/test.Greeter/Count\"]\n\n[route.shadow]\npercent = 100\nmethods = [\"POST\"]\nnoise = true\n",
        ),
    );
    let mut c = GrpcClient::connect(b.proxy);
    for i in 0..30 {
        let e = c.say_hello("x", Some(&format!("u{i}")));
        assert_eq!(
            (e.code, e.replies[0].upstream.as_str()),
            (Code::Ok, "monolith")
        );
    }
    let stats = || b.route_status("greeter")["shadow"]["stats"].clone();
    let noisy = || -> Vec<String> {
        stats()["noisy_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["field"].as_str().map(str::to_string))
            .collect()
    };
    // `serial` (field 3) differs between two legacy answers: learned as noise.
    wait_until("serial learned as noise", || {
        noisy().contains(&"/*/3".to_string()) && stats()["mismatch"].as_u64().unwrap_or(0) >= 30
    });
    assert!(!noisy().iter().any(|f| f.ends_with("/2")), "{}", stats());
    let e = c.count("x", Some("u1"));
    assert_eq!((e.code, e.replies.len()), (Code::Ok, 3));
    wait_until("the stream compared", || {
        stats()["mismatch"].as_u64().unwrap_or(0) >= 31
    });
    // Its diff names the field that differs by its path: message, then field number.
    let (_, body) = b.admin_get("/api/v1/diffs?route=greeter&limit=100");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let count = v["diffs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["path"] == "/test.Greeter/Count")
        .cloned()
        .unwrap_or_default();
    let fields: Vec<(&str, &str, &str)> = count["differences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["field"].as_str().unwrap_or(""),
                d["legacy"].as_str().unwrap_or(""),
                d["shadow"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("/0/2", "\"monolith\"", "\"greeter\""),
            ("/1/2", "\"monolith\"", "\"greeter\""),
            ("/2/2", "\"monolith\"", "\"greeter\""),
        ],
        "{body}"
    );
    let out = b.cli(&["diffs", "greeter", "--limit", "100"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/2/2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A call whose client sends two messages (client streaming) is not mirrored.
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("two.bin");
    let one = [0u8, 0, 0, 0, 3, 0x0a, 1, b'x'];
    std::fs::write(&frames, [one, one].concat()).expect("frames");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "--max-time",
            "15",
        ])
        .args([
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--data-binary",
        ])
        .arg(format!("@{}", frames.display()))
        .arg(format!("http://{}/test.Greeter/SayHello", b.proxy))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the streaming call skipped", || {
        stats()["skipped_by_reason"] == serde_json::json!([["grpc_streaming_call", 1]])
    });
}

#[test]
fn compressed_calls_are_compared_on_their_decompressed_messages() {
    let monolith = GrpcServer::compressing("monolith");
    let greeter = GrpcServer::compressing("greeter");
    let b = start(
        &monolith,
        &greeter,
        route(
            0.0,
            "\n[route.shadow]\npercent = 100\nmethods = [\"POST\"]\n",
        ),
    );
    // The client's message is compressed too: still one message, so still mirrored.
    let mut c = GrpcClient::connect_compressed(b.proxy);
    let e = c.say_hello("x", Some("u1"));
    assert_eq!(
        (e.code, e.replies[0].upstream.as_str()),
        (Code::Ok, "monolith")
    );
    let stats = || b.route_status("greeter")["shadow"]["stats"].clone();
    wait_until("the compressed call compared", || {
        stats()["mismatch"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(
        stats()["skipped_by_reason"],
        serde_json::json!([]),
        "{}",
        stats()
    );
    let (_, body) = b.admin_get("/api/v1/diffs?route=greeter&limit=1");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let differences = v["diffs"][0]["differences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        differences.contains(
            &serde_json::json!({"field": "/0/2", "legacy": "\"monolith\"", "shadow": "\"greeter\""})
        ),
        "{body}"
    );
}

const GREETER_PROTO: &str = r#"syntax = "proto3";
package test;
message Hello { string name = 1; }
message Reply { string message = 1; string upstream = 2; uint64 serial = 3; }
service Greeter {
  rpc SayHello(Hello) returns (Reply);
  rpc Count(Hello) returns (stream Reply);
}
"#;

#[test]
fn with_a_descriptor_set_answers_compare_by_field_name() {
    // The descriptor set as a user makes it, with protoc.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("greeter.proto"), GREETER_PROTO).expect("proto");
    let out = std::process::Command::new("protoc")
        .current_dir(dir.path())
        .args([
            "--include_imports",
            "--descriptor_set_out=greeter.binpb",
            "greeter.proto",
        ])
        .output()
        .expect("protoc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = dir.path().join("greeter.binpb");
    let monolith = GrpcServer::start("monolith");
    let greeter = GrpcServer::start("greeter");
    let b = start(
        &monolith,
        &greeter,
        route(
            0.0,
            &format!(
                "fallback_methods = [\"/test.Greeter/SayHello\"]\n\n[route.shadow]\npercent = 100\nmethods = [\"POST\"]\nnoise = true\ndescriptors = \"{}\"\nignore = [\"/*/message\"]\n",
                set.display()
            ),
        ),
    );
    let mut c = GrpcClient::connect(b.proxy);
    let stats = || b.route_status("greeter")["shadow"]["stats"].clone();
    let noisy = || -> Vec<String> {
        stats()["noisy_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["field"].as_str().map(str::to_string))
            .collect()
    };
    let mut i = 0;
    wait_until("serial learned as noise, by name", || {
        i += 1;
        let e = c.say_hello("x", Some(&format!("u{i}")));
        assert_eq!(e.code, Code::Ok, "{e:?}");
        noisy().contains(&"/*/serial".to_string())
    });
    let mismatches = stats()["mismatch"].as_u64().unwrap_or(0);
    let e = c.say_hello("x", Some("last"));
    assert_eq!(e.code, Code::Ok);
    wait_until("the last call compared", || {
        stats()["mismatch"].as_u64().unwrap_or(0) > mismatches
    });
    let (_, body) = b.admin_get("/api/v1/diffs?route=greeter&limit=1");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["diffs"][0]["differences"],
        serde_json::json!([{"field": "/0/upstream", "legacy": "\"monolith\"", "shadow": "\"greeter\""}]),
        "{body}"
    );
}
