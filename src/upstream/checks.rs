//! Active health checks, as a Pingora background service: for each upstream with a
//! `health` section, pingora-load-balancing's `HttpHealthCheck` sends `GET path` to every
//! peer each interval, counts consecutive results against the thresholds, and reports
//! flips, which put a peer in or out of the pool's rotation.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck};
use pingora::lb::{Backend, Backends};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::{Error, ErrorType};

use super::Upstreams;

/// Puts peers in and out of one pool's rotation.
struct Observer {
    upstreams: Arc<Upstreams>,
    pool: usize,
}

#[async_trait]
impl HealthObserve for Observer {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let pool = self.upstreams.get(self.pool);
        let addr = target.addr.as_inet();
        let found = pool.config.peers.iter().position(|p| Some(&p.addr) == addr);
        if let Some(i) = found {
            pool.set_checked(i, healthy);
            let spec = &pool.config.peers[i].spec;
            if healthy {
                tracing::info!(upstream = %pool.name, peer = %spec, "health check passed: peer back in rotation");
            } else {
                tracing::warn!(upstream = %pool.name, peer = %spec, "health check failed: peer out of rotation");
            }
        }
    }
}

fn accept_2xx(resp: &ResponseHeader) -> pingora::Result<()> {
    if resp.status.is_success() {
        Ok(())
    } else {
        Error::e_explain(
            ErrorType::CustomCode("health check status", resp.status.as_u16()),
            "expected 2xx",
        )
    }
}

/// The checker of one pool, or `None` without a `health` section.
fn backends(upstreams: &Arc<Upstreams>, pool: usize) -> Option<Backends> {
    let p = upstreams.get(pool);
    let cfg = &p.config;
    let health = cfg.health.as_ref()?;
    // The Host of the check: the upstream's own when it sets one, else its first peer's.
    let host = cfg.host.clone().unwrap_or_else(|| {
        cfg.peers
            .first()
            .map(|p| p.spec.clone())
            .unwrap_or_default()
    });
    let mut hc = HttpHealthCheck::new(&host, false);
    match RequestHeader::build("GET", health.path.as_bytes(), None) {
        Ok(mut req) => {
            let _ = req.insert_header(http::header::HOST, host.as_str());
            let _ = req.insert_header(http::header::USER_AGENT, "banyan-health-check");
            hc.req = req;
        }
        Err(e) => {
            tracing::error!(upstream = %p.name, "cannot build the health check request: {e}");
            return None;
        }
    }
    // The pool's own peer (TLS, SNI, CA and client certificate included); the checker
    // replaces its address with each peer's.
    hc.peer_template = p.template().clone();
    hc.peer_template.options.connection_timeout = Some(cfg.connect_timeout.min(health.timeout));
    hc.peer_template.options.read_timeout = Some(health.timeout);
    hc.peer_template.options.write_timeout = Some(health.timeout);
    hc.consecutive_failure = health.failures as usize;
    hc.consecutive_success = health.successes as usize;
    hc.validator = Some(Box::new(accept_2xx));
    hc.health_changed_callback = Some(Box::new(Observer {
        upstreams: Arc::clone(upstreams),
        pool,
    }));
    let set: BTreeSet<Backend> = cfg
        .peers
        .iter()
        .filter_map(|peer| Backend::new(&peer.addr.to_string()).ok())
        .collect();
    let mut backends = Backends::new(Static::new(set));
    backends.set_health_check(Box::new(hc));
    Some(backends)
}

pub struct HealthChecks {
    upstreams: Arc<Upstreams>,
}

impl HealthChecks {
    pub fn new(upstreams: Arc<Upstreams>) -> Self {
        HealthChecks { upstreams }
    }

    pub fn any(upstreams: &Upstreams) -> bool {
        upstreams.iter().any(|p| p.config.health.is_some())
    }
}

async fn run_one(backends: Backends, interval: std::time::Duration, mut shutdown: ShutdownWatch) {
    if let Err(e) = backends.update(|_| {}).await {
        tracing::error!("health checks cannot start: {e}");
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => backends.run_health_check(true).await,
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut tasks = Vec::new();
        for (i, pool) in self.upstreams.iter().enumerate() {
            let (Some(health), Some(b)) =
                (pool.config.health.as_ref(), backends(&self.upstreams, i))
            else {
                continue;
            };
            tasks.push(tokio::spawn(run_one(b, health.interval, shutdown.clone())));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
