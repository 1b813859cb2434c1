//! The upstream side of banyan's own HTTP/1.1 path, for plain-HTTP upstreams: kept
//! connections from the peer's lock-free queue or new ones, the request written whole,
//! the response head read, and the body followed by its framing, either relayed as it
//! comes (client requests) or collected up to a cap (shadow copies).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::response::{self, Chunked, Framing, Parsed};
use crate::shadow::capture::BodyCapture;
use crate::shadow::compare::{Answer, Rules};
use crate::upstream::UpstreamPool;

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
}

impl Failure {
    fn lost(timed_out: bool, answered: bool) -> Self {
        Failure::Exchange {
            timed_out,
            answered,
        }
    }
}

/// An upstream's answer, head parsed, with the bytes read past the head.
pub struct Answered {
    pub stream: TcpStream,
    pub parsed: Parsed,
    pub head: Bytes,
    pub rest: BytesMut,
}

/// No single read may outlast the whole exchange's budget either.
pub fn read_timeout(pool: &UpstreamPool) -> Duration {
    let read = pool.config.read_timeout;
    pool.config.total_timeout.map_or(read, |t| t.min(read))
}

/// One attempt on one peer: a kept connection if there is one (replaced by a new one
/// when it turns out the upstream had closed it, for requests that may be sent twice),
/// else a new one.
pub async fn attempt(
    pool: &UpstreamPool,
    peer: usize,
    request: &[u8],
    head_request: bool,
    idempotent: bool,
) -> Result<Answered, Failure> {
    let Some((addr, idle)) = pool.peer_addr(peer) else {
        return Err(Failure::Connect { timed_out: false });
    };
    let timeout = read_timeout(pool);
    let mut kept = idle.take();
    loop {
        let reused = kept.is_some();
        let stream = match kept.take() {
            Some(s) => s,
            None => connect(addr, pool.config.connect_timeout).await?,
        };
        match exchange(stream, request, head_request, timeout).await {
            Err(Failure::Exchange {
                timed_out: false,
                answered: false,
            }) if reused && idempotent => continue,
            other => return other,
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

/// Writes the request and reads up to the end of the (final) response head.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
    head_request: bool,
    timeout: Duration,
) -> Result<Answered, Failure> {
    let lost = Failure::lost;
    match tokio::time::timeout(timeout, stream.write_all(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(lost(false, false)),
        Err(_) => return Err(lost(true, false)),
    }
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_SIZE);
        }
        let answered = !buf.is_empty();
        match tokio::time::timeout(timeout, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(lost(false, answered)),
            Err(_) => return Err(lost(true, answered)),
        }
        loop {
            match response::parse(&buf, head_request, MAX_RESPONSE_HEAD) {
                Ok(None) => break,
                Ok(Some(parsed)) if parsed.informational => {
                    // 100 Continue and early hints: the client asked for neither.
                    buf.advance(parsed.head_len);
                }
                Ok(Some(parsed)) => {
                    let head = buf.split_to(parsed.head_len).freeze();
                    return Ok(Answered {
                        stream,
                        parsed,
                        head,
                        rest: buf,
                    });
                }
                Err(_) => return Err(lost(false, true)),
            }
        }
    }
}

/// Where a response body stands while it is read.
pub struct BodyRelay {
    framing: Framing,
    remaining: u64,
    chunked: Chunked,
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
            chunked: Chunked::default(),
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

    /// Reads the next bytes of the body into `rest` (emptied first): `Ok(true)` when there
    /// are some to feed, `Ok(false)` when the upstream closed at the end of a body that
    /// runs until close.
    pub async fn read(
        &mut self,
        stream: &mut TcpStream,
        rest: &mut BytesMut,
        timeout: Duration,
    ) -> Result<bool, Failure> {
        rest.clear();
        rest.reserve(READ_SIZE);
        match tokio::time::timeout(timeout, stream.read_buf(rest)).await {
            Ok(Ok(0)) if self.until_close() => {
                self.closed();
                Ok(false)
            }
            Ok(Ok(n)) if n > 0 => Ok(true),
            Ok(_) => Err(Failure::lost(false, true)),
            Err(_) => Err(Failure::lost(true, true)),
        }
    }

    /// Returns the connection to the peer's queue when its answer ended exactly where its
    /// framing said (`rest`: bytes read past the body) and the upstream keeps it open.
    pub fn release(
        &self,
        pool: &UpstreamPool,
        peer: usize,
        stream: TcpStream,
        rest: &BytesMut,
        parsed: &Parsed,
    ) {
        if self.ended && rest.is_empty() && !parsed.close {
            if let Some((_, idle)) = pool.peer_addr(peer) {
                idle.put(stream);
            }
        }
    }

    /// Takes the body bytes at the start of `buf` (leaving what lies past the body):
    /// framed as they came into `relay`, decoded into `decoded`.
    pub fn feed(
        &mut self,
        buf: &mut BytesMut,
        relay: Option<&mut Vec<u8>>,
        decoded: Option<&mut BodyCapture>,
    ) -> Result<(), response::BadChunk> {
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
                let keep = decoded.is_some();
                let n = self.chunked.feed(buf, |d| {
                    if keep {
                        data.extend_from_slice(d)
                    }
                })?;
                self.ended = self.chunked.done();
                let framed = buf.split_to(n);
                if let Some(out) = relay {
                    out.extend_from_slice(&framed);
                }
                if let Some(capture) = decoded {
                    capture.push(&data.freeze());
                }
                return Ok(());
            }
        };
        let chunk = buf.split_to(taken).freeze();
        if let Some(out) = relay {
            out.extend_from_slice(&chunk);
        }
        if let Some(capture) = decoded {
            capture.push(&chunk);
        }
        Ok(())
    }
}

/// One whole exchange for a shadow copy (or a second legacy call): the answer with its
/// decoded body up to `cap` bytes (`complete` false beyond). The caller bounds the time.
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
    let Answered {
        mut stream,
        parsed,
        head,
        mut rest,
    } = attempt(pool, peer, request, head_request, idempotent).await?;
    let timeout = read_timeout(pool);
    let mut body = BodyRelay::new(parsed.framing);
    let mut capture = BodyCapture::new(cap);
    body.feed(&mut rest, None, Some(&mut capture))
        .map_err(|_| Failure::lost(false, true))?;
    while !body.done() && !capture.overflowed() {
        if body.read(&mut stream, &mut rest, timeout).await? {
            body.feed(&mut rest, None, Some(&mut capture))
                .map_err(|_| Failure::lost(false, true))?;
        }
    }
    body.release(pool, peer, stream, &rest, &parsed);
    let (bytes, complete) = capture.finish();
    Ok(Answer {
        status: parsed.status,
        headers: response_headers(&head, rules),
        body: bytes,
        complete,
    })
}

/// The headers of a response head the shadow comparison reads, as a map.
pub fn response_headers(head: &[u8], rules: &Rules) -> HeaderMap {
    let mut hs = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut hs);
    let mut map = HeaderMap::new();
    if resp.parse(head).is_ok() {
        for h in resp.headers.iter().filter(|h| rules.reads_header(h.name)) {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) {
                map.append(n, v);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::pattern::Patterns;

    #[test]
    fn an_answer_keeps_only_the_headers_the_comparison_reads() {
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 23 Nov 2026 05:00:00 GMT\r\n\
            Content-Type: application/json\r\nContent-Encoding: gzip\r\nX-Version: 7\r\n\
            x-version: 8\r\nContent-Length: 2\r\nSet-Cookie: s=1\r\n\r\n";
        let rules = Rules {
            compare_headers: vec![HeaderName::from_static("x-version")],
            ignore_headers: vec![],
            ignore: Patterns::parse(std::iter::empty()),
            max_body: 1 << 20,
        };
        let map = response_headers(head, &rules);
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["content-encoding", "content-type", "x-version"]);
        let versions: Vec<&[u8]> = map
            .get_all("x-version")
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(versions, [&b"7"[..], &b"8"[..]]);
    }
}
