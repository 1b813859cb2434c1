//! `[server]` limits on clients: how long a request head may take, how long a kept-alive
//! connection may idle, how long a client may leave an answer unread, and how many
//! connections may be open at once. The defaults are nginx's where it has one.

use std::time::Duration;

use toml::Spanned;

use crate::diag::SourceFile;
use crate::tomlspan::DurationText;

/// nginx's `client_header_timeout` default is 60 s; 10 s is enough for any real client
/// and bounds what a trickled head costs.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// The whole request head must arrive within this, from the connection's start (first
    /// request) or from the request's first byte (later ones).
    pub header_timeout: Duration,
    /// How long a connection may wait for the next request.
    pub keepalive_timeout: Duration,
    /// How long one write to a client that does not read may wait.
    pub send_timeout: Duration,
    /// Client connections open at once; more are closed as they arrive.
    pub max_connections: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: DEFAULT_CLIENT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The limits as written in `[server]`.
pub struct RawLimits<'a> {
    pub client_header_timeout: Option<&'a DurationText>,
    pub keepalive_timeout: Option<&'a DurationText>,
    pub send_timeout: Option<&'a DurationText>,
    pub max_connections: Option<&'a Spanned<i64>>,
}

/// Validates the limits; every problem is recorded in `src`.
pub fn validate(src: &mut SourceFile, raw: RawLimits) -> Option<ClientLimits> {
    let d = ClientLimits::default();
    let mut duration = |v: Option<&DurationText>, what: &str, default: Duration| match v {
        None => Some(default),
        Some(t) => match t.parse(src, what) {
            Some(v) if v.is_zero() || v > Duration::from_secs(3600) => {
                src.error(
                    Some(t.0.span()),
                    format!("{what} must be between 1ms and 1h"),
                );
                None
            }
            v => v,
        },
    };
    let header = duration(
        raw.client_header_timeout,
        "server.client_header_timeout",
        d.header_timeout,
    );
    let keepalive = duration(
        raw.keepalive_timeout,
        "server.keepalive_timeout",
        d.keepalive_timeout,
    );
    let send = duration(raw.send_timeout, "server.send_timeout", d.send_timeout);
    let max = match raw.max_connections {
        None => Some(d.max_connections),
        Some(m) if (1..=10_000_000).contains(m.get_ref()) => Some(*m.get_ref() as usize),
        Some(m) => {
            src.error(
                Some(m.span()),
                "server.max_connections must be between 1 and 10000000",
            );
            None
        }
    };
    Some(ClientLimits {
        header_timeout: header?,
        keepalive_timeout: keepalive?,
        send_timeout: send?,
        max_connections: max?,
    })
}
