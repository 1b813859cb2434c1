//! A message followed as its bytes pass by in pieces, the same way for a client's
//! requests (`follow.rs`) and an upstream's answers (`answers.rs`): a head gathered until
//! it is whole, then the body counted off by its framing.

use super::chunked::{self, BadChunk};

/// The bytes of a head that is not whole yet.
///
/// A head can only end at a LF, so a head is parsed only up to the last LF seen: the
/// verdict is then the same however the bytes were split into reads (a parser that fails
/// on a bad byte before the head ends would otherwise fail sooner on one read than on
/// several), and a head trickled a byte at a time is not parsed once per byte. Only the
/// first `limit + 1` bytes of a head are looked at.
#[derive(Debug, Default)]
pub struct HeadSoFar(Vec<u8>);

/// What the bytes fed made of the head.
pub enum Fed<'b, T> {
    /// Whole: what the parser said of it, and the bytes after it.
    Whole(T, &'b [u8]),
    /// Not whole yet; every byte fed is kept.
    Partial,
    /// Longer than the limit without being whole.
    TooLarge,
}

impl HeadSoFar {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Takes the next bytes. `parse` reads a head from its start: `Some` with the head's
    /// length once it is whole.
    pub fn feed<'b, T, E>(
        &mut self,
        buf: &'b [u8],
        limit: usize,
        parse: impl FnOnce(&[u8]) -> Result<Option<(usize, T)>, E>,
    ) -> Result<Fed<'b, T>, E> {
        let before = self.0.len();
        let new = &buf[..(limit + 1).saturating_sub(before).min(buf.len())];
        let parsed = match new.iter().rposition(|&b| b == b'\n') {
            None => None,
            // The common case: a whole head in one read, parsed where it lies.
            Some(lf) if before == 0 => parse(&buf[..=lf])?,
            Some(lf) => {
                self.0.extend_from_slice(&new[..=lf]);
                let parsed = parse(&self.0);
                self.0.truncate(before);
                parsed?
            }
        };
        if let Some((len, said)) = parsed {
            self.0.clear();
            return Ok(Fed::Whole(
                said,
                &buf[len.saturating_sub(before).min(buf.len())..],
            ));
        }
        self.0.extend_from_slice(new);
        Ok(if self.0.len() > limit {
            Fed::TooLarge
        } else {
            Fed::Partial
        })
    }
}

/// A body still to come, framed by its length or chunked.
#[derive(Debug)]
pub enum BodyLeft {
    Length(u64),
    Chunked(chunked::Decoder),
}

impl BodyLeft {
    /// Counts off the body's bytes at the start of `buf`: how many belong to it, and
    /// whether the body ended with them.
    pub fn take(&mut self, buf: &[u8]) -> Result<(usize, bool), BadChunk> {
        match self {
            BodyLeft::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                Ok((take, *left == 0))
            }
            BodyLeft::Chunked(decoder) => {
                let used = decoder.feed(buf, |_| {})?;
                Ok((used, decoder.done()))
            }
        }
    }
}
