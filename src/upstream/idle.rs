//! Kept-alive connections, per peer (the fast path's, and those under Pingora's HTTP/1
//! client, `followed.rs`): a bounded lock-free queue, so that
//! taking and returning a connection costs no lock and no system call. A connection is
//! checked when taken (the upstream may have closed it while it waited: the runtime
//! already knows, from the readiness it saw) and is dropped once idle past the upstream's
//! `idle_timeout`. The control loop sweeps every second, so connections of a route that
//! went quiet do not linger.

use std::io::ErrorKind;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::net::TcpStream;

use crate::clock::now_ms;

/// Idle connections kept per peer (Pingora's pool keeps 128 as well).
pub const PER_PEER: usize = 128;

/// A kept connection that can tell, without waiting, whether it is still open and quiet.
pub trait Probe {
    /// Open, and nothing unasked arrived on it.
    fn open_and_quiet(&mut self) -> bool;
}

impl Probe for TcpStream {
    fn open_and_quiet(&mut self) -> bool {
        // Without readiness this returns at once, no system call; with it, the read says
        // whether the upstream closed (0) or sent something unasked (never reusable).
        let mut probe = [0u8; 1];
        matches!(self.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }
}

struct Idle<S> {
    stream: S,
    since_ms: u64,
}

pub struct IdlePool<S = TcpStream> {
    queue: ArrayQueue<Idle<S>>,
    idle_ms: u64,
}

impl<S: Probe> IdlePool<S> {
    pub fn new(idle_timeout: Duration) -> Self {
        IdlePool {
            queue: ArrayQueue::new(PER_PEER),
            idle_ms: u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A kept connection that is still open, if there is one.
    pub fn take(&self) -> Option<S> {
        let now = now_ms();
        while let Some(mut idle) = self.queue.pop() {
            if self.usable(&mut idle, now) {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Keeps a connection whose last exchange ended cleanly; beyond the bound it closes.
    pub fn put(&self, stream: S) {
        let _ = self.queue.push(Idle {
            stream,
            since_ms: now_ms(),
        });
    }

    /// Closes what the upstream closed or what idled too long.
    pub fn sweep(&self) {
        let now = now_ms();
        for _ in 0..self.queue.len() {
            let Some(mut idle) = self.queue.pop() else {
                break;
            };
            if self.usable(&mut idle, now) {
                let _ = self.queue.push(idle);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn usable(&self, idle: &mut Idle<S>, now: u64) -> bool {
        now.saturating_sub(idle.since_ms) < self.idle_ms && idle.stream.open_and_quiet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn closed_and_expired_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let pool = IdlePool::new(Duration::from_secs(60));
        let (open, _open_server) = pair(&listener).await;
        let (closed, closed_server) = pair(&listener).await;
        pool.put(closed);
        drop(closed_server);
        // Wait until the runtime has seen the close.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            pool.sweep();
            if pool.is_empty() || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pool.is_empty(), "the closed connection was swept");
        pool.put(open);
        assert!(pool.take().is_some(), "an open connection is handed out");
        assert!(pool.take().is_none());

        let (chatty, mut chatty_server) = pair(&listener).await;
        pool.put(chatty);
        chatty_server.write_all(b"unasked").await.expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pool.is_empty() && std::time::Instant::now() < deadline {
            pool.sweep();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            pool.take().is_none(),
            "unasked bytes make a connection unusable"
        );

        let expired = IdlePool::new(Duration::ZERO);
        let (c, _s) = pair(&listener).await;
        expired.put(c);
        assert!(expired.take().is_none());
        for _ in 0..PER_PEER + 5 {
            let (c, _s) = pair(&listener).await;
            pool.put(c);
        }
        assert_eq!(pool.len(), PER_PEER, "bounded");
    }
}
