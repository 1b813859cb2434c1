//! The access log: one JSON object per request (`ts`, `request_id`, `method`, `path`,
//! `route`, `backend`, `status`, `duration_ms`, `upstream_ms`, `fallback`, `shadow`,
//! `transport`, and `grpc_status` for gRPC calls) to
//! stdout or a file. The data path hands a line to a writer thread through a bounded
//! queue and never waits: when the writer falls behind, lines are dropped and counted
//! (`banyan_access_log_dropped_total`). SIGUSR1 makes the writer reopen the file, for
//! logrotate. Query strings, headers and bodies are never logged.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};
use prometheus::IntCounter;
use serde::Serialize;

use crate::config::AccessLog as Target;

/// Lines waiting for the writer; beyond this they are dropped.
const QUEUE: usize = 16 * 1024;

static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

/// One request, as the data path saw it.
pub struct Line {
    pub at: SystemTime,
    pub request_id: HeaderValue,
    pub method: Method,
    pub path: String,
    pub route: String,
    pub backend: &'static str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub fallback: Option<&'static str>,
    pub shadow: bool,
    /// Which transport served it: `fast` (banyan's own HTTP/1.1 path, as the design names it) or `pingora`.
    pub transport: &'static str,
    /// How a gRPC call ended (`OK`, `UNAVAILABLE`, …); `None` for other requests.
    pub grpc_status: Option<&'static str>,
}

#[derive(Serialize)]
struct Json<'a> {
    ts: String,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    backend: &'a str,
    status: u16,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    fallback: Option<&'a str>,
    shadow: bool,
    transport: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<&'a str>,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl Line {
    /// The JSON line, newline included (public for the `hot` bench).
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let json = Json {
            ts: humantime::format_rfc3339_millis(self.at).to_string(),
            request_id: self.request_id.to_str().unwrap_or(""),
            method: self.method.as_str(),
            path: &self.path,
            route: &self.route,
            backend: self.backend,
            status: self.status,
            duration_ms: round3(self.duration_ms),
            upstream_ms: self.upstream_ms.map(round3),
            fallback: self.fallback,
            shadow: self.shadow,
            transport: self.transport,
            grpc_status: self.grpc_status,
        };
        serde_json::to_writer(&mut *out, &json)?;
        out.write_all(b"\n")
    }
}

pub struct AccessLog {
    tx: Option<SyncSender<Line>>,
    dropped: Option<IntCounter>,
}

enum Sink {
    Stdout,
    File(PathBuf, BufWriter<File>),
}

fn open(path: &PathBuf) -> std::io::Result<BufWriter<File>> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(|f| BufWriter::with_capacity(64 * 1024, f))
}

impl Sink {
    fn out(&mut self) -> Box<dyn Write + '_> {
        match self {
            Sink::Stdout => Box::new(std::io::stdout().lock()),
            Sink::File(_, w) => Box::new(w),
        }
    }
}

fn writer(mut sink: Sink, rx: Receiver<Line>) {
    loop {
        if REOPEN.swap(false, Ordering::Relaxed) {
            if let Sink::File(path, w) = &mut sink {
                let _ = w.flush();
                match open(path) {
                    Ok(f) => *w = f,
                    Err(e) => {
                        tracing::error!("cannot reopen the access log {}: {e}", path.display())
                    }
                }
            }
        }
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut out = sink.out();
        let mut failed = first.write(&mut out).is_err();
        // Everything queued goes out in one flush.
        while let Ok(line) = rx.try_recv() {
            failed |= line.write(&mut out).is_err();
        }
        failed |= out.flush().is_err();
        if failed {
            tracing::warn!("writing the access log failed; lines were lost");
        }
    }
}

impl AccessLog {
    pub fn off() -> Self {
        AccessLog {
            tx: None,
            dropped: None,
        }
    }

    /// Opens the log and starts its writer; an unwritable file is an error at start.
    pub fn start(target: &Target, dropped: IntCounter) -> anyhow::Result<Self> {
        let sink = match target {
            Target::Off => return Ok(Self::off()),
            Target::Stdout => Sink::Stdout,
            Target::File(path) => {
                let f = open(path).map_err(|e| {
                    anyhow::anyhow!("cannot open the access log {}: {e}", path.display())
                })?;
                Sink::File(path.clone(), f)
            }
        };
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
        }
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(sink, rx))?;
        Ok(AccessLog {
            tx: Some(tx),
            dropped: Some(dropped),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn log(&self, line: Line) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if let Some(d) = &self.dropped {
                    d.inc();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object() {
        let line = Line {
            at: SystemTime::UNIX_EPOCH,
            request_id: HeaderValue::from_static("abc"),
            method: Method::GET,
            path: "/api/orders/7".into(),
            route: "orders".into(),
            backend: "legacy",
            status: 200,
            duration_ms: 1.23456,
            upstream_ms: Some(0.5),
            fallback: Some("connect"),
            shadow: false,
            transport: "pingora",
            grpc_status: None,
        };
        let mut out = Vec::new();
        line.write(&mut out).expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["fallback"], "connect");
        assert_eq!(v["duration_ms"], 1.235);
        assert_eq!(v["route"], "orders");
        assert_eq!(v["path"], "/api/orders/7");
        assert_eq!(v["transport"], "pingora");
    }
}
