//! A reference HTTP/1.1 request framer for the differential target, written from RFC 9112
//! section 6 alone and sharing no code with banyan's: httparse for the head, then
//! `Transfer-Encoding` (final coding chunked) or `Content-Length` (a list of identical
//! values allowed, as RFC 9110 8.6 permits) or no body. Where RFC 9112 says a message
//! "ought to be handled as an error" it answers `Ambiguous`. A proxy built on it would
//! be lenient; banyan may refuse more, but never frame differently what it forwards.

/// How the reference frames the bytes at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    Whole {
        method: String,
        target: String,
        head_len: usize,
        wire_len: usize,
        body: Vec<u8>,
    },
    Incomplete,
    /// Not a request the reference can frame.
    Invalid,
    /// Both `Transfer-Encoding` and `Content-Length`.
    Ambiguous,
}

/// A chunked body at the start of `buf`: (bytes it takes, data); `None` while incomplete,
/// `Some(Err)` when malformed. Extensions are skipped up to CRLF; trailers likewise.
pub fn dechunk(buf: &[u8]) -> Option<Result<(usize, Vec<u8>), ()>> {
    let line = |from: usize| -> Option<usize> {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let end = line(at)?;
        let size_text = &buf[at..end];
        let digits: &[u8] = match size_text.iter().position(|&b| b == b';') {
            Some(i) => &size_text[..i],
            None => size_text,
        };
        let digits = digits.trim_ascii_end();
        if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Some(Err(()));
        }
        let size = usize::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
        at = end + 2;
        if size == 0 {
            loop {
                let end = line(at)?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(Ok((at, data)));
                }
            }
        }
        let data_end = at.checked_add(size)?;
        data.extend_from_slice(buf.get(at..data_end)?);
        match buf.get(data_end..data_end + 2) {
            None => return None,
            Some(b"\r\n") => {}
            Some(_) => return Some(Err(())),
        }
        at = data_end + 2;
    }
}

/// Frames the request at the start of `buf`.
pub fn frame_request(buf: &[u8]) -> Framed {
    let mut hs = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut hs);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Framed::Incomplete,
        Err(_) => return Framed::Invalid,
    };
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            for v in h.value.split(|&b| b == b',') {
                lengths.push(v.trim_ascii().to_vec());
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if !v.is_empty() {
                    codings.push(v.to_ascii_lowercase());
                }
            }
        }
    }
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("").to_string();
    let whole = |wire_len: usize, body: Vec<u8>| Framed::Whole {
        method: method.clone(),
        target: target.clone(),
        head_len,
        wire_len,
        body,
    };
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Framed::Ambiguous;
        }
        if codings.last().map(Vec::as_slice) != Some(b"chunked") {
            return Framed::Invalid;
        }
        return match dechunk(&buf[head_len..]) {
            None => Framed::Incomplete,
            Some(Err(())) => Framed::Invalid,
            Some(Ok((n, body))) => whole(head_len + n, body),
        };
    }
    let mut length: Option<usize> = None;
    for l in &lengths {
        if l.is_empty() || !l.iter().all(u8::is_ascii_digit) {
            return Framed::Invalid;
        }
        let Some(n) = std::str::from_utf8(l).ok().and_then(|t| t.parse().ok()) else {
            return Framed::Invalid;
        };
        if length.is_some_and(|m| m != n) {
            return Framed::Invalid;
        }
        length = Some(n);
    }
    let n = length.unwrap_or(0);
    match head_len.checked_add(n) {
        Some(end) if end <= buf.len() => whole(end, buf[head_len..end].to_vec()),
        Some(_) => Framed::Incomplete,
        None => Framed::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_frames_by_the_rfc() {
        let r = frame_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhelloX");
        assert!(
            matches!(r, Framed::Whole { wire_len, .. } if wire_len == 44),
            "{r:?}"
        );
        let r = frame_request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;x\r\nhi\r\n0\r\n\r\n",
        );
        assert!(
            matches!(r, Framed::Whole { ref body, .. } if body == b"hi"),
            "{r:?}"
        );
        let r = frame_request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
        );
        assert_eq!(r, Framed::Ambiguous);
    }
}
