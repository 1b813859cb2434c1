//! An HTTP/1.1 upstream over TLS is held to the same framing rules as a plain one: banyan
//! speaks TLS below Pingora's client and follows the answers' bytes, so an answer with
//! `Content-Length` beside `Transfer-Encoding` is refused with a 502 (Pingora alone would
//! relay it re-chunked), its connection dropped, and clean connections are kept.
//! The upstream is a raw TLS server that numbers its connections.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::pki::{self, Ca};
use common::upstream::Upstream;
use common::Setup;

/// Each request the upstream read: the connection it came on, and its path.
type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// Answers each request on a connection: `/api/raw/r/cl-te` with a length beside chunked
/// framing, anything else a keep-alive 200 naming the connection; records every request.
fn raw_tls_upstream(config: Arc<rustls::ServerConfig>) -> (std::net::SocketAddr, Seen) {
    let listener = common::bind_loopback();
    let addr = listener.local_addr().expect("addr");
    let ids = Arc::new(AtomicU64::new(0));
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let id = ids.fetch_add(1, Ordering::Relaxed);
            let config = Arc::clone(&config);
            let record = Arc::clone(&record);
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
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        record
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((id, path));
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
    (addr, seen)
}

#[test]
fn answers_over_tls_are_followed_refused_and_kept_like_plain_ones() {
    pki::install_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("services CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (raw, seen) = raw_tls_upstream(pki::server_config(
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
    let conns = || -> Vec<(u64, String)> { seen.lock().unwrap_or_else(|e| e.into_inner()).clone() };

    // Clean answers: the TLS connection is kept and carries the next requests.
    for i in 0..5 {
        let (code, body) = get(&format!("/api/raw/a{i}"));
        assert_eq!(code, 200, "{body}");
    }
    let used: std::collections::BTreeSet<u64> = conns().iter().map(|(c, _)| *c).collect();
    assert!(used.len() < 5, "connections kept and reused: {:?}", conns());

    let (code, body) = get("/api/raw/r/cl-te");
    assert_eq!(code, 502, "refused, not relayed re-chunked: {body}");
    b.wait_metric(
        "banyan_bad_responses_total{reason=\"length_and_encoding\"}",
        1.0,
    );
    let refused_on = conns()
        .iter()
        .find(|(_, p)| p == "/api/raw/r/cl-te")
        .map(|(c, _)| *c)
        .expect("the upstream saw it");

    // The refused answer's connection is never used again.
    for i in 0..5 {
        let (code, body) = get(&format!("/api/raw/b{i}"));
        assert_eq!(code, 200, "{body}");
    }
    let after: Vec<(u64, String)> = conns()
        .into_iter()
        .skip_while(|(_, p)| p != "/api/raw/r/cl-te")
        .skip(1)
        .collect();
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(
        after.iter().all(|(c, _)| *c != refused_on),
        "the refused connection carried another request: {after:?}"
    );
}
