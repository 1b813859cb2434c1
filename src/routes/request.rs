//! What routing looks at in a request, as borrowed plain data, so that matching and the
//! split are pure functions that tests and `explain` call without a socket.

use std::io::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, Method, Uri};

use super::def::Sticky;
pub use super::headers::Headers;

#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The request's host without its port; compared case-insensitively.
    pub host: Option<&'a str>,
    pub headers: Headers<'a>,
    pub client_ip: Option<IpAddr>,
}

impl<'a> RequestView<'a> {
    pub fn new(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        client_ip: Option<IpAddr>,
    ) -> Self {
        let headers = Headers::Map(headers);
        let host = headers.host().or_else(|| uri.host()).map(strip_port);
        RequestView {
            method: method.as_str(),
            path: uri.path(),
            host,
            headers,
            client_ip,
        }
    }
}

/// "shop.example.com:8080" → "shop.example.com"; "[::1]:8080" → "[::1]".
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A client IP as text ("203.0.113.7", "2001:db8::1"), formatted without allocating.
pub struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut buf = [0u8; 48];
        let len = match ip {
            // Every request to a plain upstream formats its client's address (the
            // forwarding header), so IPv4 is written by hand: `fmt` took about 1,000
            // instructions of the request's 27,000.
            IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf[len] = b'.';
                        len += 1;
                    }
                    if octet >= 100 {
                        buf[len] = b'0' + octet / 100;
                        len += 1;
                    }
                    if octet >= 10 {
                        buf[len] = b'0' + octet / 10 % 10;
                        len += 1;
                    }
                    buf[len] = b'0' + octet % 10;
                    len += 1;
                }
                len
            }
            IpAddr::V6(_) => {
                let mut cursor = std::io::Cursor::new(&mut buf[..]);
                // An IPv6 address is at most 45 characters; the buffer always fits it.
                let _ = write!(cursor, "{ip}");
                cursor.position() as usize
            }
        };
        IpText { buf, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The sticky key of a request, borrowed from it where possible.
pub enum StickyKey<'a> {
    Borrowed(&'a [u8]),
    Ip(IpText),
    Missing,
}

impl StickyKey<'_> {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            StickyKey::Borrowed(b) => Some(b),
            StickyKey::Ip(ip) => Some(ip.as_bytes()),
            StickyKey::Missing => None,
        }
    }
}

/// An empty header or cookie counts as missing: it would put every such user in one bucket.
pub fn sticky_key<'a>(sticky: &Sticky, req: &RequestView<'a>) -> StickyKey<'a> {
    let borrowed = |v: Option<&'a [u8]>| match v {
        Some(v) if !v.is_empty() => StickyKey::Borrowed(v),
        _ => StickyKey::Missing,
    };
    match sticky {
        Sticky::Header(name) => borrowed(req.headers.get(name)),
        Sticky::Cookie(name) => borrowed(req.headers.cookie(name)),
        Sticky::Ip => req
            .client_ip
            .map_or(StickyKey::Missing, |ip| StickyKey::Ip(IpText::new(ip))),
        Sticky::None => StickyKey::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;
    use http::HeaderValue;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
        assert_eq!(strip_port("shop.example.com"), "shop.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("theme=dark; uid=abc123"));
        h.append(COOKIE, HeaderValue::from_static("session=\"q1\""));
        let h = Headers::Map(&h);
        assert_eq!(h.cookie("uid"), Some(&b"abc123"[..]));
        assert_eq!(h.cookie("session"), Some(&b"q1"[..]));
        assert_eq!(h.cookie("id"), None);
        assert_eq!(h.cookie("theme"), Some(&b"dark"[..]));
    }

    #[test]
    fn sticky_keys_come_from_the_configured_place() {
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_static("u-1"));
        h.insert("x-empty", HeaderValue::from_static(""));
        h.insert(COOKIE, HeaderValue::from_static("uid=c-9"));
        let uri: Uri = "/a".parse().expect("uri");
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let req = RequestView::new(&Method::GET, &uri, &h, Some(ip));
        let key = |s: Sticky| sticky_key(&s, &req).bytes().map(<[u8]>::to_vec);
        assert_eq!(
            key(Sticky::Header("x-user-id".parse().expect("name"))),
            Some(b"u-1".to_vec())
        );
        assert_eq!(key(Sticky::Header("x-empty".parse().expect("name"))), None);
        assert_eq!(key(Sticky::Header("x-other".parse().expect("name"))), None);
        assert_eq!(key(Sticky::Cookie("uid".into())), Some(b"c-9".to_vec()));
        assert_eq!(key(Sticky::Ip), Some(b"2001:db8::1".to_vec()));
        assert_eq!(key(Sticky::None), None);
    }

    #[test]
    fn ipv4_text_is_what_display_writes() {
        for o in 0..=255u8 {
            for ip in [
                std::net::Ipv4Addr::new(o, 0, 255, o),
                std::net::Ipv4Addr::new(10, o, 9, 100),
                std::net::Ipv4Addr::new(127, 0, o, 1),
            ] {
                let ip = IpAddr::V4(ip);
                assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
            }
        }
    }

    #[test]
    fn the_longest_ipv6_text_fits() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("ip");
        assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
    }
}
