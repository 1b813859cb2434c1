//! Client connections, plain and TLS: the connection cap, the deadlines a client must
//! keep (whole head, keep-alive, sending), and the protocol choice on plain listeners:
//! HTTP/2 with prior knowledge (h2c, `preface.rs`) beside HTTP/1.1 on one port. A plain
//! connection (accepted in `accept.rs`) is banyan's `Sock` between requests; each request
//! is offered to the fast path, and what it does not take is handed to Pingora with its
//! bytes put back. Both sides are the same proxy; TLS connections (Pingora's listener) go
//! to the HTTP/1 side, which takes HTTP/2 by ALPN. Whatever HTTP/1 bytes Pingora reads (a
//! TLS connection, a request the fast path hands over) pass through `checked::Checked`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::net::SocketAddr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::accept::Live;
use super::balance::Seat;
use super::checked::{self, Checked};
use super::fast::{plain_answer, Client, Served};
use super::sock::Sock;
use super::spared::Spared;
use super::Proxy;
use crate::config::ClientLimits;
use crate::http1::request::Handoff;
use crate::metrics::Metrics;

pub use super::pending::MAX_HEAD;
use super::pending::{read_until, Pending, Read, Waits, FIRST_READ};
use super::preface::opens_with_preface;

#[derive(Clone)]
pub struct PlainOrH2c {
    /// The fast path's proxy; the same one `h1` and `h2c` wrap.
    proxy: Proxy,
    h1: Arc<HttpProxy<Proxy>>,
    h2c: Arc<HttpProxy<Proxy>>,
    limits: ClientLimits,
    metrics: Arc<Metrics>,
    /// What each connection (or request) Pingora reads is checked with.
    checked: checked::Limits,
}

impl PlainOrH2c {
    /// `h1` and `h2c` serve the same routes; `h2c` gets the connections that open with the
    /// HTTP/2 preface.
    pub fn new(
        proxy: Proxy,
        h1: HttpProxy<Proxy>,
        mut h2c: HttpProxy<Proxy>,
        limits: ClientLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        h2c.server_options = Some(options);
        let checked = checked::Limits {
            header_timeout: limits.header_timeout,
            header_timeouts: metrics.client_timeouts_total.with_label_values(&["header"]),
        };
        PlainOrH2c {
            proxy,
            h1: Arc::new(h1),
            h2c: Arc::new(h2c),
            limits,
            metrics,
            checked,
        }
    }

    /// A place for one more connection, while fewer than `max_connections` are open.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn admit(&self) -> Option<Slot> {
        let gauge = &self.metrics.connections_active;
        gauge.inc();
        let slot = Slot(gauge.clone());
        if gauge.get() > self.limits.max_connections as i64 {
            self.metrics.connections_refused_total.inc();
            return None;
        }
        Some(slot)
    }
}

/// One open client connection, counted until dropped.
struct Slot(prometheus::IntGauge);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Whether Pingora, having served a request, holds bytes of the next one (a client that
/// pipelined behind a body Pingora read): then Pingora must parse it. Pingora hands such
/// bytes only to its next session and has no getter for them; its settings' `Debug` text is
/// the one public view (checked by a test, so a Pingora upgrade that changes it fails).
fn holds_next_request(settings: &HttpPersistentSettings) -> bool {
    format!("{settings:?}").contains("pipelined_prefix: Some(")
}

/// After a refusal, what the client still sends is read and dropped for a moment before the
/// connection closes (nginx's lingering close): closing a socket with unread bytes resets
/// it, and the reset can destroy the refusal before the client reads it.
async fn linger(stream: &mut Sock) {
    use tokio::io::AsyncWriteExt;
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_DRAIN: usize = 1 << 20;
    let _ = stream.shutdown().await;
    // On the heap: an array here would be part of every connection task's state, idle or not.
    let mut sink = vec![0u8; 4096];
    let mut drained = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while drained < MAX_DRAIN {
            match stream.read(&mut sink).await {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    })
    .await;
}

/// Whole seconds, rounded up (Pingora's keep-alive takes seconds; 0 would mean forever).
pub fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[async_trait]
impl ServerApp for PlainOrH2c {
    /// Connections from Pingora's listeners: the TLS listener's.
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _slot = self.admit()?;
        super::tidy::this_thread();
        let head_deadline = Instant::now() + self.limits.header_timeout;
        // Pingora serves it (HTTP/2 if ALPN chose it); HTTP/1.1 is read through banyan's
        // rules, with the head's deadline counted from the handshake's end.
        if stream.get_ssl_digest().is_none()
            || matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
        {
            return self.h1.process_new(stream, shutdown).await;
        }
        let checked = Checked::new(stream, self.checked.clone(), Some(head_deadline));
        self.h1.process_new(Box::new(checked), shutdown).await
    }

    async fn cleanup(&self) {
        self.h1.cleanup().await;
        self.h2c.cleanup().await;
    }
}

/// Where a plain connection's next request is served.
enum Conn {
    /// Read by the listener, served by the fast path when it can.
    Own(Box<Sock>),
    /// Pingora holds bytes of the next request (or has begun reading one).
    Pingora(Box<Checked>),
}

impl PlainOrH2c {
    /// A connection a plain listener accepted (`accept.rs`), served on a task of this
    /// thread's.
    pub fn serve_accepted(
        self: &Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        seat: Seat,
        shutdown: &ShutdownWatch,
    ) {
        let Some(slot) = self.admit() else {
            return;
        };
        // Small answers go out at once, as Pingora's listener sets it.
        let _ = tcp.set_nodelay(true);
        let head_deadline = Instant::now() + self.limits.header_timeout;
        let app = Arc::clone(self);
        let shutdown = shutdown.clone();
        // Boxed once: the connection's futures pass it on and keep their arguments for
        // their whole life, so a socket moved by value was held five times over in every
        // idle connection's task.
        let sock = Box::new(Sock::new(tcp, peer));
        tokio::spawn(async move {
            let (_slot, _seat) = (slot, seat);
            let _live = Live::count();
            app.serve_plain_or_h2c(sock, head_deadline, &shutdown).await;
        });
    }

    /// A plain connection: HTTP/2 with prior knowledge, or HTTP/1.
    async fn serve_plain_or_h2c(
        &self,
        mut sock: Box<Sock>,
        head_deadline: Instant,
        shutdown: &ShutdownWatch,
    ) {
        // Boxed, as every rare stage is: the connection's task is sized for its largest
        // stage, and the one an idle client spends its time in should be that one.
        let preface = Box::pin(tokio::time::timeout_at(
            head_deadline,
            opens_with_preface(&mut sock),
        ));
        match preface.await {
            Ok(Some(true)) => {
                Box::pin(self.h2c.process_new(sock, shutdown)).await;
                return;
            }
            Ok(Some(false)) => {}
            Ok(None) => return,
            Err(_) => {
                self.checked.header_timeouts.inc();
                return;
            }
        }
        // Plain HTTP/1: one request at a time, so that between requests the connection
        // waits here holding nothing but itself (Pingora's own keep-alive loop waits inside
        // its request future, which is sized for the proxy's busiest stage: tens of KiB for
        // every idle keep-alive connection). Each request is offered to the fast path
        // first; what it does not take goes to Pingora with its bytes put back.
        self.serve_plain(sock, head_deadline, shutdown).await;
    }

    async fn serve_plain(
        &self,
        sock: Box<Sock>,
        first_deadline: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        // Bytes of requests not yet served: a pipelined next request, or the start of one
        // still arriving.
        let mut buf = Pending::default();
        // Boxed: only a connection Pingora has served has them.
        let mut settings: Option<Box<HttpPersistentSettings>> = None;
        let mut deadline = Some(first_deadline);
        let timer = std::pin::pin!(tokio::time::sleep_until(first_deadline));
        let mut stop_watch = shutdown.clone();
        let stop = std::pin::pin!(stop_watch.changed());
        let mut waits = Waits::new(timer, stop, *shutdown.borrow());
        let mut conn = Conn::Own(sock);
        loop {
            let checked = match conn {
                Conn::Pingora(checked) => checked,
                Conn::Own(mut sock) => {
                    self.serve_own(&mut sock, &mut buf, &mut deadline, &mut waits, shutdown)
                        .await?;
                    // Pingora reads the request from the start, as if nothing had been
                    // read, through the same rules.
                    sock.rewind(buf.data());
                    buf.clear();
                    Box::new(Checked::new(sock, self.checked.clone(), deadline))
                }
            };
            // Boxed: an idle connection's task is not sized for Pingora's session and
            // request future.
            let (checked, kept) =
                Box::pin(self.pingora_round(checked, settings.take(), shutdown)).await?;
            let pingora_goes_on =
                kept.as_ref().is_some_and(holds_next_request) || !checked.between_requests();
            settings = kept.map(Box::new);
            conn = if pingora_goes_on {
                Conn::Pingora(checked)
            } else {
                deadline = None;
                let mut sock: Box<Sock> = checked.into_inner().into_any().downcast().ok()?;
                sock.back_from_pingora();
                Conn::Own(sock)
            };
        }
    }

    /// Pingora serves one request (it may be reading the next one's bytes when it ends).
    async fn pingora_round(
        &self,
        checked: Box<Checked>,
        settings: Option<Box<HttpPersistentSettings>>,
        shutdown: &ShutdownWatch,
    ) -> Option<(Box<Checked>, Option<HttpPersistentSettings>)> {
        let mut session = ServerSession::new_http1(checked);
        match settings {
            Some(s) => s.apply_to_session(&mut session),
            None => {
                session.set_keepalive(
                    (!*shutdown.borrow()).then(|| seconds(self.limits.keepalive_timeout)),
                );
                // Bytes a client pipelined behind this request are kept for the next
                // one instead of closing the connection unanswered.
                session.set_pipelining_enabled(true);
            }
        }
        session.set_write_timeout(Some(self.limits.send_timeout));
        let reused = self.h1.process_new_http(session, shutdown).await?;
        let (stream, kept) = reused.consume();
        Some((stream.into_any().downcast().ok()?, kept))
    }

    /// Serves requests on banyan's own path until one is Pingora's (`Some`: its bytes are
    /// in `buf`) or the connection ends (`None`).
    async fn serve_own<S: Future>(
        &self,
        sock: &mut Sock,
        buf: &mut Pending,
        deadline: &mut Option<Instant>,
        waits: &mut Waits<'_, S>,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        let limits = &self.limits;
        loop {
            if buf.is_empty() {
                // Waiting for the next request: the keep-alive timeout, then the head's.
                let wait = deadline.unwrap_or_else(|| Instant::now() + limits.keepalive_timeout);
                match read_until(sock, buf, wait, waits).await {
                    Read::More => {}
                    Read::Gone => return None,
                    Read::TimedOut if deadline.is_some() => {
                        self.checked.header_timeouts.inc();
                        return None;
                    }
                    Read::TimedOut => return None,
                }
            }
            if !self.proxy.fast_path {
                // `server.fast_path = false`: every request is Pingora's.
                return Some(());
            }
            // The head's deadline counts from the request's first byte, which the read
            // just returned; it is only needed (a clock read) if the head is not whole.
            let header_timeout = limits.header_timeout;
            let ip = Some(sock.peer_ip());
            let client = Client {
                stream: &mut *sock,
                ip,
                closing: *shutdown.borrow(),
                timer: waits.timer(),
            };
            // In a spare block: the request's future lives only while the request does,
            // so that the connection's task, waiting for the next request, is not sized
            // for it.
            let data = buf.data();
            match Spared::new(|| self.proxy.serve_fast(client, data)).await {
                Ok((Served::KeepAlive, used)) => {
                    buf.consume(used);
                    *deadline = None;
                }
                Ok((Served::Close, _)) => return None,
                Err(Handoff::Refused(why)) => {
                    Box::pin(async {
                        self.proxy.refuse(sock, why).await;
                        linger(sock).await;
                    })
                    .await;
                    return None;
                }
                Err(Handoff::PartialHead) => {
                    if buf.len() >= MAX_HEAD {
                        let out = plain_answer(
                            431,
                            "Request Header Fields Too Large",
                            "the request head is larger than 64 KiB",
                        );
                        Box::pin(async {
                            super::fast::write(sock, &out, limits.send_timeout).await;
                            linger(sock).await;
                        })
                        .await;
                        return None;
                    }
                    let head_by = *deadline.get_or_insert_with(|| Instant::now() + header_timeout);
                    match read_until(sock, buf, head_by, waits).await {
                        Read::More => {}
                        Read::Gone => return None,
                        Read::TimedOut => {
                            self.checked.header_timeouts.inc();
                            let out = plain_answer(
                                408,
                                "Request Timeout",
                                "the request head did not arrive within client_header_timeout",
                            );
                            Box::pin(super::fast::write(sock, &out, limits.send_timeout)).await;
                            return None;
                        }
                    }
                }
                // A small body still arriving is waited for, within the head's time;
                // past it, or a larger body, Pingora streams it.
                Err(Handoff::PartialBody) if buf.len() < FIRST_READ => {
                    let head_by = *deadline.get_or_insert_with(|| Instant::now() + header_timeout);
                    match read_until(sock, buf, head_by, waits).await {
                        Read::More => {}
                        Read::Gone => return None,
                        Read::TimedOut => return Some(()),
                    }
                }
                Err(_) => return Some(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pingora_settings_show_whether_they_hold_the_next_request() {
        let (sock, _client) = Sock::loopback().await;
        let session = ServerSession::new_http1(Box::new(sock));
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(!holds_next_request(&settings));
        settings.set_pipelined_prefix(bytes::BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]));
        assert!(holds_next_request(&settings));
    }

    #[test]
    fn refusals_close_with_json() {
        let out = String::from_utf8(plain_answer(408, "Request Timeout", "slow")).expect("text");
        assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n{\"error\":\"slow\"}"), "{out}");
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(seconds(Duration::from_secs(60)), 60);
    }
}
