//! Trailers. Response trailers reach an HTTP/2 client as the upstream sent them. Request
//! trailers (fields a client sends after its body) are discarded, over HTTP/1.1 and
//! HTTP/2 and towards HTTP/1.1 and HTTP/2 upstreams alike: they arrive after banyan has
//! matched, split and rate limited the request on its header section, so an upstream
//! never gets a field banyan did not see when it decided. The message around them is
//! forwarded whole, and the connection stays in step for the next request.

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::recorder::Recorder;
use common::upstream::RUNTIME;
use common::{Setup, Transport};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What an HTTP/2 upstream received: the body, and the trailers if any came.
type Received = (Bytes, Option<HeaderMap>);

/// An upstream speaking HTTP/2 with prior knowledge (hyper). It records each request's
/// body and trailers and answers with a body and trailers of its own.
struct H2Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl H2Upstream {
    fn start() -> H2Upstream {
        let listener = common::bind_loopback();
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = RUNTIME.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let got = req.into_body().collect().await;
                        let (body, trailers) = match got {
                            Ok(c) => {
                                let trailers = c.trailers().cloned();
                                (c.to_bytes(), trailers)
                            }
                            Err(_) => (Bytes::new(), None),
                        };
                        let text = format!("got {} bytes", body.len());
                        record
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((body, trailers));
                        let mut sent = HeaderMap::new();
                        sent.insert("x-checksum", HeaderValue::from_static("c0ffee"));
                        sent.insert("x-rows", HeaderValue::from_static("3"));
                        let frames = vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from(text))),
                            Ok(Frame::trailers(sent)),
                        ];
                        let body = StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        H2Upstream { addr, seen, task }
    }

    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for H2Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An answer as an HTTP/2 client got it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

/// Two POSTs over one HTTP/2 connection with prior knowledge, each body followed by
/// trailers that name a user.
fn h2_posts_with_trailers(proxy: SocketAddr) -> Vec<Answer> {
    RUNTIME.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let mut answers = Vec::new();
        for user in ["mallory", "trudy"] {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-user-id", HeaderValue::from_static(user));
            trailers.insert("x-signature", HeaderValue::from_static("forged"));
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello "))),
                Ok(Frame::data(Bytes::from_static(b"world"))),
                Ok(Frame::trailers(trailers)),
            ];
            let req = Request::post(format!("http://{proxy}/t/upload"))
                .header("te", "trailers")
                .body(StreamBody::new(futures_util::stream::iter(frames)))
                .expect("request");
            let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
                .await
                .expect("answered in time")
                .expect("answered");
            let status = resp.status().as_u16();
            let got = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
                .await
                .expect("body in time")
                .expect("body");
            answers.push(Answer {
                status,
                trailers: got.trailers().cloned(),
                body: got.to_bytes(),
            });
        }
        answers
    })
}

/// One HTTP/1.1 answer from a kept connection, its body sized or chunked: (head, body).
fn read_answer(s: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(done) = whole_answer(&buf) {
            return Some(done);
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The answer at the start of `buf` once it is whole.
fn whole_answer(buf: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, mut rest) = text.split_once("\r\n\r\n")?;
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if field("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Whole once the (possibly empty) trailer section has ended.
                return (after.starts_with("\r\n") || after.contains("\r\n\r\n"))
                    .then(|| (head.to_string(), body));
            }
            body.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
    }
    let len: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (rest.len() >= len).then(|| (head.to_string(), rest[..len].to_string()))
}

/// Two chunked POSTs on one HTTP/1.1 keep-alive connection, each with trailer fields
/// after its last chunk; the answers' (head, body).
fn h1_posts_with_trailers(proxy: SocketAddr) -> Vec<(String, String)> {
    let mut s = TcpStream::connect(proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut answers = Vec::new();
    for user in ["mallory", "trudy"] {
        let request = format!(
            "POST /t/upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\nX-User-Id: {user}\r\nX-Signature: forged\r\n\r\n"
        );
        s.write_all(request.as_bytes()).expect("write");
        answers.push(read_answer(&mut s).expect("an answer"));
    }
    answers
}

/// The recorder got both requests' bodies whole, and none of their trailer fields: not
/// as trailers, not as headers.
fn only_bodies_arrived(rec: &Recorder, case: &str) {
    let seen = rec.take();
    assert_eq!(seen.len(), 2, "{case}: {seen:?}");
    for s in &seen {
        assert_eq!(s.body, b"hello world", "{case}");
        assert_eq!(s.trailers, Vec::<String>::new(), "{case}: {s:?}");
        let named = |k: &str| k == "x-user-id" || k == "x-signature";
        assert!(
            !s.headers.iter().any(|(k, _)| named(k)),
            "{case}: no trailer field became a header: {s:?}"
        );
    }
}

fn routes(upstream: &str) -> String {
    format!("[[route]]\nname = \"uploads\"\nmatch.path_prefix = \"/t/\"\nlegacy = \"{upstream}\"\n")
}

#[test]
fn request_trailers_are_discarded_and_response_trailers_pass_with_an_http2_upstream() {
    let up = H2Upstream::start();
    let mut setup = Setup::new(vec![("uploads", vec![up.addr])], "uploads")
        .route_file("uploads.toml", routes("uploads"));
    setup.upstream_extra = vec![("uploads", "protocol = \"h2c\"")];
    let b = setup.start();

    let answers = h2_posts_with_trailers(b.proxy);
    assert_eq!(answers.len(), 2);
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body, Bytes::from_static(b"got 11 bytes"), "{a:?}");
        // The upstream's trailers, as it sent them.
        let t = a.trailers.as_ref().expect("response trailers");
        assert_eq!(
            t.get("x-checksum").map(|v| v.as_bytes()),
            Some(&b"c0ffee"[..])
        );
        assert_eq!(t.get("x-rows").map(|v| v.as_bytes()), Some(&b"3"[..]));
    }
    // And from an HTTP/1.1 client's chunked requests, the same.
    for (head, body) in h1_posts_with_trailers(b.proxy) {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, "got 11 bytes");
    }
    let seen = up.take();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (body, trailers) in &seen {
        assert_eq!(body, &Bytes::from_static(b"hello world"));
        assert_eq!(trailers, &None, "no request trailer reaches the upstream");
    }
}

#[test]
fn http2_request_trailers_are_discarded_towards_an_http1_upstream() {
    let rec = Recorder::start();
    let b = Setup::new(vec![("uploads", vec![rec.addr])], "uploads")
        .route_file("uploads.toml", routes("uploads"))
        .start();

    let answers = h2_posts_with_trailers(b.proxy);
    assert_eq!(answers.len(), 2);
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.body.starts_with(b"POST /t/upload 11"), "{a:?}");
    }
    only_bodies_arrived(&rec, "h2");
}

#[test]
fn http1_request_trailers_are_discarded_and_the_connection_stays_in_step() {
    for transport in Transport::BOTH {
        let rec = Recorder::start();
        let b = Setup::new(vec![("uploads", vec![rec.addr])], "uploads")
            .route_file("uploads.toml", routes("uploads"))
            .via(transport)
            .start();

        // Both requests answered on one connection: the trailer section was read past
        // exactly, so the second request began where the client meant it to.
        let answers = h1_posts_with_trailers(b.proxy);
        assert_eq!(answers.len(), 2, "{transport:?}");
        for (head, body) in &answers {
            assert!(head.starts_with("HTTP/1.1 200"), "{transport:?}: {head}");
            assert!(
                body.starts_with("POST /t/upload 11"),
                "{transport:?}: {body}"
            );
        }
        only_bodies_arrived(&rec, transport.name());
    }
}
