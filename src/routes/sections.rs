//! The rules of a route's optional sections: `[shadow]`, `[rate_limit]`, `[guard]`.

use std::time::Duration;

use http::HeaderName;

use super::def::*;
use super::spec::{GuardSpec, RateLimitSpec, ShadowSpec};
use super::validate::{known_upstream, method_list, percent_value};
use crate::config::Config;
use crate::diag::SourceFile;

pub(super) fn validate_shadow(
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
    let descriptors = match &s.descriptors {
        None => None,
        Some(d) => {
            // Beside the route file, unless absolute.
            let file = src
                .path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(d.get_ref());
            match super::descriptors::Descriptors::load(&file) {
                Ok(d) => Some(std::sync::Arc::new(d)),
                Err(e) => {
                    src.error(Some(d.span()), format!("shadow.descriptors: {e}"));
                    None
                }
            }
        }
    };
    Some(ShadowDef {
        percent_bp,
        upstream,
        methods,
        compare: s.compare.unwrap_or(true),
        compare_headers,
        ignore,
        noise: s.noise.unwrap_or(false),
        descriptors,
    })
}

pub(super) fn validate_rate_limit(src: &mut SourceFile, r: &RateLimitSpec) -> Option<RateLimitDef> {
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

pub(super) fn validate_guard(src: &mut SourceFile, g: &GuardSpec) -> Option<GuardDef> {
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
