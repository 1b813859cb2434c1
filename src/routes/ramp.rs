//! `[route.ramp]`: the steps a route's percent climbs by itself once an operator starts
//! the ramp, and the gates each step must pass, judged against legacy over the same
//! window. The ramp's position lives in the control plane (`control/ramp`); this is what
//! the route file declares.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::split::percent_to_bp;
use crate::diag::SourceFile;
use crate::tomlspan::DurationText;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    pub steps: Spanned<Vec<Spanned<f64>>>,
    pub hold: Option<DurationText>,
    pub min_requests: Option<Spanned<i64>>,
    pub max_error_delta: Option<Spanned<f64>>,
    pub max_p99_ratio: Option<Spanned<f64>>,
    pub min_match_rate: Option<Spanned<f64>>,
    pub min_compared: Option<Spanned<i64>>,
    pub on_failure: Option<Spanned<String>>,
}

pub const RAMP_KEYS: &[&str] = &[
    "steps",
    "hold",
    "min_requests",
    "max_error_delta",
    "max_p99_ratio",
    "min_match_rate",
    "min_compared",
    "on_failure",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    Rollback,
    Pause,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RampDef {
    /// Percents in basis points, strictly increasing.
    pub steps: Vec<u16>,
    /// The least time at a step.
    pub hold: Duration,
    /// Target requests a step needs before it is judged.
    pub min_requests: u64,
    /// Target error rate minus legacy's; 0.005 unless written.
    pub max_error_delta: f64,
    pub max_p99_ratio: Option<f64>,
    pub min_match_rate: Option<f64>,
    pub min_compared: u64,
    pub on_failure: OnFailure,
}

pub(super) fn validate_ramp(
    src: &mut SourceFile,
    spec: &Spanned<RampSpec>,
    has_target: bool,
    has_compare: bool,
) -> Option<RampDef> {
    let r = spec.get_ref();
    if !has_target {
        src.error(
            Some(spec.span()),
            "[route.ramp] moves users to the target, and this route has none",
        );
        return None;
    }
    let mut ok = true;
    let mut steps = Vec::new();
    for s in r.steps.get_ref() {
        match percent_to_bp(*s.get_ref()).filter(|bp| *bp > 0) {
            Some(bp) if steps.last().is_none_or(|last| bp > *last) => steps.push(bp),
            Some(_) => {
                src.error(Some(s.span()), "ramp.steps must increase");
                ok = false;
            }
            None => {
                src.error(
                    Some(s.span()),
                    "ramp.steps are percents above 0, at most 100, with two decimals",
                );
                ok = false;
            }
        }
    }
    if r.steps.get_ref().is_empty() {
        src.error(Some(r.steps.span()), "ramp.steps is empty");
        ok = false;
    }
    let hold = match &r.hold {
        None => Duration::from_secs(600),
        Some(h) => h.parse(src, "ramp.hold")?,
    };
    let mut count = |v: &Option<Spanned<i64>>, what: &str, default: u64| match v {
        None => default,
        Some(n) if *n.get_ref() >= 1 => *n.get_ref() as u64,
        Some(n) => {
            src.error(Some(n.span()), format!("ramp.{what} must be at least 1"));
            ok = false;
            default
        }
    };
    let min_requests = count(&r.min_requests, "min_requests", 500);
    let min_compared = count(&r.min_compared, "min_compared", 1000);
    let fraction = |src: &mut SourceFile, v: &Option<Spanned<f64>>, what: &str| match v {
        Some(f) if !(0.0..=1.0).contains(f.get_ref()) => {
            src.error(
                Some(f.span()),
                format!("ramp.{what} is a fraction between 0 and 1"),
            );
            None
        }
        f => Some(f.as_ref().map(|f| *f.get_ref())),
    };
    let max_error_delta = fraction(src, &r.max_error_delta, "max_error_delta")?.unwrap_or(0.005);
    let min_match_rate = fraction(src, &r.min_match_rate, "min_match_rate")?;
    if min_match_rate.is_some() && !has_compare {
        src.error(
            r.min_match_rate.as_ref().map(|m| m.span()),
            "ramp.min_match_rate needs [route.shadow] with compare = true",
        );
        ok = false;
    }
    let max_p99_ratio = match &r.max_p99_ratio {
        Some(p) if !(p.get_ref().is_finite() && *p.get_ref() > 0.0) => {
            src.error(Some(p.span()), "ramp.max_p99_ratio must be above 0");
            return None;
        }
        p => p.as_ref().map(|p| *p.get_ref()),
    };
    let on_failure = match r.on_failure.as_ref().map(|o| o.get_ref().as_str()) {
        None | Some("rollback") => OnFailure::Rollback,
        Some("pause") => OnFailure::Pause,
        Some(other) => {
            src.error(
                r.on_failure.as_ref().map(|o| o.span()),
                format!("ramp.on_failure `{other}`: expected \"rollback\" or \"pause\""),
            );
            return None;
        }
    };
    ok.then_some(RampDef {
        steps,
        hold,
        min_requests,
        max_error_delta,
        max_p99_ratio,
        min_match_rate,
        min_compared,
        on_failure,
    })
}
