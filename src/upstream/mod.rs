//! Upstream pools: each upstream's peers, built once when the config loads (addresses
//! already resolved, so no DNS on the data path), picked round robin among the peers in
//! rotation; each peer's health and each upstream's circuit breaker live beside them and
//! outlive every snapshot.

pub mod capture;
pub mod checks;
pub mod circuit;
pub mod client;
pub mod followed;
pub mod forward;
pub mod idle;
pub mod peer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};

use crate::clock::now_ms;
use crate::config;
use crate::metrics::Metrics;
use circuit::{Admit, Breaker, Transition};
use idle::IdlePool;
use peer::PeerHealth;

/// Whose kept connections an exchange takes and returns: client requests' or shadow
/// copies'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Client,
    Shadow,
}

pub struct UpstreamPool {
    pub name: String,
    peers: Vec<HttpPeer>,
    health: Vec<PeerHealth>,
    /// Per peer: connections kept alive by the fast path (Pingora keeps its own).
    idle: Vec<IdlePool>,
    /// Per peer: connections kept alive by plain-HTTP shadow copies. Apart from the
    /// clients' because each belongs to the runtime that opened it, whose thread sees its
    /// readiness: a client waiting on a connection the lower-priority shadow worker opened
    /// would wait for that worker to get the CPU.
    shadow_idle: Vec<IdlePool>,
    /// Per peer of an HTTP/1.1 upstream: the connections Pingora's client uses, made and
    /// watched by banyan (`followed.rs`), and kept by it.
    followed: Vec<Arc<followed::Connector>>,
    next: AtomicUsize,
    breaker: Option<Breaker>,
    /// The Host header sent to this upstream, when it sets one.
    pub host: Option<HeaderValue>,
    pub config: config::Upstream,
}

/// Each read's (and write's) time limit: no single one may outlast the whole exchange's
/// budget either.
fn read_limit(cfg: &config::Upstream) -> Duration {
    cfg.total_timeout
        .map_or(cfg.read_timeout, |t| t.min(cfg.read_timeout))
}

/// Requests in flight on one HTTP/2 connection to a peer before another is opened.
const H2_STREAMS: usize = 100;

impl UpstreamPool {
    /// Whether its exchanges go through Pingora's connector: TLS and HTTP/2, which
    /// banyan's own HTTP/1.1 client does not speak.
    pub fn via_pingora(&self) -> bool {
        self.config.tls.is_some() || self.config.protocol != config::Protocol::Http1
    }

    /// Each read's and write's time limit on this upstream (Pingora's peers have the same).
    pub fn read_timeout(&self) -> Duration {
        read_limit(&self.config)
    }

    pub fn new(cfg: &config::Upstream, metrics: &Metrics) -> Self {
        let http1 = cfg.protocol == config::Protocol::Http1;
        let followed: Vec<_> = cfg
            .peers
            .iter()
            .filter(|_| http1)
            .map(|p| {
                Arc::new(followed::Connector::new(
                    p.addr,
                    cfg.connect_timeout,
                    cfg.idle_timeout,
                    cfg.tls.clone(),
                ))
            })
            .collect();
        let peers = cfg
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut peer = match (&cfg.tls, followed.get(i)) {
                    // HTTP/1.1, TLS or not: banyan connects (and speaks TLS), Pingora's
                    // client speaks HTTP over what banyan watches.
                    (tls, Some(connector)) => {
                        let mut peer = HttpPeer::new(p.addr, false, String::new());
                        peer.options.custom_l4 = Some(connector.clone());
                        peer.group_key = tls.as_ref().map_or(0, |t| t.identity);
                        peer
                    }
                    (None, None) => HttpPeer::new(p.addr, false, String::new()),
                    (Some(tls), None) => {
                        // SNI is never empty here (validation refuses it): Pingora skips
                        // certificate verification for an empty one.
                        let mut peer = HttpPeer::new(p.addr, true, tls.sni.clone());
                        peer.options.ca = tls.ca.clone();
                        peer.client_cert_key = tls.client.clone();
                        peer.group_key = tls.identity;
                        peer
                    }
                };
                let o = &mut peer.options;
                // banyan removes what a client's Connection header nominates itself, and
                // never the framing fields or Host (`proxy::strict::reframe_request`);
                // Pingora's own removal would take those too.
                o.http_upstream_request_policy = HttpUpstreamRequestPolicy {
                    strip_connection_nominated: false,
                    ..HttpUpstreamRequestPolicy::standard()
                };
                if o.custom_l4.is_none() {
                    // (banyan's connector bounds its own connects)
                    o.connection_timeout = Some(cfg.connect_timeout);
                    o.total_connection_timeout = Some(cfg.connect_timeout);
                }
                let read = read_limit(cfg);
                o.read_timeout = Some(read);
                o.write_timeout = Some(read);
                o.idle_timeout = Some(cfg.idle_timeout);
                if cfg.protocol != config::Protocol::Http1 {
                    // HTTP/2 only (ALPN `h2` over TLS; prior knowledge in plain TCP), and
                    // many requests at once on one connection.
                    o.set_http_version(2, 2);
                    o.max_h2_streams = H2_STREAMS;
                }
                peer
            })
            .collect();
        let health = cfg
            .peers
            .iter()
            .map(|p| {
                PeerHealth::new(
                    cfg.health.is_some(),
                    metrics
                        .upstream_healthy
                        .with_label_values(&[&cfg.name, &p.spec]),
                )
            })
            .collect();
        UpstreamPool {
            name: cfg.name.clone(),
            peers,
            health,
            idle: cfg
                .peers
                .iter()
                .map(|_| IdlePool::new(cfg.idle_timeout))
                .collect(),
            shadow_idle: cfg
                .peers
                .iter()
                .map(|_| IdlePool::new(cfg.idle_timeout))
                .collect(),
            followed,
            next: AtomicUsize::new(0),
            breaker: cfg
                .circuit
                .as_ref()
                .map(|c| Breaker::new(c, metrics.circuit_open.with_label_values(&[&cfg.name]))),
            host: cfg
                .host
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            config: cfg.clone(),
        }
    }

    /// The next peer in rotation, round robin; `None` when every peer is out.
    pub fn pick(&self) -> Option<(usize, &HttpPeer)> {
        let n = self.peers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut now = None;
        for k in 0..n {
            let i = (start + k) % n;
            if self.health[i].available(|| *now.get_or_insert_with(now_ms)) {
                return Some((i, &self.peers[i]));
            }
        }
        None
    }

    /// The next peer round robin, in rotation or not: for when nothing better exists.
    /// Validation guarantees at least one peer.
    pub fn pick_any(&self) -> (usize, &HttpPeer) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        (i, &self.peers[i])
    }

    /// The first peer as built (TLS settings included): the template for health checks.
    pub fn template(&self) -> &HttpPeer {
        &self.peers[0]
    }

    /// A peer in rotation if there is one, else any.
    pub fn pick_or_any(&self) -> (usize, &HttpPeer) {
        self.pick().unwrap_or_else(|| self.pick_any())
    }

    /// Peer `i`'s resolved address and its kept connections for `lane`.
    pub fn peer_addr(&self, i: usize, lane: Lane) -> Option<(std::net::SocketAddr, &IdlePool)> {
        let idle = match lane {
            Lane::Client => &self.idle,
            Lane::Shadow => &self.shadow_idle,
        };
        Some((self.config.peers.get(i)?.addr, idle.get(i)?))
    }

    /// Closes kept connections the upstream closed or that idled too long.
    pub fn sweep_idle(&self) {
        self.idle
            .iter()
            .chain(&self.shadow_idle)
            .for_each(IdlePool::sweep);
        self.followed.iter().for_each(|c| c.sweep());
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether active health checks have every peer out of rotation. (Peers out by
    /// passive detection do not count: for them the circuit breaker decides.)
    pub fn all_checked_down(&self) -> bool {
        self.config.health.is_some() && !self.health.iter().any(PeerHealth::is_up)
    }

    /// What the circuit breaker allows for one request now.
    pub fn admit(&self) -> Admit {
        self.breaker.as_ref().map_or(Admit::Closed, |b| {
            if b.closed() {
                Admit::Closed
            } else {
                b.admit(now_ms())
            }
        })
    }

    /// What the circuit breaker would allow now, taking nothing (`Breaker::peek`).
    pub fn peek_admit(&self) -> Admit {
        self.breaker
            .as_ref()
            .map_or(Admit::Closed, |b| b.peek(now_ms()))
    }

    pub fn circuit_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(Breaker::is_open)
    }

    /// One request's outcome on one peer. `reachable`: the peer answered (any status);
    /// `ok`: and not with a 5xx.
    pub fn observe(&self, peer: usize, reachable: bool, ok: bool) {
        // Only failures start back-offs and cool-downs; a success needs no clock read.
        let now = if ok { 0 } else { now_ms() };
        if let Some(h) = self.health.get(peer) {
            if h.observe(reachable, now) {
                tracing::warn!(
                    upstream = %self.name,
                    peer = %self.config.peers[peer].spec,
                    "peer taken out of rotation after {} consecutive errors; tried again in {} s",
                    peer::PASSIVE_FAILURES,
                    peer::PASSIVE_BACKOFF_MS / 1000
                );
            }
        }
        if let Some(b) = &self.breaker {
            match b.record(ok, now) {
                Some(Transition::Opened) => tracing::warn!(
                    upstream = %self.name,
                    "circuit opened after {} consecutive failures; target-bound traffic goes to legacy for {:?}",
                    self.config.circuit.as_ref().map_or(0, |c| c.failures),
                    self.config.circuit.as_ref().map(|c| c.cooldown).unwrap_or_default()
                ),
                Some(Transition::Closed) => {
                    tracing::info!(upstream = %self.name, "circuit closed: the probe succeeded")
                }
                None => {}
            }
        }
    }

    /// The active checker's verdict on one peer.
    pub fn set_checked(&self, peer: usize, healthy: bool) {
        if let Some(h) = self.health.get(peer) {
            h.set_checked(healthy);
        }
    }

    /// (peer as written, in rotation) for status.
    pub fn peer_states(&self) -> Vec<(String, bool)> {
        self.config
            .peers
            .iter()
            .zip(&self.health)
            .map(|(p, h)| (p.spec.clone(), h.is_up()))
            .collect()
    }
}

/// All upstreams of the config, addressed by index from compiled routes.
pub struct Upstreams {
    pools: Vec<UpstreamPool>,
}

impl Upstreams {
    pub fn new(config: &config::Config, metrics: &Metrics) -> Self {
        Upstreams {
            pools: config
                .upstreams
                .values()
                .map(|u| UpstreamPool::new(u, metrics))
                .collect(),
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    pub fn get(&self, i: usize) -> &UpstreamPool {
        &self.pools[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &UpstreamPool> {
        self.pools.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream `m` with `n` loopback peers on ports 1..=n, no checks, no breaker.
    fn upstream(n: u16) -> config::Upstream {
        config::Upstream {
            name: "m".into(),
            peers: (1..=n)
                .map(|p| config::Peer {
                    spec: format!("127.0.0.1:{p}"),
                    addr: ([127, 0, 0, 1], p).into(),
                })
                .collect(),
            connect_timeout: Duration::from_millis(250),
            read_timeout: Duration::from_secs(3),
            total_timeout: None,
            idle_timeout: Duration::from_secs(4),
            host: None,
            health: None,
            circuit: None,
            tls: None,
            protocol: config::Protocol::Http1,
        }
    }

    #[test]
    fn peers_rotate_round_robin() {
        let cfg = config::Upstream {
            host: Some("legacy.internal".into()),
            ..upstream(3)
        };
        let metrics = Metrics::new().expect("metrics");
        let pool = UpstreamPool::new(&cfg, &metrics);
        let ports: Vec<String> = (0..6)
            .map(|_| pool.pick().map(|(_, p)| p.to_string()).unwrap_or_default())
            .collect();
        assert!(
            ports[0].contains(":1") && ports[1].contains(":2") && ports[2].contains(":3"),
            "{ports:?}"
        );
        assert_eq!(ports[0], ports[3]);
        let (_, peer) = pool.pick_any();
        // HTTP/1.1: banyan's connector connects, within the upstream's connect_timeout.
        assert!(peer.options.custom_l4.is_some());
        assert_eq!(peer.options.connection_timeout, None);
        assert_eq!(peer.options.idle_timeout, Some(Duration::from_secs(4)));
        assert_eq!(
            pool.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"legacy.internal"[..])
        );
    }

    #[tokio::test]
    async fn shadow_copies_keep_their_connections_apart_from_the_clients() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cfg = config::Upstream {
            peers: vec![config::Peer {
                spec: addr.to_string(),
                addr,
            }],
            ..upstream(1)
        };
        let metrics = Metrics::new().expect("metrics");
        let pool = UpstreamPool::new(&cfg, &metrics);
        let kept = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (_server, _) = listener.accept().await.expect("accept");
        let (at, shadow) = pool.peer_addr(0, Lane::Shadow).expect("peer");
        assert_eq!(at, addr);
        shadow.put(kept);
        let (_, client) = pool.peer_addr(0, Lane::Client).expect("peer");
        assert!(
            client.take().is_none(),
            "a client never gets a copy's connection"
        );
        assert!(shadow.take().is_some(), "the next copy does");
        assert!(pool.peer_addr(1, Lane::Client).is_none());
    }

    #[test]
    fn peers_out_of_rotation_are_skipped() {
        let cfg = config::Upstream {
            total_timeout: Some(Duration::from_secs(1)),
            health: Some(config::HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                failures: 1,
                successes: 1,
            }),
            ..upstream(2)
        };
        let metrics = Metrics::new().expect("metrics");
        let pool = UpstreamPool::new(&cfg, &metrics);
        assert_eq!(
            pool.pick_any().1.options.read_timeout,
            Some(Duration::from_secs(1)),
            "total_timeout caps every read"
        );
        pool.set_checked(0, false);
        for _ in 0..4 {
            assert_eq!(pool.pick().map(|(i, _)| i), Some(1));
        }
        pool.set_checked(1, false);
        assert!(pool.pick().is_none());
        assert!(pool.all_checked_down());
        let text = String::from_utf8(metrics.render()).expect("utf-8");
        assert!(
            text.contains("banyan_upstream_healthy{peer=\"127.0.0.1:2\",upstream=\"m\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn http2_upstreams_speak_only_http2_and_multiplex() {
        let m = Metrics::new().expect("metrics");
        let mut cfg = upstream(1);
        cfg.protocol = config::Protocol::H2c;
        let pool = UpstreamPool::new(&cfg, &m);
        let o = &pool.template().options;
        assert_eq!(
            (o.alpn.get_min_http_version(), o.alpn.get_max_http_version()),
            (2, 2)
        );
        assert_eq!(o.max_h2_streams, H2_STREAMS);
        assert!(pool.via_pingora());
        let plain = UpstreamPool::new(&upstream(1), &m);
        assert_eq!(plain.template().options.alpn.get_max_http_version(), 1);
        assert!(!plain.via_pingora());
    }
}
