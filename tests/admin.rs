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
