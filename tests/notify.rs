//! `[notify]` with the real binary: a real HTTP receiver gets every routing change in
//! order (JSON, or Slack's `{"text"}`), and a receiver that never answers changes nothing
//! for clients or operators: the failures are counted in status and the metric, and the
//! webhook's secret path is never shown.

mod common;

use common::recorder::{Recorder, Seen};
use common::{ok, wait_until, Banyan};
use serde_json::Value;

/// Waits until `r` has received `n` requests in all, keeping them in `got`.
fn received(r: &Recorder, got: &mut Vec<Seen>, n: usize) {
    wait_until(&format!("{n} webhook deliveries"), || {
        got.extend(r.take());
        got.len() >= n
    });
}

fn body(s: &Seen) -> Value {
    serde_json::from_slice(&s.body).expect("a JSON body")
}

fn orders_status(b: &Banyan) -> u16 {
    common::http_get(b.proxy, "/api/orders/1").map_or(0, |(s, _)| s)
}

#[test]
fn a_receiver_gets_every_routing_change_in_order() {
    let hook = Recorder::start();
    let tail = format!(
        "[notify]\nwebhooks = [\"http://{}/hooks/T0/secret\"]\n",
        hook.addr
    );
    let (_m, _o, mut setup) = common::orders_world(0.0);
    setup.tail = Box::leak(tail.into_boxed_str());
    let b = setup.start();

    ok(&b.cli(&["set", "orders", "10", "--reason", "first step"]));
    ok(&b.cli(&["rollback", "orders", "--reason", "p99 regression"]));
    std::fs::write(
        b.path("routes/orders.toml"),
        "[[route]]\nname = \"orders\"\n",
    )
    .expect("write a broken route file");
    ok(&b.cli(&["resume", "orders"]));

    let mut got = Vec::new();
    received(&hook, &mut got, 3);
    // The refused reload comes from the file watcher, so it may land before or after the
    // resume; the operator's own changes keep their order.
    wait_until("the refused reload's delivery", || {
        got.extend(hook.take());
        got.iter().any(|s| body(s)["action"] == "reload")
    });
    for s in &got {
        assert_eq!(
            (s.method.as_str(), s.target.as_str()),
            ("POST", "/hooks/T0/secret")
        );
        let ct = s
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        assert!(
            ct.is_some_and(|(_, v)| v.starts_with("application/json")),
            "{ct:?}"
        );
    }
    let events: Vec<Value> = got.iter().map(body).collect();
    let ours: Vec<&Value> = events.iter().filter(|e| e["action"] != "reload").collect();
    let actions: Vec<(&str, f64)> = ours
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["percent_after"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![("set", 10.0), ("rollback", 0.0), ("resume", 0.0)]
    );
    assert_eq!(ours[1]["route"], "orders");
    assert_eq!(ours[1]["reason"], "p99 regression");
    assert_eq!(ours[1]["percent_before"], 10.0);
    assert!(ours[1]["replica"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(
        ours[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("rollback orders 10% → 0%")),
        "{}",
        ours[1]["text"]
    );
    let refused = events
        .iter()
        .find(|e| e["action"] == "reload")
        .expect("reload event");
    assert_eq!(refused["result"], "error");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("orders.toml")),
        "{refused}"
    );
    assert!(refused["text"]
        .as_str()
        .is_some_and(|t| t.contains("REFUSED")));

    // Counted once the receiver has answered, just after it recorded the request.
    wait_until("four deliveries counted", || {
        b.status()["notify"]["sent"] == 4
    });
    let st = b.status();
    assert_eq!(st["notify"]["webhooks"], 1);
    assert_eq!(st["notify"]["failed"], 0);
    b.wait_metric("banyan_notifications_total{result=\"sent\"}", 4.0);
}

#[test]
fn slack_format_sends_one_line_of_text() {
    let hook = Recorder::start();
    let tail = format!(
        "[notify]\nwebhooks = [\"http://{}/services/x\"]\nformat = \"slack\"\n",
        hook.addr
    );
    let (_m, _o, mut setup) = common::orders_world(0.0);
    setup.tail = Box::leak(tail.into_boxed_str());
    let b = setup.start();
    ok(&b.cli(&["set", "orders", "25", "--reason", "ramp by hand"]));
    let mut got = Vec::new();
    received(&hook, &mut got, 1);
    let v = body(&got[0]);
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["text"]);
    let text = v["text"].as_str().unwrap_or("");
    assert!(
        text.contains("set orders 0% → 25%") && text.contains("ramp by hand"),
        "{text}"
    );
}

#[test]
fn a_dead_receiver_changes_nothing_for_clients() {
    // Accepts connections (the kernel's backlog) and never answers: every attempt waits
    // for its whole timeout.
    let silent = common::bind_loopback();
    let addr = silent.local_addr().expect("addr");
    let tail = format!(
        "[notify]\nwebhooks = [\"http://{addr}/hooks/secret-path\"]\ntimeout = \"200ms\"\nretries = 1\nqueue = 2\n"
    );
    let (_m, _o, mut setup) = common::orders_world(0.0);
    setup.tail = Box::leak(tail.into_boxed_str());
    setup.capture_log = true;
    let b = setup.start();

    for p in ["1", "2", "3", "4", "5"] {
        ok(&b.cli(&["set", "orders", p, "--reason", "step"]));
        assert_eq!(orders_status(&b), 200);
    }
    assert_eq!(b.route_status("orders")["effective_percent"], 5.0);
    // Every event is accounted for: given up after its retries, or dropped at a full queue.
    wait_until("all five events failed or dropped", || {
        let n = &b.status()["notify"];
        n["failed"].as_u64().unwrap_or(0) + n["dropped"].as_u64().unwrap_or(0) == 5
            && n["queued"] == 0
    });
    let n = &b.status()["notify"];
    assert_eq!(n["sent"], 0);
    assert!(n["failed"].as_u64().unwrap_or(0) >= 1, "{n}");
    let last = n["last_error"].as_str().unwrap_or("");
    assert!(last.contains(&format!("http://{addr}")), "{last}");
    assert!(!last.contains("secret-path"), "{last}");
    let failed = b
        .metric("banyan_notifications_total{result=\"failed\"}")
        .unwrap_or(0.0);
    let dropped = b
        .metric("banyan_notifications_total{result=\"dropped\"}")
        .unwrap_or(0.0);
    assert_eq!(failed + dropped, 5.0);
    assert_eq!(orders_status(&b), 200);
    assert!(!b.log().contains("secret-path"));
    drop(silent);
}
