//! Request durations in fine log-linear buckets, for real quantiles (status, the
//! dashboard's p99) rather than the bounds of the Prometheus histogram's fifteen buckets.
//! Microseconds: exact below 64 µs, then 32 buckets per power of two, so that a bucket's
//! midpoint is within 1.6 % of any duration in it; up to 2^36 µs (19 hours). Recording is
//! one relaxed atomic add; the buckets are allocated on a side's first request.
//! Readers take sparse snapshots and subtract two of them for a window's quantile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Durations below this many microseconds have a bucket each.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above `LINEAR`: 2^5.
const SUB_BITS: u32 = 5;
/// The first power of two above the linear part (2^6 = 64) and the last one kept.
const FIRST_EXP: u32 = 6;
const LAST_EXP: u32 = 35;
pub const BUCKETS: usize =
    LINEAR as usize + ((LAST_EXP - FIRST_EXP + 1) as usize) * (1 << SUB_BITS);

#[derive(Default)]
pub struct Quantiles {
    buckets: OnceLock<Box<[AtomicU64]>>,
}

/// The bucket of a duration in microseconds.
pub fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()).min(LAST_EXP);
    let us = us.min((2 << LAST_EXP) - 1);
    let sub = (us >> (exp - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    LINEAR as usize + ((exp - FIRST_EXP) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The duration a bucket stands for, in microseconds: its midpoint.
pub fn value(i: usize) -> f64 {
    if (i as u64) < LINEAR {
        return i as f64 + 0.5;
    }
    let k = i - LINEAR as usize;
    let exp = FIRST_EXP + (k >> SUB_BITS) as u32;
    let sub = (k & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    let lower = ((1 << SUB_BITS) + sub) * width;
    lower as f64 + width as f64 / 2.0
}

/// Counts per bucket at one moment, non-zero buckets only, by bucket.
pub type Sparse = Vec<(u16, u64)>;

impl Quantiles {
    pub fn record(&self, seconds: f64) {
        let us = (seconds * 1e6) as u64;
        let buckets = self
            .buckets
            .get_or_init(|| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect());
        if let Some(b) = buckets.get(index(us)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Sparse {
        let Some(buckets) = self.buckets.get() else {
            return Vec::new();
        };
        buckets
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let n = b.load(Ordering::Relaxed);
                (n > 0).then_some((i as u16, n))
            })
            .collect()
    }
}

/// The `q` quantile (0–1), in milliseconds, of the durations recorded between two
/// snapshots of one `Quantiles`; `None` when there were none.
pub fn between(now: &Sparse, then: &Sparse, q: f64) -> Option<f64> {
    let mut then = then.iter().peekable();
    let delta: Vec<(u16, u64)> = now
        .iter()
        .map(|&(i, n)| {
            while then.peek().is_some_and(|(j, _)| *j < i) {
                then.next();
            }
            let before = match then.peek() {
                Some(&&(j, m)) if j == i => m,
                _ => 0,
            };
            (i, n.saturating_sub(before))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: u64 = delta.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, n) in delta {
        seen += n;
        if seen >= rank {
            return Some(value(i as usize) / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_cover_the_range() {
        assert_eq!(index(0), 0);
        assert_eq!(index(63), 63);
        assert_eq!(index(64), 64);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let i = index(us);
            assert!(i >= last, "{us}");
            last = i;
        }
    }

    #[test]
    fn a_bucket_stands_within_two_percent_of_what_it_holds() {
        for us in (64..50_000_000u64)
            .step_by(4999)
            .chain([64, 65, 127, 128, 1_000_000])
        {
            let v = value(index(us));
            let err = (v - us as f64).abs() / us as f64;
            assert!(err <= 0.016, "{us} µs → {v} ({err:.4})");
        }
    }

    #[test]
    fn window_quantiles_match_the_sorted_durations() {
        let q = Quantiles::default();
        assert!(between(&q.snapshot(), &Vec::new(), 0.99).is_none());
        // Before the window: slow requests that must not count.
        for _ in 0..1000 {
            q.record(5.0);
        }
        let then = q.snapshot();
        let mut seen = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..20_000 {
            // A spread from 50 µs to ~400 ms.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ms = 0.05 * (1.0 + (x >> 40) as f64 / (1u64 << 24) as f64).powf(13.0);
            seen.push(ms);
            q.record(ms / 1000.0);
        }
        seen.sort_by(f64::total_cmp);
        let now = q.snapshot();
        for p in [0.5, 0.9, 0.99, 0.999] {
            let exact = seen[((seen.len() as f64 * p).ceil() as usize).saturating_sub(1)];
            let got = between(&now, &then, p).expect("a quantile");
            let err = (got - exact).abs() / exact;
            assert!(err < 0.02, "p{p}: {got} ms vs {exact} ms ({err:.4})");
        }
    }
}
