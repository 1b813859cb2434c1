//! banyan's own HTTP/1.1 path against a scripted upstream that writes exact bytes: kept
//! upstream connections reused, and replaced when the upstream drops one; every response
//! framing relayed intact; pipelined requests answered in order.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{read_response, Setup, Transport};

/// A raw HTTP/1.1 upstream on its own threads: reads request heads (no bodies) and writes
/// canned bytes by path. `/drop-next` answers, then closes that connection unanswered at
/// its next request, as a server whose keep-alive timer fires just then.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
}

fn answer(path: &str, head_request: bool) -> (Vec<u8>, bool) {
    let fixed: &[u8] = match path {
        "/until-close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close body",
        "/no-content" => b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n",
        "/trailers" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
        "/head-len" if head_request => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        _ => b"",
    };
    if !fixed.is_empty() {
        return (fixed.to_vec(), path == "/until-close");
    }
    let body = format!("path={path}");
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nKeep-Alive: timeout=60\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    (out, false)
}

fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut drop_next = false;
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(n) if n > 0 => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        if drop_next {
            return;
        }
        let mut words = head.split(' ');
        let method = words.next().unwrap_or("");
        let path = words.next().unwrap_or("");
        drop_next = path == "/drop-next";
        let (bytes, close) = answer(path, method == "HEAD");
        if s.write_all(&bytes).is_err() || close {
            return;
        }
    }
}

impl Scripted {
    fn start() -> Scripted {
        let listener = common::bind_loopback();
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || serve(s));
            }
        });
        Scripted { addr, accepted }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Reads until `want` bytes arrived (or the connection closed).
fn read_exactly(s: &mut TcpStream, want: usize) -> String {
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match s.read(&mut buf[got..]) {
            Ok(n) if n > 0 => got += n,
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf[..got]).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: shop\r\nX-Request-Id: rid-{path}\r\n\r\n")
}

#[test]
fn kept_upstream_connections_are_reused_and_dropped_ones_replaced() {
    let up = Scripted::start();
    let banyan = Setup::new(vec![("legacy", vec![up.addr])], "legacy").start();
    let mut s = connect(banyan.proxy);
    for i in 0..30 {
        s.write_all(get(&format!("/kept/{i}")).as_bytes())
            .expect("write");
        let (head, body) = read_response(&mut s).expect("an answer on the kept connection");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(body, format!("path=/kept/{i}"));
        assert!(
            !head.to_ascii_lowercase().contains("keep-alive: timeout"),
            "hop-by-hop field relayed: {head}"
        );
    }
    assert_eq!(
        up.accepted(),
        1,
        "30 sequential requests share one kept upstream connection"
    );
    // Each answer is the last on its upstream connection, but the upstream only says so
    // by closing it when the next request arrives: that request goes again on a new one.
    for i in 0..10 {
        s.write_all(get("/drop-next").as_bytes()).expect("write");
        let (head, body) = read_response(&mut s).unwrap_or_else(|| panic!("answer {i}"));
        assert!(head.starts_with("HTTP/1.1 200 OK"), "request {i}: {head}");
        assert_eq!(body, "path=/drop-next");
    }
    assert_eq!(
        up.accepted(),
        10,
        "the first went on the kept connection, each next one again on a new one"
    );
    // Counted after the answer is written: wait for it.
    banyan.wait_metric(
        "banyan_requests_total{backend=\"legacy\",route=\"_default\",status_class=\"2xx\"}",
        40.0,
    );
}

/// A chunked answer, head and body, up to its last chunk (no trailer fields).
fn read_to_last_chunk(s: &mut TcpStream) -> String {
    let mut got = String::new();
    while !got.ends_with("\r\n0\r\n\r\n") {
        let more = read_exactly(s, 1);
        assert!(!more.is_empty(), "closed after {got:?}");
        got.push_str(&more);
    }
    got
}

crate::both_transports! {
fn every_response_framing_reaches_the_client_intact(t) {
    let up = Scripted::start();
    let banyan = Setup::new(vec![("legacy", vec![up.addr])], "legacy")
        .via(t)
        .start();
    let mut s = connect(banyan.proxy);

    // HEAD: a length but no body; the connection carries on.
    s.write_all(b"HEAD /head-len HTTP/1.1\r\nHost: shop\r\n\r\n")
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).expect("read"), 1, "closed after {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Length: 5\r\n"), "{head}");

    s.write_all(get("/no-content").as_bytes()).expect("write");
    let (head, body) = read_response(&mut s).expect("204");
    assert!(head.starts_with("HTTP/1.1 204 No Content"), "{head}");
    assert!(head.contains("X-Kind: none"), "{head}");
    assert_eq!(body, "");

    // 1xx the client did not ask for are not relayed.
    s.write_all(get("/continue").as_bytes()).expect("write");
    let (head, body) = read_response(&mut s).expect("200 after 100");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "done");

    // Chunked with an extension and a trailer: re-chunked by banyan, the same data in
    // chunks of its own, without the extension or the trailer.
    s.write_all(get("/trailers").as_bytes()).expect("write");
    let got = read_to_last_chunk(&mut s);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("Transfer-Encoding: chunked\r\n"), "{got}");
    // The upstream's field as it wrote it (Pingora writes the upstream's names in lower
    // case).
    let id_field = match t {
        Transport::Banyan => "X-Request-Id: rid-/trailers\r\n",
        Transport::Pingora => "x-request-id: rid-/trailers\r\n",
    };
    assert!(got.contains(id_field), "{got}");
    let (_, mut body) = got.split_once("\r\n\r\n").expect("a head");
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let n = usize::from_str_radix(size, 16).expect("a bare hex size");
        if n == 0 {
            assert_eq!(rest, "\r\n", "no trailer fields");
            break;
        }
        data.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").expect("CRLF after the data");
    }
    assert_eq!(data, "hello world");

    // The next request on the same connection is answered: the chunked body ended where
    // its framing said.
    s.write_all(get("/after").as_bytes()).expect("write");
    let (head, body) = read_response(&mut s).expect("after chunked");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "path=/after");

    // A body delimited by the upstream's close: the client gets all of it. banyan's path
    // relays it as it came and closes; Pingora re-chunks it and keeps the connection.
    s.write_all(get("/until-close").as_bytes()).expect("write");
    if t == Transport::Banyan {
        let mut rest = String::new();
        s.read_to_string(&mut rest).expect("read to close");
        let (head, body) = rest.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Connection: close"), "{head}");
        assert_eq!(body, "until close body");
    } else {
        let got = read_to_last_chunk(&mut s);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("\r\nuntil close body\r\n"), "{got}");
    }
}
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Scripted::start();
    let banyan = Setup::new(vec![("legacy", vec![up.addr])], "legacy").start();
    let mut s = connect(banyan.proxy);
    let mut all = String::new();
    for p in ["/p1", "/p2"] {
        all.push_str(&get(p));
    }
    all.push_str("GET /p3 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
    s.write_all(all.as_bytes()).expect("write");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read to close");
    let bodies: Vec<&str> = got
        .split("HTTP/1.1 200 OK")
        .skip(1)
        .filter_map(|r| r.split_once("\r\n\r\n").map(|(_, b)| b))
        .collect();
    assert_eq!(bodies, ["path=/p1", "path=/p2", "path=/p3"], "{got}");
}
