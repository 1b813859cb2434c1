//! `GET /api/v1/explain?method=&url=&header=&client_ip=`: what the proxy would do with a
//! request now, answered by the data path's own decision (`proxy::flow::explain`) on the
//! snapshot it is serving — overrides, guard trips, health and circuits included. `banyan
//! explain --offline` builds a snapshot from the files and answers with the same function.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};

use super::status::OverrideStatus;
use crate::proxy::flow::decide::Admission;
use crate::proxy::flow::explain::{preview, Mirror};
use crate::routes::request::sticky_key;
use crate::routes::split::{bp_to_percent, BUCKETS};
use crate::routes::{Backend, RateKey, RequestView, Sticky};
use crate::snapshot::Snapshot;
use crate::upstream::circuit::Admit;

/// Methods any request may carry; a route file may name others, which are accepted too.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

/// The request to explain, checked.
#[derive(Debug)]
pub struct Query {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub client_ip: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("`{0}` is not an HTTP method (known: {1})")]
    Method(String, String),
    #[error("`{0}` is not a URL or a path starting with '/'")]
    Url(String),
    #[error("header `{0}` is not 'name: value'")]
    Header(String),
    #[error("`{0}` is not an IP address")]
    ClientIp(String),
    #[error("missing `{0}`")]
    Missing(&'static str),
    #[error("unknown parameter `{0}` (expected method, url, header, client_ip)")]
    Unknown(String),
}

impl Query {
    /// From the parts a user types; `extra_methods` are the methods the routes name.
    pub fn new(
        method: &str,
        url: &str,
        headers: &[String],
        client_ip: Option<&str>,
        extra_methods: &[&str],
    ) -> Result<Query, QueryError> {
        let known = || {
            let mut all: Vec<&str> = STANDARD_METHODS.to_vec();
            for m in extra_methods {
                if !all.contains(m) {
                    all.push(m);
                }
            }
            all
        };
        if !known().contains(&method) {
            return Err(QueryError::Method(method.to_string(), known().join(", ")));
        }
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| QueryError::Method(method.into(), known().join(", ")))?;
        let uri: Uri = url.parse().map_err(|_| QueryError::Url(url.to_string()))?;
        if !uri.path().starts_with('/') {
            return Err(QueryError::Url(url.to_string()));
        }
        let mut map = HeaderMap::new();
        for h in headers {
            let bad = || QueryError::Header(h.clone());
            let (name, value) = h.split_once(':').ok_or_else(bad)?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
            map.append(name, value);
        }
        let client_ip = client_ip
            .filter(|c| !c.is_empty())
            .map(|c| c.parse().map_err(|_| QueryError::ClientIp(c.to_string())))
            .transpose()?;
        Ok(Query {
            method,
            uri,
            headers: map,
            client_ip,
        })
    }

    /// From the API's query string (form-encoded; `header` may repeat).
    pub fn parse(query: &str, extra_methods: &[&str]) -> Result<Query, QueryError> {
        let (mut method, mut url, mut ip, mut headers) = (None, None, None, Vec::new());
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "method" => method = Some(v.into_owned()),
                "url" => url = Some(v.into_owned()),
                "header" => headers.push(v.into_owned()),
                "client_ip" => ip = Some(v.into_owned()),
                other => return Err(QueryError::Unknown(other.to_string())),
            }
        }
        let method = method.ok_or(QueryError::Missing("method"))?;
        let url = url.ok_or(QueryError::Missing("url"))?;
        Query::new(&method, &url, &headers, ip.as_deref(), extra_methods)
    }
}

/// The methods a snapshot's routes name, for `Query`.
pub fn route_methods(snap: &Snapshot) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for def in snap.routes.iter().filter_map(|r| r.def.as_deref()) {
        let named = def.methods.iter().flatten().chain(&def.fallback_methods);
        for m in named {
            if !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
    }
    out
}

/// The answer; the CLI reads it back with the same type.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Explanation {
    /// `proxy`: the running proxy's snapshot. `files`: compiled from the files by
    /// `banyan explain --offline` (live health and circuits unknown).
    pub answered_by: String,
    /// The snapshot's version and route-file generation.
    pub snapshot: u64,
    pub generation: u64,
    pub method: String,
    pub url: String,
    pub route: String,
    /// Where the route is written ("routes/orders.toml:3"); `None` for `_default`.
    pub source: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<String>,
    pub target: Option<String>,
    pub legacy: String,
    /// Percent of users to the target: as written, and in force (an override's).
    pub declared_percent: Option<f64>,
    pub percent: Option<f64>,
    #[serde(rename = "override")]
    pub override_: Option<OverrideStatus>,
    pub sticky: Option<String>,
    pub salt: Option<String>,
    /// The sticky key's source ("header x-user-id") and value, when the request has one.
    pub key_from: Option<String>,
    pub key: Option<String>,
    /// Of 10,000; the target gets buckets below percent × 100. `None` without a key.
    pub bucket: Option<u16>,
    /// The split's side: `target`, `legacy`, or `random` (no sticky key: drawn per request).
    pub split: String,
    /// The forced cohort that decided the side instead of the percent
    /// ("header x-banyan-cohort in [beta-testers] → target").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// The side that serves the request: `target`, `legacy`, `random`, or `refused`
    /// (banyan answers 503 itself: the target cannot take it and the route does not fall
    /// back).
    pub backend: String,
    /// The upstream that serves it (`None` when random or refused).
    pub upstream: Option<String>,
    pub peers: Vec<PeerState>,
    /// Why a target-bound request goes to legacy (or is refused): `circuit_open`,
    /// `unhealthy`.
    pub fallback: Option<String>,
    /// The target's circuit breaker: `closed`, `open`, `probe` (the next target-bound
    /// request is its one trial), or `none`.
    pub circuit: String,
    /// Whether the route's shadow mirrors it: `yes`, `no`, `paused`, `not sampled`,
    /// `random`; `None` without `[route.shadow]`.
    pub shadow: Option<String>,
    /// The route's rate limit, which explaining does not spend.
    pub rate_limit: Option<String>,
    /// Sentences for people: what this answer cannot know.
    pub notes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PeerState {
    pub peer: String,
    /// `None` when not known (offline).
    pub healthy: Option<bool>,
}

/// The data path's decision on `q`, rendered. `live`: `snap` is the one being served.
pub fn explain(snap: &Snapshot, q: &Query, live: bool) -> Explanation {
    let view = RequestView::new(&q.method, &q.uri, &q.headers, q.client_ip);
    let p = preview(snap, &view);
    let route = snap.route(p.decision.route);
    let def = route.def.as_deref();
    let upstream_name = |i: usize| snap.upstream(i).name.clone();
    let keyed = p.decision.split.is_some_and(|s| s.keyed);
    let partial = route.effective_bp > 0 && route.effective_bp < BUCKETS;
    let forced = p.decision.split.and_then(|s| s.cohort);
    let random = route.target.is_some() && partial && !keyed && forced.is_none();
    let split = match (p.decision.split, random) {
        (_, true) => "random",
        (Some(s), false) => s.backend.as_str(),
        (None, false) => "legacy",
    };
    let (backend, served) = match (p.served_by(), random) {
        (None, _) => ("refused", None),
        // A random draw whose target is down lands on legacy either way.
        (Some(Backend::Legacy), true) if p.target_down.is_some() => {
            ("legacy", Some(Backend::Legacy))
        }
        (Some(_), true) => ("random", None),
        (Some(b), false) => (b.as_str(), Some(b)),
    };
    let target_pool = route.target.map(|i| snap.upstream(i));
    let peers = served.map_or_else(Vec::new, |b| {
        let pool = snap.upstream(route.upstream_index(b));
        pool.peer_states()
            .into_iter()
            .map(|(peer, up)| PeerState {
                peer,
                healthy: live.then_some(up),
            })
            .collect()
    });
    let circuit = match target_pool {
        Some(pool) if pool.config.circuit.is_some() => match pool.peek_admit() {
            Admit::Closed => "closed",
            Admit::Open => "open",
            Admit::Probe => "probe",
        },
        _ => "none",
    };
    let key = def.and_then(|d| {
        sticky_key(&d.sticky, &view)
            .bytes()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    });
    let key_from = def.map(|d| match &d.sticky {
        Sticky::Header(h) => format!("header {h}"),
        Sticky::Cookie(c) => format!("cookie {c}"),
        Sticky::Ip => "client ip".to_string(),
        Sticky::None => "none".to_string(),
    });
    let mut notes = Vec::new();
    if !live {
        notes.push(
            "offline: from the route files and overrides.json; live health, circuits and guard trips not yet written there are unknown".to_string(),
        );
    }
    if let Some(l) = def.and_then(|d| d.rate_limit.as_ref()) {
        notes.push(format!(
            "a client over the route's rate limit ({}/s, burst {}) gets 429 first; explaining spends no token",
            l.rate, l.burst
        ));
    }
    if let (Some((step, steps, state)), None) = (route.ramp, &route.override_) {
        notes.push(format!(
            "the percent is the ramp's step {step} of {steps} ({state}), not the route file's"
        ));
    }
    let rolled_back = route.override_.as_ref().is_some_and(|o| o.is_rollback());
    if rolled_back && def.is_some_and(|d| !d.cohorts.is_empty()) {
        notes.push("rolled back: the route's forced cohorts go to legacy too".to_string());
    }
    if matches!(p.admission, Admission::Unavailable) {
        notes.push("banyan answers 503 itself: the target cannot take requests and the route does not fall back".to_string());
    }
    Explanation {
        answered_by: if live { "proxy" } else { "files" }.to_string(),
        snapshot: snap.version,
        generation: snap.generation,
        method: q.method.to_string(),
        url: q.uri.to_string(),
        route: route.name.clone(),
        source: def.map(|d| format!("{}:{}", d.file.display(), d.line)),
        matcher: def.map(|d| d.describe_match()),
        target: route.target.map(upstream_name),
        legacy: upstream_name(route.legacy),
        declared_percent: def.map(|_| bp_to_percent(route.declared_bp)),
        percent: def.map(|_| bp_to_percent(route.effective_bp)),
        override_: route.override_.as_ref().map(OverrideStatus::from),
        sticky: def.map(|d| d.sticky.describe()),
        salt: def.map(|d| d.salt.clone()),
        key_from,
        key,
        bucket: p.decision.split.filter(|s| s.keyed).map(|s| s.bucket),
        split: split.to_string(),
        cohort: forced.and_then(|i| def?.cohorts.get(usize::from(i)).map(|c| c.describe())),
        backend: backend.to_string(),
        upstream: served.map(|b| upstream_name(route.upstream_index(b))),
        peers,
        fallback: p.target_down.map(|r| r.as_str().to_string()),
        circuit: circuit.to_string(),
        shadow: route.shadow.as_ref().map(|_| {
            match p.mirror {
                Mirror::Yes => "yes",
                Mirror::No => "no",
                Mirror::Paused => "paused",
                Mirror::NotSampled => "not sampled",
                Mirror::Random => "random",
            }
            .to_string()
        }),
        rate_limit: def.and_then(|d| d.rate_limit.as_ref()).map(|l| {
            let key = match &l.key {
                RateKey::Ip => "client ip".to_string(),
                RateKey::Header(h) => format!("header {h}"),
            };
            format!("{}/s, burst {}, per {key}", l.rate, l.burst)
        }),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked() {
        let q = Query::parse(
            "method=GET&url=%2Fapi%2Forders%2F7%3Fx%3D1&header=x-user-id%3A%20erin&client_ip=10.0.0.1",
            &[],
        )
        .expect("query");
        assert_eq!(q.method, Method::GET);
        assert_eq!(q.uri.path(), "/api/orders/7");
        assert_eq!(
            q.headers.get("x-user-id").map(|v| v.as_bytes()),
            Some(&b"erin"[..])
        );
        assert_eq!(q.client_ip, Some(IpAddr::from([10, 0, 0, 1])));
        assert!(matches!(
            Query::parse("method=FOO&url=/x", &[]),
            Err(QueryError::Method(..))
        ));
        assert!(Query::parse("method=PROPFIND&url=/x", &["PROPFIND"]).is_ok());
        assert_eq!(
            Query::parse("url=/x", &[]).err(),
            Some(QueryError::Missing("method"))
        );
        assert!(matches!(
            Query::parse("method=GET&url=x", &[]),
            Err(QueryError::Url(_))
        ));
        assert!(matches!(
            Query::parse("method=GET&url=/x&header=nocolon", &[]),
            Err(QueryError::Header(_))
        ));
        assert!(matches!(
            Query::parse("method=GET&url=/x&client_ip=me", &[]),
            Err(QueryError::ClientIp(_))
        ));
        assert!(matches!(
            Query::parse("method=GET&url=/x&user=erin", &[]),
            Err(QueryError::Unknown(_))
        ));
    }
}
