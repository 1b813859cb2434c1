//! `config/banyan.toml`: the proxy's own settings (listeners, upstreams, admin, limits).
//! Read once at start, validated into plain data; every problem is reported with its
//! file, line and column.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Report, SourceFile};
use crate::tomlspan::{self, DurationText};
pub use limits::ClientLimits;

pub mod limits;

pub const DEFAULT_CONFIG_PATH: &str = "config/banyan.toml";
pub const TOKEN_ENV: &str = "BANYAN_ADMIN_TOKEN";

#[derive(Debug, Clone)]
pub struct Config {
    /// The config file as given (relative paths below are already resolved).
    pub file: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub upstreams: BTreeMap<String, Upstream>,
    pub shadow: ShadowLimits,
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
    /// SIGTERM: how long in-flight requests may finish before the runtimes stop.
    pub grace_period: Duration,
    /// After the grace period: how long runtimes get to wind down.
    pub shutdown_timeout: Duration,
    /// Tokio work stealing between data-path threads (Pingora's default). Off saves about
    /// 10 % CPU per request, but a few busy connections can load one thread, and with
    /// more than one thread Pingora 0.9 cannot reuse a pooled upstream connection that
    /// another thread opened (it logs "failed to acquire reusable stream" and reconnects).
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

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<Spanned<String>>>,
    threads: Option<Spanned<i64>>,
    routes_dir: Option<String>,
    state_dir: Option<String>,
    default_upstream: Option<Spanned<String>>,
    access_log: Option<Spanned<String>>,
    debug_headers: Option<bool>,
    tls: Option<Spanned<RawServerTls>>,
    grace_period: Option<DurationText>,
    shutdown_timeout: Option<DurationText>,
    work_stealing: Option<bool>,
    reload_debounce: Option<DurationText>,
    client_header_timeout: Option<DurationText>,
    keepalive_timeout: Option<DurationText>,
    send_timeout: Option<DurationText>,
    max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    listen: Spanned<String>,
    cert: String,
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    peers: Spanned<Vec<Spanned<String>>>,
    tls: Option<Spanned<RawUpstreamTls>>,
    health: Option<Spanned<RawHealth>>,
    connect_timeout: Option<DurationText>,
    read_timeout: Option<DurationText>,
    total_timeout: Option<DurationText>,
    idle_timeout: Option<DurationText>,
    circuit: Option<Spanned<RawCircuit>>,
    host: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    sni: Option<String>,
    ca: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<Spanned<String>>,
    interval: Option<DurationText>,
    timeout: Option<DurationText>,
    failures: Option<Spanned<i64>>,
    successes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCircuit {
    failures: Option<Spanned<i64>>,
    cooldown: Option<DurationText>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShadowLimits {
    max_body_bytes: Option<Spanned<i64>>,
    max_in_flight: Option<Spanned<i64>>,
    timeout: Option<DurationText>,
    diff_log_max_bytes: Option<Spanned<i64>>,
    log_query: Option<bool>,
    sensitive_headers: Option<Vec<Spanned<String>>>,
}

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
}

/// The admin token, for the server and the command line alike: `BANYAN_ADMIN_TOKEN` if
/// set, else the token file's trimmed content, else none.
pub fn admin_token(token_file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var(TOKEN_ENV) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    let Some(path) = token_file else {
        return Ok(None);
    };
    let t = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read admin token file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        anyhow::bail!("admin token file {} is empty", path.display());
    }
    Ok(Some(t))
}

fn parse(src: &mut SourceFile, text: &str, base: &Path) -> Option<Config> {
    let doc = tomlspan::parse_document(src, text)?;
    let mut server = None;
    let mut admin = RawAdmin::default();
    let mut upstreams: Vec<(String, std::ops::Range<usize>, RawUpstream)> = Vec::new();
    let mut shadow = RawShadowLimits::default();
    let mut saw_server = false;
    let mut saw_upstreams = false;

    for (key, value) in
        tomlspan::split_top_level(src, doc, &["server", "admin", "upstreams", "shadow"])
    {
        match key.as_str() {
            "server" => {
                saw_server = true;
                server = tomlspan::deserialize::<RawServer>(src, value);
            }
            "admin" => admin = tomlspan::deserialize(src, value).unwrap_or_default(),
            "shadow" => shadow = tomlspan::deserialize(src, value).unwrap_or_default(),
            "upstreams" => {
                saw_upstreams = true;
                let span = value.span();
                match value.into_inner() {
                    toml::de::DeValue::Table(table) => {
                        for (name, up) in table {
                            let name_span = name.span();
                            if let Some(raw) = tomlspan::deserialize::<RawUpstream>(src, up) {
                                upstreams.push((name.get_ref().to_string(), name_span, raw));
                            }
                        }
                    }
                    _ => src.error(Some(span), "`upstreams` must be a table of named upstreams"),
                }
            }
            _ => {}
        }
    }
    if !saw_server {
        src.error(None, "missing the [server] section");
    }
    if !saw_upstreams {
        src.error(
            None,
            "missing [upstreams]: at least the default upstream is needed",
        );
    }

    // Names declared count as known even when their section has errors, so one mistake
    // is reported once and not again by everything that names the upstream.
    let declared: Vec<String> = upstreams.iter().map(|(n, _, _)| n.clone()).collect();
    let upstreams = validate_upstreams(src, upstreams, base);
    let server = validate_server(src, server?, base, &declared)?;
    let admin = validate_admin(src, admin, base)?;
    let shadow = validate_shadow(src, shadow)?;
    Some(Config {
        file: src.path.to_path_buf(),
        server,
        admin,
        upstreams,
        shadow,
    })
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn parse_listen(src: &mut SourceFile, s: &Spanned<String>, what: &str) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            src.error(
                Some(s.span()),
                format!(
                    "{what}: `{}` is not an address and port like \"127.0.0.1:8080\" or \"[::]:8080\"",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

fn validate_server(
    src: &mut SourceFile,
    raw: RawServer,
    base: &Path,
    upstreams: &[String],
) -> Option<Server> {
    let mut ok = true;
    let listen_raw = raw
        .listen
        .unwrap_or_else(|| vec![Spanned::new(0..0, "127.0.0.1:8080".to_string())]);
    let mut listen = Vec::new();
    for l in &listen_raw {
        match parse_listen(src, l, "server.listen") {
            Some(a) if listen.contains(&a) => {
                src.error(
                    Some(l.span()),
                    format!("server.listen: {a} is listed twice"),
                );
                ok = false;
            }
            Some(a) => listen.push(a),
            None => ok = false,
        }
    }
    if listen_raw.is_empty() {
        src.error(
            None,
            "server.listen is empty: banyan needs at least one listener",
        );
        ok = false;
    }
    let threads = match raw.threads {
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(t) if (1..=1024).contains(t.get_ref()) => *t.get_ref() as usize,
        Some(t) => {
            src.error(
                Some(t.span()),
                format!("server.threads: {} is not between 1 and 1024", t.get_ref()),
            );
            ok = false;
            1
        }
    };
    let default_upstream = match raw.default_upstream {
        None => {
            src.error(
                None,
                "server.default_upstream is missing: unmatched requests need a home",
            );
            ok = false;
            String::new()
        }
        Some(d) => {
            if !upstreams.contains(d.get_ref()) {
                src.error(
                    Some(d.span()),
                    format!(
                        "server.default_upstream: unknown upstream `{}`{}",
                        d.get_ref(),
                        known_list(upstreams)
                    ),
                );
                ok = false;
            }
            d.into_inner()
        }
    };
    let access_log = match raw.access_log {
        None => AccessLog::Off,
        Some(a) => match a.get_ref().as_str() {
            "off" | "" => AccessLog::Off,
            "stdout" => AccessLog::Stdout,
            p => AccessLog::File(resolve_path(base, p)),
        },
    };
    let tls = match &raw.tls {
        None => None,
        Some(t) => {
            let r = t.get_ref();
            let listen = parse_listen(src, &r.listen, "server.tls.listen");
            let (cert, key) = (resolve_path(base, &r.cert), resolve_path(base, &r.key));
            match crate::tls::certified_key(&cert, &key) {
                Ok(ck) => listen.map(|listen| ServerTls {
                    listen,
                    serving: ck
                        .cert
                        .first()
                        .map_or_else(String::new, crate::tls::describe),
                    cert,
                    key,
                }),
                Err(msg) => {
                    src.error(Some(t.span()), format!("server.tls: {msg}"));
                    None
                }
            }
            .or_else(|| {
                ok = false;
                None
            })
        }
    };
    let grace_period = raw.grace_period.map_or(Some(DEFAULT_GRACE_PERIOD), |d| {
        d.parse(src, "server.grace_period")
    });
    let shutdown_timeout = raw
        .shutdown_timeout
        .map_or(Some(DEFAULT_SHUTDOWN_TIMEOUT), |d| {
            d.parse(src, "server.shutdown_timeout")
        });
    let reload_debounce = match &raw.reload_debounce {
        None => Some(DEFAULT_RELOAD_DEBOUNCE),
        Some(d) => match d.parse(src, "server.reload_debounce") {
            Some(v) if v > Duration::from_secs(5) => {
                src.error(Some(d.0.span()), "server.reload_debounce must be at most 5s: changes are expected live within a second");
                None
            }
            v => v,
        },
    };
    let limits = limits::validate(
        src,
        limits::RawLimits {
            client_header_timeout: raw.client_header_timeout.as_ref(),
            keepalive_timeout: raw.keepalive_timeout.as_ref(),
            send_timeout: raw.send_timeout.as_ref(),
            max_connections: raw.max_connections.as_ref(),
        },
    );
    if !ok {
        return None;
    }
    Some(Server {
        limits: limits?,
        listen,
        threads,
        routes_dir: resolve_path(base, raw.routes_dir.as_deref().unwrap_or("routes")),
        state_dir: resolve_path(base, raw.state_dir.as_deref().unwrap_or("state")),
        default_upstream,
        access_log,
        debug_headers: raw.debug_headers.unwrap_or(false),
        grace_period: grace_period?,
        shutdown_timeout: shutdown_timeout?,
        work_stealing: raw.work_stealing.unwrap_or(true),
        reload_debounce: reload_debounce?,
        tls,
    })
}

fn validate_admin(src: &mut SourceFile, raw: RawAdmin, base: &Path) -> Option<Admin> {
    let listen = match &raw.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 9090)),
        Some(l) => parse_listen(src, l, "admin.listen")?,
    };
    let token_file = raw
        .token_file
        .as_ref()
        .map(|t| resolve_path(base, t.get_ref()));
    if let (Some(path), Some(t)) = (&token_file, &raw.token_file) {
        match std::fs::read_to_string(path) {
            Ok(s) if s.trim().is_empty() => src.error(
                Some(t.span()),
                format!("admin.token_file: {} is empty", path.display()),
            ),
            Ok(_) => {}
            Err(e) => src.error(
                Some(t.span()),
                format!("admin.token_file: cannot read {}: {e}", path.display()),
            ),
        }
    }
    let has_env_token = std::env::var(TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty());
    if !is_loopback(listen.ip()) && token_file.is_none() && !has_env_token {
        let span = raw.listen.as_ref().map(|l| l.span());
        src.error(
            span,
            format!(
                "admin.listen {listen} is not a loopback address and no admin token is set: set admin.token_file or {TOKEN_ENV}"
            ),
        );
        return None;
    }
    Some(Admin { listen, token_file })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn known_list(upstreams: &[String]) -> String {
    if upstreams.is_empty() {
        return String::new();
    }
    format!(" (known: {})", upstreams.join(", "))
}

/// Upstream and route names: letters, digits, `-`, `_`, `.`; they appear in metric labels,
/// URLs of the admin API and command lines.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn validate_upstreams(
    src: &mut SourceFile,
    raw: Vec<(String, std::ops::Range<usize>, RawUpstream)>,
    base: &Path,
) -> BTreeMap<String, Upstream> {
    let mut out = BTreeMap::new();
    for (name, name_span, up) in raw {
        let mut ok = true;
        if !valid_name(&name) {
            src.error(
                Some(name_span.clone()),
                format!("upstream name `{name}`: use letters, digits, '-', '_' or '.'"),
            );
            ok = false;
        }
        if up.peers.get_ref().is_empty() {
            src.error(
                Some(up.peers.span()),
                format!("upstreams.{name}.peers is empty"),
            );
            ok = false;
        }
        let mut peers = Vec::new();
        for p in up.peers.get_ref() {
            match resolve_peer(p.get_ref()) {
                Ok(addr) => peers.push(Peer {
                    spec: p.get_ref().clone(),
                    addr,
                }),
                Err(msg) => {
                    src.error(Some(p.span()), format!("upstreams.{name}.peers: {msg}"));
                    ok = false;
                }
            }
        }
        let tls = match &up.tls {
            None => None,
            Some(t) => match upstream_tls(t.get_ref(), base) {
                Ok(tls) => Some(tls),
                Err(msg) => {
                    src.error(Some(t.span()), format!("upstreams.{name}.tls: {msg}"));
                    ok = false;
                    None
                }
            },
        };
        let health = up
            .health
            .as_ref()
            .and_then(|h| health_check(src, &name, h.get_ref()));
        let circuit = match &up.circuit {
            None => Some(Some(Circuit::default())),
            Some(c) => circuit(src, c.get_ref()),
        };
        let mut timeout = |d: &Option<DurationText>, what: &str, default: Option<Duration>| match d
        {
            None => Some(default),
            Some(d) => match d.parse(src, what) {
                Some(v) if v.is_zero() => {
                    src.error(
                        Some(d.0.span()),
                        format!("{what} must be greater than zero"),
                    );
                    None
                }
                Some(v) => Some(Some(v)),
                None => None,
            },
        };
        let connect_timeout = timeout(
            &up.connect_timeout,
            "connect_timeout",
            Some(DEFAULT_CONNECT_TIMEOUT),
        );
        let read_timeout = timeout(&up.read_timeout, "read_timeout", Some(DEFAULT_READ_TIMEOUT));
        let total_timeout = timeout(&up.total_timeout, "total_timeout", None);
        let idle_timeout = timeout(&up.idle_timeout, "idle_timeout", Some(DEFAULT_IDLE_TIMEOUT));
        let host = match &up.host {
            Some(h)
                if http::HeaderValue::from_str(h.get_ref()).is_err() || h.get_ref().is_empty() =>
            {
                src.error(
                    Some(h.span()),
                    format!("upstreams.{name}.host is not a valid Host header value"),
                );
                ok = false;
                None
            }
            h => h.as_ref().map(|h| h.get_ref().clone()),
        };
        let (
            Some(Some(connect_timeout)),
            Some(Some(read_timeout)),
            Some(total_timeout),
            Some(Some(idle_timeout)),
            Some(circuit),
        ) = (
            connect_timeout,
            read_timeout,
            total_timeout,
            idle_timeout,
            circuit,
        )
        else {
            continue;
        };
        if ok {
            out.insert(
                name.clone(),
                Upstream {
                    name,
                    peers,
                    connect_timeout,
                    read_timeout,
                    total_timeout,
                    idle_timeout,
                    host,
                    health,
                    circuit,
                    tls,
                },
            );
        }
    }
    out
}

fn upstream_tls(t: &RawUpstreamTls, base: &Path) -> Result<crate::tls::UpstreamTls, String> {
    let Some(sni) = t.sni.as_deref() else {
        return Err(
            "sni is required: without it the upstream's certificate would not be verified"
                .to_string(),
        );
    };
    let ca = t.ca.as_deref().map(|p| resolve_path(base, p));
    let client = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((resolve_path(base, c), resolve_path(base, k))),
        _ => return Err("client_cert and client_key go together".to_string()),
    };
    crate::tls::UpstreamTls::load(
        sni,
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
}

/// A count between 1 and 1,000,000, or the default when absent.
fn count(src: &mut SourceFile, v: &Option<Spanned<i64>>, what: &str, default: u32) -> Option<u32> {
    match v {
        None => Some(default),
        Some(f) if (1..=1_000_000).contains(f.get_ref()) => Some(*f.get_ref() as u32),
        Some(f) => {
            src.error(
                Some(f.span()),
                format!("{what} must be between 1 and 1000000"),
            );
            None
        }
    }
}

fn health_check(src: &mut SourceFile, upstream: &str, h: &RawHealth) -> Option<HealthCheck> {
    let path = h
        .path
        .as_ref()
        .map_or("/healthz".to_string(), |p| p.get_ref().clone());
    if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        let span = h.path.as_ref().map(|p| p.span());
        src.error(
            span,
            format!("upstreams.{upstream}.health.path must be a path starting with '/'"),
        );
        return None;
    }
    let interval = h
        .interval
        .as_ref()
        .map_or(Some(Duration::from_secs(5)), |d| {
            d.parse(src, "health.interval")
        })?;
    if interval < Duration::from_millis(10) {
        src.error(
            None,
            format!("upstreams.{upstream}.health.interval must be at least 10ms"),
        );
        return None;
    }
    let timeout = h
        .timeout
        .as_ref()
        .map_or(Some(interval.min(DEFAULT_HEALTH_TIMEOUT)), |d| {
            d.parse(src, "health.timeout")
        })?;
    if timeout.is_zero() {
        src.error(
            None,
            format!("upstreams.{upstream}.health.timeout must be greater than zero"),
        );
        return None;
    }
    let failures = count(src, &h.failures, "health.failures", 1)?;
    let successes = count(src, &h.successes, "health.successes", 1)?;
    Some(HealthCheck {
        path,
        interval,
        timeout,
        failures,
        successes,
    })
}

/// `None` on an error; `Some(None)` when `failures = 0` turns the breaker off.
fn circuit(src: &mut SourceFile, c: &RawCircuit) -> Option<Option<Circuit>> {
    if c.failures.as_ref().is_some_and(|f| *f.get_ref() == 0) {
        return Some(None);
    }
    let failures = count(
        src,
        &c.failures,
        "circuit.failures",
        Circuit::default().failures,
    )?;
    let cooldown = c
        .cooldown
        .as_ref()
        .map_or(Some(Circuit::default().cooldown), |d| {
            d.parse(src, "circuit.cooldown")
        })?;
    if cooldown.is_zero() {
        src.error(None, "circuit.cooldown must be greater than zero");
        return None;
    }
    Some(Some(Circuit { failures, cooldown }))
}

/// Resolves "host:port" once, at load: the data path never does DNS. A name with both
/// IPv4 and IPv6 addresses resolves to its first IPv4 address, the one a `localhost`
/// upstream nearly always listens on.
pub fn resolve_peer(spec: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = spec.rsplit_once(':') else {
        return Err(format!("`{spec}` needs a port, like \"{spec}:80\""));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("`{spec}` is not host:port"));
    }
    let addrs: Vec<SocketAddr> = match spec.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return Err(format!("cannot resolve `{spec}`: {e}")),
    };
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("`{spec}` resolved to no address"))
}

fn validate_shadow(src: &mut SourceFile, raw: RawShadowLimits) -> Option<ShadowLimits> {
    let mut positive = |v: &Option<Spanned<i64>>, what: &str, default: usize| match v {
        None => Some(default),
        Some(n) if *n.get_ref() > 0 => Some(*n.get_ref() as usize),
        Some(n) => {
            src.error(
                Some(n.span()),
                format!("shadow.{what} must be greater than zero"),
            );
            None
        }
    };
    let max_body_bytes = positive(&raw.max_body_bytes, "max_body_bytes", 1 << 20);
    let max_in_flight = positive(&raw.max_in_flight, "max_in_flight", 256);
    let diff_log_max_bytes = positive(
        &raw.diff_log_max_bytes,
        "diff_log_max_bytes",
        DEFAULT_DIFF_LOG_MAX_BYTES as usize,
    );
    let timeout = raw.timeout.map_or(Some(Duration::from_secs(5)), |d| {
        d.parse(src, "shadow.timeout")
    });
    let mut sensitive_headers = Vec::new();
    let mut bad_header = false;
    for h in raw.sensitive_headers.unwrap_or_default() {
        match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(name) => sensitive_headers.push(name),
            Err(_) => {
                bad_header = true;
                src.error(
                    Some(h.span()),
                    format!(
                        "shadow.sensitive_headers: `{}` is not a header name",
                        h.get_ref()
                    ),
                );
            }
        }
    }
    if bad_header {
        return None;
    }
    Some(ShadowLimits {
        max_body_bytes: max_body_bytes?,
        max_in_flight: max_in_flight?,
        timeout: timeout?,
        diff_log_max_bytes: diff_log_max_bytes? as u64,
        log_query: raw.log_query.unwrap_or(false),
        sensitive_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<(Config, Report), Report> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("banyan.toml");
        std::fs::write(&file, text).expect("write");
        Config::load(&file, dir.path())
    }

    fn errors(text: &str) -> Vec<String> {
        match load_text(text) {
            Ok(_) => Vec::new(),
            Err(r) => r.errors().map(|d| d.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
threads = 2
routes_dir = "routes"
state_dir = "state"
default_upstream = "monolith"

[admin]
listen = "127.0.0.1:9090"

[upstreams.monolith]
peers = ["127.0.0.1:8081", "localhost:8083"]
connect_timeout = "250ms"
host = "legacy.internal"

[upstreams.orders]
peers = ["127.0.0.1:8082"]

[shadow]
max_body_bytes = 1048576
max_in_flight = 256
timeout = "5s"
"#;

    #[test]
    fn the_contract_example_loads() {
        let (c, report) = load_text(GOOD).expect("valid");
        assert!(!report.has_errors());
        assert_eq!(
            c.server.listen,
            vec!["127.0.0.1:8080".parse().expect("addr")]
        );
        assert_eq!(c.server.threads, 2);
        assert!(c.server.routes_dir.ends_with("routes") && c.server.routes_dir.is_absolute());
        assert_eq!(c.server.default_upstream, "monolith");
        let m = c.upstream("monolith").expect("monolith");
        assert_eq!(m.peers.len(), 2);
        assert_eq!(m.peers[1].addr, "127.0.0.1:8083".parse().expect("addr"));
        assert_eq!(m.connect_timeout, Duration::from_millis(250));
        assert_eq!(m.read_timeout, DEFAULT_READ_TIMEOUT);
        assert_eq!(m.host.as_deref(), Some("legacy.internal"));
        assert_eq!(c.server.grace_period, DEFAULT_GRACE_PERIOD);
        assert_eq!(c.shadow.max_in_flight, 256);
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let text = GOOD.replace("threads = 2", "threads = 2\nthreds = 3");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("banyan.toml:5:1: error: unknown field `threds`"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_default_upstream_is_named() {
        let e = errors(&GOOD.replace(
            "default_upstream = \"monolith\"",
            "default_upstream = \"legacy\"",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains(":7:20: error: server.default_upstream: unknown upstream `legacy` (known: monolith, orders)"), "{e:?}");
    }

    #[test]
    fn several_errors_are_all_reported() {
        let text = GOOD
            .replace("threads = 2", "threads = 0")
            .replace("\"127.0.0.1:8082\"", "\"nope\"")
            .replace("\"250ms\"", "\"fast\"");
        let e = errors(&text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().any(|l| l.contains("server.threads: 0")));
        assert!(e.iter().any(|l| l.contains("`nope` needs a port")));
        assert!(e.iter().any(|l| l.contains("`fast` is not a duration")));
    }

    #[test]
    fn public_admin_needs_a_token() {
        let e = errors(&GOOD.replace("listen = \"127.0.0.1:9090\"", "listen = \"0.0.0.0:9090\""));
        assert!(
            e.iter()
                .any(|l| l.contains("not a loopback address and no admin token")),
            "{e:?}"
        );
    }

    #[test]
    fn upstream_tls_needs_sni_and_readable_files() {
        for (tls, needle) in [
            ("tls = { ca = \"ca.pem\" }", "sni is required"),
            ("tls = { sni = \"\" }", "not a server name"),
            (
                "tls = { sni = \"orders.internal\", ca = \"/nonexistent/ca.pem\" }",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                "tls = { sni = \"o\", client_cert = \"c.pem\" }",
                "go together",
            ),
        ] {
            let e = errors(&GOOD.replace(
                "[upstreams.orders]\npeers = [\"127.0.0.1:8082\"]",
                &format!("[upstreams.orders]\npeers = [\"127.0.0.1:8082\"]\n{tls}"),
            ));
            assert!(
                e.iter()
                    .any(|l| l.contains("upstreams.orders.tls") && l.contains(needle)),
                "{tls}: {e:?}"
            );
        }
    }

    #[test]
    fn the_tls_listener_needs_a_matching_readable_pair() {
        let e = errors(&GOOD.replace(
            "[admin]",
            "[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n\n[admin]",
        ));
        assert!(
            e.iter()
                .any(|l| l.contains("server.tls: cannot read /nonexistent/c.pem")),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = errors("[server\nlisten = 1\n");
        assert!(!e.is_empty());
        assert!(e[0].contains("banyan.toml:1:"), "{e:?}");
    }

    #[test]
    fn a_missing_file_is_one_clear_error() {
        let r = Config::load(Path::new("/nonexistent/banyan.toml"), Path::new("/"))
            .expect_err("missing");
        let lines: Vec<String> = r.errors().map(|d| d.to_string()).collect();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("cannot read the config file"));
    }

    #[test]
    fn names_are_restricted_to_label_safe_characters() {
        assert!(valid_name("orders-v2.eu_1"));
        assert!(!valid_name(""));
        assert!(!valid_name("orders v2"));
        assert!(!valid_name("orders/x"));
    }
}

/// What the command line needs from the config, read leniently: only these keys, no
/// validation and no DNS, so that `banyan rollback` works during an incident even when
/// other parts of the config (or name resolution) are broken.
#[derive(Debug, Clone)]
pub struct CliSettings {
    pub admin_listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub routes_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl CliSettings {
    pub fn load(file: &Path, base: &Path) -> Result<CliSettings, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{}: {}", file.display(), e.message().trim()))?;
        let get = |section: &str, key: &str| {
            doc.get(section)
                .and_then(|s| s.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let admin_listen = match get("admin", "listen") {
            None => SocketAddr::from(([127, 0, 0, 1], 9090)),
            Some(l) => l.parse().map_err(|_| {
                format!(
                    "{}: admin.listen `{l}` is not an address and port",
                    file.display()
                )
            })?,
        };
        Ok(CliSettings {
            admin_listen,
            token_file: get("admin", "token_file").map(|t| resolve_path(base, &t)),
            routes_dir: resolve_path(
                base,
                &get("server", "routes_dir").unwrap_or_else(|| "routes".into()),
            ),
            state_dir: resolve_path(
                base,
                &get("server", "state_dir").unwrap_or_else(|| "state".into()),
            ),
        })
    }

    /// The admin API's base URL; a wildcard listen address is reached on loopback.
    pub fn admin_url(&self) -> String {
        let mut addr = self.admin_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{addr}")
    }
}
