//! The admin listener: health and metrics without auth, the JSON API behind a bearer
//! token when one is configured, JSON errors.

mod common;

use std::net::SocketAddr;

use common::upstream::Upstream;
use common::Setup;
use serde_json::Value;

fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    common::http_request(addr, method, path, auth, "")
}

fn check_token_enforced(admin: SocketAddr, token: &str) {
    let (code, body) = request(admin, "GET", "/api/v1/status", None);
    assert_eq!(code, 401);
    let v: Value = serde_json::from_str(&body).expect("json error");
    assert!(v["error"].as_str().unwrap_or("").contains("token"));
    assert_eq!(
        request(admin, "GET", "/api/v1/status", Some("Bearer wrong")).0,
        401
    );
    assert_eq!(
        request(admin, "GET", "/api/v1/status", Some(token)).0,
        401,
        "scheme is required"
    );
    assert_eq!(
        request(admin, "GET", "/api/v1/nothing", None).0,
        401,
        "all of /api/ is guarded"
    );
    let (code, body) = request(
        admin,
        "GET",
        "/api/v1/status",
        Some(&format!("Bearer {token}")),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("status json");
    assert_eq!(v["generation"], 1);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(
        request(admin, "GET", "/healthz", None),
        (200, "ok\n".to_string())
    );
    assert_eq!(request(admin, "GET", "/metrics", None).0, 200);
}

#[test]
fn the_api_needs_the_token_from_the_environment() {
    let up = Upstream::start("m");
    let mut setup = Setup::new(vec![("m", vec![up.addr])], "m");
    setup.env = vec![("BANYAN_ADMIN_TOKEN", "s3cret-env")];
    let b = setup.start();
    check_token_enforced(b.admin, "s3cret-env");
}

#[test]
fn the_api_needs_the_token_from_the_token_file() {
    let up = Upstream::start("m");
    let mut setup = Setup::new(vec![("m", vec![up.addr])], "m");
    setup.admin_extra = "token_file = \"admin.token\"";
    let proxy: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let dir = setup.write(proxy, admin);
    std::fs::write(dir.path().join("admin.token"), "from-file-token\n").expect("token");
    let b = common::Banyan::spawn(dir, proxy, admin, &["run"]);
    check_token_enforced(b.admin, "from-file-token");
}

#[test]
fn without_a_token_on_loopback_the_api_is_open_and_errors_are_json() {
    let up = Upstream::start("m");
    let b = Setup::new(vec![("m", vec![up.addr])], "m").start();
    let (code, body) = request(b.admin, "GET", "/api/v1/status", None);
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["routes"][0]["name"], "_default");
    assert_eq!(v["upstreams"][0]["name"], "m");
    let (code, body) = request(b.admin, "GET", "/nope", None);
    assert_eq!(code, 404);
    assert!(serde_json::from_str::<Value>(&body).expect("json")["error"].is_string());
    assert_eq!(request(b.admin, "DELETE", "/api/v1/status", None).0, 405);
    let (code, body) = request(b.admin, "HEAD", "/healthz", None);
    assert_eq!((code, body.as_str()), (200, ""));
}

/// Status line code of a raw exchange.
fn code_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post(admin: SocketAddr, host: &str, extra: &str, body: &str) -> u16 {
    let raw = format!(
        "POST /api/v1/rollback HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    code_of(&common::raw_exchange(admin, raw.as_bytes()))
}

/// Without a token (the loopback default), a web page the operator's browser opens, or a
/// name rebound to 127.0.0.1, must not reach the API; the operator's own tools still do.
#[test]
fn without_a_token_cross_site_and_rebound_requests_are_refused() {
    let (_monolith, _orders, setup) = common::orders_world(25.0);
    let b = setup.start();
    let own = b.admin.to_string();
    let overridden = || b.route_status("orders")["override"].is_object();
    // A form or fetch from another site: refused, whatever its body.
    assert_eq!(
        post(
            b.admin,
            &own,
            "Origin: http://evil.example\r\nContent-Type: text/plain\r\n",
            "{}"
        ),
        403
    );
    assert_eq!(
        post(
            b.admin,
            &own,
            "Origin: http://evil.example\r\nContent-Type: application/json\r\n",
            "{}"
        ),
        403
    );
    assert_eq!(
        post(
            b.admin,
            &own,
            "Origin: null\r\nContent-Type: application/json\r\n",
            "{}"
        ),
        403
    );
    // Not JSON: what a cross-site form can send without a preflight.
    assert_eq!(
        post(b.admin, &own, "Content-Type: text/plain\r\n", "{}"),
        415
    );
    assert_eq!(post(b.admin, &own, "", ""), 415);
    // A rebound name: reads and writes refused.
    assert_eq!(
        post(
            b.admin,
            &format!("evil.example:{}", b.admin.port()),
            "Content-Type: application/json\r\n",
            "{}"
        ),
        403
    );
    let get = format!(
        "GET /api/v1/status HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        b.admin.port()
    );
    assert_eq!(code_of(&common::raw_exchange(b.admin, get.as_bytes())), 403);
    let get = format!(
        "GET /metrics HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
        b.admin.port()
    );
    assert_eq!(code_of(&common::raw_exchange(b.admin, get.as_bytes())), 403);
    // Probes dial an address of their own: /healthz answers anyone.
    let health = "GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:9090\r\nConnection: close\r\n\r\n";
    assert_eq!(
        code_of(&common::raw_exchange(b.admin, health.as_bytes())),
        200
    );
    assert!(!overridden(), "nothing was rolled back");
    // The dashboard (same origin, JSON) and the CLI still work.
    let same = format!("Origin: http://{own}\r\nContent-Type: application/json\r\n");
    assert_eq!(
        post(b.admin, &own, &same, "{\"reason\":\"from the page\"}"),
        200
    );
    assert!(overridden());
    let localhost = format!("localhost:{}", b.admin.port());
    let resume = format!(
        "POST /api/v1/resume HTTP/1.1\r\nHost: {localhost}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        code_of(&common::raw_exchange(b.admin, resume.as_bytes())),
        200
    );
    let out = b.cli(&["rollback", "orders", "--reason", "cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.cli(&["resume", "orders"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With a token, the token is the protection: the origin checks do not apply.
#[test]
fn with_a_token_the_origin_rules_do_not_apply() {
    let up = Upstream::start("m");
    let mut setup = Setup::new(vec![("m", vec![up.addr])], "m");
    setup.env = vec![("BANYAN_ADMIN_TOKEN", "t0ken")];
    let b = setup.start();
    let raw = "POST /api/v1/rollback HTTP/1.1\r\nHost: elsewhere.example\r\nOrigin: http://evil.example\r\nAuthorization: Bearer t0ken\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(code_of(&common::raw_exchange(b.admin, raw.as_bytes())), 200);
    let raw = "POST /api/v1/rollback HTTP/1.1\r\nHost: elsewhere.example\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(code_of(&common::raw_exchange(b.admin, raw.as_bytes())), 401);
}
