//! Shadow traffic: a sampled copy of legacy-served requests goes to the new service in
//! the background, and its answer is compared with legacy's. The client never waits for
//! it: the copy is handed, after the client has its answer, to the shadow worker, a thread
//! of its own at a lower CPU priority than the data path's; with a bounded body capture,
//! a bounded number in flight (beyond it, dropped and counted) and its own timeout.
//!
//! - `worker.rs`: the shadow worker's thread, runtime and hand-off.
//! - `quiet.rs`: the worker's wait for a moment without client requests.
//! - `copy.rs`: the copy, built one way (the forwarding rules of `upstream::forward`)
//!   from Pingora's parsed request or from the bytes banyan's own path read. Plain-HTTP
//!   upstreams get it through banyan's own client (`upstream::client`), TLS ones through
//!   Pingora's connector (`client.rs`).
//! - `difflog.rs`: `state/diffs.jsonl` and the recent mismatches for the API.
//!
//! What a route mirrors (`compare::plan`), the comparison (`compare`), and the per-route
//! outcomes and learned noise (`metrics::shadow`) live outside, shared with the snapshot.

pub mod client;
pub mod copier;
pub mod copy;
pub mod difflog;
pub mod quiet;
pub mod worker;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora::connectors::http::Connector;

use crate::compare::{Answer, SkipReason};
use crate::config::ShadowLimits;
use crate::metrics::shadow::DropReason;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::upstream::capture::BodyCapture;
use copier::Copier;
use copy::Original;
use difflog::DiffLog;

/// Headers whose values never reach the diff log, whatever the config says.
pub const ALWAYS_SENSITIVE: [HeaderName; 4] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
    http::header::SET_COOKIE,
];

/// The most copies waiting for the shadow worker to start them. A worker that keeps up
/// has next to none waiting; a backlog means the cores had no time for it, and sent when
/// they do, all at once, it lands on the new service as a burst (queueing there shows in
/// its measured latency; on a host it shares, the clients' answers wait behind it:
/// saturated client p99 4.0-4.4 ms with up to 256 waiting, 1.5 ms with 32) and compares
/// answers legacy gave a while ago. Beyond it new copies are dropped; `max_in_flight`
/// still bounds the copies waiting for a slow new service's answers.
pub const MAX_WAITING: usize = 32;

/// State shared between the data path's shadow tasks and the admin API.
pub struct ShadowShared {
    pub limits: ShadowLimits,
    pub diffs: DiffLog,
    in_flight: AtomicUsize,
    /// Copies handed to the worker and not yet started (within `in_flight`).
    waiting: AtomicUsize,
    gate: Arc<quiet::QuietGate>,
}

impl ShadowShared {
    pub fn new(limits: ShadowLimits, state_dir: &std::path::Path) -> Self {
        let diffs = DiffLog::open(state_dir, limits.diff_log_max_bytes);
        ShadowShared {
            limits,
            diffs,
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            gate: Arc::default(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Why a new copy would be dropped, if it would: `MAX_WAITING` not yet started, or
    /// `max_in_flight` under way.
    fn full(&self) -> Option<DropReason> {
        if self.waiting.load(Ordering::Relaxed) >= MAX_WAITING {
            Some(DropReason::WorkerBehind)
        } else if self.in_flight() >= self.limits.max_in_flight {
            Some(DropReason::InFlight)
        } else {
            None
        }
    }

    /// Takes an in-flight slot and a waiting one, unless either bound is reached.
    fn admit(self: &Arc<Self>) -> Result<(Slot, Waiting), DropReason> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(DropReason::WorkerBehind);
        }
        let waiting = Waiting(Arc::clone(self));
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.limits.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(DropReason::InFlight);
        }
        Ok((Slot(Arc::clone(self)), waiting))
    }

    fn is_sensitive(&self, name: &str) -> bool {
        ALWAYS_SENSITIVE.iter().any(|h| h.as_str() == name)
            || self
                .limits
                .sensitive_headers
                .iter()
                .any(|h| h.as_str() == name)
    }
}

/// Gives back an in-flight slot however the task ends.
struct Slot(Arc<ShadowShared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a copy as waiting until the worker starts it (or it is abandoned).
struct Waiting(Arc<ShadowShared>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request shadow state, present only for sampled requests.
pub struct ShadowCtx {
    pub request: Original,
    pub request_body: BodyCapture,
    pub response: Option<Answer>,
    pub response_body: BodyCapture,
    /// A gRPC call: mirrored only when its client sent one message (unary and
    /// server-streaming calls).
    pub grpc: bool,
}

impl ShadowCtx {
    pub fn new(request: Original, cap: usize) -> Box<Self> {
        Box::new(ShadowCtx {
            request,
            request_body: BodyCapture::new(cap),
            response: None,
            response_body: BodyCapture::new(cap),
            grpc: false,
        })
    }
}

/// What a finished request hands to the background.
pub struct Job {
    pub snapshot: Arc<Snapshot>,
    pub route: usize,
    pub client: Option<IpAddr>,
    pub request_id: HeaderValue,
    /// How the client reached banyan (`http`/`https`), for the copy's X-Forwarded-Proto.
    pub scheme: &'static str,
    pub ctx: Box<ShadowCtx>,
}

/// A copy on its way to the worker, with the in-flight and waiting places it holds.
type Queued = (Job, Slot, Waiting);

/// The data path's side of shadowing: the limits, and the hand-off to the shadow worker.
pub struct Shadower {
    worker: worker::Worker<Queued>,
    shared: Arc<ShadowShared>,
    metrics: Arc<Metrics>,
}

impl Shadower {
    /// Starts the shadow worker's thread. The service owns its shared state; control
    /// and the admin API read it through `shared`.
    pub fn new(shared: ShadowShared, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let shared = Arc::new(shared);
        let copier = Arc::new(Copier {
            connector: Connector::new(None),
            shared: Arc::clone(&shared),
            metrics: Arc::clone(&metrics),
        });
        let worker =
            worker::Worker::start("banyan-shadow", move |(job, slot, waiting): Queued| {
                let copier = Arc::clone(&copier);
                async move {
                    drop(waiting);
                    let _slot = slot;
                    copier.shared.gate.quiet().await;
                    copier.run(job).await;
                }
            })?;
        Ok(Shadower {
            worker,
            shared,
            metrics,
        })
    }

    /// The state the admin API reads: in flight, limits, the diff log.
    pub fn shared(&self) -> Arc<ShadowShared> {
        Arc::clone(&self.shared)
    }

    /// Counts a client request as in progress, for copies to wait out (`quiet.rs`).
    pub fn busy(&self) -> quiet::Busy {
        quiet::QuietGate::enter(&self.shared.gate)
    }

    /// Why a new copy would be dropped, if it would (`ShadowShared::full`): while the
    /// cores are busy the worker falls behind, and new copies give way.
    pub fn full(&self) -> Option<DropReason> {
        self.shared.full()
    }

    pub fn limits(&self) -> &ShadowLimits {
        &self.shared.limits
    }

    /// Hands the copy to the shadow worker, or counts why it cannot.
    pub fn dispatch(&self, job: Job) {
        let Some(route) = job.snapshot.routes.get(job.route) else {
            return;
        };
        let stats = &route.metrics.shadow;
        if job.ctx.request_body.overflowed() {
            stats.record_skip(&self.metrics, SkipReason::RequestTooLarge);
            return;
        }
        if job.ctx.response.is_none() {
            stats.record_skip(&self.metrics, SkipReason::NoPrimary);
            return;
        }
        if job.ctx.grpc
            && crate::compare::protowire::raw_frames(&job.ctx.request_body.bytes())
                .map_or(true, |m| m.len() != 1)
        {
            stats.record_skip(&self.metrics, SkipReason::GrpcStreaming);
            return;
        }
        let (slot, waiting) = match self.shared.admit() {
            Ok(places) => places,
            Err(reason) => {
                stats.record_drop(&self.metrics, reason);
                return;
            }
        };
        if let Err((job, _, _)) = self.worker.send((job, slot, waiting)) {
            // Only if the worker's thread died: nothing can send the copy.
            if let Some(route) = job.snapshot.routes.get(job.route) {
                let stats = &route.metrics.shadow;
                stats.record_drop(&self.metrics, DropReason::WorkerStopped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn copies_are_admitted_within_both_bounds_and_give_their_places_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = ShadowLimits {
            max_body_bytes: 1024,
            max_in_flight: MAX_WAITING + 8,
            timeout: Duration::from_secs(1),
            diff_log_max_bytes: 1 << 20,
            log_query: false,
            sensitive_headers: vec![],
        };
        let shared = Arc::new(ShadowShared::new(limits, dir.path()));
        let waiting = || shared.waiting.load(Ordering::Relaxed);
        let held: Vec<_> = (0..MAX_WAITING)
            .map(|_| shared.admit().expect("room"))
            .collect();
        assert_eq!(shared.full(), Some(DropReason::WorkerBehind));
        assert_eq!(shared.admit().err(), Some(DropReason::WorkerBehind));
        assert_eq!((shared.in_flight(), waiting()), (MAX_WAITING, MAX_WAITING));
        // Started copies no longer wait, but stay in flight until they end.
        let started: Vec<Slot> = held.into_iter().map(|(slot, _)| slot).collect();
        assert_eq!(shared.full(), None);
        let more: Vec<_> = (0..8).map(|_| shared.admit().expect("room")).collect();
        assert_eq!(shared.full(), Some(DropReason::InFlight));
        assert_eq!(shared.admit().err(), Some(DropReason::InFlight));
        assert_eq!((shared.in_flight(), waiting()), (MAX_WAITING + 8, 8));
        drop(started);
        drop(more);
        assert_eq!((shared.in_flight(), waiting()), (0, 0));
        assert_eq!(shared.full(), None);
    }
}
