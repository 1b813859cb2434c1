//! HTTP/1.1 on the wire, pure and shared by the data path's two sides: how a message is
//! framed (`framing.rs`, the one place that decides where a message ends), chunked
//! bodies (`chunked.rs`), a request head as banyan's own path reads it (`request.rs`) and
//! an upstream's response head (`response.rs`); following a connection's bytes as they
//! pass through Pingora, a client's requests (`follow.rs`) and an upstream's answers
//! (`answers.rs`). No I/O.

use std::mem::MaybeUninit;

pub mod answers;
pub mod chunked;
pub mod follow;
pub mod framing;
pub mod pieces;
pub mod request;
pub mod response;

/// A request line to write, however the request was parsed, and HTTP/2's `:authority`
/// when it has no Host field.
#[derive(Debug, Clone, Copy)]
pub struct Line<'h> {
    pub method: &'h str,
    /// Origin form: path and query.
    pub target: &'h str,
    pub authority: Option<&'h [u8]>,
}

/// The tokens the message's `Connection` fields carry that nominate more than
/// `framing::hop_by_hop` drops anyway (`Connection: keep-alive` needs no list: nothing
/// allocated for the usual message).
pub fn connection_tokens<'h, N: AsRef<[u8]>>(
    fields: impl Iterator<Item = (N, &'h [u8])>,
) -> Vec<&'h [u8]> {
    let mut nominated = Vec::new();
    for (name, value) in fields {
        if name.as_ref().eq_ignore_ascii_case(b"connection") {
            let tokens = framing::tokens(value).filter(|t| !framing::always_hop_by_hop(t));
            nominated.extend(tokens);
        }
    }
    nominated
}

/// Room for a head's fields, left uninitialised: httparse writes those it finds (filling
/// 64 or 128 empty ones first cost more than parsing a typical head).
pub fn field_slots<'b, const N: usize>() -> [MaybeUninit<httparse::Header<'b>>; N] {
    [MaybeUninit::uninit(); N]
}

/// `n` in decimal, written at the end of `buf`.
#[inline]
pub fn format_len(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[inline]
pub fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
