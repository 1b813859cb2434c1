//! `config/banyan.toml` as written: the serde types, before validation.

use serde::Deserialize;
use toml::Spanned;

use crate::tomlspan::DurationText;

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
