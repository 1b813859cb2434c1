//! Follows one upstream connection as Pingora uses it: the requests written to it (to know
//! what each answer answers: a `HEAD`, an upgrade) and the answers read from it, judged by
//! the rules banyan's own client applies (`response.rs`, `framing.rs`, the strict chunked
//! decoder). Pingora frames an answer with `Content-Length` beside `Transfer-Encoding` by
//! the latter, and drops the length before any callback sees it; following the bytes
//! below Pingora is what lets banyan refuse such an answer (502, connection dropped) on
//! Pingora's path as it does on its own. Pure: the bytes come from `upstream::followed`.
//!
//! An answer is refused from the read that brings its first doubtful byte; nothing of
//! that read reaches Pingora. Bytes no request asked for (the upstream speaking first, or
//! more than the answer) are refused too: they could only be read as the next answer.

use std::collections::VecDeque;

use super::chunked;
use super::follow::{Follower, Sent};
use super::pieces::{BodyLeft, Fed, HeadSoFar};
use super::response::{self, BadResponse, Framing};

/// The largest answer head followed: banyan's own client's limit.
pub const MAX_HEAD: usize = 64 * 1024;

/// Why an upstream's bytes cannot go on to Pingora.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Head(BadResponse),
    #[error("a malformed chunked body")]
    BadChunk,
    #[error("bytes that answer no request")]
    Unasked,
}

impl Refused {
    /// The `banyan_bad_responses_total` reason, as banyan's own client counts it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::Head(BadResponse::Framing(bad)) => bad.as_str(),
            Refused::Head(BadResponse::TooLarge(_)) => "head_too_large",
            Refused::Head(BadResponse::Invalid(_)) => "invalid_head",
            Refused::Head(BadResponse::Switched) => "unasked_switch",
            Refused::BadChunk => "bad_chunk",
            Refused::Unasked => "unasked_bytes",
        }
    }
}

#[derive(Debug)]
enum State {
    /// Waiting for (the rest of) an answer head.
    Head,
    Body(BodyLeft),
    /// The body runs until the upstream closes.
    UntilClose,
    /// Not HTTP/1 any more (a switch the request asked for, a tunnel).
    Through,
}

/// One upstream connection's bytes, both ways.
#[derive(Debug)]
pub struct Answers {
    requests: Follower,
    /// Requests written whose final answer has not begun, oldest first.
    pending: VecDeque<Sent>,
    state: State,
    head: HeadSoFar,
    /// An answer said the upstream closes after it.
    closing: bool,
}

impl Default for Answers {
    fn default() -> Self {
        Answers {
            requests: Follower::default(),
            pending: VecDeque::with_capacity(1),
            state: State::Head,
            head: HeadSoFar::default(),
            closing: false,
        }
    }
}

impl Answers {
    /// Takes bytes written to the upstream. They are banyan's own (re-framed) requests;
    /// were one ever not to parse, the requests after it are not noted and their answers
    /// are refused as unasked: the doubt fails closed.
    pub fn sent(&mut self, bytes: &[u8]) {
        let pending = &mut self.pending;
        let _ = self
            .requests
            .feed_noting(bytes, |sent| pending.push_back(sent));
    }

    /// Whether every byte read so far belongs to a whole answer.
    pub fn between(&self) -> bool {
        matches!(self.state, State::Head) && self.head.is_empty()
    }

    /// Between exchanges: every request written whole and answered whole, and no answer
    /// said the upstream closes. Only such a connection may carry another request.
    pub fn idle(&self) -> bool {
        self.between() && self.pending.is_empty() && self.requests.between() && !self.closing
    }

    /// Takes bytes read from the upstream.
    pub fn received(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        let mut buf = bytes;
        while !buf.is_empty() {
            match &mut self.state {
                State::Through | State::UntilClose => return Ok(()),
                State::Body(body) => {
                    let (used, ended) = body.take(buf).map_err(|_| Refused::BadChunk)?;
                    buf = &buf[used..];
                    if ended {
                        self.state = State::Head;
                    }
                }
                State::Head => buf = self.head_bytes(buf)?,
            }
        }
        Ok(())
    }

    /// Reads `buf` as (more of) an answer head; returns what follows it.
    fn head_bytes<'b>(&mut self, buf: &'b [u8]) -> Result<&'b [u8], Refused> {
        let Some(&asked) = self.pending.front() else {
            return Err(Refused::Unasked);
        };
        match self.head.feed(buf, MAX_HEAD, |bytes| parse(bytes, asked))? {
            Fed::Whole((next, close), rest) => {
                self.closing |= close;
                if let Some(state) = next {
                    self.pending.pop_front();
                    self.state = state;
                }
                Ok(rest)
            }
            Fed::Partial => Ok(&[]),
            Fed::TooLarge => Err(Refused::Head(BadResponse::TooLarge(MAX_HEAD))),
        }
    }
}

/// What a whole answer head says: its length, the state after it (`None` for an interim
/// answer: the final one is still to come), and whether the upstream closes after it.
type Head = (usize, (Option<State>, bool));

/// Parses an answer head at the start of `bytes`: `None` while not whole.
fn parse(bytes: &[u8], asked: Sent) -> Result<Option<Head>, Refused> {
    let switched = bytes.get(9..12) == Some(b"101") && bytes.starts_with(b"HTTP/1.");
    if switched && asked.upgrade {
        let mut hs = [httparse::EMPTY_HEADER; response::MAX_HEADERS];
        return match httparse::Response::new(&mut hs).parse(bytes) {
            Ok(httparse::Status::Complete(n)) => Ok(Some((n, (Some(State::Through), true)))),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(Refused::Head(BadResponse::Invalid(e.to_string()))),
        };
    }
    let Some(p) = response::parse(bytes, asked.head, MAX_HEAD + 1, None).map_err(Refused::Head)?
    else {
        return Ok(None);
    };
    if p.informational {
        return Ok(Some((p.head_len, (None, false))));
    }
    let state = match p.framing {
        _ if asked.tunnel && (200..300).contains(&p.status) => State::Through,
        Framing::Empty | Framing::Length(0) => State::Head,
        Framing::Length(n) => State::Body(BodyLeft::Length(n)),
        Framing::Chunked => State::Body(BodyLeft::Chunked(chunked::Decoder::default())),
        Framing::UntilClose => State::UntilClose,
    };
    Ok(Some((p.head_len, (Some(state), p.close))))
}

#[cfg(test)]
#[path = "answers_tests.rs"]
mod tests;
