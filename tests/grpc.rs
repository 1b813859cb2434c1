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

    // Counted by how each call ended; the two UNAVAILABLE as 5xx.
    let series = |s: &str| {
        format!("banyan_grpc_requests_total{{backend=\"target\",grpc_status=\"{s}\",route=\"greeter\"}}")
    };
    b.wait_metric(&series("OK"), 2.0);
    b.wait_metric(&series("UNAVAILABLE"), 2.0);
    b.wait_metric(
        "banyan_requests_total{backend=\"target\",route=\"greeter\",status_class=\"5xx\"}",
        2.0,
    );
    b.wait_metric(
        "banyan_requests_total{backend=\"target\",route=\"greeter\",status_class=\"2xx\"}",
        2.0,
    );
    // The access log has the HTTP status the client got and the call's own.
    wait_until("four calls logged", || {
        std::fs::read_to_string(b.path("access.log")).is_ok_and(|l| l.lines().count() >= 4)
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
