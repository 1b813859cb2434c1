//! Whether one peer is in rotation. With active health checks the checker decides;
//! without them, passively: consecutive connection errors or timeouts take the peer out
//! for a back-off, after which requests try it again (the first failure takes it out
//! again at once, a success brings it back).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use prometheus::IntGauge;

/// Consecutive errors that take a peer out when no active check runs.
pub const PASSIVE_FAILURES: u32 = 3;
/// How long a passively failed peer stays out before requests try it again.
pub const PASSIVE_BACKOFF_MS: u64 = 10_000;

pub struct PeerHealth {
    up: AtomicBool,
    /// Passive mode only.
    failures: AtomicU32,
    down_until: AtomicU64,
    active: bool,
    gauge: IntGauge,
}

impl PeerHealth {
    pub fn new(active: bool, gauge: IntGauge) -> Self {
        gauge.set(1);
        PeerHealth {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            down_until: AtomicU64::new(0),
            active,
            gauge,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether a request may go to this peer now; `now` is read only when needed.
    pub fn available(&self, now: impl FnOnce() -> u64) -> bool {
        self.is_up() || (!self.active && now() >= self.down_until.load(Ordering::Relaxed))
    }

    /// The active checker's verdict.
    pub fn set_checked(&self, healthy: bool) {
        self.up.store(healthy, Ordering::Relaxed);
        self.gauge.set(i64::from(healthy));
    }

    /// A request's outcome at the connection level (5xx answers are not errors here: the
    /// peer is reachable). True when this took the peer out of rotation.
    pub fn observe(&self, ok: bool, now_ms: u64) -> bool {
        if self.active {
            return false;
        }
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if !self.is_up() {
                self.up.store(true, Ordering::Relaxed);
                self.gauge.set(1);
            }
            return false;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= PASSIVE_FAILURES {
            self.down_until
                .store(now_ms + PASSIVE_BACKOFF_MS, Ordering::Relaxed);
            if self.up.swap(false, Ordering::Relaxed) {
                self.gauge.set(0);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> IntGauge {
        IntGauge::new("g", "g").expect("gauge")
    }

    #[test]
    fn passive_errors_take_a_peer_out_for_a_backoff() {
        let p = PeerHealth::new(false, gauge());
        assert!(!p.observe(false, 0));
        assert!(!p.observe(false, 1));
        assert!(p.observe(false, 2));
        assert!(!p.is_up());
        assert_eq!(p.gauge.get(), 0);
        assert!(!p.available(|| 100));
        assert!(
            p.available(|| 2 + PASSIVE_BACKOFF_MS),
            "tried again after the back-off"
        );
        // The retry fails: out again at once.
        p.observe(false, 2 + PASSIVE_BACKOFF_MS);
        assert!(!p.available(|| 3 + PASSIVE_BACKOFF_MS));
        p.observe(true, 3 + 2 * PASSIVE_BACKOFF_MS);
        assert!(p.is_up());
        assert_eq!(p.gauge.get(), 1);
    }

    #[test]
    fn active_checks_alone_decide() {
        let p = PeerHealth::new(true, gauge());
        for t in 0..10 {
            p.observe(false, t);
        }
        assert!(p.is_up());
        p.set_checked(false);
        assert!(!p.available(|| u64::MAX));
        p.set_checked(true);
        assert!(p.available(|| 0));
    }
}
