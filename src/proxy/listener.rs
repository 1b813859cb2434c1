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
use pingora::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::Proxy;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct PlainOrH2c {
    h1: Arc<HttpProxy<Proxy>>,
    h2c: Arc<HttpProxy<Proxy>>,
}

impl PlainOrH2c {
    /// `h1` and `h2c` serve the same routes; `h2c` gets the connections that open with the
    /// HTTP/2 preface.
    pub fn new(h1: HttpProxy<Proxy>, mut h2c: HttpProxy<Proxy>) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        h2c.server_options = Some(options);
        PlainOrH2c {
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

/// Bytes read while waiting for the next request; they are put back for Pingora's parser,
/// so a request head that fits costs no extra system call.
const FIRST_READ: usize = 2048;

/// Waits for the first bytes of a keep-alive connection's next request and puts them back.
/// `None` when the client closed, the idle time ran out, or the service is shutting down.
/// (banyan does not turn on Pingora's HTTP/1.1 pipelining, so no bytes of the next
/// request are held elsewhere.) Streams that cannot be put back go straight on.
async fn next_request(stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
    if *shutdown.borrow() {
        return None;
    }
    if !stream.as_any().is::<L4Stream>() {
        return Some(stream);
    }
    let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
    let mut buf = [0u8; FIRST_READ];
    let mut shutdown = shutdown.clone();
    let n = tokio::select! {
        biased;
        read = tokio::time::timeout(IDLE_BETWEEN_REQUESTS, l4.read(&mut buf)) => match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        },
        _ = shutdown.changed() => return None,
    };
    l4.rewind(&buf[..n]);
    Some(l4)
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
        // waits here holding nothing but itself. Pingora's own keep-alive loop waits inside
        // its request future, which is sized for the proxy's busiest stage (tens of KiB
        // for every idle keep-alive connection).
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(keepalive(shutdown));
        loop {
            let reused = self.h1.process_new_http(session, shutdown).await?;
            let (stream, settings) = reused.consume();
            let stream = next_request(stream, shutdown).await?;
            session = ServerSession::new_http1(stream);
            match settings {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(keepalive(shutdown)),
            }
        }
    }

    async fn cleanup(&self) {
        self.h1.cleanup().await;
        self.h2c.cleanup().await;
    }
}
