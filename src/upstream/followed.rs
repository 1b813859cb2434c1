//! Pingora's HTTP/1 client over connections banyan makes and watches: every byte Pingora
//! writes to an HTTP/1.1 upstream and reads from it passes through `http1::answers`, so an
//! answer banyan's rules refuse (`Content-Length` beside `Transfer-Encoding`, which
//! Pingora itself would frame by the latter and hide; a repeated length; a bad chunk;
//! bytes no request asked for) fails the read that brings it: Pingora answers 502 and
//! drops the connection, as banyan's own client does. TLS to such an upstream is spoken
//! here too (rustls, the upstream's trust from `tls::client`), below the watch.
//!
//! Pingora can keep only connections with a file descriptor of their own (it checks the
//! descriptor's peer before reuse, and its pool's bookkeeping is keyed by it; these all
//! share the placeholder -1, which corrupts that bookkeeping), so banyan keeps them and
//! Pingora's pool never holds one: a read while a connection is between exchanges can
//! only be Pingora testing whether it may keep it, and is answered "closed", so Pingora
//! drops it. A connection dropped between answers, with nothing unread and nothing
//! refused, goes back to its peer's pool (`IdlePool`), and the next connect takes it from
//! there. A read that fails before any answer byte on
//! such a kept connection is marked `Stale`, for the proxy to retry it as Pingora retries
//! a stale keep-alive of its own. Connections opened off the data path (shadow copies, on
//! the shadow worker's runtime) are kept apart from client requests' (as `Lane` does for
//! banyan's own client): each is driven by the runtime that opened it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::tls::{ClientTlsStream, TlsConnector};
use pingora::{Error, ErrorType, OrErr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::idle::{IdlePool, Probe};
use crate::http1::answers::{Answers, Refused};
use crate::tls::UpstreamTls;

/// A read failed on a refused answer; `error_while_proxy` finds it in Pingora's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the upstream's answer was refused: {0}")]
pub struct AnswerRefused(pub Refused);

impl From<AnswerRefused> for std::io::Error {
    fn from(why: AnswerRefused) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, why)
    }
}

/// A kept connection turned out closed before any answer byte came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a kept upstream connection was closed")]
pub struct Stale;

/// One upstream connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl Probe for Conn {
    /// One read attempt that cannot wait: a TLS connection may hold records that are not
    /// data (session tickets), which only TLS can tell from an answer.
    fn open_and_quiet(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(self).poll_read(&mut cx, &mut buf).is_pending()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// A connection as Pingora uses it, watched.
pub struct Followed {
    conn: Option<Conn>,
    answers: Answers,
    failed: Option<Refused>,
    /// Closed, broken or shut down: never kept.
    spoiled: bool,
    /// Taken from the pool, and no answer byte read on it yet.
    reused_unanswered: bool,
    /// Where it goes back when dropped clean; `None`: never kept.
    home: Option<Arc<IdlePool<Conn>>>,
}

impl std::fmt::Debug for Followed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Followed")
            .field("answers", &self.answers)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Followed {
    fn new(conn: Conn, reused: bool, home: Option<Arc<IdlePool<Conn>>>) -> Self {
        Followed {
            conn: Some(conn),
            answers: Answers::default(),
            failed: None,
            spoiled: false,
            reused_unanswered: reused,
            home,
        }
    }

    fn broken(&mut self, e: std::io::Error) -> std::io::Error {
        self.spoiled = true;
        if std::mem::take(&mut self.reused_unanswered) {
            return std::io::Error::new(e.kind(), Stale);
        }
        e
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        if self.spoiled || self.failed.is_some() || !self.answers.idle() {
            return;
        }
        if let (Some(conn), Some(home)) = (self.conn.take(), &self.home) {
            home.put(conn);
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the connection was kept")
}

impl AsyncRead for Followed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = &this.failed {
            return Poll::Ready(Err(AnswerRefused(why.clone()).into()));
        }
        if this.answers.idle() {
            // Pingora asking whether it may pool the connection: banyan keeps it instead.
            return Poll::Ready(Ok(()));
        }
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let before = buf.filled().len();
        match Pin::new(conn).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    let closed = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    if this.reused_unanswered {
                        return Poll::Ready(Err(this.broken(closed)));
                    }
                    this.spoiled = true;
                    return Poll::Ready(Ok(()));
                }
                this.reused_unanswered = false;
                if let Err(why) = this.answers.received(new) {
                    // Nothing of the read that brought the doubt reaches Pingora.
                    buf.set_filled(before);
                    this.failed = Some(why.clone());
                    return Poll::Ready(Err(AnswerRefused(why).into()));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.broken(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Followed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        match Pin::new(conn).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.answers.sent(&buf[..n.min(buf.len())]);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.broken(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.conn.as_mut() {
            Some(conn) => Pin::new(conn).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.spoiled = true;
        match this.conn.as_mut() {
            Some(conn) => Pin::new(conn).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl VirtualSocket for Followed {
    /// `TCP_NODELAY` is set once when the connection opens; banyan asks Pingora for no
    /// TCP keep-alive on upstream connections.
    fn set_socket_option(&self, _opt: VirtualSockOpt) -> std::io::Result<()> {
        Ok(())
    }
}

/// Makes (or takes from its pool) the connections to one peer of an HTTP/1.1 upstream.
pub struct Connector {
    /// The peer's address. Health checks connect through the first peer's connector to
    /// every peer's address: such connections are neither taken from nor kept in this
    /// peer's pool.
    addr: SocketAddr,
    connect_timeout: Duration,
    tls: Option<UpstreamTls>,
    kept: Arc<IdlePool<Conn>>,
    /// Those opened off the data path.
    kept_apart: Arc<IdlePool<Conn>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("followed::Connector")
            .field("tls", &self.tls)
            .field("kept", &self.kept.len())
            .finish()
    }
}

impl Connector {
    pub fn new(
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        Connector {
            addr,
            connect_timeout,
            tls,
            kept: Arc::new(IdlePool::new(idle_timeout)),
            kept_apart: Arc::new(IdlePool::new(idle_timeout)),
        }
    }

    /// Closes kept connections the upstream closed or that idled too long.
    pub fn sweep(&self) {
        self.kept.sweep();
        self.kept_apart.sweep();
    }

    /// A new connection, TLS handshake included, within the upstream's `connect_timeout`
    /// (Pingora's own connect timeouts are not set on these peers: a kept connection
    /// needs no timer).
    async fn open(&self, addr: SocketAddr) -> pingora::Result<Conn> {
        let by = tokio::time::Instant::now() + self.connect_timeout;
        let timed_out = || {
            Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("connecting to {addr} took over {:?}", self.connect_timeout),
            )
        };
        let tcp = match tokio::time::timeout_at(by, TcpStream::connect(addr)).await {
            Err(_) => return timed_out(),
            Ok(Err(e)) => {
                let etype = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                    _ => ErrorType::ConnectError,
                };
                return Error::e_because(etype, format!("connecting to {addr}"), e);
            }
            Ok(Ok(tcp)) => tcp,
        };
        // Once per connection, not per request (Pingora asks again on every connect).
        tcp.set_nodelay(true)
            .or_err(ErrorType::ConnectError, "setting TCP_NODELAY")?;
        let Some(tls) = &self.tls else {
            return Ok(Conn::Plain(tcp));
        };
        let connector = TlsConnector::from(tls.http1.clone());
        let handshake = connector.connect(tls.server_name.clone(), tcp);
        let stream = match tokio::time::timeout_at(by, handshake).await {
            Err(_) => return timed_out(),
            Ok(r) => r.or_err_with(ErrorType::TLSHandshakeFailure, || {
                format!("TLS to {addr} ({})", tls.sni)
            })?,
        };
        Ok(Conn::Tls(Box::new(stream)))
    }
}

#[async_trait]
impl L4Connect for Connector {
    async fn connect(
        &self,
        addr: &pingora::protocols::l4::socket::SocketAddr,
    ) -> pingora::Result<Stream> {
        let Some(&inet) = addr.as_inet() else {
            return Error::e_explain(
                ErrorType::ConnectError,
                "an upstream peer is not an IP address",
            );
        };
        let home = if inet != self.addr {
            None
        } else if crate::priority::off_the_data_path() {
            Some(&self.kept_apart)
        } else {
            Some(&self.kept)
        };
        let (conn, reused) = match home.and_then(|h| h.take()) {
            Some(conn) => (conn, true),
            None => (self.open(inet).await?, false),
        };
        let followed = Followed::new(conn, reused, home.cloned());
        Ok(Stream::from(VirtualSocketStream::new(Box::new(followed))))
    }
}

/// The `T` an I/O error inside a Pingora error carries, however deep.
pub fn io_cause<T: std::error::Error + 'static>(e: &pingora::Error) -> Option<&T> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(found) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<T>())
        {
            return Some(found);
        }
        // Pingora keeps a cause as it was given: an `Error` or a boxed one.
        let pingora = c
            .downcast_ref::<pingora::Error>()
            .or_else(|| c.downcast_ref::<Box<pingora::Error>>().map(|b| &**b));
        cause = match pingora {
            Some(p) => p
                .cause
                .as_deref()
                .map(|c| c as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    None
}

#[cfg(test)]
#[path = "followed_tests.rs"]
mod tests;
