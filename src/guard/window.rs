//! A sliding window of one route's target outcomes: 60 time slots covering the guard's
//! window, each with a request count, an error count and a latency histogram precise to
//! 1/8 of a power of two (12.5 %). Written by the data path with relaxed atomics and no
//! lock; a slot that comes round again is cleared by whichever request reaches it first
//! (an increment racing with that clear may be lost, which a rate over a hundred
//! requests does not notice).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const SLOTS: usize = 64;
/// Slots summed for the window; the other four are being refilled.
const WINDOW_SLOTS: u64 = 60;
/// Latency histogram: values in microseconds; below 8 exact, above that 8 buckets per
/// power of two, up to 2^36 µs (19 hours).
const BUCKETS: usize = 8 + 34 * 8;
const NO_EPOCH: u64 = u64::MAX;

struct Slot {
    epoch: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Slot {
            epoch: AtomicU64::new(NO_EPOCH),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn clear(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        for b in &self.latency {
            b.store(0, Ordering::Relaxed);
        }
    }
}

pub struct Window {
    slot_ms: u64,
    slots: Box<[Slot]>,
    pub length: Duration,
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    /// Lower bound of the bucket holding the 99th percentile (never above the true
    /// value); `None` without latency samples.
    pub p99_ms: Option<f64>,
}

fn bucket(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let e = (63 - us.leading_zeros()) as usize; // floor(log2), ≥ 3
    let e = e.min(36);
    let m = ((us >> (e - 3)) & 7) as usize;
    (8 + (e - 3) * 8 + m).min(BUCKETS - 1)
}

fn bucket_floor_us(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let e = (i - 8) / 8 + 3;
    let m = ((i - 8) % 8) as u64;
    (8 + m) << (e - 3)
}

impl Window {
    pub fn new(length: Duration) -> Self {
        let slot_ms = (length.as_millis() as u64).div_ceil(WINDOW_SLOTS).max(1);
        Window {
            slot_ms,
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
            length,
        }
    }

    fn slot(&self, now_ms: u64) -> &Slot {
        let epoch = now_ms / self.slot_ms;
        let slot = &self.slots[(epoch % SLOTS as u64) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.clear();
        }
        slot
    }

    /// One target outcome; `latency` when the target answered (or timed out).
    pub fn record(&self, now_ms: u64, ok: bool, latency: Option<Duration>) {
        let slot = self.slot(now_ms);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(l) = latency {
            slot.latency[bucket(l.as_micros() as u64)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets everything: after a rollback or a resume, old outcomes must not count.
    pub fn reset(&self) {
        for s in self.slots.iter() {
            s.epoch.store(NO_EPOCH, Ordering::Release);
            s.clear();
        }
    }

    pub fn stats(&self, now_ms: u64) -> WindowStats {
        self.sketch(now_ms).stats()
    }

    /// The window's counts and latency histogram, for other replicas to add up.
    pub fn sketch(&self, now_ms: u64) -> Sketch {
        let current = now_ms / self.slot_ms;
        let oldest = current.saturating_sub(WINDOW_SLOTS - 1);
        let mut out = WindowStats::default();
        let mut hist = [0u64; BUCKETS];
        for s in self.slots.iter() {
            let e = s.epoch.load(Ordering::Acquire);
            if e == NO_EPOCH || e < oldest || e > current {
                continue;
            }
            out.requests += u64::from(s.requests.load(Ordering::Relaxed));
            out.errors += u64::from(s.errors.load(Ordering::Relaxed));
            for (h, b) in hist.iter_mut().zip(&s.latency) {
                *h += u64::from(b.load(Ordering::Relaxed));
            }
        }
        Sketch {
            requests: out.requests,
            errors: out.errors,
            latency: hist
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i as u16, *n))
                .collect(),
        }
    }
}

/// A window's figures as plain data: counts and the latency histogram's non-empty
/// buckets. Sketches of several replicas add up to the fleet's window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sketch {
    pub requests: u64,
    pub errors: u64,
    /// (bucket, samples), buckets as [`Window`] numbers them.
    pub latency: Vec<(u16, u64)>,
}

impl Sketch {
    /// Adds `n` durations of `us` microseconds to the histogram (counts apart).
    pub fn add_latency(&mut self, us: u64, n: u64) {
        let b = bucket(us) as u16;
        match self.latency.iter_mut().find(|(i, _)| *i == b) {
            Some((_, c)) => *c += n,
            None => {
                self.latency.push((b, n));
                self.latency.sort_unstable();
            }
        }
    }

    pub fn add(&mut self, other: &Sketch) {
        self.requests += other.requests;
        self.errors += other.errors;
        let mut hist = std::collections::BTreeMap::new();
        for (b, n) in self.latency.iter().chain(&other.latency) {
            *hist.entry(*b).or_insert(0u64) += n;
        }
        self.latency = hist.into_iter().collect();
    }

    pub fn stats(&self) -> WindowStats {
        let mut out = WindowStats {
            requests: self.requests,
            errors: self.errors,
            p99_ms: None,
        };
        let mut hist: Vec<(u16, u64)> = self
            .latency
            .iter()
            .copied()
            .filter(|(b, _)| usize::from(*b) < BUCKETS)
            .collect();
        hist.sort_unstable();
        let samples: u64 = hist.iter().map(|(_, n)| n).sum();
        if samples > 0 {
            // The smallest bucket with at least 99 % of the samples at or below it.
            let rank = (samples * 99).div_ceil(100);
            let mut seen = 0;
            for (i, n) in &hist {
                seen += n;
                if seen >= rank {
                    out.p99_ms = Some(bucket_floor_us(usize::from(*i)) as f64 / 1000.0);
                    break;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_an_eighth() {
        for us in [
            0u64,
            7,
            8,
            9,
            15,
            16,
            100,
            999,
            1000,
            123_456,
            800_000,
            5_000_000_000,
        ] {
            let floor = bucket_floor_us(bucket(us));
            assert!(floor <= us, "{us}: floor {floor}");
            assert!(
                us < 8 || (us - floor) as f64 / us as f64 <= 0.125,
                "{us}: floor {floor}"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn counts_what_is_inside_the_window() {
        let w = Window::new(Duration::from_secs(60)); // 1 s slots
        for i in 0..100 {
            w.record(1_000 + i, i % 10 != 0, Some(Duration::from_millis(20)));
        }
        w.record(1_500, true, Some(Duration::from_millis(900)));
        let s = w.stats(2_000);
        assert_eq!((s.requests, s.errors), (101, 10));
        let p99 = s.p99_ms.expect("samples");
        assert!((17.5..=20.0).contains(&p99), "{p99}");
        // 61 s later the old slot has left the window.
        w.record(62_000, false, None);
        let s = w.stats(62_000);
        assert_eq!((s.requests, s.errors, s.p99_ms), (1, 1, None));
    }

    #[test]
    fn p99_follows_the_slowest_percent() {
        let w = Window::new(Duration::from_secs(10));
        for i in 0..1000u64 {
            let ms = if i < 980 { 5 } else { 1_000 };
            w.record(i, true, Some(Duration::from_millis(ms)));
        }
        let p99 = w.stats(1_000).p99_ms.expect("samples");
        assert!((875.0..=1000.0).contains(&p99), "{p99}");
        w.reset();
        assert_eq!(w.stats(1_000), WindowStats::default());
    }

    #[test]
    fn sketches_add_up_to_the_fleet_window() {
        let (a, b) = (
            Window::new(Duration::from_secs(10)),
            Window::new(Duration::from_secs(10)),
        );
        for i in 0..500u64 {
            a.record(i, i % 5 != 0, Some(Duration::from_millis(5)));
            b.record(
                i,
                true,
                Some(Duration::from_millis(if i < 492 { 5 } else { 900 })),
            );
        }
        let mut fleet = a.sketch(1_000);
        fleet.add(&b.sketch(1_000));
        let s = fleet.stats();
        assert_eq!((s.requests, s.errors), (1000, 100));
        // 8 slow answers are 1.6 % of b's but 0.8 % of the fleet's: b alone has a slow
        // p99, the fleet does not.
        assert!(b.stats(1_000).p99_ms.is_some_and(|p| p > 700.0));
        let p99 = s.p99_ms.expect("samples");
        assert!((4.0..=5.0).contains(&p99), "{p99}");
        assert_eq!(a.stats(1_000), a.sketch(1_000).stats());
        let text = serde_json::to_string(&fleet).expect("json");
        let back: Sketch = serde_json::from_str(&text).expect("back");
        assert_eq!(back, fleet);
    }

    #[test]
    fn a_slot_coming_round_again_starts_empty() {
        let w = Window::new(Duration::from_millis(600)); // 10 ms slots
        w.record(5, false, None);
        // 64 slots later the same slot is reused for a new epoch.
        w.record(645, true, None);
        let s = w.stats(645);
        assert_eq!((s.requests, s.errors), (1, 0));
    }
}
