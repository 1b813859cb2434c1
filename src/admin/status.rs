//! The `/api/v1/status` document: what the proxy is doing now, per route. Typed so the
//! CLI can read back exactly what the API writes.

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::routes::{split, Backend, PathMatch};
use crate::snapshot::{CompiledRoute, Snapshot};

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub generation: u64,
    pub loaded_at: String,
    pub last_reload_error: Option<String>,
    pub files: Vec<String>,
    pub routes: Vec<RouteStatus>,
    pub upstreams: Vec<UpstreamStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RouteStatus {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchStatus,
    pub legacy: String,
    pub target: Option<String>,
    pub declared_percent: f64,
    pub effective_percent: f64,
    #[serde(rename = "override")]
    pub override_: Option<serde_json::Value>,
    pub sticky: String,
    pub salt: String,
    pub fallback: bool,
    pub shadow: Option<ShadowStatus>,
    /// Where the route is written ("routes/orders.toml:3"); empty for `_default`.
    pub source: String,
    pub stats: RouteStats,
}

#[derive(Debug, Default, Serialize, Deserialize)]
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

#[derive(Debug, Serialize, Deserialize)]
pub struct ShadowStatus {
    pub percent: f64,
    pub upstream: String,
    pub methods: Vec<String>,
    pub compare: bool,
    pub noise: bool,
    /// False while this version validates shadow settings without mirroring.
    pub active: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RouteStats {
    pub legacy: SideStats,
    pub target: SideStats,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SideStats {
    /// Requests answered since the process started.
    pub requests: u64,
    /// Of those, 5xx answers.
    pub errors: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpstreamStatus {
    pub name: String,
    pub peers: Vec<String>,
}

fn route_status(r: &CompiledRoute, snap: &Snapshot, metrics: &Metrics) -> RouteStatus {
    let side = |b: Backend| {
        let (requests, errors) = r.metrics.totals(metrics, b);
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
                active: false,
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
        override_: None,
        sticky,
        salt,
        fallback,
        shadow,
        source,
        stats: RouteStats {
            legacy: side(Backend::Legacy),
            target: side(Backend::Target),
        },
    }
}

pub fn build(snap: &Snapshot, metrics: &Metrics) -> Status {
    let mut routes: Vec<RouteStatus> = snap
        .routes
        .iter()
        .map(|r| route_status(r, snap, metrics))
        .collect();
    routes.push(route_status(&snap.default_route, snap, metrics));
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        generation: snap.generation,
        loaded_at: humantime::format_rfc3339_seconds(snap.loaded_at).to_string(),
        last_reload_error: None,
        files: snap.files.iter().map(|f| f.display().to_string()).collect(),
        routes,
        upstreams: snap
            .upstreams
            .iter()
            .map(|u| UpstreamStatus {
                name: u.name.clone(),
                peers: u.config.peers.iter().map(|p| p.spec.clone()).collect(),
            })
            .collect(),
    }
}
