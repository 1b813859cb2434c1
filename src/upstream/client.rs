//! banyan's own HTTP/1.1 client, for plain-HTTP upstreams: the I/O layer under client
//! requests on banyan's path and every shadow copy to a plain upstream. Kept
//! connections from the peer's lock-free queue or new ones, the request written whole,
//! the response head read, and the body followed by its framing, either relayed as it
//! comes (client requests) or collected up to a cap (shadow copies).

use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::compare::{Answer, Rules};
use crate::http1::chunked::{self, BadChunk, Decoder};
use crate::http1::response::{self, BadResponse, Framing, Parsed};
use crate::upstream::capture::BodyCapture;
use crate::upstream::{Lane, UpstreamPool};

/// The largest upstream response head taken.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Bytes read from the upstream at a time.
pub const READ_SIZE: usize = 16 * 1024;

/// How one attempt on one upstream peer failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("connecting failed{}", if *.timed_out { " (timed out)" } else { "" })]
    Connect { timed_out: bool },
    /// Failed after the request was (partly) sent: `answered` is false while no byte of a
    /// response had come.
    #[error("the exchange failed{}", if *.timed_out { " (timed out)" } else { "" })]
    Exchange { timed_out: bool, answered: bool },
    /// The answer's head could not be framed without doubt (`framing::response`): the
    /// connection is dropped. The reason is the metric's label.
    #[error("the answer cannot be framed: {0}")]
    BadAnswer(&'static str),
}

impl Failure {
    fn lost(timed_out: bool, answered: bool) -> Self {
        Failure::Exchange {
            timed_out,
            answered,
        }
    }
}

/// An upstream's answer, head parsed: `read` holds its head (`parsed.head_len` bytes) and
/// the bytes read past it (one buffer: splitting the head off cost an allocation). The
/// parsed head is in the caller's place for it: an answer is returned through several
/// awaits, and each used to copy the few hundred bytes of a head held by value.
pub struct Answered<'p> {
    pub stream: TcpStream,
    pub parsed: &'p mut Parsed,
    pub read: BytesMut,
}

/// A client connection's timer, lent to the steps of its request's exchange.
pub type Timer<'t> = Option<Pin<&'t mut Sleep>>;

/// The lent timer again, for one more step.
fn relend<'a>(timer: &'a mut Timer<'_>) -> Timer<'a> {
    timer.as_mut().map(|t| t.as_mut())
}

/// Runs `step` within `limit` (on `timer` when lent one), or unbounded when the caller
/// bounds the whole exchange (shadow copies: one timer for the exchange instead of one per
/// read and write); `None` when it ran out of time.
async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    timer: Timer<'_>,
    step: F,
) -> Option<F::Output> {
    match (limit, timer) {
        (Some(t), Some(timer)) => crate::clock::within_on(timer, t, step).await,
        (Some(t), None) => crate::clock::within(t, step).await,
        (None, _) => Some(step.await),
    }
}

/// How one exchange is carried out, beside the request itself.
#[derive(Clone, Copy)]
pub struct Exchange<'a> {
    /// A HEAD request: the answer has no body whatever its head says.
    pub head_request: bool,
    /// The request may be sent again on a new connection when a kept one turns out closed.
    pub idempotent: bool,
    /// Each read and write's time limit; `None` when the caller bounds the whole exchange.
    pub step_timeout: Option<Duration>,
    /// The comparison rules whose headers the answer keeps (`Parsed::kept`).
    pub keep: Option<&'a Rules>,
    /// Whose kept connections it takes and returns.
    pub lane: Lane,
}

/// One attempt on one peer: a kept connection if there is one (replaced by a new one
/// when it turns out the upstream had closed it, for requests that may be sent twice),
/// else a new one. The answer's head is parsed into `parsed`.
pub async fn attempt<'p>(
    pool: &UpstreamPool,
    peer: usize,
    request: &[u8],
    how: Exchange<'_>,
    mut timer: Timer<'_>,
    parsed: &'p mut Parsed,
) -> Result<Answered<'p>, Failure> {
    let Some((addr, idle)) = pool.peer_addr(peer, how.lane) else {
        return Err(Failure::Connect { timed_out: false });
    };
    let mut kept = idle.take();
    loop {
        let reused = kept.is_some();
        let stream = match kept.take() {
            Some(s) => s,
            None => connect(addr, pool.config.connect_timeout).await?,
        };
        match exchange(stream, request, how, relend(&mut timer), &mut *parsed).await {
            Ok((stream, read)) => {
                return Ok(Answered {
                    stream,
                    parsed,
                    read,
                })
            }
            Err(Failure::Exchange {
                timed_out: false,
                answered: false,
            }) if reused && how.idempotent => continue,
            Err(other) => return Err(other),
        }
    }
}

async fn connect(addr: std::net::SocketAddr, timeout: Duration) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // As Pingora does: requests are written whole, so nothing waits for coalescing.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(_)) => Err(Failure::Connect { timed_out: false }),
        Err(_) => Err(Failure::Connect { timed_out: true }),
    }
}

/// Writes the request and reads up to the end of the (final) response head, parsed into
/// `into`: the connection and what was read.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
    how: Exchange<'_>,
    mut timer: Timer<'_>,
    into: &mut Parsed,
) -> Result<(TcpStream, BytesMut), Failure> {
    let lost = Failure::lost;
    let step = how.step_timeout;
    match within(step, relend(&mut timer), stream.write_all(request)).await {
        Some(Ok(())) => {}
        Some(Err(_)) => return Err(lost(false, false)),
        None => return Err(lost(true, false)),
    }
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_SIZE);
        }
        let answered = !buf.is_empty();
        match within(step, relend(&mut timer), stream.read_buf(&mut buf)).await {
            Some(Ok(n)) if n > 0 => {}
            Some(_) => return Err(lost(false, answered)),
            None => return Err(lost(true, answered)),
        }
        loop {
            match response::parse(&buf, how.head_request, MAX_RESPONSE_HEAD, how.keep) {
                Ok(None) => break,
                Ok(Some(parsed)) if parsed.informational => {
                    // 100 Continue and early hints: the client asked for neither.
                    buf.advance(parsed.head_len);
                }
                Ok(Some(parsed)) => {
                    *into = parsed;
                    return Ok((stream, buf));
                }
                Err(BadResponse::Framing(bad)) => return Err(Failure::BadAnswer(bad.as_str())),
                Err(_) => return Err(lost(false, true)),
            }
        }
    }
}

/// Where a response body stands while it is read.
pub struct BodyRelay {
    framing: Framing,
    remaining: u64,
    chunked: Decoder,
    ended: bool,
}

impl BodyRelay {
    pub fn new(framing: Framing) -> Self {
        BodyRelay {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: Decoder::default(),
            ended: framing == Framing::Empty || framing == Framing::Length(0),
        }
    }

    pub fn done(&self) -> bool {
        self.ended
    }

    pub fn until_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }

    /// The upstream closed: the end of a body delimited by close.
    pub fn closed(&mut self) {
        self.ended = self.until_close();
    }

    /// Reads the next bytes of the body into `rest` (emptied first), within `timeout`
    /// when given: `Ok(true)` when there are some to feed, `Ok(false)` when the upstream
    /// closed at the end of a body that runs until close.
    pub async fn read(
        &mut self,
        stream: &mut TcpStream,
        rest: &mut BytesMut,
        timeout: Option<Duration>,
        timer: Timer<'_>,
    ) -> Result<bool, Failure> {
        rest.clear();
        rest.reserve(READ_SIZE);
        match within(timeout, timer, stream.read_buf(rest)).await {
            Some(Ok(0)) if self.until_close() => {
                self.closed();
                Ok(false)
            }
            Some(Ok(n)) if n > 0 => Ok(true),
            Some(_) => Err(Failure::lost(false, true)),
            None => Err(Failure::lost(true, true)),
        }
    }

    /// Returns the connection to the peer's queue when its answer ended exactly where its
    /// framing said (`rest`: bytes read past the body) and the upstream keeps it open.
    pub fn release(
        &self,
        pool: &UpstreamPool,
        (peer, lane): (usize, Lane),
        stream: TcpStream,
        rest: &BytesMut,
        parsed: &Parsed,
    ) {
        if self.ended && rest.is_empty() && !parsed.close {
            if let Some((_, idle)) = pool.peer_addr(peer, lane) {
                idle.put(stream);
            }
        }
    }

    /// Takes the body bytes at the start of `buf` (leaving what lies past the body): into
    /// `relay` as the client gets them (a chunked body re-chunked by banyan, extensions
    /// and trailers left out), decoded into `decoded`.
    pub fn feed(
        &mut self,
        buf: &mut BytesMut,
        relay: Option<&mut Vec<u8>>,
        decoded: Option<&mut BodyCapture>,
    ) -> Result<(), BadChunk> {
        if self.ended {
            return Ok(());
        }
        let taken = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                self.remaining -= n as u64;
                self.ended = self.remaining == 0;
                n
            }
            Framing::UntilClose => buf.len(),
            Framing::Chunked => {
                let mut data = BytesMut::new();
                let n = self.chunked.feed(buf, |d| data.extend_from_slice(d))?;
                self.ended = self.chunked.done();
                buf.advance(n);
                if let Some(out) = relay {
                    chunked::encode(out, &data);
                    if self.ended {
                        out.extend_from_slice(chunked::LAST);
                    }
                }
                if let Some(capture) = decoded {
                    capture.push(&data.freeze());
                }
                return Ok(());
            }
        };
        let Some(capture) = decoded else {
            // Relayed only: copied, and the buffer stays the connection's own (splitting
            // it would make it shared, an allocation per answer).
            if let Some(out) = relay {
                out.extend_from_slice(buf.get(..taken).unwrap_or_default());
            }
            buf.advance(taken);
            return Ok(());
        };
        // Captured: the capture keeps the bytes without copying them.
        let chunk = buf.split_to(taken).freeze();
        if let Some(out) = relay {
            out.extend_from_slice(&chunk);
        }
        capture.push(&chunk);
        Ok(())
    }
}

/// One whole exchange for a shadow copy (or a second legacy call): the answer with its
/// decoded body up to `cap` bytes (`complete` false beyond). The caller bounds the whole
/// exchange's time (the shadow timeout), so no read or write sets a timer of its own.
/// A connection whose answer was read whole goes back to the peer's queue.
pub async fn fetch(
    pool: &UpstreamPool,
    request: &[u8],
    head_request: bool,
    idempotent: bool,
    cap: usize,
    rules: &Rules,
) -> Result<Answer, Failure> {
    let (peer, _) = pool.pick_or_any();
    let how = Exchange {
        head_request,
        idempotent,
        step_timeout: None,
        keep: Some(rules),
        lane: Lane::Shadow,
    };
    let mut place = Parsed::default();
    let Answered {
        mut stream,
        parsed,
        read: mut rest,
    } = attempt(pool, peer, request, how, None, &mut place).await?;
    rest.advance(parsed.head_len.min(rest.len()));
    let mut body = BodyRelay::new(parsed.framing);
    let mut capture = BodyCapture::new(cap);
    body.feed(&mut rest, None, Some(&mut capture))
        .map_err(|_| Failure::lost(false, true))?;
    while !body.done() && !capture.overflowed() {
        if body.read(&mut stream, &mut rest, None, None).await? {
            body.feed(&mut rest, None, Some(&mut capture))
                .map_err(|_| Failure::lost(false, true))?;
        }
    }
    body.release(pool, (peer, Lane::Shadow), stream, &rest, parsed);
    let (bytes, complete) = capture.finish();
    Ok(Answer {
        status: parsed.status,
        headers: std::mem::take(&mut parsed.kept),
        body: bytes,
        complete,
    })
}
