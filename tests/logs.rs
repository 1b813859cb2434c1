//! What reaches banyan's own log: no query string (Pingora's error lines included), and
//! no line forged from text a request or the admin API carried.

mod common;

use common::{wait_until, Setup};

#[test]
fn no_query_string_reaches_the_log() {
    // An upstream that is never there: every request fails and is logged by Pingora.
    let dead = common::bind_loopback().local_addr().expect("addr");
    let mut s = Setup::new(vec![("legacy", vec![dead])], "legacy");
    s.capture_log = true;
    let b = s.start();
    // HTTP/1.0 goes through Pingora's path.
    let answer = common::raw_exchange(
        b.proxy,
        b"GET /api/pingora?api_key=SECRET-ONE HTTP/1.0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    let (code, _) = common::http_request(b.proxy, "GET", "/api/fast?api_key=SECRET-TWO", None, "");
    assert_eq!(code, 502);
    wait_until("Pingora's error line", || b.log().contains("/api/pingora"));
    let log = b.log();
    assert!(!log.contains("SECRET"), "{log}");
    assert!(!log.contains("api_key"), "{log}");
}

#[test]
fn text_from_the_api_cannot_forge_a_log_line() {
    let (_monolith, _orders, mut setup) = common::orders_world(25.0);
    setup.capture_log = true;
    let b = setup.start();
    let body =
        r#"{"percent": 5, "reason": "maintenance\nERROR banyan: forged line\r\u0000\u001b[31m"}"#;
    let (code, answer) =
        common::http_request(b.admin, "POST", "/api/v1/routes/orders/percent", None, body);
    assert_eq!(code, 200, "{answer}");
    wait_until("the change in the log", || b.log().contains("maintenance"));
    let log = b.log();
    assert!(
        !log.lines().any(|l| l.starts_with("ERROR banyan: forged")),
        "{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("maintenance"))
        .unwrap_or_default();
    assert!(
        line.contains("maintenance\\nERROR banyan: forged line\\r\\x00\\x1b[31m"),
        "{line}"
    );
    assert!(!log.contains('\0') && !log.contains('\u{1b}'), "{log:?}");
}
