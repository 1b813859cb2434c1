//! Application logs through `tracing` (Pingora's `log` records included), to stderr.
//! `BANYAN_LOG` takes an env-filter ("debug", "banyan=debug,pingora_proxy=info").

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Pingora's own start-up chatter stays below the default level; its proxy errors (an
/// upstream refusing, timing out) do not. Client disconnects are not logged (see
/// `Proxy::suppress_error_log`).
const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn,pingora=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_env("BANYAN_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
