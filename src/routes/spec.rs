//! Route files as written: the serde shape of one `[[route]]`, with spans kept on every
//! value that validation may need to point at. Unknown keys are errors (`precent = 20`).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::tomlspan::{DurationText, Shape};

pub type Text = Spanned<String>;
pub type TextList = Spanned<Vec<Text>>;

/// The keys of a `[[route]]` and its sections, for reporting typos before deserializing
/// (`tomlspan::drop_unknown`); serde still refuses any key these lists miss.
pub const ROUTE_SHAPE: Shape = Shape {
    keys: &[
        "name",
        "match",
        "legacy",
        "target",
        "percent",
        "sticky",
        "fallback",
        "fallback_methods",
        "salt",
        "shadow",
        "rate_limit",
        "guard",
        "cohort",
        "ramp",
    ],
    tables: &[
        (
            "match",
            Shape {
                keys: &[
                    "path",
                    "path_prefix",
                    "path_regex",
                    "methods",
                    "host",
                    "headers",
                ],
                tables: &[],
            },
        ),
        (
            "shadow",
            Shape {
                keys: &[
                    "percent",
                    "upstream",
                    "methods",
                    "compare",
                    "compare_headers",
                    "ignore",
                    "noise",
                    "descriptors",
                ],
                tables: &[],
            },
        ),
        (
            "rate_limit",
            Shape {
                keys: &["rate", "burst", "key"],
                tables: &[],
            },
        ),
        (
            "guard",
            Shape {
                keys: &["max_error_rate", "max_p99_ms", "min_requests", "window"],
                tables: &[],
            },
        ),
        (
            "ramp",
            Shape {
                keys: super::ramp::RAMP_KEYS,
                tables: &[],
            },
        ),
        (
            "cohort",
            Shape {
                keys: super::cohort::COHORT_KEYS,
                tables: &[],
            },
        ),
    ],
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: Text,
    #[serde(rename = "match")]
    pub matcher: Spanned<MatchSpec>,
    pub legacy: Option<Text>,
    pub target: Option<Text>,
    pub percent: Option<Spanned<f64>>,
    pub sticky: Option<Text>,
    pub fallback: Option<bool>,
    pub fallback_methods: Option<TextList>,
    pub salt: Option<Text>,
    pub shadow: Option<Spanned<ShadowSpec>>,
    pub rate_limit: Option<Spanned<RateLimitSpec>>,
    pub guard: Option<Spanned<GuardSpec>>,
    pub cohort: Option<Vec<Spanned<super::cohort::CohortSpec>>>,
    pub ramp: Option<Spanned<super::ramp::RampSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    pub path: Option<Text>,
    pub path_prefix: Option<Text>,
    pub path_regex: Option<Text>,
    pub methods: Option<TextList>,
    pub host: Option<Text>,
    pub headers: Option<Spanned<BTreeMap<String, Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    pub percent: Option<Spanned<f64>>,
    pub upstream: Option<Text>,
    pub methods: Option<TextList>,
    pub compare: Option<bool>,
    pub compare_headers: Option<TextList>,
    pub ignore: Option<TextList>,
    pub noise: Option<bool>,
    pub descriptors: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub rate: Spanned<f64>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    pub max_error_rate: Option<Spanned<f64>>,
    pub max_p99_ms: Option<Spanned<f64>>,
    pub min_requests: Option<Spanned<i64>>,
    pub window: Option<DurationText>,
}
