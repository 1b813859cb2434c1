//! Application logs through `tracing` (Pingora's `log` records included), to stderr:
//! readable lines by default, one JSON object per line with `--log-format json` (or
//! `BANYAN_LOG_FORMAT=json`) for log collectors. `BANYAN_LOG` takes an env-filter
//! ("debug", "banyan=debug,pingora_proxy=info").
//!
//! Text from requests and the admin API (an override's reason, a path) reaches log lines,
//! so a text line's control bytes are escaped as it is written (`\n` inside a message
//! cannot start a forged line); JSON lines escape them by themselves.

use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The error a client connection's read fails with when its request head is not whole
/// within `client_header_timeout` (`proxy::checked`).
pub const HEAD_TIMED_OUT: &str = "the request head took too long";

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
    let ansi = std::io::stderr().is_terminal() && format == Format::Text;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || Escaping {
            inner: std::io::stderr(),
            keep_escape: ansi,
        });
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        Format::Text => builder.with_ansi(ansi).finish().with(CutHeads).try_init(),
        Format::Json => builder
            .json()
            .with_ansi(false)
            .finish()
            .with(CutHeads)
            .try_init(),
    };
}

/// Pingora logs an error for every client connection that ends while it reads a request
/// head, so each TLS connection banyan cuts at `client_header_timeout` would be a line: a
/// slowloris makes thousands a minute (a way to fill a disk). Those are counted in
/// `banyan_client_timeouts_total{phase="header"}` instead, as on plain listeners.
struct CutHeads;

impl<S: Subscriber> Layer<S> for CutHeads {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        if *event.metadata().level() != Level::ERROR {
            return true;
        }
        let mut cut = MessageHas(HEAD_TIMED_OUT, false);
        event.record(&mut cut);
        !cut.1
    }
}

/// Whether an event's message contains the text.
struct MessageHas(&'static str, bool);

impl Visit for MessageHas {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}").contains(self.0) {
            self.1 = true;
        }
    }
}

/// A log writer that escapes control bytes in each line it is given (one event, ending
/// in its newline): `\r`, `\n` inside the line, NUL and the rest as `\xNN`. With colours
/// on (a terminal), ESC is kept for them.
pub struct Escaping<W> {
    pub inner: W,
    pub keep_escape: bool,
}

/// `line` with its control bytes escaped, the final newline kept.
pub fn escape_line(line: &[u8], keep_escape: bool) -> std::borrow::Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let control = |b: u8| (b < 0x20 && b != b'\t' && !(keep_escape && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| control(b)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if control(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    if body.len() < line.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(&escape_line(buf, self.keep_escape))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a log line says of a request: method, path without its query string (which may
/// carry tokens), Host and request id. Pingora's own error lines use this too.
pub fn request_summary(method: &str, path: &str, host: Option<&[u8]>, request_id: &[u8]) -> String {
    format!(
        "{method} {path}, Host: {}, request id: {}",
        String::from_utf8_lossy(host.unwrap_or(b"-")),
        String::from_utf8_lossy(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cannot_forge_another() {
        let line = b"INFO orders: rollback (reason: x\nERROR forged\r\x00\x1b[31m)\n";
        let out = escape_line(line, false);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "INFO orders: rollback (reason: x\\nERROR forged\\r\\x00\\x1b[31m)\n"
        );
        assert!(matches!(
            escape_line(b"plain\ttext\n", false),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            &*escape_line(b"\x1b[1mbold\x1b[0m\n", true),
            b"\x1b[1mbold\x1b[0m\n"
        );
        let mut w = Escaping {
            inner: Vec::new(),
            keep_escape: false,
        };
        std::io::Write::write_all(&mut w, b"a\nb\n").expect("write");
        assert_eq!(w.inner, b"a\\nb\n");
    }

    #[test]
    fn summaries_leave_the_query_out() {
        let s = request_summary("GET", "/api/orders", Some(b"shop"), b"rid-1");
        assert_eq!(s, "GET /api/orders, Host: shop, request id: rid-1");
    }
}
