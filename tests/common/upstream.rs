//! A real HTTP/1.1 upstream server for tests (hyper), on an ephemeral loopback port:
//!
//! - any path: a JSON echo of what arrived (upstream name, method, path, headers, body
//!   length and xxh3 of the body, hashed as it streams in, never held whole);
//! - `/download?bytes=N`: N bytes of a fixed pattern, streamed in 64 KiB chunks;
//! - `/chunked`: a chunked response in five parts;
//! - `/ws`: a WebSocket echo.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

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
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
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

pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts serving on 127.0.0.1:0.
    pub fn start(name: &str) -> Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicU64::new(0));
        let name_owned = name.to_string();
        let counter = Arc::clone(&hits);
        let task = RUNTIME.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let name = name_owned.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        handle(name.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_string(),
            addr,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("ct"));
    r
}

async fn handle(name: String, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
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
