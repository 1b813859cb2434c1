//! Cross-site and DNS-rebinding protection for an admin API without a token (the default
//! on loopback). Any web page a browser on the host opens can send requests to
//! 127.0.0.1:9090, and a name rebound to 127.0.0.1 can read the answers; neither can
//! choose its `Origin` or `Host`, nor send JSON cross-site without a CORS preflight that
//! banyan never grants. So, without a token: the `Host` must name the admin listener,
//! an `Origin` must be its own, and a mutation must be JSON. With a token none of this
//! applies: a browser cannot add the bearer token to a cross-site request.

use std::net::SocketAddr;

use http::Method;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Foreign {
    #[error("the Host header does not name the admin listener (a rebound DNS name?)")]
    Host,
    #[error("a cross-site request (its Origin is not the admin's own)")]
    Origin,
    #[error("a change must be sent as application/json")]
    NotJson,
}

/// What the check reads of a request.
pub struct Seen<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub host: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
}

/// Whether `host` (a Host value, or an Origin's authority) names `listen`: its address
/// and port as written, or `localhost` on its port.
fn names_listener(host: &[u8], listen: SocketAddr) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let port = listen.port();
    let ip = match listen {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    [format!("{ip}:{port}"), format!("localhost:{port}")]
        .iter()
        .any(|ok| host.eq_ignore_ascii_case(ok))
        || (port == 80
            && (host.eq_ignore_ascii_case(&ip) || host.eq_ignore_ascii_case("localhost")))
}

/// The check for a tokenless admin API listening on `listen`. `/healthz` answers
/// everyone: probes send the address they dialled, and it says nothing.
pub fn check(req: &Seen, listen: SocketAddr) -> Result<(), Foreign> {
    if req.path == "/healthz" {
        return Ok(());
    }
    if let Some(host) = req.host {
        if !names_listener(host, listen) {
            return Err(Foreign::Host);
        }
    }
    if let Some(origin) = req.origin {
        let own = origin
            .strip_prefix(b"http://")
            .is_some_and(|authority| names_listener(authority, listen))
            && req.host.is_none_or(|h| {
                origin
                    .strip_prefix(b"http://")
                    .is_some_and(|a| a.eq_ignore_ascii_case(h))
            });
        if !own {
            return Err(Foreign::Origin);
        }
    }
    let reads = matches!(*req.method, Method::GET | Method::HEAD);
    if !reads {
        let json = req.content_type.is_some_and(|t| {
            let essence = t.split(|&b| b == b';').next().unwrap_or(t).trim_ascii();
            essence.eq_ignore_ascii_case(b"application/json")
        });
        if !json {
            return Err(Foreign::NotJson);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN: &str = "127.0.0.1:9090";

    fn seen<'a>(
        method: &'a Method,
        host: Option<&'a str>,
        origin: Option<&'a str>,
        ct: Option<&'a str>,
    ) -> Seen<'a> {
        Seen {
            method,
            path: "/api/v1/rollback",
            host: host.map(str::as_bytes),
            origin: origin.map(str::as_bytes),
            content_type: ct.map(str::as_bytes),
        }
    }

    #[test]
    fn the_admins_own_requests_pass() {
        let listen = LISTEN.parse().expect("addr");
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            check(&seen(&get, Some("127.0.0.1:9090"), None, None), listen),
            Ok(())
        );
        assert_eq!(
            check(&seen(&get, Some("localhost:9090"), None, None), listen),
            Ok(())
        );
        assert_eq!(
            check(&seen(&get, None, None, None), listen),
            Ok(()),
            "HTTP/1.0 without Host"
        );
        // The dashboard's own POST: same origin, JSON.
        let json = Some("application/json; charset=utf-8");
        assert_eq!(
            check(
                &seen(
                    &post,
                    Some("127.0.0.1:9090"),
                    Some("http://127.0.0.1:9090"),
                    json
                ),
                listen
            ),
            Ok(())
        );
        let v6: SocketAddr = "[::1]:9090".parse().expect("addr");
        assert_eq!(
            check(&seen(&get, Some("[::1]:9090"), None, None), v6),
            Ok(())
        );
    }

    #[test]
    fn cross_site_and_rebound_requests_are_refused() {
        let listen = LISTEN.parse().expect("addr");
        let post = Method::POST;
        let get = Method::GET;
        let json = Some("application/json");
        assert_eq!(
            check(
                &seen(
                    &post,
                    Some("127.0.0.1:9090"),
                    Some("http://evil.example"),
                    Some("text/plain")
                ),
                listen
            ),
            Err(Foreign::Origin)
        );
        assert_eq!(
            check(
                &seen(
                    &post,
                    Some("127.0.0.1:9090"),
                    Some("http://evil.example"),
                    json
                ),
                listen
            ),
            Err(Foreign::Origin)
        );
        assert_eq!(
            check(
                &seen(&post, Some("127.0.0.1:9090"), Some("null"), json),
                listen
            ),
            Err(Foreign::Origin)
        );
        assert_eq!(
            check(
                &seen(
                    &post,
                    Some("localhost:9090"),
                    Some("http://127.0.0.1:9090"),
                    json
                ),
                listen
            ),
            Err(Foreign::Origin),
            "an origin other than the Host the page was loaded from"
        );
        assert_eq!(
            check(&seen(&get, Some("evil.example:9090"), None, None), listen),
            Err(Foreign::Host)
        );
        assert_eq!(
            check(&seen(&get, Some("127.0.0.1:9091"), None, None), listen),
            Err(Foreign::Host)
        );
        assert_eq!(
            check(
                &seen(&post, Some("127.0.0.1:9090"), None, Some("text/plain")),
                listen
            ),
            Err(Foreign::NotJson)
        );
        assert_eq!(
            check(&seen(&post, Some("127.0.0.1:9090"), None, None), listen),
            Err(Foreign::NotJson)
        );
        let health = Seen {
            path: "/healthz",
            ..seen(&get, Some("10.0.0.7:9090"), None, None)
        };
        assert_eq!(check(&health, listen), Ok(()));
    }
}
