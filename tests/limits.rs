//! Slow and greedy clients: a head trickled past `client_header_timeout`, a kept-alive
//! connection idle past `keepalive_timeout`, a client that stops reading an answer past
//! `send_timeout`, and connections beyond `max_connections`. Each limit is set short and
//! the test waits for the proxy to act, never for a fixed time.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{self, Ca};
use common::upstream::Upstream;
use common::{free_port, wait_until, Banyan, Setup, DEADLINE};

fn start(limits: &'static str) -> (Upstream, Banyan) {
    let up = Upstream::start("legacy");
    let mut s = Setup::new(vec![("legacy", vec![up.addr])], "legacy");
    s.server_extra = limits;
    let b = s.start();
    (up, b)
}

fn connect(b: &Banyan) -> TcpStream {
    let s = TcpStream::connect(b.proxy).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s
}

/// Reads until the proxy closes the connection; what it sent.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A POST through either path: a body larger than the first read goes through Pingora's.
fn post(b: &Banyan, transport: &str, target: &str, extra: &str) -> TcpStream {
    let mut s = connect(b);
    let body = if transport == "fast" {
        String::new()
    } else {
        "x".repeat(6000)
    };
    write!(
        s,
        "POST {target} HTTP/1.1\r\nHost: shop\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    s
}

fn served(b: &Banyan) -> bool {
    common::http_get(b.proxy, "/ok").is_some_and(|(code, _)| code == 200)
}

#[test]
fn a_trickled_head_is_cut_at_client_header_timeout_and_others_are_served() {
    let (_up, b) = start("client_header_timeout = \"300ms\"");
    let mut slow = connect(&b);
    slow.set_nonblocking(false).expect("blocking");
    let started = Instant::now();
    // One byte at a time, as a slowloris does: the proxy must give up on the head while
    // bytes still arrive (a per-read timeout never would).
    let mut head = b"GET /slow HTTP/1.1\r\nHost: shop\r\nX-Padding: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1000));
    let mut cut = false;
    for b in head.iter() {
        if slow.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut probe = [0u8; 512];
        slow.set_nonblocking(true).expect("nonblocking");
        let read = slow.read(&mut probe);
        slow.set_nonblocking(false).expect("blocking");
        match read {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(n) => {
                let text = String::from_utf8_lossy(&probe[..n]).into_owned();
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                cut = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        cut,
        "the trickled head was still being read after {:?}",
        started.elapsed()
    );
    assert!(served(&b), "other clients are served");
    b.wait_metric("banyan_client_timeouts_total{phase=\"header\"}", 1.0);
    // A connection that sends nothing at all is closed too.
    let mut silent = connect(&b);
    assert_eq!(read_to_close(&mut silent), "");
    b.wait_metric("banyan_client_timeouts_total{phase=\"header\"}", 2.0);
}

/// Writes `bytes` one at a time until the proxy ends the connection; whether it did.
fn trickle_until_cut(conn: &mut dyn Write, bytes: &[u8]) -> bool {
    for b in bytes {
        if conn.write_all(&[*b]).and_then(|()| conn.flush()).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_trickled_head_over_tls_is_cut_at_client_header_timeout() {
    pki::install_crypto();
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("limits CA");
    let cert = ca.server(&["localhost"], dir.path(), "proxy");
    let port = free_port();
    let extra = format!(
        "client_header_timeout = \"300ms\"\n\n[server.tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"",
        cert.cert.display(),
        cert.key.display()
    );
    let up = Upstream::start("legacy");
    let mut s = Setup::new(vec![("legacy", vec![up.addr])], "legacy");
    s.server_extra = Box::leak(extra.into_boxed_str());
    s.capture_log = true;
    let b = s.start();
    wait_until("the TLS listener", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(ca.roots())
            .with_no_client_auth(),
    );
    let tls = || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        tcp.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::clone(&config), name).expect("tls");
        rustls::StreamOwned::new(conn, tcp)
    };
    let mut head = b"GET /slow HTTP/1.1\r\nHost: shop\r\nX-Padding: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1000));
    // The first head, and a second one on a kept-alive connection: each must be whole
    // within the timeout, however steadily its bytes arrive.
    let mut first = tls();
    assert!(
        trickle_until_cut(&mut first, &head),
        "the first head was still read"
    );
    b.wait_metric("banyan_client_timeouts_total{phase=\"header\"}", 1.0);
    let mut second = tls();
    second
        .write_all(b"GET /ok HTTP/1.1\r\nHost: shop\r\n\r\n")
        .expect("write");
    let (status, _) = common::read_response(&mut second).expect("an answer");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        trickle_until_cut(&mut second, &head),
        "the second head was still read"
    );
    b.wait_metric("banyan_client_timeouts_total{phase=\"header\"}", 2.0);
    // A TLS client that sends nothing after the handshake is closed too.
    let mut silent = tls();
    let mut out = Vec::new();
    let _ = silent.read_to_end(&mut out);
    assert!(out.is_empty());
    b.wait_metric("banyan_client_timeouts_total{phase=\"header\"}", 3.0);
    // Counted, not logged: a flood of slow heads must not flood the log.
    let log = std::fs::read_to_string(b.dir.path().join("banyan.log")).unwrap_or_default();
    assert!(
        log.contains("banyan serving on"),
        "the log is captured: {log}"
    );
    assert!(!log.contains("took too long"), "{log}");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_keepalive_timeout() {
    let (_up, b) = start("keepalive_timeout = \"300ms\"");
    for transport in ["fast", "pingora"] {
        let mut s = post(&b, transport, "/idle", "Keep-Alive: timeout=600\r\n");
        let (head, _) = common::read_response(&mut s).expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{transport}: {head}");
        // The client's own Keep-Alive asks for ten minutes; banyan's limit wins.
        assert_eq!(read_to_close(&mut s), "", "{transport}");
    }
}

/// A plain connection has one timer: the upstream read last set it to its own shorter
/// limit, so while the client idles the timer fires early. That must not end the
/// connection before `keepalive_timeout`.
#[test]
fn an_idle_connection_outlives_its_last_upstream_read_timeout() {
    let up = Upstream::start("legacy");
    let mut s = Setup::new(vec![("legacy", vec![up.addr])], "legacy");
    s.server_extra = "keepalive_timeout = \"4s\"";
    s.upstream_extra = vec![("legacy", "read_timeout = \"1s\"")];
    let b = s.start();
    let mut conn = connect(&b);
    for round in 0..2 {
        if round == 1 {
            // Past the read timeout twice over, well within the keep-alive timeout.
            std::thread::sleep(Duration::from_millis(2500));
        }
        write!(conn, "GET /again HTTP/1.1\r\nHost: shop\r\n\r\n").expect("write");
        let (head, _) = common::read_response(&mut conn).expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
    }
    let idle_from = Instant::now();
    assert_eq!(read_to_close(&mut conn), "", "closed without a word");
    assert!(
        idle_from.elapsed() >= Duration::from_secs(3),
        "closed after {:?}, before keepalive_timeout",
        idle_from.elapsed()
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_at_send_timeout() {
    let (_up, b) = start("send_timeout = \"300ms\"");
    for transport in ["fast", "pingora"] {
        let total: u64 = 256 * 1024 * 1024;
        let mut s = post(&b, transport, &format!("/download?bytes={total}"), "");
        // Read nothing until the proxy gives up on this client.
        let series = "banyan_client_timeouts_total{phase=\"send\"}";
        let before = b.metric(series).unwrap_or(0.0);
        b.wait_metric(series, before + 1.0);
        // What was buffered arrives, then the close: far less than the whole answer.
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        assert!(
            got < total / 4,
            "{transport}: the client was sent {got} bytes"
        );
        assert!(served(&b), "{transport}: the proxy still serves");
    }
}

#[test]
fn connections_beyond_max_connections_are_refused_and_counted() {
    let (_up, b) = start("max_connections = 3");
    wait_until("the readiness probes' connections to close", || {
        b.metric("banyan_connections_active") == Some(0.0)
    });
    let held: Vec<TcpStream> = (0..3).map(|_| connect(&b)).collect();
    wait_until("three open connections", || {
        b.metric("banyan_connections_active") == Some(3.0)
    });
    let mut fourth = connect(&b);
    let _ = fourth.write_all(b"GET /x HTTP/1.1\r\nHost: shop\r\n\r\n");
    assert_eq!(read_to_close(&mut fourth), "", "closed unanswered");
    b.wait_metric("banyan_connections_refused_total", 1.0);
    drop(held);
    wait_until("a place to free up", || served(&b));
}

/// Each data-path thread accepts on its own copy of the listening socket, and the first
/// awake wins; a thread that accepted a connection while the other served fewer hands it
/// over. However the accepts fall, the connections end up shared evenly, each answered
/// on the thread it was handed to, and the per-thread counts go back to zero.
#[test]
fn connections_are_shared_out_evenly_over_the_data_path_threads() {
    let (_up, b) = start("");
    let on = |t: usize| format!("banyan_thread_connections{{thread=\"{t}\"}}");
    wait_until("the readiness probes' connections to close", || {
        b.metric("banyan_connections_active") == Some(0.0)
    });
    let mut held = Vec::new();
    for i in 0..16 {
        let mut s = connect(&b);
        write!(s, "GET /held/{i} HTTP/1.1\r\nHost: shop\r\n\r\n").expect("write");
        let (head, _) = common::read_response(&mut s).expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "connection {i}: {head}");
        held.push(s);
    }
    b.wait_metric(&on(0), 8.0);
    b.wait_metric(&on(1), 8.0);
    for (i, s) in held.iter_mut().enumerate() {
        write!(s, "GET /again/{i} HTTP/1.1\r\nHost: shop\r\n\r\n").expect("write");
        let (head, _) = common::read_response(s).expect("a second answer");
        assert!(head.starts_with("HTTP/1.1 200"), "connection {i}: {head}");
    }
    drop(held);
    b.wait_metric(&on(0), 0.0);
    b.wait_metric(&on(1), 0.0);
}
