//! Application logs through `tracing` (Pingora's `log` records included), to stderr:
//! readable lines by default, one JSON object per line with `--log-format json` (or
//! `BANYAN_LOG_FORMAT=json`) for log collectors. `BANYAN_LOG` takes an env-filter
//! ("debug", "banyan=debug,pingora_proxy=info").

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Pingora's own start-up chatter stays below the default level; its proxy errors (an
/// upstream refusing, timing out) do not. Client disconnects are not logged (see
/// `Proxy::suppress_error_log`).
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn,pingora=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl Format {
    /// The flag when given, else `BANYAN_LOG_FORMAT`, else text.
    pub fn choose(flag: Option<Format>) -> Format {
        flag.unwrap_or_else(|| match std::env::var("BANYAN_LOG_FORMAT").as_deref() {
            Ok("json") => Format::Json,
            _ => Format::Text,
        })
    }
}

pub fn init(format: Format) {
    let filter =
        EnvFilter::try_from_env("BANYAN_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder.json().with_ansi(false).try_init(),
    };
}
