//! The `/api/v1/status` document: what the proxy is doing now, per route. Typed so the
//! CLI reads back exactly what the API writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::control::rates::RouteRates;
use crate::control::{Control, ReloadError};
use crate::metrics::shadow::ShadowStats;
use crate::model::Override;
use crate::routes::{split, Backend, PathMatch, RateKey};
use crate::shadow::ShadowShared;
use crate::snapshot::{CompiledRoute, Snapshot};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    pub version: String,
    /// Route-file loads applied (the first is 1).
    pub generation: u64,
    /// Snapshots published: reloads and override changes.
    pub snapshot: u64,
    pub loaded_at: String,
    pub last_reload_ms: f64,
    pub last_reload_error: Option<ReloadError>,
    /// Set while `overrides.json` cannot be read; the overrides shown stay in force.
    pub overrides_error: Option<String>,
    pub overrides_file: String,
    pub files: Vec<String>,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
    pub shadow: ShadowOverview,
    /// The webhooks of `[notify]`: deliveries so far (absent without webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::control::notify::NotifyStatus>,
}

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShadowOverview {
    /// Shadow copies waiting for the shadow worker or under way, and the most allowed
    /// (`shadow.max_in_flight`).
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub diff_log: String,
    /// Mismatches that could not be queued for the diff log file (kept in memory only).
    pub diff_log_lost: u64,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteStatus {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchStatus,
    pub legacy: String,
    pub target: Option<String>,
    pub declared_percent: f64,
    pub effective_percent: f64,
    #[serde(rename = "override")]
    pub override_: Option<OverrideStatus>,
    pub sticky: String,
    pub salt: String,
    pub fallback: bool,
    pub shadow: Option<ShadowStatus>,
    /// Where the route is written ("routes/orders.toml:3"); empty for `_default`.
    pub source: String,
    pub stats: RouteStats,
    /// Requests per second and error rates over the last ten seconds.
    pub rates: RouteRates,
    /// Target-bound requests served by legacy, by reason, since the route appeared.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, u64>,
    #[serde(default)]
    pub guard: Option<GuardStatus>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitStatus>,
    /// Forced cohorts, in file order, and what they have sent where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort_requests: Option<CohortRequests>,
    /// The route's `[route.ramp]` and where it stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ramp: Option<crate::control::ramp::RampStatus>,
}

/// Requests forced cohorts sent to each side since the route appeared; counted apart from
/// `stats`, the guard and the rates.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CohortRequests {
    pub legacy: u64,
    pub target: u64,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GuardStatus {
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub min_requests: u64,
    pub window_seconds: f64,
    /// The target's outcomes in the window now.
    pub requests: u64,
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RateLimitStatus {
    pub rate: f64,
    pub burst: u32,
    pub key: String,
    /// Requests refused with 429 since the route appeared.
    pub limited: u64,
    /// Client keys with a bucket in memory.
    pub keys: usize,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OverrideStatus {
    pub percent: f64,
    pub shadow: bool,
    pub trigger: String,
    pub reason: String,
    pub at: String,
    pub age_seconds: Option<u64>,
}

impl From<&Override> for OverrideStatus {
    fn from(o: &Override) -> Self {
        OverrideStatus {
            percent: split::bp_to_percent(o.percent_bp),
            shadow: o.shadow,
            trigger: o.trigger.as_str().to_string(),
            reason: o.reason.clone(),
            at: o.at.clone(),
            age_seconds: o.age_seconds(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MatchStatus {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    /// One line for people: "path_prefix /api/orders, GET|POST".
    pub summary: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShadowStatus {
    pub percent: f64,
    pub upstream: String,
    pub methods: Vec<String>,
    pub compare: bool,
    pub noise: bool,
    /// Paused by an override (rollback).
    pub paused: bool,
    /// Mirroring now: a share above 0 and not paused.
    pub active: bool,
    pub ignore: Vec<String>,
    pub compare_headers: Vec<String>,
    /// Outcomes since the route first appeared, match rate and learned noisy fields.
    pub stats: ShadowStats,
}

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RouteStats {
    pub legacy: SideStats,
    pub target: SideStats,
}

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SideStats {
    /// Requests answered since the route first appeared in this process.
    pub requests: u64,
    /// Of those, 5xx answers.
    pub errors: u64,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpstreamStatus {
    pub name: String,
    pub peers: Vec<String>,
    /// Each peer and whether it is in rotation.
    #[serde(default)]
    pub health: Vec<PeerStatus>,
    /// Active health checks run (else peers are judged by proxy errors).
    #[serde(default)]
    pub health_checks: bool,
    #[serde(default)]
    pub circuit_open: bool,
    /// The circuit breaker: `closed`, `open`, or `none` (not configured).
    #[serde(default)]
    pub circuit: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PeerStatus {
    pub peer: String,
    pub healthy: bool,
}

fn route_status(r: &CompiledRoute, snap: &Snapshot, rates: Option<RouteRates>) -> RouteStatus {
    let side = |b: Backend| {
        let (requests, errors) = r.metrics.totals(b);
        SideStats { requests, errors }
    };
    let mut matcher = MatchStatus::default();
    let (mut sticky, mut salt, mut fallback, mut shadow, mut source) = (
        "none".to_string(),
        String::new(),
        false,
        None,
        String::new(),
    );
    match &r.def {
        None => matcher.summary = "unmatched requests".to_string(),
        Some(d) => {
            match &d.path {
                PathMatch::Exact(p) => matcher.path = Some(p.clone()),
                PathMatch::Prefix(p) => matcher.path_prefix = Some(p.clone()),
                PathMatch::Regex(p) => matcher.path_regex = Some(p.clone()),
            }
            matcher.methods = d.methods.clone();
            matcher.host = d.host.clone();
            matcher.headers = d
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect();
            matcher.summary = d.describe_match();
            sticky = d.sticky.describe();
            salt = d.salt.clone();
            fallback = d.fallback;
            source = format!("{}:{}", d.file.display(), d.line);
            shadow = d.shadow.as_ref().map(|s| ShadowStatus {
                percent: split::bp_to_percent(s.percent_bp),
                upstream: s.upstream.clone(),
                methods: s.methods.clone(),
                compare: s.compare,
                noise: s.noise,
                paused: r.shadow_paused,
                active: !r.shadow_paused && s.percent_bp > 0,
                ignore: s.ignore.clone(),
                compare_headers: s.compare_headers.iter().map(|h| h.to_string()).collect(),
                stats: r.metrics.shadow.summary(),
            });
        }
    }
    RouteStatus {
        name: r.name.clone(),
        matcher,
        legacy: snap.upstream(r.legacy).name.clone(),
        target: r.target.map(|t| snap.upstream(t).name.clone()),
        declared_percent: split::bp_to_percent(r.declared_bp),
        effective_percent: split::bp_to_percent(r.effective_bp),
        override_: r.override_.as_ref().map(OverrideStatus::from),
        sticky,
        salt,
        fallback,
        shadow,
        source,
        stats: RouteStats {
            legacy: side(Backend::Legacy),
            target: side(Backend::Target),
        },
        rates: rates.unwrap_or_default(),
        fallbacks: r
            .metrics
            .fallback_counts()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        guard: guard_status(r),
        cohorts: r.def.as_ref().map_or_else(Vec::new, |d| {
            d.cohorts.iter().map(|c| c.describe()).collect()
        }),
        cohort_requests: r
            .def
            .as_ref()
            .is_some_and(|d| !d.cohorts.is_empty())
            .then(|| CohortRequests {
                legacy: r.metrics.cohort_requests(Backend::Legacy),
                target: r.metrics.cohort_requests(Backend::Target),
            }),
        ramp: None,
        rate_limit: r.limiter.as_ref().map(|l| RateLimitStatus {
            rate: l.def.rate,
            burst: l.def.burst,
            key: match &l.def.key {
                RateKey::Ip => "ip".to_string(),
                RateKey::Header(h) => format!("header:{h}"),
            },
            limited: r.metrics.rate_limited(),
            keys: l.keys(),
        }),
    }
}

fn guard_status(r: &CompiledRoute) -> Option<GuardStatus> {
    let g = r.def.as_ref()?.guard.as_ref()?;
    let stats = r
        .guard
        .as_ref()
        .map(|w| w.stats(now_ms()))
        .unwrap_or_default();
    Some(GuardStatus {
        max_error_rate: g.max_error_rate,
        max_p99_ms: g.max_p99_ms,
        min_requests: g.min_requests,
        window_seconds: g.window.as_secs_f64(),
        requests: stats.requests,
        errors: stats.errors,
        error_rate: (stats.requests > 0).then(|| stats.errors as f64 / stats.requests as f64),
        p99_ms: stats.p99_ms,
    })
}

pub fn build(control: &Control, shadow: &ShadowShared) -> Status {
    let snap = control.snapshot();
    let health = control.health();
    let rates = control.rates.current();
    let mut routes: Vec<RouteStatus> = snap
        .routes
        .iter()
        .map(|r| {
            let mut s = route_status(r, &snap, rates.get(&r.name).copied());
            s.ramp = control.ramp_status(r);
            s
        })
        .collect();
    routes.push(route_status(
        &snap.default_route,
        &snap,
        rates.get(&snap.default_route.name).copied(),
    ));
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        generation: snap.generation,
        snapshot: snap.version,
        loaded_at: humantime::format_rfc3339_millis(snap.loaded_at).to_string(),
        last_reload_ms: health.last_reload_ms,
        last_reload_error: health.last_reload_error,
        overrides_error: health.overrides_error,
        overrides_file: health.overrides_file,
        files: snap.files.iter().map(|f| f.display().to_string()).collect(),
        routes,
        upstreams: snap
            .upstreams
            .iter()
            .map(|u| UpstreamStatus {
                name: u.name.clone(),
                peers: u.config.peers.iter().map(|p| p.spec.clone()).collect(),
                health: u
                    .peer_states()
                    .into_iter()
                    .map(|(peer, healthy)| PeerStatus { peer, healthy })
                    .collect(),
                health_checks: u.config.health.is_some(),
                circuit_open: u.circuit_open(),
                circuit: match (&u.config.circuit, u.circuit_open()) {
                    (None, _) => "none",
                    (Some(_), true) => "open",
                    (Some(_), false) => "closed",
                }
                .to_string(),
            })
            .collect(),
        shadow: ShadowOverview {
            in_flight: shadow.in_flight(),
            max_in_flight: shadow.limits.max_in_flight,
            diff_log: shadow.diffs.path().display().to_string(),
            diff_log_lost: shadow.diffs.lost(),
        },
        notify: control.notifier.as_ref().map(|n| n.status()),
    }
}
