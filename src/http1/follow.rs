//! Follows what a client sends on an HTTP/1 connection that Pingora parses, message by
//! message, with banyan's own framing rules (and, in `answers.rs`, what Pingora sends an
//! upstream, to know what each answer is an answer to). Pingora decodes chunked bodies with a parser
//! that takes bytes banyan refuses (a CR or LF inside a chunk extension, say); following
//! the same bytes here, with the strict decoder the fast path uses, lets banyan stop such a
//! body at the first doubtful byte, and also tells when a request head has begun (for the
//! whole-head deadline). Pure: the bytes come from `checked.rs`.
//!
//! Heads the rules refuse are refused by `strict::check_request` once Pingora has parsed
//! them (with a 400 and a closed connection), so here they only end the following. After a
//! `101 Switching Protocols` or a `CONNECT` the bytes are another protocol's and are no
//! longer followed.

use super::chunked;
use super::framing::{self, Body, Refusal};
use super::pieces::{BodyLeft, Fed, HeadSoFar};

/// The largest request head followed: Pingora's own limit (it answers a longer one 400
/// itself), so that following never refuses a head Pingora would take. The copy lasts only
/// while the head arrives, which `client_header_timeout` bounds.
pub const MAX_HEAD: usize = 1024 * 1024;

/// Header fields read per head: Pingora's own limit.
const MAX_FIELDS: usize = 256;

/// Why a connection's bytes cannot go on to Pingora.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("{0}")]
    Refused(Refusal),
    #[error("a request head longer than 1 MiB")]
    HeadTooLarge,
}

#[derive(Debug)]
enum State {
    /// Reading a request head (`head` holds the bytes of one that is not whole yet).
    Head,
    Body(BodyLeft),
    /// Not HTTP/1 any more (an upgrade, a tunnel, a head the rules refuse).
    Through,
}

/// What a whole request head asked for that decides how its answer is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// A `HEAD` request: its answer has no body, whatever its fields say.
    pub head: bool,
    /// It asked to upgrade: a `101` answer hands the connection to another protocol.
    pub upgrade: bool,
    /// A `CONNECT`: a 2xx answer makes the connection a tunnel.
    pub tunnel: bool,
}

/// One connection's request bytes, in order.
#[derive(Debug)]
pub struct Follower {
    state: State,
    head: HeadSoFar,
    /// A request asked to upgrade, and its answer has not been written yet.
    upgrade_asked: bool,
}

impl Default for Follower {
    fn default() -> Self {
        Follower {
            state: State::Head,
            head: HeadSoFar::default(),
            upgrade_asked: false,
        }
    }
}

impl Follower {
    /// Bytes of a request head have arrived and the head is not whole yet.
    pub fn head_begun(&self) -> bool {
        matches!(self.state, State::Head) && !self.head.is_empty()
    }

    /// Between two requests: every byte so far belongs to a whole request.
    pub fn between(&self) -> bool {
        matches!(self.state, State::Head) && self.head.is_empty()
    }

    /// Whether the bytes are still followed as HTTP/1 requests.
    pub fn following(&self) -> bool {
        !matches!(self.state, State::Through)
    }

    /// Takes the next bytes the client sent. On a refusal, also says how many of them are
    /// clear of it (up to the start of the piece that holds it): those may still be read.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), (usize, Stop)> {
        self.feed_noting(bytes, |_| {})
    }

    /// `feed`, also telling `on_head` of each whole request head, in order.
    pub fn feed_noting(
        &mut self,
        bytes: &[u8],
        mut on_head: impl FnMut(Sent),
    ) -> Result<(), (usize, Stop)> {
        let mut buf = bytes;
        while !buf.is_empty() {
            let clear = bytes.len() - buf.len();
            match &mut self.state {
                State::Through => return Ok(()),
                State::Body(body) => {
                    let (used, ended) = body
                        .take(buf)
                        .map_err(|_| (clear, Stop::Refused(Refusal::BadChunk)))?;
                    buf = &buf[used..];
                    if ended {
                        self.state = State::Head;
                    }
                }
                State::Head => match self.head.feed(buf, MAX_HEAD, parse) {
                    Ok(Fed::Whole(head, rest)) => {
                        self.upgrade_asked |= head.upgrade;
                        self.state = head.next;
                        if let Some(sent) = head.sent {
                            on_head(sent);
                        }
                        buf = rest;
                    }
                    Ok(Fed::Partial) => return Ok(()),
                    Ok(Fed::TooLarge) => return Err((clear, Stop::HeadTooLarge)),
                    Err(stop) => return Err((clear, stop)),
                },
            }
        }
        Ok(())
    }

    /// Takes the start of what banyan writes to the client: after an upgrade was asked for,
    /// a `101` answer hands the connection to the new protocol. (Were the answer to an
    /// earlier, pipelined request written first, the `101` would be missed: the new
    /// protocol's bytes then fail to parse as a head, which ends the following too.)
    pub fn answered(&mut self, out: &[u8]) {
        if !self.upgrade_asked || !out.starts_with(b"HTTP/1.") {
            return;
        }
        match out.get(9..12) {
            Some(b"101") => {
                self.upgrade_asked = false;
                self.state = State::Through;
                self.head.clear();
            }
            // An interim answer (100 Continue): the final one is still to come.
            Some([b'1', _, _]) => {}
            _ => self.upgrade_asked = false,
        }
    }
}

/// What a whole request head sets.
struct Head {
    /// What follows the head.
    next: State,
    upgrade: bool,
    /// What its answer depends on; `None` when the bytes were not a request.
    sent: Option<Sent>,
}

/// Parses a head at the start of `bytes`: its length and what it sets when whole. Bytes
/// that are not an HTTP/1 request, a tunnel and a head the rules refuse end the following
/// (Pingora refuses such a head itself, with a 400 and a closed connection).
fn parse(bytes: &[u8]) -> Result<Option<(usize, Head)>, Stop> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(Stop::HeadTooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => {
            let through = Head {
                next: State::Through,
                upgrade: false,
                sent: None,
            };
            return Ok(Some((bytes.len(), through)));
        }
    };
    let minor = req.version.unwrap_or(1);
    let tunnel = req
        .method
        .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
    let framed = framing::request(minor, req.headers.iter().map(|h| (h.name, h.value)));
    let upgrade = framed.as_ref().is_ok_and(|r| r.upgrade);
    let next = match framed {
        Ok(_) if tunnel => State::Through,
        Ok(r) => match r.body {
            Body::Length(n) => State::Body(BodyLeft::Length(n)),
            Body::Chunked => State::Body(BodyLeft::Chunked(chunked::Decoder::default())),
            Body::None | Body::UntilClose => State::Head,
        },
        Err(_) => State::Through,
    };
    let sent = Sent {
        head: req.method == Some("HEAD"),
        upgrade,
        tunnel,
    };
    let upgrade = upgrade && !matches!(next, State::Through);
    Ok(Some((
        n,
        Head {
            next,
            upgrade,
            sent: Some(sent),
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step`, returning the outcome.
    fn follow(bytes: &[u8], step: usize) -> (Follower, Result<(), Stop>) {
        let mut f = Follower::default();
        for piece in bytes.chunks(step.max(1)) {
            if let Err((clear, e)) = f.feed(piece) {
                assert!(clear < piece.len());
                return (f, Err(e));
            }
        }
        (f, Ok(()))
    }

    #[test]
    fn requests_and_their_bodies_are_followed_across_any_split() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in 1..stream.len() {
            let (f, r) = follow(stream, step);
            assert_eq!(r, Ok(()), "step {step}");
            assert!(f.following() && f.between(), "step {step}: {f:?}");
        }
        // Inside a body is not between requests.
        let (f, _) = follow(
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
            100,
        );
        assert!(!f.between() && !f.head_begun());
        let (f, _) = follow(b"GET / HTTP/1.1\r\nHo", 4);
        assert!(f.head_begun());
        // The head before a refused body is clear of the refusal.
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"1;a\rb\r\nz\r\n0\r\n\r\n");
        let e = Follower::default().feed(&bad).expect_err("refused");
        assert_eq!(e, (head.len(), Stop::Refused(Refusal::BadChunk)));
    }

    #[test]
    fn a_doubtful_chunk_stops_the_body_wherever_it_is() {
        let mut big =
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 5000));
        big.extend_from_slice(b"\r\n1;a\rb\r\nz\r\n0\r\n\r\n");
        for bad in [
            big.as_slice(),
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\nz\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
        ] {
            for step in [1, 7, bad.len()] {
                let (_, r) = follow(bad, step);
                assert_eq!(
                    r,
                    Err(Stop::Refused(Refusal::BadChunk)),
                    "{}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn refused_heads_and_tunnels_end_the_following() {
        for through in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nzz\r\n"
                [..],
            b"\x16\x03\x01 not http\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n\x00\x01",
        ] {
            let (f, r) = follow(through, 3);
            assert_eq!(r, Ok(()));
            assert!(!f.following());
        }
    }

    #[test]
    fn an_upgrade_is_followed_until_its_answer() {
        let ask =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let mut f = Follower::default();
        f.feed(ask).expect("head");
        f.answered(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(f.following());
        f.answered(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(!f.following());
        // Frames of the new protocol are not heads.
        f.feed(b"\x81\x85abcdGET").expect("through");
        // A declined upgrade stays HTTP/1.
        let mut f = Follower::default();
        f.feed(ask).expect("head");
        f.answered(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        f.answered(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(f.following());
        // Without an upgrade asked, a 101 written (inside a body, say) changes nothing.
        let mut f = Follower::default();
        f.answered(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(f.following());
    }

    #[test]
    fn a_head_is_judged_alike_however_it_is_split() {
        // A bad byte before the head's first line ends: one read or three, the same.
        let bytes = b"\r\nGET / HTTP/\x07";
        let (one, _) = follow(bytes, bytes.len());
        let (three, _) = follow(bytes, 3);
        assert_eq!(
            (one.following(), one.head_begun()),
            (three.following(), three.head_begun())
        );
    }

    #[test]
    fn heads_are_bounded() {
        let mut long = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        for step in [1000, long.len()] {
            assert_eq!(follow(&long, step).1, Err(Stop::HeadTooLarge));
        }
        // A long head that ends in time is taken.
        let mut fits = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        fits.extend(std::iter::repeat_n(b'a', 60 * 1024));
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(follow(&fits, 999).1, Ok(()));
    }
}
