//! Validation of `[upstreams.*]`: peers, timeouts, TLS, health checks, the breaker.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::validate::resolve_path;
use super::*;
use crate::diag::SourceFile;
use crate::tls::TlsError;
use crate::tomlspan::DurationText;

pub(super) fn validate_upstreams(
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
        let protocol = match up
            .protocol
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("http1", _)) => Protocol::Http1,
            Some(("h2", span)) => {
                if tls.is_none() && up.tls.is_none() {
                    src.error(
                        Some(span),
                        format!("upstreams.{name}.protocol = \"h2\" is HTTP/2 over TLS: add [upstreams.{name}.tls], or use \"h2c\" for plain HTTP/2"),
                    );
                    ok = false;
                }
                Protocol::H2
            }
            Some(("h2c", span)) => {
                if up.tls.is_some() {
                    src.error(
                        Some(span),
                        format!("upstreams.{name}.protocol = \"h2c\" is HTTP/2 without TLS: use \"h2\" with [upstreams.{name}.tls]"),
                    );
                    ok = false;
                }
                Protocol::H2c
            }
            Some((other, span)) => {
                src.error(
                    Some(span),
                    format!("upstreams.{name}.protocol `{other}`: expected \"http1\", \"h2\" or \"h2c\""),
                );
                ok = false;
                Protocol::Http1
            }
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
                    protocol,
                },
            );
        }
    }
    out
}

pub(super) fn upstream_tls(
    t: &RawUpstreamTls,
    base: &Path,
) -> Result<crate::tls::UpstreamTls, TlsError> {
    let Some(sni) = t.sni.as_deref() else {
        return Err(TlsError::MissingSni);
    };
    let ca = t.ca.as_deref().map(|p| resolve_path(base, p));
    let client = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((resolve_path(base, c), resolve_path(base, k))),
        _ => return Err(TlsError::HalfClientPair),
    };
    crate::tls::UpstreamTls::load(
        sni,
        ca.as_deref(),
        client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
}

/// A count between 1 and 1,000,000, or the default when absent.
pub(super) fn count(
    src: &mut SourceFile,
    v: &Option<Spanned<i64>>,
    what: &str,
    default: u32,
) -> Option<u32> {
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

pub(super) fn health_check(
    src: &mut SourceFile,
    upstream: &str,
    h: &RawHealth,
) -> Option<HealthCheck> {
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
pub(super) fn circuit(src: &mut SourceFile, c: &RawCircuit) -> Option<Option<Circuit>> {
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
