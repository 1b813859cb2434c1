//! Upstream pools: each upstream's peers, built once when the config loads (addresses
//! already resolved, so no DNS on the data path), picked round robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use crate::config;

pub struct UpstreamPool {
    pub name: String,
    peers: Vec<HttpPeer>,
    next: AtomicUsize,
    /// The Host header sent to this upstream, when it sets one.
    pub host: Option<HeaderValue>,
    pub config: config::Upstream,
}

impl UpstreamPool {
    pub fn new(cfg: &config::Upstream) -> Self {
        let peers = cfg
            .peers
            .iter()
            .map(|p| {
                let mut peer = HttpPeer::new(p.addr, false, String::new());
                let o = &mut peer.options;
                o.connection_timeout = Some(cfg.connect_timeout);
                o.total_connection_timeout = Some(cfg.connect_timeout);
                o.read_timeout = Some(cfg.read_timeout);
                o.write_timeout = Some(cfg.read_timeout);
                o.idle_timeout = Some(cfg.idle_timeout);
                peer
            })
            .collect();
        UpstreamPool {
            name: cfg.name.clone(),
            peers,
            next: AtomicUsize::new(0),
            host: cfg
                .host
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            config: cfg.clone(),
        }
    }

    /// The next peer in round-robin order. Validation guarantees at least one peer.
    pub fn pick(&self) -> &HttpPeer {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.peers[i % self.peers.len()]
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

/// All upstreams of the config, addressed by index from compiled routes.
pub struct Upstreams {
    pools: Vec<UpstreamPool>,
}

impl Upstreams {
    pub fn new(config: &config::Config) -> Self {
        Upstreams {
            pools: config.upstreams.values().map(UpstreamPool::new).collect(),
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
    use std::time::Duration;

    #[test]
    fn peers_rotate_round_robin() {
        let cfg = config::Upstream {
            name: "m".into(),
            peers: (1..=3)
                .map(|p| config::Peer {
                    spec: format!("127.0.0.1:{p}"),
                    addr: ([127, 0, 0, 1], p).into(),
                })
                .collect(),
            connect_timeout: Duration::from_millis(250),
            read_timeout: Duration::from_secs(3),
            total_timeout: None,
            idle_timeout: Duration::from_secs(4),
            host: Some("legacy.internal".into()),
            health: None,
            circuit: None,
        };
        let pool = UpstreamPool::new(&cfg);
        let ports: Vec<String> = (0..6).map(|_| pool.pick().to_string()).collect();
        assert!(
            ports[0].contains(":1") && ports[1].contains(":2") && ports[2].contains(":3"),
            "{ports:?}"
        );
        assert_eq!(ports[0], ports[3]);
        let peer = pool.pick();
        assert_eq!(
            peer.options.connection_timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(peer.options.idle_timeout, Some(Duration::from_secs(4)));
        assert_eq!(
            pool.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"legacy.internal"[..])
        );
    }
}
