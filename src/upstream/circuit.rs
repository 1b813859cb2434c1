//! The circuit breaker of one upstream: after `failures` consecutive failed requests it
//! opens for `cooldown`; then one request at a time probes it, and the probe's outcome
//! closes it or opens it for another cool-down. Lock-free: three atomics, read on every
//! target-bound request.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use prometheus::IntGauge;

use crate::config;

/// What the breaker allows for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Closed: send it.
    Closed,
    /// The cool-down is over and this request is the one probe.
    Probe,
    /// Open: do not send it.
    Open,
}

pub struct Breaker {
    failures_to_open: u32,
    cooldown_ms: u64,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    /// 0 while closed; else when the cool-down ends (`clock::now_ms`, never 0 once set).
    open_until: AtomicU64,
    /// When the current probe was admitted; 0 when none is out. A probe whose outcome never
    /// arrives (the client left) is replaced after another cool-down.
    probe_at: AtomicU64,
    gauge: IntGauge,
}

impl Breaker {
    pub fn new(cfg: &config::Circuit, gauge: IntGauge) -> Self {
        gauge.set(0);
        Breaker {
            failures_to_open: cfg.failures,
            cooldown_ms: (cfg.cooldown.as_millis() as u64).max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probe_at: AtomicU64::new(0),
            gauge,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Relaxed) != 0
    }

    /// What `admit` would answer now, without taking the probe: for explaining a
    /// request, which must not change what the next real one gets.
    pub fn peek(&self, now_ms: u64) -> Admit {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return Admit::Closed;
        }
        let probe = self.probe_at.load(Ordering::Relaxed);
        if now_ms < until || (probe != 0 && now_ms < probe + self.cooldown_ms) {
            return Admit::Open;
        }
        Admit::Probe
    }

    /// Closed: every request goes; the common case, answered without reading the clock.
    pub fn closed(&self) -> bool {
        self.open_until.load(Ordering::Relaxed) == 0
    }

    pub fn admit(&self, now_ms: u64) -> Admit {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return Admit::Closed;
        }
        if now_ms < until {
            return Admit::Open;
        }
        let probe = self.probe_at.load(Ordering::Relaxed);
        if probe != 0 && now_ms < probe + self.cooldown_ms {
            return Admit::Open;
        }
        let stamp = now_ms.max(1);
        match self
            .probe_at
            .compare_exchange(probe, stamp, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Open,
        }
    }

    /// The outcome of one request to the upstream.
    pub fn record(&self, ok: bool, now_ms: u64) -> Option<Transition> {
        if ok {
            // Read before written: every request to the upstream, from every thread, ends
            // here, and a write each time would pass the line between the cores.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if self.open_until.load(Ordering::Relaxed) != 0
                && self.open_until.swap(0, Ordering::AcqRel) != 0
            {
                self.probe_at.store(0, Ordering::Relaxed);
                self.gauge.set(0);
                return Some(Transition::Closed);
            }
            return None;
        }
        let reopen = now_ms.max(1) + self.cooldown_ms;
        if self.open_until.load(Ordering::Relaxed) != 0 {
            // A failed probe (or a request admitted before the breaker opened).
            self.open_until.store(reopen, Ordering::Release);
            self.probe_at.store(0, Ordering::Relaxed);
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.failures_to_open
            && self
                .open_until
                .compare_exchange(0, reopen, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            self.probe_at.store(0, Ordering::Relaxed);
            self.gauge.set(1);
            return Some(Transition::Opened);
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        let cfg = config::Circuit {
            failures: 3,
            cooldown: Duration::from_millis(1000),
        };
        Breaker::new(&cfg, IntGauge::new("g", "g").expect("gauge"))
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        assert_eq!(b.record(false, 10), None);
        assert_eq!(b.record(false, 11), None);
        assert_eq!(b.record(true, 12), None, "a success resets the count");
        assert_eq!(b.record(false, 13), None);
        assert_eq!(b.record(false, 14), None);
        assert_eq!(b.admit(14), Admit::Closed);
        assert_eq!(b.record(false, 15), Some(Transition::Opened));
        assert!(b.is_open());
        assert_eq!(b.gauge.get(), 1);
        assert_eq!(b.admit(500), Admit::Open);
    }

    #[test]
    fn one_probe_after_the_cooldown_decides() {
        let b = breaker();
        for t in 0..3 {
            b.record(false, t);
        }
        assert_eq!(b.admit(1001), Admit::Open, "opened at 2, for 1000 ms");
        assert_eq!(b.admit(1002), Admit::Probe);
        assert_eq!(b.admit(1003), Admit::Open, "only one probe at a time");
        // The probe fails: open for another cool-down.
        assert_eq!(b.record(false, 1010), None);
        assert_eq!(b.admit(1500), Admit::Open);
        assert_eq!(b.admit(2011), Admit::Probe);
        assert_eq!(b.record(true, 2020), Some(Transition::Closed));
        assert_eq!(b.admit(2021), Admit::Closed);
        assert_eq!(b.gauge.get(), 0);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_a_cooldown() {
        let b = breaker();
        for t in 0..3 {
            b.record(false, t);
        }
        assert_eq!(b.admit(1100), Admit::Probe);
        assert_eq!(b.admit(2000), Admit::Open);
        assert_eq!(b.admit(2100), Admit::Probe);
    }

    #[test]
    fn peeking_takes_no_probe() {
        let b = breaker();
        assert_eq!(b.peek(0), Admit::Closed);
        for t in 0..3 {
            b.record(false, t);
        }
        assert_eq!(b.peek(500), Admit::Open);
        for _ in 0..3 {
            assert_eq!(b.peek(1100), Admit::Probe);
        }
        assert_eq!(
            b.admit(1100),
            Admit::Probe,
            "the probe is still there to take"
        );
        assert_eq!(b.peek(1101), Admit::Open, "and once taken, peek sees it");
    }
}
