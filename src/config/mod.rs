//! `config/banyan.toml`: the proxy's own settings (listeners, upstreams, admin, limits).
//! Read once at start, validated into plain data; every problem is reported with its
//! file, line and column.
//!
//! - `mod.rs`: the model, as the rest of banyan reads it, and loading.
//! - `schema.rs`: the file as written (serde).
//! - `validate.rs`, `upstreams.rs`, `limits.rs`: validation into the model.
//! - `resolve.rs`: what is looked up outside the file (DNS, the admin token).
//! - `cli.rs`: the few settings the command line reads leniently.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Report, SourceFile};
pub use limits::ClientLimits;

mod cli;
pub mod limits;
pub mod notify;
mod resolve;
mod schema;
pub mod state;
mod upstreams;
mod validate;

pub use cli::CliSettings;
pub use resolve::{admin_token, admin_token_file, resolve_peer};
use schema::*;
use validate::parse;
pub use validate::valid_name;

pub const DEFAULT_CONFIG_PATH: &str = "config/banyan.toml";
pub const TOKEN_ENV: &str = "BANYAN_ADMIN_TOKEN";
/// The audit log's name for the token of `admin.token_file` / `BANYAN_ADMIN_TOKEN`.
pub const DEFAULT_TOKEN_NAME: &str = "default";

#[derive(Debug, Clone)]
pub struct Config {
    /// The config file as given (relative paths below are already resolved).
    pub file: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub upstreams: BTreeMap<String, Upstream>,
    pub shadow: ShadowLimits,
    /// Where shared routing state lives (`[state]`).
    pub state: state::Store,
    /// Webhooks told of routing changes (`[notify]`).
    pub notify: Option<notify::Notify>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub threads: usize,
    pub routes_dir: PathBuf,
    pub state_dir: PathBuf,
    pub default_upstream: String,
    pub access_log: AccessLog,
    pub debug_headers: bool,
    /// banyan's own HTTP/1.1 path for whole plain requests; false sends every request
    /// through Pingora's (an escape hatch; the tests run their cases both ways).
    pub fast_path: bool,
    /// SIGTERM: how long in-flight requests may finish before the runtimes stop.
    pub grace_period: Duration,
    /// After the grace period: how long runtimes get to wind down.
    pub shutdown_timeout: Duration,
    /// Tokio work stealing between the HTTPS listener's threads (plain listeners are
    /// served by banyan's own threads, one runtime each: `proxy/accept.rs`). Off, each
    /// thread runs a runtime of its own. The default is off with one thread and on with
    /// several: with several, Pingora 0.9's runtimes without stealing can hang a SIGINT
    /// shutdown (its accept loop spins on the error of a listener whose runtime already
    /// stopped; docs/benchmarks.md).
    pub work_stealing: bool,
    /// Quiet time after a change in the routes folder before it is reloaded, so an
    /// editor's or a ConfigMap's several writes become one reload.
    pub reload_debounce: Duration,
    pub tls: Option<ServerTls>,
    /// Head, keep-alive and send timeouts and the connection cap for clients.
    pub limits: ClientLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// `[admin.tokens]`: name → token file, so the audit log names whose token acted.
    pub tokens: Vec<(String, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub peers: Vec<Peer>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub total_timeout: Option<Duration>,
    /// Pooled connections idle longer than this are closed; keep it below the
    /// upstream's own keep-alive timeout, or a request on a stale connection fails.
    pub idle_timeout: Duration,
    pub host: Option<String>,
    pub health: Option<HealthCheck>,
    pub circuit: Option<Circuit>,
    /// TLS to this upstream's peers (shadow copies and health checks included).
    pub tls: Option<crate::tls::UpstreamTls>,
    /// The HTTP version spoken to its peers.
    pub protocol: Protocol,
}

/// `protocol` of an upstream: HTTP/1.1 (the default), HTTP/2 over TLS (by ALPN), or
/// HTTP/2 over plain TCP with prior knowledge (h2c), as gRPC servers usually listen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Http1,
    H2,
    H2c,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
            Protocol::H2c => "h2c",
        }
    }
}

/// The HTTPS listener: a PEM chain and key, reloaded when the files change.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf certificate at load, described (subject, expiry), for `check`.
    pub serving: String,
}

/// One upstream server: as written, and the address it resolved to at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub spec: String,
    pub addr: SocketAddr,
}

/// Active health checks: `GET path` on every peer each `interval`; any 2xx within
/// `timeout` passes. `failures` consecutive failed checks take a peer out of rotation,
/// `successes` consecutive passed ones bring it back.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// The circuit breaker: `failures` consecutive failed requests (connection errors,
/// timeouts, 5xx) open it for `cooldown`; then one request probes the upstream.
#[derive(Debug, Clone)]
pub struct Circuit {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            failures: 5,
            cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShadowLimits {
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub timeout: Duration,
    /// `state/diffs.jsonl` is rotated (to `diffs.jsonl.1`) when it would grow past this.
    pub diff_log_max_bytes: u64,
    /// Whether the diff log keeps query strings (they may carry personal data).
    pub log_query: bool,
    /// Headers whose values the diff log never shows, besides Authorization,
    /// Proxy-Authorization, Cookie and Set-Cookie.
    pub sensitive_headers: Vec<http::HeaderName>,
}

pub const DEFAULT_DIFF_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(1);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(100);
// ---- loading -------------------------------------------------------------------------

impl Config {
    /// Reads and validates the config file; relative paths resolve against `base`
    /// (the folder banyan was started from).
    pub fn load(file: &Path, base: &Path) -> Result<(Config, Report), Report> {
        let mut report = Report::default();
        let text = match std::fs::read(file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    let mut src = SourceFile::new(file, "");
                    src.error(None, "the file is not UTF-8 text");
                    report.extend(src.diagnostics);
                    return Err(report);
                }
            },
            Err(e) => {
                let mut src = SourceFile::new(file, "");
                src.error(None, format!("cannot read the config file: {e}"));
                report.extend(src.diagnostics);
                return Err(report);
            }
        };
        let mut src = SourceFile::new(file, &text);
        let config = parse(&mut src, &text, base);
        report.extend(src.diagnostics);
        match config {
            Some(c) if !report.has_errors() => Ok((c, report)),
            _ => Err(report),
        }
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.get(name)
    }

    /// The admin token: `BANYAN_ADMIN_TOKEN` wins over `admin.token_file`.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        admin_token(self.admin.token_file.as_deref())
    }

    /// Every admin token as (name, secret): the unnamed one (`BANYAN_ADMIN_TOKEN` or
    /// `admin.token_file`) as `default`, then `[admin.tokens]`.
    pub fn admin_tokens(&self) -> anyhow::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        if let Some(t) = self.admin_token()? {
            out.push((DEFAULT_TOKEN_NAME.to_string(), t));
        }
        for (name, file) in &self.admin.tokens {
            if let Some(t) = admin_token_file(file)? {
                out.push((name.clone(), t));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
