//! Validation of the file's server, admin and shadow sections into the model; every
//! problem reported at its line and column.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::upstreams::validate_upstreams;
use super::*;
use crate::diag::SourceFile;
use crate::tomlspan;

pub(super) fn parse(src: &mut SourceFile, text: &str, base: &Path) -> Option<Config> {
    let doc = tomlspan::parse_document(src, text)?;
    let mut server = None;
    let mut admin = RawAdmin::default();
    let mut upstreams: Vec<(String, std::ops::Range<usize>, RawUpstream)> = Vec::new();
    let mut shadow = RawShadowLimits::default();
    let mut state = super::state::RawState::default();
    let mut notify = super::notify::RawNotify::default();
    let mut saw_server = false;
    let mut saw_upstreams = false;

    for (key, mut value) in tomlspan::split_top_level(
        src,
        doc,
        &["server", "admin", "upstreams", "shadow", "state", "notify"],
    ) {
        let shape = match key.as_str() {
            "server" => Some(&SERVER_SHAPE),
            "admin" => Some(&ADMIN_SHAPE),
            "shadow" => Some(&SHADOW_SHAPE),
            "state" => Some(&STATE_SHAPE),
            "notify" => Some(&NOTIFY_SHAPE),
            _ => None,
        };
        if let Some(shape) = shape {
            tomlspan::drop_unknown(src, &mut value, shape);
        }
        match key.as_str() {
            "server" => {
                saw_server = true;
                server = tomlspan::deserialize::<RawServer>(src, value);
            }
            "admin" => admin = tomlspan::deserialize(src, value).unwrap_or_default(),
            "shadow" => shadow = tomlspan::deserialize(src, value).unwrap_or_default(),
            "state" => state = tomlspan::deserialize(src, value).unwrap_or_default(),
            "notify" => notify = tomlspan::deserialize(src, value).unwrap_or_default(),
            "upstreams" => {
                saw_upstreams = true;
                let span = value.span();
                match value.into_inner() {
                    toml::de::DeValue::Table(table) => {
                        for (name, mut up) in table {
                            let name_span = name.span();
                            tomlspan::drop_unknown(src, &mut up, &UPSTREAM_SHAPE);
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
    let port = server.listen.first().map(|a| a.port());
    let state = super::state::validate_state(src, state, port, base)?;
    let notify = super::notify::validate_notify(src, notify)?;
    Some(Config {
        file: src.path.to_path_buf(),
        server,
        admin,
        upstreams,
        shadow,
        state,
        notify,
    })
}

pub(super) fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub(super) fn parse_listen(
    src: &mut SourceFile,
    s: &Spanned<String>,
    what: &str,
) -> Option<SocketAddr> {
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

pub(super) fn validate_server(
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
        fast_path: raw.fast_path.unwrap_or(true),
        grace_period: grace_period?,
        shutdown_timeout: shutdown_timeout?,
        // Off with one thread, on with several: see `ServerConfig::work_stealing`.
        work_stealing: raw.work_stealing.unwrap_or(threads > 1),
        reload_debounce: reload_debounce?,
        tls,
    })
}

pub(super) fn validate_admin(src: &mut SourceFile, raw: RawAdmin, base: &Path) -> Option<Admin> {
    let listen = match &raw.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 9090)),
        Some(l) => parse_listen(src, l, "admin.listen")?,
    };
    let token_file = raw
        .token_file
        .as_ref()
        .map(|t| resolve_path(base, t.get_ref()));
    let check_file =
        |src: &mut SourceFile, path: &Path, span, what: &str| match std::fs::read_to_string(path) {
            Ok(s) if s.trim().is_empty() => {
                src.error(Some(span), format!("{what}: {} is empty", path.display()))
            }
            Ok(_) => {}
            Err(e) => src.error(
                Some(span),
                format!("{what}: cannot read {}: {e}", path.display()),
            ),
        };
    if let (Some(path), Some(t)) = (&token_file, &raw.token_file) {
        check_file(src, path, t.span(), "admin.token_file");
    }
    let mut tokens = Vec::new();
    for (name, file) in raw.tokens.iter().flatten() {
        let path = resolve_path(base, file.get_ref());
        let fits = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if name == DEFAULT_TOKEN_NAME || !fits {
            src.error(
                Some(file.span()),
                format!(
                    "admin.tokens: `{name}` cannot name a token (letters, digits, '-', '_', '.'; not `{DEFAULT_TOKEN_NAME}`, the name of admin.token_file's)"
                ),
            );
        }
        check_file(src, &path, file.span(), &format!("admin.tokens.{name}"));
        tokens.push((name.clone(), path));
    }
    let has_env_token = std::env::var(TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty());
    if !is_loopback(listen.ip()) && token_file.is_none() && tokens.is_empty() && !has_env_token {
        let span = raw.listen.as_ref().map(|l| l.span());
        src.error(
            span,
            format!(
                "admin.listen {listen} is not a loopback address and no admin token is set: set admin.token_file, [admin.tokens] or {TOKEN_ENV}"
            ),
        );
        return None;
    }
    Some(Admin {
        listen,
        token_file,
        tokens,
    })
}

pub(super) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

pub(super) fn known_list(upstreams: &[String]) -> String {
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

pub(super) fn validate_shadow(src: &mut SourceFile, raw: RawShadowLimits) -> Option<ShadowLimits> {
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
