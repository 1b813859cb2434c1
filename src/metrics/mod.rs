//! The Prometheus registry with the contract's metric names, and per-route handles
//! resolved once per snapshot, so the data path never looks labels up.

pub mod quantiles;
pub mod shadow;

use std::sync::OnceLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::routes::Backend;
use quantiles::{Quantiles, Sparse};
use shadow::RouteShadow;

/// Seconds; dense below 100 ms, where a proxy's and a healthy service's latency lives.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `status_class` label values; `none` is a request that got no response (the client left
/// or the connection broke before one was written).
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    pub route_target_percent: GaugeVec,
    pub route_override: IntGaugeVec,
    pub fallbacks_total: IntCounterVec,
    pub shadow_requests_total: IntCounterVec,
    pub shadow_duration_seconds: HistogramVec,
    pub rollbacks_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub config_generation: IntGauge,
    /// `[state] store = "etcd"`: whether etcd can be reached, the revision of the
    /// overrides this replica serves, and the live replicas it sees.
    pub store_up: IntGauge,
    pub store_applied_revision: IntGauge,
    pub fleet_replicas: IntGauge,
    pub upstream_healthy: IntGaugeVec,
    pub circuit_open: IntGaugeVec,
    pub rate_limited_total: IntCounterVec,
    /// Requests a forced cohort sent to a side, apart from `requests_total`.
    pub cohort_requests_total: IntCounterVec,
    pub grpc_requests_total: IntCounterVec,
    /// Webhook deliveries by result: `sent`, `failed` (after every retry), `dropped`
    /// (the queue was full).
    pub notifications_total: IntCounterVec,
    pub access_log_dropped_total: IntCounter,
    /// Requests refused before routing because their framing is ambiguous, by reason.
    pub bad_requests_total: IntCounterVec,
    /// Upstream answers refused (502, connection dropped) for their framing, by reason.
    pub bad_responses_total: IntCounterVec,
    /// Client connections open now, and those closed at once because
    /// `server.max_connections` were open.
    pub connections_active: IntGauge,
    /// The plain listeners' connections on each data-path thread (`balance`).
    pub thread_connections: IntGaugeVec,
    pub connections_refused_total: IntCounter,
    /// Client connections cut by a server limit: `header` (client_header_timeout),
    /// `send` (send_timeout).
    pub client_timeouts_total: IntCounterVec,
}

/// Why a target-bound request was served by legacy: the `reason` label of
/// `banyan_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The connection to the target failed; nothing was sent.
    Connect,
    /// The target answered 502, 503 or 504 before anything went to the client.
    Status,
    /// The target did not answer within its timeout.
    Timeout,
    /// The exchange with the target broke before an answer (reset, invalid response).
    Error,
    /// The target's circuit breaker is open.
    CircuitOpen,
    /// Health checks have every target peer out of rotation.
    Unhealthy,
}

impl FallbackReason {
    pub const ALL: [FallbackReason; 6] = [
        FallbackReason::Connect,
        FallbackReason::Status,
        FallbackReason::Timeout,
        FallbackReason::Error,
        FallbackReason::CircuitOpen,
        FallbackReason::Unhealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Connect => "connect",
            FallbackReason::Status => "status",
            FallbackReason::Timeout => "timeout",
            FallbackReason::Error => "error",
            FallbackReason::CircuitOpen => "circuit_open",
            FallbackReason::Unhealthy => "unhealthy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn int_gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

impl Metrics {
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let route_target_percent = GaugeVec::new(
            Opts::new(
                "banyan_route_target_percent",
                "Effective share of the route served by its target, in percent",
            ),
            &["route"],
        )?;
        r.register(Box::new(route_target_percent.clone()))?;
        let config_generation = IntGauge::new(
            "banyan_config_generation",
            "Number of route table snapshots applied",
        )?;
        r.register(Box::new(config_generation.clone()))?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let store_up = gauge(
            "banyan_store_up",
            "1 while the shared state store (etcd) can be reached, else 0",
        )?;
        let store_applied_revision = gauge(
            "banyan_store_applied_revision",
            "The state store revision of the overrides this replica serves",
        )?;
        let fleet_replicas = gauge(
            "banyan_fleet_replicas",
            "Live replicas sharing this replica's state store",
        )?;
        Ok(Metrics {
            requests_total: counter(
                &r,
                "banyan_requests_total",
                "Requests by route, backend and status class",
                &["route", "backend", "status_class"],
            )?,
            request_duration_seconds: histogram(
                &r,
                "banyan_request_duration_seconds",
                "Time from request start to the end of the response",
                &["route", "backend"],
            )?,
            route_target_percent,
            route_override: int_gauge(
                &r,
                "banyan_route_override",
                "1 while a runtime override governs the route",
                &["route"],
            )?,
            fallbacks_total: counter(
                &r,
                "banyan_fallbacks_total",
                "Target-bound requests served by legacy instead",
                &["route", "reason"],
            )?,
            shadow_requests_total: counter(
                &r,
                "banyan_shadow_requests_total",
                "Shadow requests by outcome",
                &["route", "outcome"],
            )?,
            shadow_duration_seconds: histogram(
                &r,
                "banyan_shadow_duration_seconds",
                "Shadow upstream response time",
                &["route"],
            )?,
            rollbacks_total: counter(
                &r,
                "banyan_rollbacks_total",
                "Rollbacks by trigger",
                &["route", "trigger"],
            )?,
            config_reloads_total: counter(
                &r,
                "banyan_config_reloads_total",
                "Route table loads by result",
                &["result"],
            )?,
            config_generation,
            store_up,
            store_applied_revision,
            fleet_replicas,
            upstream_healthy: int_gauge(
                &r,
                "banyan_upstream_healthy",
                "1 while the peer is in rotation",
                &["upstream", "peer"],
            )?,
            circuit_open: int_gauge(
                &r,
                "banyan_circuit_open",
                "1 while the upstream's circuit is open",
                &["upstream"],
            )?,
            rate_limited_total: counter(
                &r,
                "banyan_rate_limited_total",
                "Requests refused with 429 by the route's rate limit",
                &["route"],
            )?,
            cohort_requests_total: counter(
                &r,
                "banyan_cohort_requests_total",
                "Requests a forced cohort sent to a side (not in banyan_requests_total, nor in the guard's or a ramp's figures)",
                &["route", "backend", "status_class"],
            )?,
            grpc_requests_total: counter(
                &r,
                "banyan_grpc_requests_total",
                "gRPC calls by how they ended (grpc-status name); also in banyan_requests_total, where a server-side error counts as 5xx",
                &["route", "backend", "grpc_status"],
            )?,
            notifications_total: counter(
                &r,
                "banyan_notifications_total",
                "Webhook deliveries of routing changes by result: sent, failed (after retries), dropped (queue full)",
                &["result"],
            )?,
            access_log_dropped_total: {
                let c = IntCounter::new(
                    "banyan_access_log_dropped_total",
                    "Access log lines dropped because the writer fell behind",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            bad_requests_total: counter(
                &r,
                "banyan_bad_requests_total",
                "Requests refused with 400 or 501 before routing, by reason",
                &["reason"],
            )?,
            bad_responses_total: counter(
                &r,
                "banyan_bad_responses_total",
                "Upstream responses refused for ambiguous framing (the client gets 502)",
                &["reason"],
            )?,
            connections_active: {
                let g = IntGauge::new(
                    "banyan_connections_active",
                    "Client connections open on the plain and TLS listeners",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            thread_connections: int_gauge(
                &r,
                "banyan_thread_connections",
                "Client connections on each data-path thread of the plain listeners",
                &["thread"],
            )?,
            connections_refused_total: {
                let c = IntCounter::new(
                    "banyan_connections_refused_total",
                    "Client connections closed at once because server.max_connections were open",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            client_timeouts_total: counter(
                &r,
                "banyan_client_timeouts_total",
                "Client connections cut by client_header_timeout (header) or send_timeout (send)",
                &["phase"],
            )?,
            registry: r,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a family the encoder rejects is skipped.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Handles for one route, resolving each series on first use. The control plane keeps
    /// one per route name across snapshots.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            name: route.to_string(),
            legacy: SideMetrics::default(),
            target: SideMetrics::default(),
            fallbacks: Default::default(),
            rate_limited: OnceLock::new(),
            cohort: Default::default(),
            grpc: Default::default(),
            shadow: RouteShadow::new(route),
        }
    }
}

/// One side (legacy or target) of one route.
#[derive(Default)]
pub struct SideMetrics {
    by_class: [OnceLock<IntCounter>; 6],
    duration: OnceLock<Histogram>,
    /// The same durations in fine buckets, for real quantiles.
    quantiles: Quantiles,
}

pub struct RouteMetrics {
    name: String,
    legacy: SideMetrics,
    target: SideMetrics,
    fallbacks: [OnceLock<IntCounter>; 6],
    rate_limited: OnceLock<IntCounter>,
    /// Forced cohorts' requests by side (legacy, target) and status class.
    cohort: [[OnceLock<IntCounter>; 6]; 2],
    /// gRPC calls by side and grpc-status.
    grpc: [[OnceLock<IntCounter>; 17]; 2],
    /// Shadow outcomes and learned noise.
    pub shadow: RouteShadow,
}

impl RouteMetrics {
    fn side(&self, backend: Backend) -> &SideMetrics {
        match backend {
            Backend::Legacy => &self.legacy,
            Backend::Target => &self.target,
        }
    }

    /// Counts one finished request and its duration.
    pub fn record(&self, m: &Metrics, backend: Backend, status: u16, seconds: f64) {
        let side = self.side(backend);
        let class = status_class_index(status);
        side.by_class[class]
            .get_or_init(|| {
                m.requests_total.with_label_values(&[
                    &self.name,
                    backend.as_str(),
                    STATUS_CLASSES[class],
                ])
            })
            .inc();
        side.duration
            .get_or_init(|| {
                m.request_duration_seconds
                    .with_label_values(&[&self.name, backend.as_str()])
            })
            .observe(seconds);
        side.quantiles.record(seconds);
    }

    pub fn record_fallback(&self, m: &Metrics, reason: FallbackReason) {
        self.fallbacks[reason.index()]
            .get_or_init(|| {
                m.fallbacks_total
                    .with_label_values(&[&self.name, reason.as_str()])
            })
            .inc();
    }

    /// Fallbacks by reason since the route first appeared, for status.
    pub fn fallback_counts(&self) -> Vec<(&'static str, u64)> {
        FallbackReason::ALL
            .iter()
            .filter_map(|r| {
                self.fallbacks[r.index()]
                    .get()
                    .map(|c| (r.as_str(), c.get()))
            })
            .collect()
    }

    pub fn record_rate_limited(&self, m: &Metrics) {
        self.rate_limited
            .get_or_init(|| m.rate_limited_total.with_label_values(&[&self.name]))
            .inc();
    }

    /// Counts one request a forced cohort decided, apart from the split's.
    pub fn record_cohort(&self, m: &Metrics, backend: Backend, status: u16) {
        let class = status_class_index(status);
        self.cohort[backend as usize][class]
            .get_or_init(|| {
                m.cohort_requests_total.with_label_values(&[
                    &self.name,
                    backend.as_str(),
                    STATUS_CLASSES[class],
                ])
            })
            .inc();
    }

    /// Counts one gRPC call's ending (`code` a grpc-status, `names` their names).
    pub fn record_grpc(&self, m: &Metrics, backend: Backend, code: u8, names: &[&str; 17]) {
        let i = usize::from(code).min(16);
        self.grpc[backend as usize][i]
            .get_or_init(|| {
                m.grpc_requests_total
                    .with_label_values(&[&self.name, backend.as_str(), names[i]])
            })
            .inc();
    }

    /// Requests forced cohorts sent to `backend` since the route first appeared.
    pub fn cohort_requests(&self, backend: Backend) -> u64 {
        self.cohort[backend as usize]
            .iter()
            .map(|c| c.get().map_or(0, IntCounter::get))
            .sum()
    }

    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.get().map_or(0, IntCounter::get)
    }

    /// The side's request durations since the route first appeared, in fine buckets.
    pub fn durations(&self, backend: Backend) -> Sparse {
        self.side(backend).quantiles.snapshot()
    }

    /// (requests, 5xx answers) on one side since the route first appeared.
    pub fn totals(&self, backend: Backend) -> (u64, u64) {
        let side = self.side(backend);
        let count = |i: usize| side.by_class[i].get().map_or(0, IntCounter::get);
        let requests = (0..STATUS_CLASSES.len()).map(count).sum();
        (requests, count(status_class_index(500)))
    }
}

#[cfg(test)]
mod tests;
