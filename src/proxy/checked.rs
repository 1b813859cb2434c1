//! A client connection as Pingora reads it, checked on the way: every byte passes through
//! a `Follower`, so a chunked body banyan's rules refuse stops at its first doubtful byte
//! (the read fails with `Refused`, and `fail_to_proxy` answers 400), and a request head
//! that is not whole within `client_header_timeout` of its first byte (or of the
//! connection's start, for the first one) ends the connection. Used for every HTTP/1
//! connection over TLS and for each request the plain listener hands to Pingora.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::http1::follow::{Follower, Stop};

/// The error a checked read fails with; `fail_to_proxy` finds it in Pingora's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refused while reading the request: {0}")]
pub struct Refused(pub Stop);

/// What `Checked` needs besides the stream.
#[derive(Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    /// `banyan_client_timeouts_total{phase="header"}`.
    pub header_timeouts: IntCounter,
}

pub struct Checked {
    inner: Stream,
    follower: Follower,
    limits: Limits,
    /// Armed while a head is arriving.
    deadline: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// Once a read failed, every later one fails the same way.
    failed: Option<Failed>,
}

/// Why the reads failed.
#[derive(Debug, Clone, Copy)]
enum Failed {
    Refused(Stop),
    HeadTimedOut,
}

impl Failed {
    fn error(self) -> std::io::Error {
        use std::io::{Error, ErrorKind};
        match self {
            Failed::Refused(stop) => Error::new(ErrorKind::InvalidData, Refused(stop)),
            Failed::HeadTimedOut => Error::new(ErrorKind::TimedOut, crate::logging::HEAD_TIMED_OUT),
        }
    }
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("inner", &self.inner)
            .field("follower", &self.follower)
            .finish()
    }
}

impl Checked {
    /// `head_by`: the deadline of a head already due (the connection's first request).
    pub fn new(inner: Stream, limits: Limits, head_by: Option<Instant>) -> Self {
        let mut checked = Checked {
            inner,
            follower: Follower::default(),
            limits,
            deadline: None,
            armed: false,
            failed: None,
        };
        if let Some(at) = head_by {
            checked.arm(at);
        }
        checked
    }

    pub fn into_inner(self) -> Stream {
        self.inner
    }

    /// Whether the bytes read so far end between requests (nothing of a next one begun,
    /// nothing refused): the plain listener may then serve the next request itself.
    pub fn between_requests(&self) -> bool {
        self.failed.is_none() && self.follower.between()
    }

    fn arm(&mut self, at: Instant) {
        match &mut self.deadline {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
    }
}

impl AsyncRead for Checked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(failed) = this.failed {
            return Poll::Ready(Err(failed.error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if let Err((clear, stop)) = this.follower.feed(new) {
                    let failed = Failed::Refused(stop);
                    this.failed = Some(failed);
                    if clear == 0 {
                        return Poll::Ready(Err(failed.error()));
                    }
                    // What came before the refused piece (the request's head, say) is read
                    // first, so that Pingora answers the request instead of dropping it.
                    buf.set_filled(before + clear);
                    return Poll::Ready(Ok(()));
                }
                if this.follower.head_begun() {
                    if !this.armed {
                        let at = Instant::now() + this.limits.header_timeout;
                        this.arm(at);
                    }
                } else {
                    this.armed = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.armed {
                    if let Some(sleep) = this.deadline.as_mut() {
                        if sleep.as_mut().poll(cx).is_ready() {
                            this.limits.header_timeouts.inc();
                            this.failed = Some(Failed::HeadTimedOut);
                            return Poll::Ready(Err(Failed::HeadTimedOut.error()));
                        }
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for Checked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.follower.answered(buf);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.follower.answered(first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Checked {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Checked {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Checked {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Checked {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Checked {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Checked {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Checked {
    /// Peeking would show bytes the follower has not seen; nothing here needs it.
    async fn try_peek(&mut self, _buf: &mut [u8]) -> std::io::Result<bool> {
        Ok(false)
    }
}

/// The refusal a Pingora error carries, when a checked read caused it.
pub fn refusal_in(e: &pingora::Error) -> Option<Stop> {
    crate::upstream::followed::io_cause::<Refused>(e).map(|r| r.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(head_by: Option<Instant>, timeout: Duration) -> (Checked, tokio::net::TcpStream) {
        let (server, client) = crate::proxy::sock::Sock::loopback().await;
        let limits = Limits {
            header_timeout: timeout,
            header_timeouts: IntCounter::new("t", "t").expect("counter"),
        };
        let inner: Stream = Box::new(server);
        (Checked::new(inner, limits, head_by), client)
    }

    #[tokio::test]
    async fn a_doubtful_chunk_fails_the_read_with_its_refusal() {
        let (mut checked, mut client) = pair(None, Duration::from_secs(10)).await;
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\rb\r\nz\r\n0\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        let e = loop {
            match checked.read(&mut buf).await {
                Ok(0) => panic!("closed before the refusal"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let read = pingora::Error::because(pingora::ErrorType::ReadError, "reading body", e);
        // As Pingora's proxy hands it on: wrapped once more.
        let wrapped = pingora::Error::because(pingora::ErrorType::ReadError, "proxying", read);
        assert_eq!(
            refusal_in(&wrapped),
            Some(Stop::Refused(crate::http1::framing::Refusal::BadChunk))
        );
        assert!(checked.read(&mut buf).await.is_err(), "stays failed");
        assert!(!checked.between_requests());
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_is_not_whole_in_time_ends_the_read() {
        let (mut checked, mut client) = pair(None, Duration::from_secs(10)).await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 4096];
        // The first request is whole; the second one's head has begun.
        let mut got = 0;
        while got < 47 {
            got += checked.read(&mut buf).await.expect("read");
        }
        assert!(!checked.between_requests());
        let e = checked.read(&mut buf).await.expect_err("timed out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(checked.limits.header_timeouts.get(), 1);
        // An idle connection between requests has no such deadline here.
        let (mut idle, _client) = pair(None, Duration::from_secs(10)).await;
        let waited = tokio::time::timeout(Duration::from_secs(60), idle.read(&mut buf)).await;
        assert!(waited.is_err(), "still waiting after a minute");
        // But the first head is due from the start when told so.
        let (mut first, _client) = pair(
            Some(Instant::now() + Duration::from_secs(10)),
            Duration::from_secs(10),
        )
        .await;
        let e = first.read(&mut buf).await.expect_err("timed out");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
