//! Per-route rate limits: a token bucket (GCRA, from `governor`) per client key — the
//! client's IP or a header's value — refilled at `rate` per second, holding `burst`.
//! Keys are hashed to 64 bits, so the data path allocates nothing to look one up. A
//! limiter outlives snapshots as long as its route's limits do not change, so a reload
//! does not refill every bucket.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use xxhash_rust::xxh3::xxh3_64;

use crate::routes::request::Headers;
use crate::routes::{RateKey, RateLimitDef};

pub struct Limiter {
    pub def: RateLimitDef,
    inner: RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock>,
}

impl Limiter {
    /// `None` for a rate too small or too large to express (validation keeps rates above 0).
    pub fn new(def: &RateLimitDef) -> Option<Limiter> {
        let period = Duration::try_from_secs_f64(1.0 / def.rate).ok()?;
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(def.burst)?);
        Some(Limiter {
            def: def.clone(),
            inner: RateLimiter::dashmap(quota),
        })
    }

    /// Whether this limiter enforces exactly `def`.
    pub fn enforces(&self, def: &RateLimitDef) -> bool {
        self.def.rate == def.rate && self.def.burst == def.burst && self.def.key == def.key
    }

    /// The request's key: the header's value, or the client's IP when the key is the IP
    /// or the header is missing.
    pub fn key(&self, headers: Headers, client: Option<IpAddr>) -> u64 {
        if let RateKey::Header(name) = &self.def.key {
            if let Some(v) = headers.get(name) {
                return xxh3_64(v);
            }
        }
        match client {
            Some(IpAddr::V4(a)) => xxh3_64(&a.octets()),
            Some(IpAddr::V6(a)) => xxh3_64(&a.octets()),
            None => 0,
        }
    }

    /// `Err(wait)` when the key has no token now: try again after `wait`.
    pub fn check(&self, key: u64) -> Result<(), Duration> {
        self.inner
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.inner.clock().now()))
    }

    /// Forgets keys whose buckets are full again; the control plane calls it now and then
    /// so that a scan over many client addresses does not keep memory.
    pub fn forget_idle(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    pub fn keys(&self) -> usize {
        self.inner.len()
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn limiter(rate: f64, burst: u32, key: RateKey) -> Limiter {
        Limiter::new(&RateLimitDef { rate, burst, key }).expect("limiter")
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(1.0, 3, RateKey::Ip);
        let k = l.key(Headers::Map(&HeaderMap::new()), Some([10, 0, 0, 1].into()));
        for _ in 0..3 {
            assert!(l.check(k).is_ok());
        }
        let wait = l.check(k).expect_err("empty");
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert_eq!(retry_after_seconds(wait), 1);
        // Another client has its own bucket.
        let other = l.key(Headers::Map(&HeaderMap::new()), Some([10, 0, 0, 2].into()));
        assert!(l.check(other).is_ok());
        assert_eq!(l.keys(), 2);
    }

    #[test]
    fn header_keys_fall_back_to_the_address() {
        let l = limiter(
            100.0,
            1,
            RateKey::Header(http::HeaderName::from_static("x-api-key")),
        );
        let ip = Some([10, 0, 0, 1].into());
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "alice".parse().expect("value"));
        let alice = l.key(Headers::Map(&h), ip);
        h.insert("x-api-key", "bob".parse().expect("value"));
        let bob = l.key(Headers::Map(&h), ip);
        assert_ne!(alice, bob);
        assert_eq!(
            l.key(Headers::Map(&HeaderMap::new()), ip),
            l.key(Headers::Map(&HeaderMap::new()), ip)
        );
        assert_ne!(l.key(Headers::Map(&HeaderMap::new()), ip), alice);
        assert!(l.check(alice).is_ok());
        assert!(l.check(alice).is_err());
        assert!(l.check(bob).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn fractional_rates_are_kept() {
        let l = limiter(0.5, 1, RateKey::Ip);
        assert!(l.check(1).is_ok());
        let wait = l.check(1).expect_err("empty");
        assert!(wait > Duration::from_secs(1), "{wait:?}");
    }
}
