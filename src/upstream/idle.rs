//! Kept-alive connections, per peer (the fast path's, and those under Pingora's HTTP/1
//! client, `followed.rs`): bounded lock-free queues, so that taking and returning a
//! connection costs no lock and no system call. A connection is kept by the thread that
//! used it and handed out only on that thread, as each nginx worker keeps its own:
//! without work stealing each data-path thread runs its own runtime, whose reactor is the
//! one told when the connection is readable, and a connection used from another thread
//! costs a cross-thread wake-up on every read. A connection is checked when taken (the
//! upstream may have closed it while it waited: the runtime already knows, from the
//! readiness it saw) and is dropped once idle past the upstream's `idle_timeout`. The
//! control loop sweeps every second, so connections of a route that went quiet do not
//! linger.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tokio::net::TcpStream;

use crate::clock::now_ms;

/// Idle connections kept per peer and thread (Pingora's pool keeps 128 as well).
pub const PER_PEER: usize = 128;

/// Threads with queues of their own; more threads than this share them.
const SHARDS: usize = 8;

/// This thread's queue: threads are numbered as they first use a pool (the data-path
/// threads and the shadow worker, in practice; the control loop's sweep takes no number).
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.try_with(|s| *s).unwrap_or(0)
}

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
    /// One queue per thread, made when the thread first keeps a connection here.
    shards: [OnceLock<Box<ArrayQueue<Idle<S>>>>; SHARDS],
    idle_ms: u64,
}

impl<S: Probe> IdlePool<S> {
    pub fn new(idle_timeout: Duration) -> Self {
        IdlePool {
            shards: std::array::from_fn(|_| OnceLock::new()),
            idle_ms: u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn queues(&self) -> impl Iterator<Item = &ArrayQueue<Idle<S>>> {
        self.shards.iter().filter_map(|q| q.get().map(|q| &**q))
    }

    /// A kept connection this thread kept that is still open, if there is one.
    pub fn take(&self) -> Option<S> {
        let queue = self.shards[shard()].get()?;
        let now = now_ms();
        while let Some(mut idle) = queue.pop() {
            if self.usable(&mut idle, now) {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Keeps a connection whose last exchange ended cleanly; beyond the bound it closes.
    pub fn put(&self, stream: S) {
        let queue = self.shards[shard()].get_or_init(|| Box::new(ArrayQueue::new(PER_PEER)));
        let _ = queue.push(Idle {
            stream,
            since_ms: now_ms(),
        });
    }

    /// Closes what the upstream closed or what idled too long.
    pub fn sweep(&self) {
        let now = now_ms();
        for queue in self.queues() {
            for _ in 0..queue.len() {
                let Some(mut idle) = queue.pop() else {
                    break;
                };
                if self.usable(&mut idle, now) {
                    let _ = queue.push(idle);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queues().map(ArrayQueue::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues().all(ArrayQueue::is_empty)
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

    struct Fake;
    impl Probe for Fake {
        fn open_and_quiet(&mut self) -> bool {
            true
        }
    }

    #[test]
    fn a_connection_is_handed_out_on_the_thread_that_kept_it() {
        let pool = IdlePool::<Fake>::new(Duration::from_secs(60));
        pool.put(Fake);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(pool.take().is_none(), "not another thread's");
                pool.put(Fake);
            });
        });
        assert_eq!(pool.len(), 2, "each thread keeps its own");
        assert!(pool.take().is_some());
        assert!(pool.take().is_none(), "the other one is the other thread's");
        pool.sweep();
        assert_eq!(
            pool.len(),
            1,
            "a sweep keeps what is usable, on every thread"
        );
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
