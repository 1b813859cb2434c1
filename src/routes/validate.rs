//! The per-route rules: one [`RouteSpec`] into a [`RouteDef`], every problem recorded
//! at its line and column.

use http::HeaderName;

use super::def::*;
use super::sections::{validate_guard, validate_rate_limit, validate_shadow};
use super::spec::{MatchSpec, RouteSpec, Text, TextList};
use super::split::percent_to_bp;
use crate::config::{valid_name, Config};
use crate::diag::SourceFile;

/// Validates one route, recording every problem it finds. The route comes back even
/// with errors when its match could be read, so that the rules over the whole set (unique
/// names, ambiguity) report in the same pass; a set with any error is never served.
/// `dropped`: the route's unknown keys, already reported ("match.path_prefx").
pub fn validate(
    src: &mut SourceFile,
    spec: RouteSpec,
    config: &Config,
    dropped: &[String],
) -> Option<RouteDef> {
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

    let (path, host, methods, headers) = validate_match(
        src,
        &spec.matcher,
        dropped.iter().any(|k| k.starts_with("match.")),
    );

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
        None if target.is_some() => {
            src.warning(
                spec.target.as_ref().map(|t| t.span()),
                "the route has a target but no `percent`: the target gets 0 % of users; write `percent = 0` to say so",
            );
            0
        }
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
        Some(list) => methods_and_calls(src, list, "fallback_methods", true),
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

    // A misspelt cohort key is reported already; its cohort's other rules would only
    // repeat it.
    let cohorts = match spec.cohort.as_deref() {
        Some(c) if !dropped.iter().any(|k| k.starts_with("cohort.")) => {
            super::cohort::validate_cohorts(src, c, target.is_some())
        }
        _ => Vec::new(),
    };

    let ramp = match &spec.ramp {
        Some(r) if !dropped.iter().any(|k| k.starts_with("ramp.")) => {
            let compares = shadow.as_ref().is_some_and(|s| s.compare);
            super::ramp::validate_ramp(src, r, target.is_some(), compares)
        }
        _ => None,
    };

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
        cohorts,
        ramp,
    })
}

type MatchParts = (
    Option<PathMatch>,
    Option<String>,
    Option<Vec<String>>,
    Vec<(HeaderName, String)>,
);

pub(super) fn validate_match(
    src: &mut SourceFile,
    m: &toml::Spanned<MatchSpec>,
    misspelt: bool,
) -> MatchParts {
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
        // A misspelt key of the match was reported already: saying the path is missing
        // adds nothing.
        [] if misspelt => None,
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

pub(super) fn path_match(src: &mut SourceFile, value: &Text, kind: &str) -> Option<PathMatch> {
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

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `/package.Service/Method`, as `fallback_methods` names a gRPC call.
pub(super) fn is_grpc_method_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
    };
    parts.next() == Some("") && ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// HTTP methods; with `grpc_names`, also gRPC calls by their `/package.Service/Method`.
pub(super) fn method_list(src: &mut SourceFile, list: &TextList, what: &str) -> Vec<String> {
    methods_and_calls(src, list, what, false)
}

pub(super) fn methods_and_calls(
    src: &mut SourceFile,
    list: &TextList,
    what: &str,
    grpc_names: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for m in list.get_ref() {
        let v = m.get_ref();
        if grpc_names && v.starts_with('/') {
            if !is_grpc_method_name(v) {
                src.error(
                    Some(m.span()),
                    format!("{what}: `{v}` is not a gRPC method (`/package.Service/Method`)"),
                );
            } else if !out.contains(v) {
                out.push(v.clone());
            }
        } else if !is_token(v) {
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

pub(super) fn known_upstream(src: &mut SourceFile, name: &Text, what: &str, config: &Config) {
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

pub(super) fn percent_value(
    src: &mut SourceFile,
    p: &toml::Spanned<f64>,
    what: &str,
) -> Option<u16> {
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

pub(super) fn parse_sticky(src: &mut SourceFile, s: &Text) -> Option<Sticky> {
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
