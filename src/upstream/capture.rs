//! Capped body capture: the data path keeps cheap `Bytes` clones of the chunks that
//! stream through, up to the cap; past it, the capture is dropped and only remembered as
//! too large. Chunks are joined later, in the background task.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Default)]
pub struct BodyCapture {
    chunks: Vec<Bytes>,
    len: usize,
    cap: usize,
    overflowed: bool,
}

impl BodyCapture {
    pub fn new(cap: usize) -> Self {
        BodyCapture {
            cap,
            ..Default::default()
        }
    }

    pub fn push(&mut self, chunk: &Bytes) {
        if self.overflowed || chunk.is_empty() {
            return;
        }
        if self.len + chunk.len() > self.cap {
            self.overflowed = true;
            self.chunks = Vec::new();
            return;
        }
        self.len += chunk.len();
        self.chunks.push(chunk.clone());
    }

    /// Starts over (a retried request replays its body).
    pub fn reset(&mut self) {
        self.chunks.clear();
        self.len = 0;
        self.overflowed = false;
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The body so far.
    pub fn bytes(&self) -> Bytes {
        join(&self.chunks)
    }

    /// The body and whether it is whole.
    pub fn finish(self) -> (Bytes, bool) {
        (join(&self.chunks), !self.overflowed)
    }
}

pub fn join(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut out = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for c in many {
                out.extend_from_slice(c);
            }
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_up_to_the_cap_and_forgets_beyond() {
        let mut c = BodyCapture::new(10);
        c.push(&Bytes::from_static(b"hello "));
        c.push(&Bytes::from_static(b"you"));
        assert!(!c.overflowed());
        let (b, whole) = BodyCapture {
            chunks: c.chunks.clone(),
            ..BodyCapture::new(10)
        }
        .finish();
        assert_eq!((&b[..], whole), (&b"hello you"[..], true));
        c.push(&Bytes::from_static(b"!!"));
        assert!(c.overflowed());
        assert_eq!(c.finish(), (Bytes::new(), false));
        let mut r = BodyCapture::new(3);
        r.push(&Bytes::from_static(b"abcd"));
        r.reset();
        r.push(&Bytes::from_static(b"abc"));
        assert_eq!(r.finish(), (Bytes::from_static(b"abc"), true));
    }
}
