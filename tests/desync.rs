//! The desync suite: hostile HTTP/1.1 byte streams sent to banyan, through its own path
//! (plain listener) and Pingora's (the TLS listener), against an upstream that records
//! every request it framed on its own (`common::recorder`). Each case checks that the
//! client got exactly the answers expected, that the upstream saw exactly the requests
//! banyan answered and logged (nothing smuggled), and that the next client, on the same
//! pooled upstream connection, gets its own answer.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::pki::{self, Ca};
use common::recorder::Recorder;
use common::{free_port, wait_until, Banyan, Setup};

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// banyan's own HTTP/1.1 path: the plain listener.
    Fast,
    /// Pingora's parser and proxy: the TLS listener.
    Pingora,
}

struct World {
    up: Recorder,
    banyan: Banyan,
    tls_port: u16,
    tls: Arc<rustls::ClientConfig>,
    _pki: tempfile::TempDir,
    logged: usize,
}

impl World {
    fn start() -> World {
        pki::install_crypto();
        let pki_dir = tempfile::tempdir().expect("dir");
        let ca = Ca::new("desync CA");
        let cert = ca.server(&["localhost"], pki_dir.path(), "proxy");
        let up = Recorder::start();
        let tls_port = free_port();
        let extra = format!(
            "access_log = \"access.log\"\n\n[server.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"{}\"\nkey = \"{}\"",
            cert.cert.display(),
            cert.key.display()
        );
        let extra: &'static str = Box::leak(extra.into_boxed_str());
        let mut s = Setup::new(vec![("legacy", vec![up.addr])], "legacy");
        s.server_extra = extra;
        let banyan = s.start();
        let tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(ca.roots())
                .with_no_client_auth(),
        );
        let w = World {
            up,
            banyan,
            tls_port,
            tls,
            _pki: pki_dir,
            logged: 0,
        };
        wait_until("the TLS listener", || {
            TcpStream::connect(("127.0.0.1", w.tls_port)).is_ok()
        });
        w
    }

    fn connect(&self, t: Transport) -> Box<dyn Conn> {
        let addr: SocketAddr = match t {
            Transport::Fast => self.banyan.proxy,
            Transport::Pingora => ([127, 0, 0, 1], self.tls_port).into(),
        };
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        match t {
            Transport::Fast => Box::new(tcp),
            Transport::Pingora => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let conn = rustls::ClientConnection::new(Arc::clone(&self.tls), name).expect("tls");
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        }
    }

    /// Access log lines written since the last call (waiting for `n` of them).
    fn new_log_lines(&mut self, n: usize) -> Vec<serde_json::Value> {
        let path = self.banyan.path("access.log");
        let read = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        let want = self.logged + n;
        wait_until("the access log", || read().len() >= want);
        let all = read();
        let new = all[self.logged..].to_vec();
        self.logged = all.len();
        new
    }
}

/// What a client read: each whole answer's status (1xx left out), whether the connection
/// closed after them, and every byte.
struct Answers {
    statuses: Vec<u16>,
    closed: bool,
    raw: Vec<u8>,
}

/// The length of the whole answer at the start of `buf`, and its status; `None` while
/// incomplete. A body without a length runs to the close.
fn answer_len(buf: &[u8], closed: bool) -> Option<(usize, u16)> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut hs);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = resp.code?;
    let field = |n: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(n))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((head, status));
    }
    if field("transfer-encoding").is_some() {
        let end = buf[head..].windows(5).position(|w| w == b"0\r\n\r\n")?;
        return Some((head + end + 5, status));
    }
    match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => (buf.len() >= head + n).then_some((head + n, status)),
        None => closed.then_some((buf.len(), status)),
    }
}

/// Reads answers until `n` whole ones came (and, with `to_close`, the close too).
fn read_answers(conn: &mut dyn Conn, n: usize, to_close: bool) -> Answers {
    let mut raw = Vec::new();
    let mut at = 0;
    let mut statuses = Vec::new();
    let mut closed = false;
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((len, status)) = answer_len(&raw[at..], closed) {
            at += len;
            if status >= 200 {
                statuses.push(status);
            }
            if len == 0 {
                break;
            }
        }
        if closed || (statuses.len() >= n && !to_close) {
            return Answers {
                statuses,
                closed,
                raw,
            };
        }
        match conn.read(&mut chunk) {
            Ok(k) if k > 0 => raw.extend_from_slice(&chunk[..k]),
            _ => closed = true,
        }
    }
}

/// One case: bytes from the client; the statuses it must get; the requests the upstream
/// must see ("METHOD target body-length"); whether the connection then closes.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    answers: Vec<u16>,
    sees: Vec<&'static str>,
    closes: bool,
    /// On Pingora's path a malformed body is found after routing: the request is logged
    /// with the 400 it got (and never reached the upstream whole).
    body_refused: bool,
    /// A body too long for the fast path to wait for goes to Pingora on both transports.
    refused_late_on_fast: bool,
    /// What Pingora's path answers and forwards instead, where its limits differ.
    on_pingora: Option<(Vec<u16>, Vec<&'static str>, bool)>,
}

fn case(
    name: &'static str,
    raw: &str,
    answers: &[u16],
    sees: &[&'static str],
    closes: bool,
) -> Case {
    Case {
        name,
        raw: raw.as_bytes().to_vec(),
        answers: answers.to_vec(),
        sees: sees.to_vec(),
        closes,
        body_refused: false,
        refused_late_on_fast: false,
        on_pingora: None,
    }
}

/// A request that must never reach the upstream: sent as the body of the ones refused.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// A chunked POST whose body (`chunks`, then a smuggled request) banyan refuses: 400,
/// nothing forwarded, the connection closed.
fn bad_chunks(name: &'static str, chunks: &str) -> Case {
    let raw = format!(
        "POST /c/x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{SMUGGLED}"
    );
    Case {
        body_refused: true,
        ..case(name, &raw, &[400], &[], true)
    }
}

/// The cases both transports must treat alike.
fn cases() -> Vec<Case> {
    let smuggled = SMUGGLED;
    vec![
        case(
            "Connection nominates Content-Length",
            &format!("POST /c/conn-cl HTTP/1.1\r\nHost: shop\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
            &[200],
            &["POST /c/conn-cl 35"],
            false,
        ),
        case(
            "Connection nominates Host and Transfer-Encoding",
            "POST /c/conn-host HTTP/1.1\r\nHost: shop\r\nConnection: Host, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            &[200],
            &["POST /c/conn-host 5"],
            false,
        ),
        case("two equal Content-Length", "POST /c/x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", &[400], &[], true),
        case("a Content-Length list", "POST /c/x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5, 5\r\n\r\nhello", &[400], &[], true),
        case("a signed Content-Length", "POST /c/x HTTP/1.1\r\nHost: shop\r\nContent-Length: +5\r\n\r\nhello", &[400], &[], true),
        case(
            "Content-Length beside Transfer-Encoding",
            &format!("POST /c/x HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            &[400],
            &[],
            true,
        ),
        case(
            "two Transfer-Encoding fields",
            "POST /c/x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            &[400],
            &[],
            true,
        ),
        case("a coding other than chunked", "POST /c/x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", &[501], &[], true),
        case("Transfer-Encoding in HTTP/1.0", "POST /c/x HTTP/1.0\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[400], &[], true),
        case("two Host fields", "GET /c/x HTTP/1.1\r\nHost: shop\r\nHost: evil\r\n\r\n", &[400], &[], true),
        case("HTTP/1.1 without Host", "GET /c/x HTTP/1.1\r\nX-A: 1\r\n\r\n", &[400], &[], true),
        case("a Host with userinfo", "GET /c/x HTTP/1.1\r\nHost: user@shop\r\n\r\n", &[400], &[], true),
        case("an obs-fold line", "GET /c/x HTTP/1.1\r\nHost: shop\r\nX-A: a\r\n b\r\n\r\n", &[400], &[], true),
        case("a bare CR in a value", "GET /c/x HTTP/1.1\r\nHost: shop\r\nX-A: a\rb\r\n\r\n", &[400], &[], true),
        case("a NUL in a value", "GET /c/x HTTP/1.1\r\nHost: shop\r\nX-A: a\0b\r\n\r\n", &[400], &[], true),
        case("a space before the colon", "POST /c/x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", &[400], &[], true),
        bad_chunks("a chunk size that is not hex", "zz\r\n"),
        bad_chunks("a CR inside a chunk extension", "5;a\rb\r\nhello\r\n0\r\n\r\n"),
        bad_chunks("a LF inside a chunk extension", "5;a\nb\r\nhello\r\n0\r\n\r\n"),
        Case {
            refused_late_on_fast: true,
            ..bad_chunks(
                "a CR inside a chunk extension after 6 KiB of body",
                &format!("1800\r\n{}\r\n5;a\rb\r\nhello\r\n0\r\n\r\n", "a".repeat(0x1800)),
            )
        },
        case(
            "a chunked body with a pipelined request behind it",
            "POST /c/chunked HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /c/behind HTTP/1.1\r\nHost: shop\r\n\r\n",
            &[200, 200],
            &["POST /c/chunked 5", "GET /c/behind 0"],
            false,
        ),
        case(
            "a length-framed body with a pipelined request behind it",
            "POST /c/length HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhelloGET /c/next HTTP/1.1\r\nHost: shop\r\n\r\n",
            &[200, 200],
            &["POST /c/length 5", "GET /c/next 0"],
            false,
        ),
        case(
            "a zero-padded length",
            "POST /c/padded HTTP/1.1\r\nHost: shop\r\nContent-Length: 005\r\n\r\nhello",
            &[200],
            &["POST /c/padded 5"],
            false,
        ),
        case(
            "bare LF line endings",
            "GET /c/lf HTTP/1.1\nHost: shop\n\n",
            &[200],
            &["GET /c/lf 0"],
            false,
        ),
        case(
            "an upgrade the upstream declines",
            "GET /c/ws HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            &[200],
            &["GET /c/ws 0"],
            false,
        ),
        Case {
            // banyan reads heads up to 64 KiB on plain listeners; Pingora up to 1 MiB.
            on_pingora: Some((vec![200], vec!["GET /c/big 0"], false)),
            ..case(
                "a 70 KiB head",
                &format!("GET /c/big HTTP/1.1\r\nHost: shop\r\nX-Big: {}\r\n\r\n", "b".repeat(70 * 1024)),
                &[431],
                &[],
                true,
            )
        },
        case(
            "Expect: 100-continue",
            "POST /c/expect HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
            &[200],
            &["POST /c/expect 5"],
            false,
        ),
    ]
}

/// The requests the upstream saw, as lines.
fn lines(up: &Recorder) -> Vec<String> {
    up.take().iter().map(|s| s.line()).collect()
}

/// After each case: a new client's request must get its own answer (an upstream
/// connection the case left poisoned would answer it with something else). Returns the
/// upstream connection it came on.
fn probe(w: &mut World, t: Transport, n: usize) -> u64 {
    let path = format!("/probe/{n}");
    let mut c = w.connect(t);
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
        .expect("write");
    let got = read_answers(&mut *c, 1, false);
    let text = String::from_utf8_lossy(&got.raw).into_owned();
    assert_eq!(got.statuses, [200], "{t:?} probe after case {n}: {text}");
    assert!(
        text.ends_with(&format!("GET {path} 0 host=shop")),
        "{t:?} probe after case {n}: {text}"
    );
    let seen = w.up.take();
    let seen_lines: Vec<String> = seen.iter().map(|s| s.line()).collect();
    assert_eq!(seen_lines, [format!("GET {path} 0")], "{t:?} probe {n}");
    let logged = w.new_log_lines(1);
    assert_eq!(logged[0]["path"], path.as_str());
    let transport = match t {
        Transport::Fast => "fast",
        Transport::Pingora => "pingora",
    };
    assert_eq!(logged[0]["transport"], transport, "probe {n}");
    seen[0].conn
}

fn run(w: &mut World, t: Transport, n: usize, c: &Case) {
    let (answers, sees, closes) = match (&c.on_pingora, t) {
        (Some((a, s, cl)), Transport::Pingora) => (a.clone(), s.clone(), *cl),
        _ => (c.answers.clone(), c.sees.clone(), c.closes),
    };
    let mut conn = w.connect(t);
    conn.write_all(&c.raw).expect("write");
    let got = read_answers(&mut *conn, answers.len(), closes);
    let mut text = String::from_utf8_lossy(&got.raw).into_owned();
    text.truncate(2000);
    let what = format!("{t:?} case {n} ({}): {text}", c.name);
    assert_eq!(got.statuses, answers, "{what}");
    if closes {
        assert!(got.closed, "{what}: the connection should close");
    }
    assert!(!text.contains("/smuggled"), "{what}");
    assert_eq!(lines(&w.up), sees, "{what}");
    // Every forwarded request is in the access log, and nothing else.
    let mut want: Vec<&str> = sees.iter().filter_map(|s| s.split(' ').nth(1)).collect();
    let refused_late = c.body_refused && (t == Transport::Pingora || c.refused_late_on_fast);
    if refused_late {
        want.push("/c/x");
    }
    let logged = w.new_log_lines(want.len());
    let paths: Vec<&str> = logged.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(paths, want, "{what}");
    // The transport each request was served by: the TLS listener is always Pingora's;
    // the plain one hands Pingora what the fast path does not take.
    for l in &logged {
        let transport = l["transport"].as_str().unwrap_or("");
        if t == Transport::Pingora {
            assert_eq!(transport, "pingora", "{what}");
        } else {
            assert!(["fast", "pingora"].contains(&transport), "{what}: {l}");
        }
    }
    if refused_late {
        assert_eq!(logged[0]["status"], 400, "{what}");
    }
    drop(conn);
    probe(w, t, n);
}

#[test]
fn hostile_requests_never_reach_the_upstream_as_more_than_banyan_answered() {
    let mut w = World::start();
    for t in [Transport::Fast, Transport::Pingora] {
        for (n, c) in cases().iter().enumerate() {
            run(&mut w, t, n, c);
        }
    }
    // Every malformed chunked body is counted, on either path and wherever it was found.
    let bad_chunks = cases().iter().filter(|c| c.body_refused).count();
    w.banyan.wait_metric(
        "banyan_bad_requests_total{reason=\"bad_chunk\"}",
        2.0 * bad_chunks as f64,
    );
}

#[test]
fn the_forwarded_request_carries_banyans_framing() {
    let mut w = World::start();
    for t in [Transport::Fast, Transport::Pingora] {
        let mut c = w.connect(t);
        c.write_all(b"POST /c/framing HTTP/1.1\r\nHost: shop\r\nConnection: Content-Length, Host, X-Hop\r\nX-Hop: 1\r\nContent-Length: 005\r\n\r\nhello")
            .expect("write");
        assert_eq!(read_answers(&mut *c, 1, false).statuses, [200]);
        let seen = w.up.take();
        assert_eq!(seen.len(), 1, "{t:?}");
        let h = |n: &str| {
            seen[0]
                .headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(h("content-length"), ["5"], "{t:?}");
        assert_eq!(h("host"), ["shop"], "{t:?}");
        assert!(h("x-hop").is_empty() && h("connection").is_empty(), "{t:?}");
        w.new_log_lines(1);
    }
}

#[test]
fn upstream_answers_with_doubtful_framing_become_502_and_their_connection_is_dropped() {
    let mut w = World::start();
    for t in [Transport::Fast, Transport::Pingora] {
        // On Pingora's path too: Pingora itself would frame `Content-Length` beside
        // `Transfer-Encoding` by the latter and hide the length, but banyan watches the
        // bytes below it (`upstream::followed`).
        let cases: &[(&str, u16)] = &[
            ("/r/dup-cl", 502),
            ("/r/cl-list", 502),
            ("/r/te-gzip", 502),
            ("/r/cl-te", 502),
        ];
        for (n, (path, status)) in cases.iter().enumerate() {
            let mut c = w.connect(t);
            c.write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
                .expect("write");
            let got = read_answers(&mut *c, 1, false);
            let text = String::from_utf8_lossy(&got.raw).into_owned();
            assert_eq!(got.statuses, [*status], "{t:?} {path}: {text}");
            assert_eq!(lines(&w.up), [format!("GET {path} 0")], "{t:?} {path}");
            w.new_log_lines(1);
            probe(&mut w, t, 100 + n);
        }
        // Connection: Content-Length on an answer keeps its length.
        let mut c = w.connect(t);
        c.write_all(b"GET /r/conn-cl HTTP/1.1\r\nHost: shop\r\n\r\n")
            .expect("write");
        let got = read_answers(&mut *c, 1, false);
        let text = String::from_utf8_lossy(&got.raw).into_owned();
        assert_eq!(got.statuses, [200], "{t:?}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("content-length: 5\r\n") && text.ends_with("hello"),
            "{t:?}: {text}"
        );
        w.up.take();
        w.new_log_lines(1);
        // A chunk extension with a bare LF never reaches the client as it came.
        let mut c = w.connect(t);
        c.write_all(b"GET /r/ext-lf HTTP/1.1\r\nHost: shop\r\n\r\n")
            .expect("write");
        let got = read_answers(&mut *c, 1, false);
        let text = String::from_utf8_lossy(&got.raw).into_owned();
        assert!(!text.contains("a\nb"), "{t:?}: {text}");
        w.up.take();
        w.new_log_lines(1);
        // Connections that end cleanly are kept on both paths (on Pingora's, by banyan,
        // below Pingora's client): later requests come on them. (A request may still
        // find the last one not yet back: its client can have the answer first.)
        let used: std::collections::BTreeSet<u64> =
            (200..205).map(|n| probe(&mut w, t, n)).collect();
        assert!(used.len() < 5, "{t:?}: kept: {used:?}");
    }
}
