//! The chunked transfer coding (RFC 9112 7.1), both ways: a decoder that follows a body as
//! it streams and says where it ends, strict about every byte that decides that (no bare
//! CR or LF, no control bytes in extensions or trailers, bounded sizes), and the encoder
//! banyan writes its own chunks with. Extensions and trailer fields are read past, never
//! forwarded: a relayed body is always re-chunked.

/// The most hex digits of a chunk size (2^60 bytes).
const MAX_DIGITS: u8 = 15;
/// Bytes of extensions allowed on one chunk-size line.
const MAX_EXTENSION: u16 = 4096;
/// Bytes of trailer section allowed.
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the chunked body is malformed")]
pub struct BadChunk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    Extension,
    /// Inside a quoted-string of an extension value.
    Quoted,
    QuotedEscape,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Follows one chunked body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    size: u64,
    digits: u8,
    extension: u16,
    trailers: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size,
            size: 0,
            digits: 0,
            extension: 0,
            trailers: 0,
        }
    }
}

/// Bytes allowed in an extension or trailer line besides visible ASCII: HTAB, and
/// obs-text (0x80 and above), as in field values.
fn field_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80
}

impl Decoder {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes `buf` up to the end of the body and returns how many bytes belong to it;
    /// `data` receives each piece of chunk data, in order.
    pub fn feed(&mut self, buf: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < buf.len() && self.state != State::Done {
            let b = buf[i];
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > MAX_DIGITS {
                            return Err(BadChunk);
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.size = (self.size << 4) | u64::from(digit);
                        State::Size
                    }
                    _ if self.digits == 0 => return Err(BadChunk),
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(BadChunk),
                },
                State::SizeSpace => match b {
                    b' ' | b'\t' => State::SizeSpace,
                    b';' => State::Extension,
                    b'\r' => State::SizeLf,
                    _ => return Err(BadChunk),
                },
                State::Extension | State::Quoted | State::QuotedEscape => {
                    self.extension += 1;
                    if self.extension > MAX_EXTENSION {
                        return Err(BadChunk);
                    }
                    match (self.state, b) {
                        (State::Extension, b'\r') => State::SizeLf,
                        (_, b) if !field_byte(b) => return Err(BadChunk),
                        (State::Extension, b'"') => State::Quoted,
                        (State::Extension, _) => State::Extension,
                        (State::Quoted, b'"') => State::Extension,
                        (State::Quoted, b'\\') => State::QuotedEscape,
                        _ => State::Quoted,
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BadChunk);
                    }
                    self.extension = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                State::Data => {
                    let take =
                        (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    data(&buf[i..i + take]);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.digits = 0;
                    State::Size
                }
                State::DataCr | State::DataLf => return Err(BadChunk),
                State::TrailerStart | State::TrailerLine => {
                    self.trailers += 1;
                    if self.trailers > MAX_TRAILERS {
                        return Err(BadChunk);
                    }
                    match (self.state, b) {
                        (State::TrailerStart, b'\r') => State::EndLf,
                        (State::TrailerLine, b'\r') => State::TrailerLf,
                        (_, b) if field_byte(b) => State::TrailerLine,
                        _ => return Err(BadChunk),
                    }
                }
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::EndLf if b == b'\n' => State::Done,
                State::TrailerLf | State::EndLf => return Err(BadChunk),
                State::Done => break,
            };
            i += 1;
        }
        Ok(i)
    }
}

/// Appends `data` as one chunk (nothing for empty data: an empty chunk ends a body).
pub fn encode(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut size = [0u8; 16];
    let mut n = data.len();
    let mut at = size.len();
    while n > 0 || at == size.len() {
        at -= 1;
        size[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
    }
    out.extend_from_slice(&size[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with no trailer fields.
pub const LAST: &[u8] = b"0\r\n\r\n";

/// Decodes a whole chunked body in `buf`: (bytes it took, the data). `Ok(None)` while it
/// is not all there.
pub fn decode_whole(buf: &[u8]) -> Result<Option<(usize, Vec<u8>)>, BadChunk> {
    let mut d = Decoder::default();
    let mut body = Vec::new();
    let n = d.feed(buf, |piece| body.extend_from_slice(piece))?;
    Ok(d.done().then_some((n, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n1;ext=1;q=\"a;\\\"b\"\r\n!\r\n3 ; e\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let end = body.len() - 4;
        // Every split point: the decoder sees the same body in two reads.
        for split in 0..=end {
            let mut c = Decoder::default();
            let mut data = Vec::new();
            let a = c
                .feed(&body[..split], |d| data.extend_from_slice(d))
                .expect("valid");
            assert_eq!(a, split);
            let b = c
                .feed(&body[split..], |d| data.extend_from_slice(d))
                .expect("valid");
            assert_eq!(split + b, end, "split at {split}");
            assert!(c.done());
            assert_eq!(data, b"hello!abc");
        }
        assert_eq!(decode_whole(b"0\r\n\r\n"), Ok(Some((5, Vec::new()))));
        assert_eq!(decode_whole(b"5\r\nhel"), Ok(None));
    }

    #[test]
    fn anything_that_could_move_the_end_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\r\nhello\n0\r\n\r\n",
            b"ffffffffffffffff\r\n",
            b"-1\r\n",
            b"5\n",
            b"1;a\nb\r\n",
            b"1;a\rb\r\n",
            b"1;a\x00\r\n",
            b"1 x\r\n",
            b"0\r\n\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
        ] {
            assert_eq!(
                decode_whole(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_EXTENSION as usize + 1));
        assert_eq!(Decoder::default().feed(&long, |_| {}), Err(BadChunk));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < 2 * MAX_TRAILERS as usize {
            trailers.extend_from_slice(b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(Decoder::default().feed(&trailers, |_| {}), Err(BadChunk));
    }

    #[test]
    fn chunks_are_written_with_their_own_sizes() {
        let mut out = Vec::new();
        encode(&mut out, b"hello");
        encode(&mut out, &[]);
        encode(&mut out, &[b'x'; 26]);
        out.extend_from_slice(LAST);
        let mut want = b"5\r\nhello\r\n1a\r\n".to_vec();
        want.extend_from_slice(&[b'x'; 26]);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, want);
        let (n, data) = decode_whole(&out).expect("valid").expect("whole");
        assert_eq!(n, out.len());
        assert_eq!(data.len(), 31);
    }
}
