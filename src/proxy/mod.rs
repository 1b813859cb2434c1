//! The data path: one request flow (`flow/`), two transports that do its I/O —
//! banyan's own HTTP/1.1 path for plain requests (`fast/`, entered from `listener.rs`)
//! and Pingora's callbacks for the rest (`pingora.rs`). Both check the client's bytes
//! the same way (`strict.rs`, `http1::follow` and `checked.rs` for what Pingora reads), and
//! write the same access log (`access_log.rs`).
//!
//! ```text
//!   client ──► listener ──► fast (whole plain HTTP/1.1)  ─┐
//!                      └──► pingora (TLS, h2, streaming) ─┤
//!                                                        ▼
//!   flow:  admit (route, side, limit, target up?) → attempts (next: peer, legacy,
//!          502/504) → finish (metrics, guard, shadow hand-off, access log)
//!                                                        │
//!   upstream::client (banyan's HTTP/1.1) or Pingora's connector ──► legacy / target
//! ```

pub mod accept;
pub mod access_log;
pub mod balance;
pub mod checked;
pub mod fast;
pub mod flow;
pub mod listener;
pub mod pending;
pub mod pingora;
pub mod preface;
pub mod sock;
pub mod spared;
pub mod spares;
pub mod strict;
pub mod tidy;

use std::sync::Arc;

use crate::config::ClientLimits;
use crate::metrics::Metrics;
use crate::shadow::Shadower;
use crate::snapshot::SharedSnapshot;
use access_log::AccessLog;

/// The data path's shared parts: the snapshot it reads, where it counts and logs, and
/// the shadow service it hands copies to. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: SharedSnapshot,
    metrics: Arc<Metrics>,
    shadower: Arc<Shadower>,
    access_log: Arc<AccessLog>,
    debug_headers: bool,
    limits: ClientLimits,
    /// `server.fast_path`: whole plain requests go through banyan's own path.
    fast_path: bool,
}

impl Proxy {
    pub fn new(
        shared: SharedSnapshot,
        metrics: Arc<Metrics>,
        shadower: Arc<Shadower>,
        access_log: Arc<AccessLog>,
        debug_headers: bool,
        limits: ClientLimits,
        fast_path: bool,
    ) -> Self {
        Proxy {
            shared,
            metrics,
            shadower,
            access_log,
            debug_headers,
            limits,
            fast_path,
        }
    }
}
