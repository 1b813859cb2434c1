//! The split: which side of a route a request goes to. Part of the contract, so that every
//! instance, every restart and any outside tool agree on who goes where:
//!
//! `bucket = xxh3_64(salt ‖ 0x00 ‖ key) mod 10000`, target iff `bucket < percent × 100`.
//!
//! Percent is kept as basis points (hundredths of a percent, 0..=10000), so the
//! comparison is exact integer arithmetic.

use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

pub const BUCKETS: u16 = 10_000;

/// Hashing input up to this size is assembled on the stack; longer keys are streamed.
const STACK_INPUT: usize = 256;

/// A route's salt with its 0x00 separator, prepared once when the route table compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salt {
    text: String,
    with_separator: Box<[u8]>,
}

impl Salt {
    pub fn new(text: &str) -> Self {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(0);
        Salt {
            text: text.to_string(),
            with_separator: bytes.into_boxed_slice(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The bucket of a sticky key under this salt.
    pub fn bucket(&self, key: &[u8]) -> u16 {
        bucket_of(&self.with_separator, key)
    }
}

fn bucket_of(salt0: &[u8], key: &[u8]) -> u16 {
    let total = salt0.len() + key.len();
    let hash = if total <= STACK_INPUT {
        let mut buf = [0u8; STACK_INPUT];
        buf[..salt0.len()].copy_from_slice(salt0);
        buf[salt0.len()..total].copy_from_slice(key);
        xxh3_64(&buf[..total])
    } else {
        let mut h = Xxh3Default::new();
        h.update(salt0);
        h.update(key);
        h.digest()
    };
    (hash % u64::from(BUCKETS)) as u16
}

/// `xxh3_64(salt ‖ 0x00 ‖ key) mod 10000`.
pub fn bucket(salt: &str, key: &[u8]) -> u16 {
    Salt::new(salt).bucket(key)
}

/// Whether a bucket is inside the target share. `percent_bp` is basis points (0..=10000).
pub fn in_target(bucket: u16, percent_bp: u16) -> bool {
    bucket < percent_bp
}

/// A bucket for a request without its sticky key: uniform, not reproducible.
pub fn random_bucket() -> u16 {
    fastrand::u16(0..BUCKETS)
}

/// Percent as written (0–100, two decimals) to basis points; `None` when out of range or
/// more precise than 0.01.
pub fn percent_to_bp(percent: f64) -> Option<u16> {
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return None;
    }
    let scaled = percent * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return None;
    }
    Some(rounded as u16)
}

/// Basis points back to a percent number for JSON and metrics (25.5 for 2550).
pub fn bp_to_percent(bp: u16) -> f64 {
    f64::from(bp) / 100.0
}

/// Basis points as text with two decimals ("25.00").
pub fn bp_to_text(bp: u16) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed outside this code base, with Python's `xxhash` package:
    /// `xxhash.xxh3_64_intdigest(salt.encode() + b"\x00" + key.encode()) % 10000`.
    #[test]
    fn buckets_match_the_formula_computed_independently() {
        let cases = [
            ("orders", "user-1", 396, 0xa37eaa0f32d5ce6c_u64),
            ("orders", "user-2", 875, 0x9a98bc241cbe506b),
            ("orders", "alice", 5440, 0xb7b1a3d86efcfd10),
            ("orders-v2", "alice", 5182, 0xd5faeaaa4fe1629e),
            ("checkout", "42", 2363, 0xf62e690fd048fbeb),
            ("orders/shadow", "user-1", 7377, 0xe14dabe6eab866d1),
            ("orders", "", 5016, 0x9e1a689d722ecd88),
        ];
        for (salt, key, expected, hash) in cases {
            let mut input = salt.as_bytes().to_vec();
            input.push(0);
            input.extend_from_slice(key.as_bytes());
            assert_eq!(xxh3_64(&input), hash, "{salt}/{key}");
            assert_eq!(bucket(salt, key.as_bytes()), expected, "{salt}/{key}");
        }
    }

    #[test]
    fn long_keys_stream_to_the_same_hash() {
        let key = vec![b'k'; 5000];
        let mut input = b"orders\0".to_vec();
        input.extend_from_slice(&key);
        let expected = (xxh3_64(&input) % 10_000) as u16;
        assert_eq!(bucket("orders", &key), expected);
        // Right at the boundary between the stack buffer and streaming.
        for len in [STACK_INPUT - 8, STACK_INPUT - 7, STACK_INPUT - 6] {
            let key = vec![b'x'; len];
            let mut input = b"orders\0".to_vec();
            input.extend_from_slice(&key);
            assert_eq!(bucket("orders", &key), (xxh3_64(&input) % 10_000) as u16);
        }
    }

    #[test]
    fn distribution_is_within_one_percent_over_100k_keys() {
        let salt = Salt::new("orders");
        for percent_bp in [100u16, 2000, 2500, 5000, 9000] {
            let n = 100_000u32;
            let inside = (0..n)
                .filter(|i| in_target(salt.bucket(format!("user-{i}").as_bytes()), percent_bp))
                .count() as f64;
            let share = inside / f64::from(n);
            let want = f64::from(percent_bp) / 10_000.0;
            assert!((share - want).abs() <= 0.01, "{percent_bp}bp: got {share}");
        }
    }

    #[test]
    fn ramping_up_never_moves_a_key_back_to_legacy() {
        let salt = Salt::new("orders");
        let steps = [0u16, 1, 100, 500, 1000, 2500, 5000, 7500, 9999, 10_000];
        for i in 0..20_000u32 {
            let b = salt.bucket(format!("u{i}").as_bytes());
            let mut was_target = false;
            for &p in &steps {
                let now = in_target(b, p);
                assert!(!was_target || now, "key u{i} left target at {p}bp");
                was_target = now;
            }
            assert!(!in_target(b, 0));
            assert!(in_target(b, 10_000));
        }
    }

    #[test]
    fn the_salt_changes_who_is_in() {
        let a = Salt::new("orders");
        let b = Salt::new("orders-v2");
        let moved = (0..1000)
            .filter(|i| {
                let k = format!("u{i}");
                a.bucket(k.as_bytes()) != b.bucket(k.as_bytes())
            })
            .count();
        assert!(moved > 900);
    }

    #[test]
    fn percent_parsing_allows_two_decimals_only() {
        assert_eq!(percent_to_bp(0.0), Some(0));
        assert_eq!(percent_to_bp(25.0), Some(2500));
        assert_eq!(percent_to_bp(0.01), Some(1));
        assert_eq!(percent_to_bp(33.33), Some(3333));
        assert_eq!(percent_to_bp(100.0), Some(10_000));
        assert_eq!(percent_to_bp(0.001), None);
        assert_eq!(percent_to_bp(12.345), None);
        assert_eq!(percent_to_bp(-1.0), None);
        assert_eq!(percent_to_bp(100.01), None);
        assert_eq!(percent_to_bp(f64::NAN), None);
        assert_eq!(bp_to_text(2550), "25.50");
        assert_eq!(bp_to_text(1), "0.01");
        assert_eq!(bp_to_percent(2550), 25.5);
    }

    #[test]
    fn random_buckets_stay_in_range() {
        assert!((0..10_000).all(|_| random_bucket() < BUCKETS));
    }
}
