//! A request's headers as routing reads them: Pingora's `HeaderMap`, or the fast path's
//! own parse (httparse's slice, read in place). Building a `HeaderMap` for each request the
//! fast path serves only for routing to look up a few names in it cost about 1,700
//! instructions of the request's 26,000; a request has few headers, so a scan of the
//! parsed ones is cheaper than the map's hashing.

use http::header::{COOKIE, HOST};
use http::{HeaderMap, HeaderName};

#[derive(Clone, Copy, Debug)]
pub enum Headers<'a> {
    Map(&'a HeaderMap),
    /// As httparse found them: names and values already checked against RFC 9110's
    /// token and field-value rules, so a value here is one a `HeaderValue` would take.
    Parsed(&'a [httparse::Header<'a>]),
}

impl<'a> Headers<'a> {
    /// The first value of `name`.
    pub fn get(self, name: &HeaderName) -> Option<&'a [u8]> {
        self.all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn all<'n>(self, name: &'n HeaderName) -> All<'a, 'n> {
        match self {
            Headers::Map(map) => All::Map(map.get_all(name).iter()),
            Headers::Parsed(fields) => All::Parsed(fields.iter(), name.as_str()),
        }
    }

    /// The `Host` header as text, when it is visible ASCII (as `HeaderValue::to_str`
    /// takes it); port included.
    pub fn host(self) -> Option<&'a str> {
        let value = self.get(&HOST)?;
        let visible = value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        visible.then(|| std::str::from_utf8(value).ok()).flatten()
    }

    /// The value of cookie `name` in the request's `Cookie` headers.
    pub fn cookie(self, name: &str) -> Option<&'a [u8]> {
        for header in self.all(&COOKIE) {
            for pair in header.split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if pair[..eq].trim_ascii() == name.as_bytes() {
                    let value = pair[eq + 1..].trim_ascii();
                    let value = value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value);
                    return Some(value);
                }
            }
        }
        None
    }
}

/// The values of one header name.
pub enum All<'a, 'n> {
    Map(http::header::ValueIter<'a, http::HeaderValue>),
    /// `HeaderName`s are lower case; the request's names may be in any case.
    Parsed(std::slice::Iter<'a, httparse::Header<'a>>, &'n str),
}

impl<'a> Iterator for All<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            All::Map(values) => values.next().map(|v| v.as_bytes()),
            All::Parsed(fields, name) => fields
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The same request read both ways answers the same.
    #[test]
    fn parsed_headers_answer_as_the_map_does() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-User: u1\r\nCookie: theme=dark; uid=abc123\r\n\
                    x-user: u2\r\ncookie: session=\"q1\"\r\nX-Empty: \r\n\r\n";
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut fields);
        assert!(req.parse(raw).expect("parse").is_complete());
        let mut map = HeaderMap::new();
        for h in req.headers.iter() {
            map.append(
                HeaderName::from_bytes(h.name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(h.value).expect("value"),
            );
        }
        let user = HeaderName::from_static("x-user");
        let missing = HeaderName::from_static("x-missing");
        let empty = HeaderName::from_static("x-empty");
        for headers in [Headers::Map(&map), Headers::Parsed(req.headers)] {
            assert_eq!(headers.get(&user), Some(&b"u1"[..]), "{headers:?}");
            assert_eq!(
                headers.all(&user).collect::<Vec<_>>(),
                [&b"u1"[..], &b"u2"[..]]
            );
            assert_eq!(headers.get(&missing), None);
            assert_eq!(headers.get(&empty), Some(&b""[..]));
            assert_eq!(headers.cookie("uid"), Some(&b"abc123"[..]));
            assert_eq!(headers.cookie("session"), Some(&b"q1"[..]));
            assert_eq!(headers.cookie("theme"), Some(&b"dark"[..]));
            assert_eq!(headers.cookie("none"), None);
            assert_eq!(headers.host(), Some("a"));
        }
    }
}
