//! `config/banyan.toml` as written: the serde types, before validation.

use serde::Deserialize;
use toml::Spanned;

use crate::tomlspan::{DurationText, Shape};

/// The keys of each section, for reporting typos before deserializing
/// (`tomlspan::drop_unknown`), so that one typo does not hide the section's other
/// problems; serde still refuses any key these lists miss.
pub(super) const SERVER_SHAPE: Shape = Shape {
    keys: &[
        "listen",
        "threads",
        "routes_dir",
        "state_dir",
        "default_upstream",
        "access_log",
        "debug_headers",
        "fast_path",
        "tls",
        "grace_period",
        "shutdown_timeout",
        "work_stealing",
        "reload_debounce",
        "client_header_timeout",
        "keepalive_timeout",
        "send_timeout",
        "max_connections",
    ],
    tables: &[(
        "tls",
        Shape {
            keys: &["listen", "cert", "key"],
            tables: &[],
        },
    )],
};

pub(super) const ADMIN_SHAPE: Shape = Shape {
    keys: &["listen", "token_file", "tokens"],
    tables: &[],
};

pub(super) const UPSTREAM_SHAPE: Shape = Shape {
    keys: &[
        "peers",
        "tls",
        "health",
        "connect_timeout",
        "read_timeout",
        "total_timeout",
        "idle_timeout",
        "circuit",
        "host",
        "protocol",
    ],
    tables: &[
        (
            "tls",
            Shape {
                keys: &["sni", "ca", "client_cert", "client_key"],
                tables: &[],
            },
        ),
        (
            "health",
            Shape {
                keys: &["path", "interval", "timeout", "failures", "successes"],
                tables: &[],
            },
        ),
        (
            "circuit",
            Shape {
                keys: &["failures", "cooldown"],
                tables: &[],
            },
        ),
    ],
};

pub(super) const SHADOW_SHAPE: Shape = Shape {
    keys: &[
        "max_body_bytes",
        "max_in_flight",
        "timeout",
        "diff_log_max_bytes",
        "log_query",
        "sensitive_headers",
    ],
    tables: &[],
};

pub(super) const STATE_SHAPE: Shape = Shape {
    keys: &[
        "store",
        "endpoints",
        "prefix",
        "replica",
        "username",
        "password",
        "routes",
        "tls",
    ],
    tables: &[(
        "tls",
        Shape {
            keys: &["ca", "client_cert", "client_key", "server_name"],
            tables: &[],
        },
    )],
};

pub(super) const NOTIFY_SHAPE: Shape = Shape {
    keys: &["webhooks", "format", "timeout", "retries", "queue"],
    tables: &[],
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) threads: Option<Spanned<i64>>,
    pub(super) routes_dir: Option<String>,
    pub(super) state_dir: Option<String>,
    pub(super) default_upstream: Option<Spanned<String>>,
    pub(super) access_log: Option<Spanned<String>>,
    pub(super) debug_headers: Option<bool>,
    pub(super) fast_path: Option<bool>,
    pub(super) tls: Option<Spanned<RawServerTls>>,
    pub(super) grace_period: Option<DurationText>,
    pub(super) shutdown_timeout: Option<DurationText>,
    pub(super) work_stealing: Option<bool>,
    pub(super) reload_debounce: Option<DurationText>,
    pub(super) client_header_timeout: Option<DurationText>,
    pub(super) keepalive_timeout: Option<DurationText>,
    pub(super) send_timeout: Option<DurationText>,
    pub(super) max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    pub(super) listen: Spanned<String>,
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    /// Named tokens: name → token file.
    pub(super) tokens: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) peers: Spanned<Vec<Spanned<String>>>,
    pub(super) tls: Option<Spanned<RawUpstreamTls>>,
    pub(super) health: Option<Spanned<RawHealth>>,
    pub(super) connect_timeout: Option<DurationText>,
    pub(super) read_timeout: Option<DurationText>,
    pub(super) total_timeout: Option<DurationText>,
    pub(super) idle_timeout: Option<DurationText>,
    pub(super) circuit: Option<Spanned<RawCircuit>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) protocol: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub(super) sni: Option<String>,
    pub(super) ca: Option<String>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) path: Option<Spanned<String>>,
    pub(super) interval: Option<DurationText>,
    pub(super) timeout: Option<DurationText>,
    pub(super) failures: Option<Spanned<i64>>,
    pub(super) successes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCircuit {
    pub(super) failures: Option<Spanned<i64>>,
    pub(super) cooldown: Option<DurationText>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadowLimits {
    pub(super) max_body_bytes: Option<Spanned<i64>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
    pub(super) timeout: Option<DurationText>,
    pub(super) diff_log_max_bytes: Option<Spanned<i64>>,
    pub(super) log_query: Option<bool>,
    pub(super) sensitive_headers: Option<Vec<Spanned<String>>>,
}
