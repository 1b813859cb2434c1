//! An HTTP/1.1 upstream over TLS is held to the same framing rules as a plain one: banyan
//! speaks TLS below Pingora's client and follows the answers' bytes, so an answer with
//! `Content-Length` beside `Transfer-Encoding` is refused with a 502 (Pingora alone would
//! relay it re-chunked), its connection dropped, and clean connections are kept.
//! The upstream is a raw TLS server that numbers its connections.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::pki::{self, Ca};
use common::upstream::Upstream;
use common::Setup;

/// Answers each request on a connection: `/api/raw/r/cl-te` with a length beside chunked
/// framing, anything else a keep-alive 200 naming the connection.
fn raw_tls_upstream(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = common::bind_loopback();
    let addr = listener.local_addr().expect("addr");
    let ids = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let Ok(tls) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(tls, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let answer = if head.starts_with("GET /api/raw/r/cl-te ") {
                            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string()
                        } else {
                            let body = format!("conn {id}");
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        };
                        if s.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn answers_over_tls_are_followed_refused_and_kept_like_plain_ones() {
    pki::install_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("services CA");
    let ca_file = ca.write(dir.path(), "ca");
    let raw = raw_tls_upstream(pki::server_config(
        &ca.server(&["orders.internal"], dir.path(), "raw"),
        None,
    ));
    let monolith = Upstream::start("monolith");
    let tls = format!(
        "tls = {{ sni = \"orders.internal\", ca = \"{}\" }}",
        ca_file.display()
    );
    let mut s = Setup::new(
        vec![("monolith", vec![monolith.addr]), ("raw", vec![raw])],
        "monolith",
    )
    .route_file(
        "routes.toml",
        "[[route]]\nname = \"raw\"\nmatch.path_prefix = \"/api/raw\"\nlegacy = \"monolith\"\ntarget = \"raw\"\npercent = 100\nfallback = false\n",
    );
    s.upstream_extra = vec![("raw", tls.as_str())];
    let b = s.start();
    let get = |path: &str| common::http_request(b.proxy, "GET", path, None, "");

    let (code, first) = get("/api/raw/a");
    assert_eq!(code, 200, "{first}");
    let (code, again) = get("/api/raw/b");
    assert_eq!(
        (code, again.as_str()),
        (200, first.as_str()),
        "kept and reused"
    );

    let (code, body) = get("/api/raw/r/cl-te");
    assert_eq!(code, 502, "refused, not relayed re-chunked: {body}");
    b.wait_metric(
        "banyan_bad_responses_total{reason=\"length_and_encoding\"}",
        1.0,
    );

    // The refused answer's connection is gone; a new one serves what follows.
    let (code, after) = get("/api/raw/c");
    assert_eq!(code, 200, "{after}");
    assert_ne!(after, first, "a new connection after the refusal");
    let mut probe = TcpStream::connect(b.proxy).expect("connect");
    probe
        .write_all(b"GET /api/raw/d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut out = String::new();
    let _ = probe.read_to_string(&mut out);
    assert!(out.ends_with(&after), "kept again: {out}");
}
