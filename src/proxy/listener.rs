//! The plain listener's protocol choice: HTTP/2 with prior knowledge (h2c) beside
//! HTTP/1.1 on one port. Pingora can do this itself, but it waits for 24 bytes (the
//! length of the HTTP/2 preface) before deciding, so a shorter HTTP/1.0 request
//! (`OPTIONS / HTTP/1.0\r\n\r\n` from a load balancer's health check, say) would hang.
//! Here the preface is compared byte by byte as bytes arrive, and the first byte that
//! differs (the first one, for every HTTP/1 method but `PRI`) settles it. Both sides are
//! the same proxy; TLS connections go to the HTTP/1 side, which takes HTTP/2 by ALPN.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::fast::head::Handoff;
use super::fast::{Client, Served};
use super::Proxy;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct PlainOrH2c {
    /// The fast path's proxy; the same one `h1` and `h2c` wrap.
    proxy: Proxy,
    h1: Arc<HttpProxy<Proxy>>,
    h2c: Arc<HttpProxy<Proxy>>,
}

impl PlainOrH2c {
    /// `h1` and `h2c` serve the same routes; `h2c` gets the connections that open with the
    /// HTTP/2 preface.
    pub fn new(proxy: Proxy, h1: HttpProxy<Proxy>, mut h2c: HttpProxy<Proxy>) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        h2c.server_options = Some(options);
        PlainOrH2c {
            proxy,
            h1: Arc::new(h1),
            h2c: Arc::new(h2c),
        }
    }
}

/// Whether the connection opens with the HTTP/2 preface; `None` when it closed first.
/// Reads nothing away: each peek is put back.
async fn opens_with_preface(stream: &mut Stream) -> Option<bool> {
    let mut buf = [0u8; 24];
    for k in 1..=buf.len() {
        if !stream.try_peek(&mut buf[..k]).await.ok()? {
            // A stream that cannot peek is never h2c.
            return Some(false);
        }
        if buf[k - 1] != H2_PREFACE[k - 1] {
            return Some(false);
        }
    }
    Some(true)
}

/// How long a keep-alive connection may sit idle between requests: Pingora's figure, and
/// none once the service is shutting down.
const IDLE_BETWEEN_REQUESTS: Duration = Duration::from_secs(60);

fn keepalive(shutdown: &ShutdownWatch) -> Option<u64> {
    (!*shutdown.borrow()).then_some(IDLE_BETWEEN_REQUESTS.as_secs())
}

/// Bytes read while waiting for the next request: a request that fits is served by the
/// fast path from them; otherwise they are put back for Pingora's parser, so the read is
/// one Pingora would have made anyway.
const FIRST_READ: usize = 4096;

/// Reads the next bytes of a connection into `buf`. `None` when the client closed, the
/// idle time ran out, or the service is shutting down. (banyan does not turn on Pingora's
/// HTTP/1.1 pipelining, so no bytes of the next request are held elsewhere.)
async fn read_more(
    stream: &mut L4Stream,
    buf: &mut [u8],
    shutdown: &ShutdownWatch,
) -> Option<usize> {
    if *shutdown.borrow() {
        return None;
    }
    let mut shutdown = shutdown.clone();
    tokio::select! {
        biased;
        read = tokio::time::timeout(IDLE_BETWEEN_REQUESTS, stream.read(buf)) => match read {
            Ok(Ok(n)) if n > 0 => Some(n),
            _ => None,
        },
        _ = shutdown.changed() => None,
    }
}

#[async_trait]
impl ServerApp for PlainOrH2c {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.get_ssl_digest().is_none() && opens_with_preface(&mut stream).await? {
            return self.h2c.process_new(stream, shutdown).await;
        }
        if stream.get_ssl_digest().is_some() {
            // TLS: ALPN picks HTTP/2 or HTTP/1.1 inside Pingora.
            return self.h1.process_new(stream, shutdown).await;
        }
        // Plain HTTP/1: one request at a time, so that between requests the connection
        // waits here holding nothing but itself (Pingora's own keep-alive loop waits inside
        // its request future, which is sized for the proxy's busiest stage: tens of KiB for
        // every idle keep-alive connection). Each request is offered to the fast path
        // first; what it does not take goes to Pingora with its bytes put back.
        if !stream.as_any().is::<L4Stream>() {
            return self.h1.process_new(stream, shutdown).await;
        }
        let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
        let ip = l4
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut buf = [0u8; FIRST_READ];
        // Bytes of requests not yet served: a pipelined next request, or the start of one
        // still arriving.
        let mut filled = 0;
        let mut need_read = true;
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            if need_read {
                filled += read_more(&mut l4, &mut buf[filled..], shutdown).await?;
            }
            let client = Client {
                stream: &mut l4,
                ip,
                closing: *shutdown.borrow(),
            };
            match self.proxy.serve_fast(client, &buf[..filled]).await {
                Ok((Served::KeepAlive, used)) => {
                    buf.copy_within(used..filled, 0);
                    filled -= used;
                    need_read = filled == 0;
                    continue;
                }
                Ok((Served::Close, _)) => return None,
                Err(Handoff::Partial) if filled < FIRST_READ => {
                    need_read = true;
                    continue;
                }
                Err(_) => {}
            }
            // Pingora reads the request from the start, as if nothing had been read.
            l4.rewind(&buf[..filled]);
            filled = 0;
            need_read = true;
            let mut session = ServerSession::new_http1(l4);
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => session.set_keepalive(keepalive(shutdown)),
            }
            let reused = self.h1.process_new_http(session, shutdown).await?;
            let (stream, kept) = reused.consume();
            settings = kept;
            l4 = stream.into_any().downcast().ok()?;
        }
    }

    async fn cleanup(&self) {
        self.h1.cleanup().await;
        self.h2c.cleanup().await;
    }
}
