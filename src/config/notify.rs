//! `[notify]`: webhooks told of every change of routing state (a rollback by the guard, a
//! refused reload, a push, a set …), off the data path: a bounded queue, a few retries.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::SourceFile;
use crate::tomlspan::DurationText;

/// The body each webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// banyan's event object.
    Json,
    /// `{"text": "..."}`, what Slack's (and Mattermost's, Teams' …) incoming webhooks take.
    Slack,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub webhooks: Vec<String>,
    pub format: Format,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first, with a doubling pause from 250 ms.
    pub retries: u32,
    /// Events waiting at most; beyond it new ones are dropped and counted.
    pub queue: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    webhooks: Option<Spanned<Vec<String>>>,
    format: Option<Spanned<String>>,
    timeout: Option<DurationText>,
    retries: Option<Spanned<i64>>,
    queue: Option<Spanned<i64>>,
}

pub(super) fn validate_notify(src: &mut SourceFile, raw: RawNotify) -> Option<Option<Notify>> {
    let Some(webhooks) = raw.webhooks else {
        return Some(None);
    };
    let mut ok = true;
    for w in webhooks.get_ref() {
        if !(w.starts_with("http://") || w.starts_with("https://"))
            || w.parse::<http::Uri>().is_err()
        {
            src.error(
                Some(webhooks.span()),
                format!("notify.webhooks: `{w}` is not an http:// or https:// URL"),
            );
            ok = false;
        }
    }
    let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("json") => Format::Json,
        Some("slack") => Format::Slack,
        Some(other) => {
            src.error(
                raw.format.as_ref().map(|f| f.span()),
                format!("notify.format `{other}`: expected \"json\" or \"slack\""),
            );
            ok = false;
            Format::Json
        }
    };
    let timeout = match &raw.timeout {
        Some(t) => t.parse(src, "notify.timeout").unwrap_or_else(|| {
            ok = false;
            Duration::ZERO
        }),
        None => Duration::from_secs(2),
    };
    let mut count = |v: &Option<Spanned<i64>>, what: &str, default: i64, max: i64| match v {
        None => default,
        Some(n) if (0..=max).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            src.error(
                Some(n.span()),
                format!("notify.{what} {}: expected 0 to {max}", n.get_ref()),
            );
            ok = false;
            default
        }
    };
    let retries = count(&raw.retries, "retries", 3, 10) as u32;
    let queue = count(&raw.queue, "queue", 1000, 100_000).max(1) as usize;
    ok.then_some(Some(Notify {
        webhooks: webhooks.into_inner(),
        format,
        timeout,
        retries,
        queue,
    }))
}
