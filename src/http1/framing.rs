//! Where a message ends, decided once, by banyan: the RFC 9112 framing rules for requests
//! and responses as pure functions over parsed header fields. Both transports use them
//! (the fast path on its own parse, the Pingora path on the raw head it re-reads), and
//! whatever they forward is written with banyan's own `Content-Length` or
//! `Transfer-Encoding`, never the sender's. A message these rules cannot frame without
//! doubt is refused (400 for requests, 502 for responses) instead of forwarded, because
//! a next hop that frames it differently would see a second message nobody answered for.

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: no framing field on a request; HEAD answers, 1xx, 204 and 304.
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Why a request is refused before anything is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("more than one Content-Length")]
    RepeatedLength,
    #[error("Content-Length is not one decimal number")]
    BadLength,
    #[error("both Transfer-Encoding and Content-Length")]
    LengthAndEncoding,
    #[error("more than one Transfer-Encoding")]
    RepeatedEncoding,
    #[error("a Transfer-Encoding other than chunked")]
    UnknownEncoding,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    EncodingInHttp10,
    #[error("more than one Host")]
    RepeatedHost,
    #[error("an HTTP/1.1 request without Host")]
    MissingHost,
    #[error("a Host that is not a host name, address and port")]
    BadHost,
    #[error("a request head that is not valid HTTP/1.1")]
    Malformed,
    #[error("a chunked body that is not valid")]
    BadChunk,
}

impl Refusal {
    /// The client's status: 501 for a coding banyan does not implement (as nginx), else 400.
    pub fn status(self) -> u16 {
        match self {
            Refusal::UnknownEncoding => 501,
            _ => 400,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RepeatedLength => "repeated_content_length",
            Refusal::BadLength => "bad_content_length",
            Refusal::LengthAndEncoding => "length_and_encoding",
            Refusal::RepeatedEncoding => "repeated_transfer_encoding",
            Refusal::UnknownEncoding => "unknown_transfer_encoding",
            Refusal::EncodingInHttp10 => "encoding_in_http10",
            Refusal::RepeatedHost => "repeated_host",
            Refusal::MissingHost => "missing_host",
            Refusal::BadHost => "bad_host",
            Refusal::Malformed => "malformed",
            Refusal::BadChunk => "bad_chunk",
        }
    }
}

/// What the framing rules read of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'h> {
    pub body: Body,
    /// The client asked to close after this request (or is HTTP/1.0 without keep-alive).
    pub close: bool,
    /// `Expect: 100-continue`, `Upgrade`: left to Pingora by the fast path.
    pub expects: bool,
    pub upgrade: bool,
    pub host: Option<&'h [u8]>,
}

/// Applies the request rules to a head's fields (`minor`: the HTTP/1.x version's minor
/// digit). Everything nginx refuses is refused: repeated or list-valued `Content-Length`,
/// `Content-Length` beside `Transfer-Encoding`, any coding but a single `chunked`, repeated
/// `Host`, an HTTP/1.1 request without one, or one that is not an authority.
pub fn request<'h>(
    minor: u8,
    fields: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<Request<'h>, Refusal> {
    let Scan {
        length,
        encoding,
        host,
        close,
        expects,
        upgrade,
    } = scan(minor, true, fields).map_err(|doubt| match doubt {
        Doubt::RepeatedLength => Refusal::RepeatedLength,
        Doubt::BadLength => Refusal::BadLength,
        Doubt::RepeatedEncoding => Refusal::RepeatedEncoding,
        Doubt::RepeatedHost => Refusal::RepeatedHost,
        Doubt::BadHost => Refusal::BadHost,
    })?;
    if minor >= 1 && host.is_none() {
        return Err(Refusal::MissingHost);
    }
    let body = match (encoding, length) {
        (Some(_), Some(_)) => return Err(Refusal::LengthAndEncoding),
        (Some(_), None) if minor == 0 => return Err(Refusal::EncodingInHttp10),
        (Some(coding), None) if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            Body::Chunked
        }
        (Some(_), None) => return Err(Refusal::UnknownEncoding),
        (None, Some(0)) | (None, None) => Body::None,
        (None, Some(n)) => Body::Length(n),
    };
    Ok(Request {
        body,
        close,
        expects,
        upgrade,
        host,
    })
}

/// Why an upstream's response cannot be relayed: the client gets a 502 and the upstream
/// connection is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadFraming {
    #[error("more than one Content-Length")]
    RepeatedLength,
    #[error("Content-Length is not one decimal number")]
    BadLength,
    #[error("both Transfer-Encoding and Content-Length")]
    LengthAndEncoding,
    #[error("a Transfer-Encoding that does not end in chunked, or more than one")]
    Encoding,
}

impl BadFraming {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BadFraming::RepeatedLength => "repeated_content_length",
            BadFraming::BadLength => "bad_content_length",
            BadFraming::LengthAndEncoding => "length_and_encoding",
            BadFraming::Encoding => "bad_transfer_encoding",
        }
    }
}

/// What the framing rules read of a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    pub body: Body,
    /// The upstream closes the connection after this response.
    pub close: bool,
    /// The `Transfer-Encoding` value when the body is chunked: codings before `chunked`
    /// (`gzip, chunked`) belong to the content and are passed on.
    pub coded: bool,
}

/// Applies the response rules. `no_body`: the request was HEAD, or the status is 1xx,
/// 204 or 304; those answers have no body whatever their fields say.
pub fn response<'h>(
    minor: u8,
    no_body: bool,
    fields: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<Response, BadFraming> {
    let Scan {
        length,
        encoding,
        close,
        ..
    } = scan(minor, false, fields).map_err(|doubt| match doubt {
        Doubt::RepeatedLength => BadFraming::RepeatedLength,
        Doubt::BadLength => BadFraming::BadLength,
        // Host is not read on answers; repeated codings are one more bad coding.
        Doubt::RepeatedEncoding | Doubt::RepeatedHost | Doubt::BadHost => BadFraming::Encoding,
    })?;
    if let Some(coding) = encoding {
        // Checked even when the answer has no body: a sender that gets this wrong cannot
        // be trusted with the next message's start either.
        let last_is_chunked = tokens(coding)
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        let chunked_once = tokens(coding)
            .filter(|t| t.eq_ignore_ascii_case(b"chunked"))
            .count()
            == 1;
        if length.is_some() {
            return Err(BadFraming::LengthAndEncoding);
        }
        if !last_is_chunked || !chunked_once || minor == 0 {
            return Err(BadFraming::Encoding);
        }
    }
    let body = if no_body {
        Body::None
    } else if encoding.is_some() {
        Body::Chunked
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    Ok(Response {
        body,
        close: close || body == Body::UntilClose,
        coded: encoding.is_some_and(|c| tokens(c).count() > 1),
    })
}

/// What one pass over a message's fields found, before the request or response rules
/// judge it.
struct Scan<'h> {
    length: Option<u64>,
    encoding: Option<&'h [u8]>,
    host: Option<&'h [u8]>,
    close: bool,
    expects: bool,
    upgrade: bool,
}

/// What makes a pass give up: a field that may appear once appeared twice, or a value
/// that cannot be read.
enum Doubt {
    RepeatedLength,
    BadLength,
    RepeatedEncoding,
    RepeatedHost,
    BadHost,
}

/// The one pass over a message's fields both rules share. `request`: also read `Host`,
/// `Expect` and `Upgrade`, which only requests carry.
fn scan<'h>(
    minor: u8,
    request: bool,
    fields: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<Scan<'h>, Doubt> {
    let mut found = Scan {
        length: None,
        encoding: None,
        host: None,
        close: minor == 0,
        expects: false,
        upgrade: false,
    };
    for (name, value) in fields {
        match Field::of(name) {
            Field::ContentLength => {
                if found.length.is_some() {
                    return Err(Doubt::RepeatedLength);
                }
                found.length = Some(content_length(value).ok_or(Doubt::BadLength)?);
            }
            Field::TransferEncoding => {
                if found.encoding.is_some() {
                    return Err(Doubt::RepeatedEncoding);
                }
                found.encoding = Some(value);
            }
            Field::Connection => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        found.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                        found.close = false;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        found.upgrade = request;
                    }
                }
            }
            Field::Host if request => {
                if found.host.is_some() {
                    return Err(Doubt::RepeatedHost);
                }
                if !valid_host(value) {
                    return Err(Doubt::BadHost);
                }
                found.host = Some(value);
            }
            Field::Expect => found.expects = request,
            Field::Upgrade => found.upgrade = request,
            Field::Host | Field::Other => {}
        }
    }
    Ok(found)
}

/// The fields the framing rules read, told apart by length first: one comparison for
/// most fields instead of one per name (this runs for every field of every message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Host,
    Connection,
    Expect,
    Upgrade,
    Other,
}

impl Field {
    fn of(name: &str) -> Field {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        match name.len() {
            4 if is("host") => Field::Host,
            6 if is("expect") => Field::Expect,
            7 if is("upgrade") => Field::Upgrade,
            10 if is("connection") => Field::Connection,
            14 if is("content-length") => Field::ContentLength,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            _ => Field::Other,
        }
    }
}

/// A `Content-Length` value: one run of digits, nothing else (no sign, no list, no
/// spaces inside), as RFC 9110 has it; `None` beyond u64.
pub fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Bytes of a registered name or IPv4 address in a `Host` (unreserved, sub-delims, `%`).
const NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    t
};

/// A `Host` value: `uri-host [ ":" port ]` (RFC 9110 7.2) with a non-empty host: a
/// registered name or IPv4 address of unreserved, sub-delims and %-escapes, or an
/// IP literal in brackets. No userinfo, path, spaces or control bytes.
pub fn valid_host(value: &[u8]) -> bool {
    if value.first() == Some(&b'[') {
        return valid_ip_literal(value);
    }
    // One pass: name bytes, then at most one colon before the port.
    let mut colon = None;
    for (i, &b) in value.iter().enumerate() {
        if b == b':' {
            if colon.is_some() {
                return false;
            }
            colon = Some(i);
        } else if !NAME_BYTES[usize::from(b)] {
            return false;
        }
    }
    match colon {
        None => !value.is_empty(),
        Some(i) => i > 0 && valid_port(&value[i + 1..]),
    }
}

/// `[v6 or IPvFuture text]` with an optional `:port`.
fn valid_ip_literal(value: &[u8]) -> bool {
    let Some(end) = value.iter().position(|&b| b == b']') else {
        return false;
    };
    let literal = &value[1..end];
    if literal.is_empty()
        || !literal
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return false;
    }
    match &value[end + 1..] {
        [] => true,
        [b':', port @ ..] => valid_port(port),
        _ => false,
    }
}

/// A port: at most five digits (none: the scheme's default).
fn valid_port(port: &[u8]) -> bool {
    port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// The comma-separated tokens of a field value, trimmed, empty ones left out.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Fields a `Connection` header may never take away: the framing banyan writes itself and
/// the target host. (nginx ignores such nominations too; honouring one let a request
/// keep its body but lose the length that delimits it.)
pub fn protected(name: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// Whether a field is hop-by-hop: the fixed names, and those its message's `Connection`
/// headers nominate, unless protected. Framing fields are hop-by-hop on the wire but
/// written by banyan, so callers handle them before asking.
pub fn hop_by_hop(name: &[u8], nominated: &[&[u8]]) -> bool {
    always_hop_by_hop(name)
        || (nominated.iter().any(|t| t.eq_ignore_ascii_case(name)) && !protected(name))
}

/// The fields that are hop-by-hop whatever `Connection` says.
pub fn always_hop_by_hop(name: &[u8]) -> bool {
    const FIXED: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
    ];
    FIXED.iter().any(|f| name.eq_ignore_ascii_case(f))
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
