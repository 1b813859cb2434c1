//! TLS with certificates made at test time: the HTTPS listener with HTTP/2 and HTTP/1.1
//! (curl), h2c on the plain listener, a certificate replaced on disk, verified and
//! mutual TLS to upstreams, an upstream from another CA, health checks over TLS, and the
//! private-key formats `check` accepts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::pki::{self, Ca};
use common::upstream::Upstream;
use common::{free_port, wait_until, Banyan, Setup};

/// curl through the proxy: (HTTP version, status, body).
fn curl(args: &[&str]) -> (String, u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = last.split(' ');
    let version = parts.next().unwrap_or("").to_string();
    let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    (version, code, body.to_string())
}

fn tls_setup<'a>(
    monolith: SocketAddr,
    tls_port: u16,
    dir: &Path,
    server_extra: &'a mut String,
) -> Setup<'a> {
    *server_extra = format!(
        "debug_headers = true\n\n[server.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"",
        dir.join("proxy.crt").display(),
        dir.join("proxy.key").display()
    );
    let mut s = Setup::new(vec![("monolith", vec![monolith])], "monolith");
    s.server_extra = server_extra;
    s
}

#[test]
fn https_serves_http2_and_http1_and_the_plain_listener_takes_h2c() {
    let pki_dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("banyan test CA");
    let ca_file = ca.write(pki_dir.path(), "ca");
    ca.server(&["localhost", "127.0.0.1"], pki_dir.path(), "proxy");
    let monolith = Upstream::start("monolith");
    let tls_port = free_port();
    let mut extra = String::new();
    let b = tls_setup(monolith.addr, tls_port, pki_dir.path(), &mut extra).start();
    let url = format!("https://localhost:{tls_port}/api/x");
    let resolve = format!("localhost:{tls_port}:127.0.0.1");
    let ca_arg = ca_file.display().to_string();
    wait_until("the TLS listener", || {
        curl(&["--cacert", &ca_arg, "--resolve", &resolve, &url]).1 == 200
    });
    let (v, code, body) = curl(&["--http2", "--cacert", &ca_arg, "--resolve", &resolve, &url]);
    assert_eq!((v.as_str(), code), ("2", 200), "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(echo["upstream"], "monolith");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    let (v, code, _) = curl(&[
        "--http1.1",
        "--cacert",
        &ca_arg,
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!((v.as_str(), code), ("1.1", 200));
    // The plain listener: HTTP/2 with prior knowledge, and HTTP/1.1, on one port.
    let plain = format!("http://{}/api/x", b.proxy);
    let (v, code, _) = curl(&["--http2-prior-knowledge", &plain]);
    assert_eq!((v.as_str(), code), ("2", 200));
    let (v, code, _) = curl(&[&plain]);
    assert_eq!((v.as_str(), code), ("1.1", 200));
    // A request shorter than the HTTP/2 preface is not left waiting for more bytes.
    let answer = common::raw_exchange(b.proxy, b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    // `check` names the certificate it would serve.
    let out = b.cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tls ") && text.contains("CN=localhost"),
        "{text}"
    );
}

/// One HTTPS exchange on an open connection; the answer's status.
fn exchange(tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> u16 {
    tls.write_all(b"GET /api/keep HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tls.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            }
        }
    }
}

#[test]
fn a_certificate_replaced_on_disk_is_served_to_new_connections_without_dropping_open_ones() {
    pki::install_crypto();
    let pki_dir = tempfile::tempdir().expect("dir");
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let new_ca_file = new_ca.write(pki_dir.path(), "new-ca");
    old_ca.server(&["localhost"], pki_dir.path(), "proxy");
    let monolith = Upstream::start("monolith");
    let tls_port = free_port();
    let mut extra = String::new();
    let _b = tls_setup(monolith.addr, tls_port, pki_dir.path(), &mut extra).start();

    // A keep-alive connection opened with the old certificate.
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(old_ca.roots())
            .with_no_client_auth(),
    );
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut open = rustls::StreamOwned::new(conn, tcp);
    assert_eq!(exchange(&mut open), 200);

    // Renewed: a certificate from another CA, written as a deploy tool would.
    let staged = pki_dir.path().join("staged");
    std::fs::create_dir_all(&staged).expect("dir");
    let renewed = new_ca.server(&["localhost"], &staged, "proxy");
    std::fs::write(pki_dir.path().join("proxy.key"), &renewed.key_pem).expect("key");
    std::fs::write(pki_dir.path().join("proxy.crt"), &renewed.cert_pem).expect("cert");
    let resolve = format!("localhost:{tls_port}:127.0.0.1");
    let url = format!("https://localhost:{tls_port}/api/x");
    let ca_arg = new_ca_file.display().to_string();
    wait_until("new connections to get the new certificate", || {
        curl(&["--cacert", &ca_arg, "--resolve", &resolve, &url]).1 == 200
    });
    // The connection opened before still works.
    assert_eq!(exchange(&mut open), 200);
}

fn route_to(target: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{target}\"\nmatch.path_prefix = \"/api/{target}\"\nlegacy = \"monolith\"\ntarget = \"{target}\"\npercent = 100\nfallback = false\n{extra}\n"
    )
}

/// Two upstreams at one address and SNI, one trusting the service's CA and one trusting
/// another: a connection the first verified must never carry the second's requests
/// (Pingora's own pool key leaves the CA out).
#[test]
fn upstreams_with_different_trust_never_share_a_connection() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("services CA");
    let ca_file = ca.write(dir.path(), "ca");
    let other_file = Ca::new("someone else's CA").write(dir.path(), "other");
    let service = Upstream::start_tls(
        "service",
        pki::server_config(
            &ca.server(&["orders.internal"], dir.path(), "service"),
            None,
        ),
    );
    let monolith = Upstream::start("monolith");
    let trusting = format!(
        "tls = {{ sni = \"orders.internal\", ca = \"{}\" }}",
        ca_file.display()
    );
    let distrusting = format!(
        "tls = {{ sni = \"orders.internal\", ca = \"{}\" }}",
        other_file.display()
    );
    let mut s = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("trusting", vec![service.addr]),
            ("distrusting", vec![service.addr]),
        ],
        "monolith",
    )
    .route_file(
        "routes.toml",
        route_to("trusting", "") + &route_to("distrusting", ""),
    );
    s.upstream_extra = vec![
        ("trusting", trusting.as_str()),
        ("distrusting", distrusting.as_str()),
    ];
    let b: Banyan = s.start();
    let get = |path: &str| common::http_request(b.proxy, "GET", path, None, "");
    for round in 0..3 {
        let (code, body) = get("/api/trusting/1");
        assert_eq!(code, 200, "round {round}: {body}");
        // A pooled connection to the same address and SNI now exists; it must not be
        // taken by an upstream that could not have verified it.
        let (code, body) = get("/api/distrusting/1");
        assert_eq!(code, 502, "round {round}: {body}");
    }
}

#[test]
fn upstream_tls_is_verified_and_mutual() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("services CA");
    let ca_file = ca.write(dir.path(), "ca");
    let other = Ca::new("someone else's CA");
    let clients = Ca::new("clients CA");
    let client = clients.client("banyan", dir.path(), "client");

    let verified = Upstream::start_tls(
        "verified",
        pki::server_config(
            &ca.server(&["orders.internal"], dir.path(), "verified"),
            None,
        ),
    );
    let foreign = Upstream::start_tls(
        "foreign",
        pki::server_config(
            &other.server(&["orders.internal"], dir.path(), "foreign"),
            None,
        ),
    );
    let mutual = Upstream::start_tls(
        "mutual",
        pki::server_config(
            &ca.server(&["orders.internal"], dir.path(), "mutual"),
            Some(&clients),
        ),
    );
    let monolith = Upstream::start("monolith");
    let tls = format!("sni = \"orders.internal\", ca = \"{}\"", ca_file.display());
    let with_client = format!(
        "tls = {{ {tls}, client_cert = \"{}\", client_key = \"{}\" }}",
        client.cert.display(),
        client.key.display()
    );
    let plain_tls = format!("tls = {{ {tls} }}");
    let health = "health = { path = \"/healthz\", interval = \"200ms\" }";
    let verified_extra = format!("{plain_tls}\n{health}");
    let foreign_extra = plain_tls.clone();
    let mutual_extra = format!("{with_client}\n{health}");
    // Checked separately: a failed check would take the peer out of "anonymous"'s
    // rotation, and that route's requests would then never reach it.
    let checked_extra = format!("{plain_tls}\n{health}");
    let mut s = Setup::new(
        vec![
            ("monolith", vec![monolith.addr]),
            ("verified", vec![verified.addr]),
            ("foreign", vec![foreign.addr]),
            ("mutual", vec![mutual.addr]),
            ("anonymous", vec![mutual.addr]),
            ("anonymous_checked", vec![mutual.addr]),
        ],
        "monolith",
    )
    .route_file(
        "routes.toml",
        route_to("verified", "")
            + &route_to("foreign", "")
            + &route_to("mutual", "")
            + &route_to("anonymous", "")
            + "[[route]]\nname = \"mirrored\"\nmatch.path_prefix = \"/api/mirrored\"\nlegacy = \"monolith\"\n\n[route.shadow]\npercent = 100\nupstream = \"mutual\"\n",
    );
    s.upstream_extra = vec![
        ("verified", verified_extra.as_str()),
        ("foreign", foreign_extra.as_str()),
        ("mutual", mutual_extra.as_str()),
        ("anonymous", plain_tls.as_str()),
        ("anonymous_checked", checked_extra.as_str()),
    ];
    s.capture_log = true;
    let b: Banyan = s.start();
    let get = |path: &str| common::http_request(b.proxy, "GET", path, None, "");

    let (code, body) = get("/api/verified/1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"upstream\":\"verified\""), "{body}");
    // The Host the upstream saw is the client's; SNI is what was configured.
    let (code, body) = get("/api/foreign/1");
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("upstream `foreign` is unavailable"), "{body}");
    wait_until("a log line about verification", || {
        b.log()
            .lines()
            .any(|l| l.contains("foreign") && l.contains("verification failed"))
    });
    let (code, body) = get("/api/mutual/1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"upstream\":\"mutual\""), "{body}");
    let (code, _) = get("/api/anonymous/1");
    assert_eq!(
        code, 502,
        "the service refuses a client without a certificate"
    );
    // Shadow copies too: mirrored over mutual TLS (and compared: the echoes differ).
    let (code, _) = get("/api/mirrored/1");
    assert_eq!(code, 200);
    b.wait_metric(
        "banyan_shadow_requests_total{outcome=\"mismatch\",route=\"mirrored\"}",
        1.0,
    );
    assert_eq!(
        b.metric("banyan_shadow_requests_total{outcome=\"error\",route=\"mirrored\"}"),
        None
    );
    // Health checks use the same TLS settings: passing with the client certificate,
    // failing without.
    let healthy = |u: &str| {
        b.metric(&format!(
            "banyan_upstream_healthy{{peer=\"{}\",upstream=\"{u}\"}}",
            mutual.addr
        ))
    };
    wait_until("the anonymous checks to fail", || {
        healthy("anonymous_checked") == Some(0.0)
    });
    wait_until("several checks", || mutual.hits() >= 3);
    assert_eq!(healthy("mutual"), Some(1.0));
    assert_eq!(
        b.metric(&format!(
            "banyan_upstream_healthy{{peer=\"{}\",upstream=\"verified\"}}",
            verified.addr
        )),
        Some(1.0)
    );
}

#[test]
fn check_reads_pkcs8_pkcs1_and_sec1_keys_and_refuses_a_mismatched_pair() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // EC key: PKCS#8 and SEC1; RSA key: PKCS#1.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ec8.key",
        "-out",
        "ec.crt",
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
    ]);
    openssl(&["ec", "-in", "ec8.key", "-out", "sec1.key"]);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "rsa8.key",
        "-out",
        "rsa.crt",
        "-subj",
        "/CN=localhost",
        "-days",
        "2",
    ]);
    openssl(&[
        "rsa",
        "-in",
        "rsa8.key",
        "-out",
        "pkcs1.key",
        "-traditional",
    ]);
    let sec1 = std::fs::read_to_string(d.join("sec1.key")).expect("sec1");
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"), "{sec1}");
    let pkcs1 = std::fs::read_to_string(d.join("pkcs1.key")).expect("pkcs1");
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");

    let monolith = Upstream::start("monolith");
    for (cert, key, ok) in [
        ("ec.crt", "ec8.key", true),
        ("ec.crt", "sec1.key", true),
        ("rsa.crt", "pkcs1.key", true),
        ("rsa.crt", "ec8.key", false),
    ] {
        let extra = format!(
            "[server.tls]\nlisten = \"127.0.0.1:{}\"\ncert = \"{}\"\nkey = \"{}\"",
            free_port(),
            d.join(cert).display(),
            d.join(key).display()
        );
        let mut s = Setup::new(vec![("monolith", vec![monolith.addr])], "monolith");
        s.server_extra = &extra;
        let folder = s.write(
            ([127, 0, 0, 1], free_port()).into(),
            ([127, 0, 0, 1], free_port()).into(),
        );
        let out = common::banyan_cmd(folder.path(), &["check"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), ok, "{cert} + {key}: {text}");
        if !ok {
            assert!(text.contains("do not belong together"), "{text}");
        }
    }
}
