//! A validated route: plain data, every name resolved and every value in range. Built from
//! one [`RouteSpec`] by the per-route rules of `validate.rs` (the optional sections' in
//! `sections.rs`); rules that need all routes at once (unique names, ambiguous matches)
//! live in `load.rs`.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

#[derive(Debug, Clone)]
pub struct RouteDef {
    pub name: String,
    /// Where the route is written, for messages and `check`.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub path: PathMatch,
    /// Lower case, no port.
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Vec<(HeaderName, String)>,
    pub legacy: String,
    pub target: Option<String>,
    pub percent_bp: u16,
    pub sticky: Sticky,
    pub fallback: bool,
    pub fallback_methods: Vec<String>,
    pub salt: String,
    pub shadow: Option<ShadowDef>,
    pub rate_limit: Option<RateLimitDef>,
    pub guard: Option<GuardDef>,
    /// Forced cohorts, in file order (`[[route.cohort]]`).
    pub cohorts: Vec<super::cohort::CohortDef>,
    /// Steps and gates (`[route.ramp]`); the ramp moves only once started.
    pub ramp: Option<super::ramp::RampDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
}

impl PathMatch {
    pub fn describe(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("path {p}"),
            PathMatch::Prefix(p) => format!("path_prefix {p}"),
            PathMatch::Regex(r) => format!("path_regex {r}"),
        }
    }
}

/// What keeps a user on the same side of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(HeaderName),
    Cookie(String),
    Ip,
    None,
}

impl Sticky {
    pub fn describe(&self) -> String {
        match self {
            Sticky::Header(h) => format!("header:{h}"),
            Sticky::Cookie(c) => format!("cookie:{c}"),
            Sticky::Ip => "ip".to_string(),
            Sticky::None => "none".to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShadowDef {
    pub percent_bp: u16,
    pub upstream: String,
    pub methods: Vec<String>,
    pub compare: bool,
    pub compare_headers: Vec<HeaderName>,
    pub ignore: Vec<String>,
    pub noise: bool,
    /// A gRPC route's descriptor set: its answers compare by field name.
    pub descriptors: Option<std::sync::Arc<super::descriptors::Descriptors>>,
}

#[derive(Debug, Clone)]
pub struct RateLimitDef {
    pub rate: f64,
    pub burst: u32,
    pub key: RateKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    Ip,
    Header(HeaderName),
}

#[derive(Debug, Clone)]
pub struct GuardDef {
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub min_requests: u64,
    pub window: Duration,
}

pub const DEFAULT_FALLBACK_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
pub(super) const DEFAULT_SHADOW_METHODS: [&str; 2] = ["GET", "HEAD"];

impl RouteDef {
    /// Number of conditions besides the path: host, methods, and each header. Among
    /// routes with equal paths, more conditions win.
    pub fn condition_count(&self) -> usize {
        usize::from(self.host.is_some()) + usize::from(self.methods.is_some()) + self.headers.len()
    }

    /// Whether one request could satisfy the conditions of both routes. Used to tell a
    /// true tie (an error) from routes that split a path by host, method or header.
    pub fn conditions_overlap(&self, other: &RouteDef) -> bool {
        if let (Some(a), Some(b)) = (&self.host, &other.host) {
            if a != b {
                return false;
            }
        }
        if let (Some(a), Some(b)) = (&self.methods, &other.methods) {
            if !a.iter().any(|m| b.contains(m)) {
                return false;
            }
        }
        for (name, value) in &self.headers {
            if other.headers.iter().any(|(n, v)| n == name && v != value) {
                return false;
            }
        }
        true
    }

    /// The match as one line: "path_prefix /api/orders, GET|POST, host shop.example.com".
    pub fn describe_match(&self) -> String {
        let mut parts = vec![self.path.describe()];
        if let Some(m) = &self.methods {
            parts.push(m.join("|"));
        }
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        for (n, v) in &self.headers {
            parts.push(format!("{n}={v}"));
        }
        parts.join(", ")
    }
}

pub use super::validate::validate;
