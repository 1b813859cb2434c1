//! The plain listener's protocol choice: HTTP/2 with prior knowledge (h2c) beside
//! HTTP/1.1 on one port. Pingora can do this itself, but it waits for 24 bytes (the
//! length of the HTTP/2 preface) before deciding, so a shorter HTTP/1.0 request
//! (`OPTIONS / HTTP/1.0\r\n\r\n` from a load balancer's health check, say) would hang.
//! Here the preface is compared byte by byte as bytes arrive, and the first byte that
//! differs (the first one, for every HTTP/1 method but `PRI`) settles it. Both sides are
//! the same proxy; TLS connections go to the HTTP/1 side, which takes HTTP/2 by ALPN.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

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
        // A connection that began as HTTP/1 stays HTTP/1: its next requests skip the
        // preface check (Pingora would hand each one back to this function).
        let mut next = self.h1.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.h1.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.h1.cleanup().await;
        self.h2c.cleanup().await;
    }
}
