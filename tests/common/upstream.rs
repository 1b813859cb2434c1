//! A real HTTP/1.1 upstream server for tests (hyper), on an ephemeral loopback port:
//!
//! - any path: a JSON echo of what arrived (upstream name, method, path, headers, body
//!   length and xxh3 of the body, hashed as it streams in, never held whole);
//! - `/download?bytes=N`: N bytes of a fixed pattern, streamed in 64 KiB chunks;
//! - `/chunked`: a chunked response in five parts;
//! - `/ws`: a WebSocket echo.
//! - `/catalog/ID`: a deterministic JSON document (the same from every server, unless its
//!   [`Behavior`] changes the price or the key order);
//! - `/noisy/ID`: the same document plus fields random in every answer.
//!
//! - `/healthz`: 200 `ok`, whatever the [`Behavior`].
//!
//! Dropping an [`Upstream`] kills it: the port closes and so do its open connections.
//! [`Silent`] is a server that accepts connections and never answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use xxhash_rust::xxh3::Xxh3Default;

type Body = BoxBody<Bytes, Infallible>;

/// Upstreams run on their own runtime, so a test may block (or run its own runtime)
/// without starving the servers it talks to through the proxy.
pub(crate) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("upstream runtime")
});

/// The pattern `/download` streams: byte i is `i % 251` (a prime, so chunks differ).
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect()
}

/// How a test server deviates from the deterministic answers.
#[derive(Debug, Clone)]
pub struct Behavior {
    /// The `price` in `/catalog` and `/noisy` documents.
    pub price: f64,
    /// Writes document keys in another order (the same document to a JSON reader).
    pub reorder: bool,
    /// Waits this long before answering anything.
    pub delay: Duration,
    /// Answers every request (but `/healthz`) with this status instead.
    pub status: Option<u16>,
    /// Answers every Nth request (but `/healthz`) with a 500; 0: never.
    pub fail_every: u64,
    /// Requests counted for `fail_every`.
    pub counted: Arc<AtomicU64>,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            price: 12.5,
            reorder: false,
            delay: Duration::ZERO,
            status: None,
            fail_every: 0,
            counted: Arc::new(AtomicU64::new(0)),
        }
    }
}

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    kill: tokio::sync::watch::Sender<bool>,
}

impl Upstream {
    /// Starts serving on 127.0.0.1:0.
    pub fn start(name: &str) -> Upstream {
        Self::start_with(name, Behavior::default())
    }

    pub fn start_with(name: &str, behavior: Behavior) -> Upstream {
        Self::start_on(([127, 0, 0, 1], 0).into(), name, behavior)
    }

    /// Starts serving HTTPS on 127.0.0.1:0 with this TLS configuration.
    pub fn start_tls(name: &str, tls: Arc<rustls::ServerConfig>) -> Upstream {
        Self::serve(
            ([127, 0, 0, 1], 0).into(),
            name,
            Behavior::default(),
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        )
    }

    /// Starts serving on `addr`: a killed upstream comes back on its old port.
    pub fn start_on(addr: SocketAddr, name: &str, behavior: Behavior) -> Upstream {
        Self::serve(addr, name, behavior, None)
    }

    fn serve(
        addr: SocketAddr,
        name: &str,
        behavior: Behavior,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let behavior = Arc::new(behavior);
        // A killed server's port is released when its task has stopped, which may be just
        // after the drop returned.
        let started = std::time::Instant::now();
        let listener = loop {
            if addr.port() == 0 {
                break super::bind_loopback();
            }
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind upstream {addr}: {e}"),
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicU64::new(0));
        let name_owned = name.to_string();
        let counter = Arc::clone(&hits);
        let (kill, killed) = tokio::sync::watch::channel(false);
        let task = RUNTIME.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name_owned.clone();
                let counter = Arc::clone(&counter);
                let behavior = Arc::clone(&behavior);
                let mut killed = killed.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        handle(name.clone(), Arc::clone(&behavior), req)
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    // Killing the server closes its open connections too, as a crash would.
                    match tls {
                        None => {
                            let conn = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades();
                            tokio::select! {
                                _ = conn => {}
                                _ = killed.wait_for(|k| *k) => {}
                            }
                        }
                        Some(acceptor) => {
                            // A refused handshake (no client certificate, say) ends here.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            tokio::select! {
                                _ = conn => {}
                                _ = killed.wait_for(|k| *k) => {}
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            name: name.to_string(),
            addr,
            hits,
            task,
            kill,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.kill.send(true);
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("ct"));
    r
}

/// The `/catalog` document for one id; `/noisy` adds random fields.
fn document(id: &str, b: &Behavior, noisy: bool) -> String {
    let price = b.price;
    let noise = if noisy {
        format!(
            ",\"nonce\":\"{:016x}\",\"served_at\":{}",
            fastrand::u64(..),
            fastrand::u32(..)
        )
    } else {
        String::new()
    };
    if b.reorder {
        format!(
            "{{\"stock\":{{\"count\":7.0,\"warehouse\":\"north\"}}{noise},\"tags\":[\"new\",\"sale\"],\"price\":{price:?},\"name\":\"item {id}\",\"id\":\"{id}\"}}"
        )
    } else {
        format!(
            "{{\"id\":\"{id}\",\"name\":\"item {id}\",\"price\":{price:?},\"tags\":[\"new\",\"sale\"]{noise},\"stock\":{{\"warehouse\":\"north\",\"count\":7}}}}"
        )
    }
}

async fn handle(
    name: String,
    behavior: Arc<Behavior>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !behavior.delay.is_zero() {
        tokio::time::sleep(behavior.delay).await;
    }
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return Ok(full(StatusCode::OK, "text/plain", "ok"));
    }
    let nth = behavior.counted.fetch_add(1, Ordering::Relaxed) + 1;
    let failing = behavior.fail_every > 0 && nth % behavior.fail_every == 0;
    if let Some(code) = behavior.status.or(failing.then_some(500)) {
        let _ = req.into_body().collect().await;
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return Ok(full(
            status,
            "application/json",
            format!("{{\"upstream\":\"{name}\",\"status\":{code}}}"),
        ));
    }
    for (prefix, noisy) in [("/catalog/", false), ("/noisy/", true)] {
        if let Some(id) = path.strip_prefix(prefix) {
            let id: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
            // Drain any body so keep-alive stays usable.
            let _ = req.into_body().collect().await;
            return Ok(full(
                StatusCode::OK,
                "application/json",
                document(&id, &behavior, noisy),
            ));
        }
    }
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/ws" {
        return Ok(websocket(req));
    }
    if path == "/download" {
        let bytes: u64 = query
            .strip_prefix("bytes=")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        const CHUNK: u64 = 64 * 1024;
        let stream = futures_util::stream::unfold(0u64, move |sent| async move {
            if sent >= bytes {
                return None;
            }
            let n = CHUNK.min(bytes - sent);
            let chunk = Bytes::from(pattern(sent, n as usize));
            Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + n))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-length", bytes.into());
        r.headers_mut()
            .insert("x-served-by", name.parse().expect("name"));
        return Ok(r);
    }
    if path == "/chunked" {
        let parts = futures_util::stream::iter(
            (0..5).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("part-{i}\n"))))),
        );
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(parts)));
        r.headers_mut()
            .insert("x-served-by", name.parse().expect("name"));
        return Ok(r);
    }
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return Ok(full(
            status,
            "application/json",
            format!("{{\"upstream\":\"{name}\"}}"),
        ));
    }

    let method = req.method().to_string();
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_string(), serde_json::Value::String(v));
            }
        }
    }
    let mut body = req.into_body();
    let mut hasher = Xxh3Default::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(data) = f.data_ref() {
                    hasher.update(data);
                    len += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let echo = serde_json::json!({
        "upstream": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": len,
        "body_xxh3": format!("{:016x}", hasher.digest()),
    });
    let mut r = full(StatusCode::OK, "application/json", echo.to_string());
    r.headers_mut()
        .insert("x-served-by", name.parse().expect("name"));
    // A hop-by-hop field the proxy must not pass on to the client.
    r.headers_mut().insert(
        "connection",
        "keep-alive, x-upstream-hop".parse().expect("v"),
    );
    r.headers_mut()
        .insert("x-upstream-hop", "secret".parse().expect("v"));
    r.headers_mut()
        .insert("keep-alive", "timeout=30".parse().expect("v"));
    Ok(r)
}

/// Accepts connections and never answers; holds them until dropped.
pub struct Silent {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = super::bind_loopback();
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        let task = RUNTIME.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        });
        Silent {
            addr,
            accepted,
            task,
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn websocket(req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "not a websocket request",
        );
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", "Upgrade".parse().expect("v"));
    h.insert("upgrade", "websocket".parse().expect("v"));
    h.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes())
            .parse()
            .expect("accept key"),
    );
    r
}
