//! A validated route: plain data, every name resolved and every value in range. Built from
//! one [`RouteSpec`] by the per-route rules below; rules that need all routes at once
//! (unique names, ambiguous matches) live in `load.rs`.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

use super::spec::{GuardSpec, MatchSpec, RateLimitSpec, RouteSpec, ShadowSpec, Text, TextList};
use super::split::percent_to_bp;
use crate::config::{valid_name, Config};
use crate::diag::SourceFile;

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
const DEFAULT_SHADOW_METHODS: [&str; 2] = ["GET", "HEAD"];

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

/// Validates one route. Records every problem it finds; `None` if there was any error.
pub fn validate(src: &mut SourceFile, spec: RouteSpec, config: &Config) -> Option<RouteDef> {
    let before = src.diagnostics.iter().filter(|d| d.is_error()).count();
    let (line, column) = src.position(spec.name.span().start);

    let name = spec.name.get_ref().clone();
    if !valid_name(&name) {
        src.error(
            Some(spec.name.span()),
            format!("route name `{name}`: use letters, digits, '-', '_' or '.' (at most 128)"),
        );
    } else if name.starts_with('_') {
        src.error(
            Some(spec.name.span()),
            format!("route name `{name}`: names starting with '_' are reserved (`_default` is the unmatched traffic)"),
        );
    }

    let (path, host, methods, headers) = validate_match(src, &spec.matcher);

    let legacy = match &spec.legacy {
        Some(l) => {
            known_upstream(src, l, "legacy", config);
            l.get_ref().clone()
        }
        None => config.server.default_upstream.clone(),
    };
    let target = spec.target.as_ref().map(|t| {
        known_upstream(src, t, "target", config);
        t.get_ref().clone()
    });

    let percent_bp = match &spec.percent {
        None => 0,
        Some(p) => percent_value(src, p, "percent").unwrap_or(0),
    };
    if percent_bp > 0 && target.is_none() {
        let span = spec.percent.as_ref().map(|p| p.span());
        src.error(span, "percent is above 0 but the route has no `target`");
    }
    if let (Some(t), Some(tspan)) = (&target, &spec.target) {
        if *t == legacy {
            src.warning(
                Some(tspan.span()),
                format!("target `{t}` is also the legacy upstream: the split changes nothing"),
            );
        }
    }

    let sticky = spec
        .sticky
        .as_ref()
        .map_or(Some(Sticky::None), |s| parse_sticky(src, s))
        .unwrap_or(Sticky::None);

    let fallback_methods = match &spec.fallback_methods {
        None => DEFAULT_FALLBACK_METHODS
            .iter()
            .map(|m| m.to_string())
            .collect(),
        Some(list) => method_list(src, list, "fallback_methods"),
    };

    let salt = match &spec.salt {
        None => name.clone(),
        Some(s) if s.get_ref().is_empty() || s.get_ref().contains('\0') => {
            src.error(
                Some(s.span()),
                "salt must be non-empty text without NUL bytes",
            );
            name.clone()
        }
        Some(s) => s.get_ref().clone(),
    };

    let shadow = spec
        .shadow
        .as_ref()
        .and_then(|s| validate_shadow(src, s.get_ref(), target.as_deref(), config));
    let rate_limit = spec
        .rate_limit
        .as_ref()
        .and_then(|r| validate_rate_limit(src, r.get_ref()));
    let guard = spec.guard.as_ref().and_then(|g| {
        if target.is_none() {
            src.warning(
                Some(g.span()),
                "[route.guard] watches the target, and this route has none",
            );
        }
        validate_guard(src, g.get_ref())
    });

    let after = src.diagnostics.iter().filter(|d| d.is_error()).count();
    if after > before {
        return None;
    }
    Some(RouteDef {
        name,
        file: src.path.to_path_buf(),
        line,
        column,
        path: path?,
        host,
        methods,
        headers,
        legacy,
        target,
        percent_bp,
        sticky,
        fallback: spec.fallback.unwrap_or(true),
        fallback_methods,
        salt,
        shadow,
        rate_limit,
        guard,
    })
}

type MatchParts = (
    Option<PathMatch>,
    Option<String>,
    Option<Vec<String>>,
    Vec<(HeaderName, String)>,
);

fn validate_match(src: &mut SourceFile, m: &toml::Spanned<MatchSpec>) -> MatchParts {
    let spec = m.get_ref();
    let given: Vec<(&Text, &str)> = [
        (spec.path.as_ref(), "path"),
        (spec.path_prefix.as_ref(), "path_prefix"),
        (spec.path_regex.as_ref(), "path_regex"),
    ]
    .into_iter()
    .filter_map(|(v, k)| v.map(|v| (v, k)))
    .collect();

    let path = match given.as_slice() {
        [] => {
            src.error(
                Some(m.span()),
                "the match needs one of `path`, `path_prefix` or `path_regex`",
            );
            None
        }
        [(value, kind)] => path_match(src, value, kind),
        [_, (second, _), ..] => {
            src.error(
                Some(second.span()),
                "use only one of `path`, `path_prefix` and `path_regex` per route",
            );
            None
        }
    };

    let host = spec.host.as_ref().and_then(|h| {
        let v = h.get_ref();
        let valid = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if valid {
            Some(v.to_ascii_lowercase())
        } else {
            src.error(
                Some(h.span()),
                format!(
                    "match.host `{v}` is not a host name (write it without scheme, port or path)"
                ),
            );
            None
        }
    });

    let methods = spec
        .methods
        .as_ref()
        .map(|list| method_list(src, list, "match.methods"));
    if let Some(list) = &spec.methods {
        if list.get_ref().is_empty() {
            src.error(
                Some(list.span()),
                "match.methods is empty: the route could never match",
            );
        }
    }

    let mut headers = Vec::new();
    if let Some(h) = &spec.headers {
        for (name, value) in h.get_ref() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => {
                    if http::HeaderValue::from_str(value.get_ref()).is_err() {
                        src.error(
                            Some(value.span()),
                            format!("match.headers.{name}: not a valid header value"),
                        );
                    }
                    headers.push((n, value.get_ref().clone()));
                }
                Err(_) => src.error(
                    Some(h.span()),
                    format!("match.headers: `{name}` is not a header name"),
                ),
            }
        }
    }
    (path, host, methods, headers)
}

fn path_match(src: &mut SourceFile, value: &Text, kind: &str) -> Option<PathMatch> {
    let v = value.get_ref();
    match kind {
        // Syntax only: the automaton is built once, for all regexes together, when the
        // route table compiles (building each one here too made a 10,000-route reload slow).
        "path_regex" => match regex_syntax::Parser::new().parse(v) {
            Ok(_) => Some(PathMatch::Regex(v.clone())),
            Err(e) => {
                // The regex crate's message is a drawing of the pattern ending in the reason.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map_or(text.as_str(), |l| l.trim().trim_start_matches("error: "));
                src.error(
                    Some(value.span()),
                    format!("match.path_regex does not compile: {reason}"),
                );
                None
            }
        },
        _ if !v.starts_with('/') => {
            src.error(
                Some(value.span()),
                format!("match.{kind} `{v}` must start with '/'"),
            );
            None
        }
        _ if v.contains('?')
            || v.contains('#')
            || v.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) =>
        {
            src.error(
                Some(value.span()),
                format!("match.{kind} `{v}` must be a plain path (no query, fragment, spaces or control characters)"),
            );
            None
        }
        "path" => Some(PathMatch::Exact(v.clone())),
        _ => Some(PathMatch::Prefix(v.clone())),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn method_list(src: &mut SourceFile, list: &TextList, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in list.get_ref() {
        let v = m.get_ref();
        if !is_token(v) {
            src.error(
                Some(m.span()),
                format!("{what}: `{v}` is not an HTTP method"),
            );
        } else if v.bytes().any(|b| b.is_ascii_lowercase()) {
            src.error(
                Some(m.span()),
                format!(
                    "{what}: methods are case-sensitive; write `{}`",
                    v.to_ascii_uppercase()
                ),
            );
        } else if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

fn known_upstream(src: &mut SourceFile, name: &Text, what: &str, config: &Config) {
    if config.upstream(name.get_ref()).is_none() {
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        src.error(
            Some(name.span()),
            format!(
                "{what}: unknown upstream `{}` (known: {})",
                name.get_ref(),
                known.join(", ")
            ),
        );
    }
}

fn percent_value(src: &mut SourceFile, p: &toml::Spanned<f64>, what: &str) -> Option<u16> {
    let bp = percent_to_bp(*p.get_ref());
    if bp.is_none() {
        src.error(
            Some(p.span()),
            format!(
                "{what} {} must be between 0 and 100 with at most two decimals",
                p.get_ref()
            ),
        );
    }
    bp
}

fn parse_sticky(src: &mut SourceFile, s: &Text) -> Option<Sticky> {
    let v = s.get_ref();
    let parsed = match v.split_once(':') {
        None if v == "ip" => Some(Sticky::Ip),
        None if v == "none" => Some(Sticky::None),
        Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(Sticky::Header),
        Some(("cookie", name)) if is_token(name) => Some(Sticky::Cookie(name.to_string())),
        _ => None,
    };
    if parsed.is_none() {
        src.error(
            Some(s.span()),
            format!("sticky `{v}`: expected \"header:NAME\", \"cookie:NAME\", \"ip\" or \"none\""),
        );
    }
    parsed
}

fn validate_shadow(
    src: &mut SourceFile,
    s: &ShadowSpec,
    target: Option<&str>,
    config: &Config,
) -> Option<ShadowDef> {
    let percent_bp = match &s.percent {
        None => 10_000,
        Some(p) => percent_value(src, p, "shadow.percent")?,
    };
    let upstream = match (&s.upstream, target) {
        (Some(u), _) => {
            known_upstream(src, u, "shadow.upstream", config);
            u.get_ref().clone()
        }
        (None, Some(t)) => t.to_string(),
        (None, None) => {
            src.error(
                None,
                "[route.shadow] needs `upstream` when the route has no target",
            );
            return None;
        }
    };
    let methods = match &s.methods {
        None => DEFAULT_SHADOW_METHODS
            .iter()
            .map(|m| m.to_string())
            .collect(),
        Some(list) => method_list(src, list, "shadow.methods"),
    };
    let mut compare_headers = Vec::new();
    match &s.compare_headers {
        None => compare_headers.push(http::header::CONTENT_TYPE),
        Some(list) => {
            for h in list.get_ref() {
                match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                    Ok(n) => compare_headers.push(n),
                    Err(_) => src.error(
                        Some(h.span()),
                        format!(
                            "shadow.compare_headers: `{}` is not a header name",
                            h.get_ref()
                        ),
                    ),
                }
            }
        }
    }
    let mut ignore = Vec::new();
    for pattern in s
        .ignore
        .as_ref()
        .map(|l| l.get_ref().as_slice())
        .unwrap_or(&[])
    {
        let p = pattern.get_ref();
        let ok = match p.strip_prefix("header:") {
            Some(name) => HeaderName::from_bytes(name.as_bytes()).is_ok(),
            None => p.is_empty() || p.starts_with('/'),
        };
        if ok {
            ignore.push(p.clone());
        } else {
            src.error(
                Some(pattern.span()),
                format!("shadow.ignore `{p}`: expected a JSON pointer like \"/items/*/etag\" or \"header:NAME\""),
            );
        }
    }
    Some(ShadowDef {
        percent_bp,
        upstream,
        methods,
        compare: s.compare.unwrap_or(true),
        compare_headers,
        ignore,
        noise: s.noise.unwrap_or(false),
    })
}

fn validate_rate_limit(src: &mut SourceFile, r: &RateLimitSpec) -> Option<RateLimitDef> {
    let rate = *r.rate.get_ref();
    if !(rate.is_finite() && rate > 0.0) {
        src.error(
            Some(r.rate.span()),
            "rate_limit.rate must be a number of requests per second above 0",
        );
        return None;
    }
    let burst = match &r.burst {
        None => rate.ceil().max(1.0) as u32,
        Some(b) if (1..=i64::from(u32::MAX)).contains(b.get_ref()) => *b.get_ref() as u32,
        Some(b) => {
            src.error(Some(b.span()), "rate_limit.burst must be at least 1");
            return None;
        }
    };
    let key = match &r.key {
        None => RateKey::Ip,
        Some(k) => match k.get_ref().as_str() {
            "ip" => RateKey::Ip,
            other => match other
                .strip_prefix("header:")
                .map(|n| HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(n)) => RateKey::Header(n),
                _ => {
                    src.error(
                        Some(k.span()),
                        format!("rate_limit.key `{other}`: expected \"ip\" or \"header:NAME\""),
                    );
                    return None;
                }
            },
        },
    };
    Some(RateLimitDef { rate, burst, key })
}

fn validate_guard(src: &mut SourceFile, g: &GuardSpec) -> Option<GuardDef> {
    let max_error_rate = match &g.max_error_rate {
        Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
            src.error(
                Some(r.span()),
                "guard.max_error_rate is a fraction between 0 and 1 (0.05 = 5 %)",
            );
            return None;
        }
        r => r.as_ref().map(|r| *r.get_ref()),
    };
    let max_p99_ms = match &g.max_p99_ms {
        Some(p) if !(p.get_ref().is_finite() && *p.get_ref() > 0.0) => {
            src.error(Some(p.span()), "guard.max_p99_ms must be above 0");
            return None;
        }
        p => p.as_ref().map(|p| *p.get_ref()),
    };
    if max_error_rate.is_none() && max_p99_ms.is_none() {
        src.error(
            None,
            "[route.guard] needs max_error_rate, max_p99_ms or both",
        );
        return None;
    }
    let min_requests = match &g.min_requests {
        None => 100,
        Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
        Some(n) => {
            src.error(Some(n.span()), "guard.min_requests must be at least 1");
            return None;
        }
    };
    let window = match &g.window {
        None => Duration::from_secs(60),
        Some(w) => w.parse(src, "guard.window")?,
    };
    Some(GuardDef {
        max_error_rate,
        max_p99_ms,
        min_requests,
        window,
    })
}
