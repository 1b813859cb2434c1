//! The bytes of a plain connection's requests not yet served, and the wait for more. An
//! idle keep-alive connection holds no buffer: the wait borrows one from its thread's
//! spare buffers for each poll and gives it back when nothing came (the socket only needs
//! a buffer at the moment it is read, and a poll that finds nothing does not read), so
//! 10,000 idle clients do not keep 10,000 read buffers resident. A buffer is kept only
//! while it holds bytes of a request.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use super::sock::Sock;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::spares::Spares;

/// Bytes read at a time while waiting for a request: a request that fits is served by the
/// fast path from them; otherwise they are put back for Pingora's parser.
pub const FIRST_READ: usize = 4096;

/// The largest request head read on plain connections (nginx's default allows 32 KiB);
/// a larger one is answered 431.
pub const MAX_HEAD: usize = 64 * 1024;

thread_local! {
    static SPARES: RefCell<Spares<Vec<u8>>> = const { RefCell::new(Spares::new()) };
}

fn take_spare() -> Vec<u8> {
    SPARES
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| vec![0; FIRST_READ])
}

/// Lets go of the spare buffers this thread did not need since the last call.
pub fn trim_spares() {
    drop(SPARES.with(|s| s.borrow_mut().trim()));
}

fn give_spare(buf: Vec<u8>) {
    if buf.len() == FIRST_READ {
        let _ = SPARES.with(|s| s.borrow_mut().give(buf));
    }
}

/// How a wait for client bytes ended.
pub enum Read {
    More,
    /// Closed, or the service is shutting down: nothing to answer.
    Gone,
    TimedOut,
}

/// Bytes of requests read but not yet served: a pipelined next request, or the start of
/// one still arriving. Plain zeroed memory read into with `read` (cheaper per request than
/// a growable buffer's uninitialised tail), grown for a long head, shrunk back after it,
/// and handed back to the thread's spares when empty. Only `..filled` is ever read: the
/// rest of a reused buffer is never looked at.
#[derive(Default)]
pub struct Pending {
    bytes: Vec<u8>,
    filled: usize,
}

impl Pending {
    pub fn data(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }

    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Room for the next read, growing (up to a head's limit plus a read) when short.
    fn spare(&mut self) -> &mut [u8] {
        if self.bytes.is_empty() {
            self.bytes = take_spare();
        } else if self.bytes.len() - self.filled < 512 {
            let grown = (self.bytes.len() * 2).min(MAX_HEAD + FIRST_READ);
            self.bytes.resize(grown, 0);
        }
        &mut self.bytes[self.filled..]
    }

    /// Drops the first `n` bytes (a served request).
    pub fn consume(&mut self, n: usize) {
        self.bytes.copy_within(n..self.filled, 0);
        self.filled -= n;
        if self.filled == 0 {
            self.release();
        } else if self.bytes.len() > FIRST_READ && self.filled <= FIRST_READ {
            self.bytes.truncate(FIRST_READ);
            self.bytes.shrink_to_fit();
        }
    }

    pub fn clear(&mut self) {
        self.consume(self.filled);
    }

    /// Gives the buffer back (empty: nothing of a request is in it).
    fn release(&mut self) {
        let mut buf = std::mem::take(&mut self.bytes);
        if buf.len() > FIRST_READ {
            buf.truncate(FIRST_READ);
            buf.shrink_to_fit();
        }
        give_spare(buf);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.release();
    }
}

/// One read into `buf`, holding a buffer only while a poll reads: a poll that finds the
/// socket not ready gives an empty `buf`'s buffer back before waiting.
async fn read_into(stream: &mut Sock, buf: &mut Pending) -> std::io::Result<usize> {
    poll_fn(|cx| {
        let idle = buf.bytes.is_empty();
        let mut rb = ReadBuf::new(buf.spare());
        match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 && idle {
                    buf.release();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if idle {
                    buf.release();
                }
                Poll::Pending
            }
        }
    })
    .await
}

/// What a plain connection's reads wait on besides its bytes, made once for the
/// connection rather than per wait: its timer, moved to each wait's deadline (a later
/// deadline is one atomic store in tokio's timer wheel, where a timer made per wait was
/// registered and taken out again for every request), and its registration for the
/// server's shutdown.
pub struct Waits<'a, S> {
    timer: Pin<&'a mut Sleep>,
    stop: Pin<&'a mut S>,
    stopped: bool,
}

impl<'a, S: Future> Waits<'a, S> {
    /// `stop` completes when the server shuts down after it was made; `stopped` says
    /// whether it had already (read after `stop`'s watch was made, so none is missed).
    pub fn new(timer: Pin<&'a mut Sleep>, stop: Pin<&'a mut S>, stopped: bool) -> Self {
        Waits {
            timer,
            stop,
            stopped,
        }
    }

    /// The timer, lent to a request's steps between waits.
    pub fn timer(&mut self) -> Pin<&mut Sleep> {
        self.timer.as_mut()
    }
}

/// Reads more bytes of a connection into `buf` until `deadline`.
pub async fn read_until<S: Future>(
    stream: &mut Sock,
    buf: &mut Pending,
    deadline: Instant,
    waits: &mut Waits<'_, S>,
) -> Read {
    if waits.stopped {
        return Read::Gone;
    }
    // The timer is only moved forward by a wait (a move back takes it out of tokio's
    // wheel and puts it in again): one set earlier, by the last request's upstream read,
    // fires early and is then set to `deadline`.
    if waits.timer.deadline() > deadline || waits.timer.is_elapsed() {
        waits.timer.as_mut().reset(deadline);
    }
    let read = loop {
        break tokio::select! {
            biased;
            read = read_into(stream, buf) => match read {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Read::Gone),
            },
            () = waits.timer.as_mut() => {
                if Instant::now() < deadline {
                    waits.timer.as_mut().reset(deadline);
                    continue;
                }
                Err(Read::TimedOut)
            }
            _ = waits.stop.as_mut() => {
                waits.stopped = true;
                Err(Read::Gone)
            }
        };
    };
    match read {
        Ok(n) => {
            buf.filled += n;
            Read::More
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_not_needed_for_a_second_are_let_go() {
        let taken: Vec<_> = (0..10).map(|_| take_spare()).collect();
        taken.into_iter().for_each(give_spare);
        trim_spares();
        assert_eq!(
            SPARES.with(|s| s.borrow().len()),
            10,
            "a burst's spares stay a while"
        );
        give_spare(take_spare());
        trim_spares();
        assert_eq!(
            SPARES.with(|s| s.borrow().len()),
            super::super::spares::QUIET
        );
    }

    #[test]
    fn an_empty_buffer_goes_back_and_a_request_keeps_one() {
        drop(SPARES.with(|s| s.borrow_mut().all()));
        let mut p = Pending::default();
        assert!(p.bytes.is_empty(), "nothing held before a request");
        let room = p.spare();
        room[..5].copy_from_slice(b"GET /");
        p.filled = 5;
        assert_eq!(p.data(), b"GET /");
        p.consume(5);
        assert!(p.bytes.is_empty(), "given back once served");
        assert_eq!(SPARES.with(|s| s.borrow().len()), 1);
        // The next request takes that buffer; a long head grows it, and it is given back
        // at its usual size.
        let _ = p.spare();
        assert_eq!(SPARES.with(|s| s.borrow().len()), 0);
        p.filled = FIRST_READ - 100;
        let _ = p.spare();
        assert!(p.bytes.len() > FIRST_READ);
        p.clear();
        assert_eq!(
            SPARES.with(|s| s.borrow_mut().take().map(|b| b.len())),
            Some(FIRST_READ)
        );
    }
}
