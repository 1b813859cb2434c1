//! A process-wide monotonic clock in milliseconds, for state kept in atomics (peer
//! back-off, circuit cool-downs, the guard's window): a `u64` fits in an `AtomicU64`
//! where an `Instant` does not.

use std::sync::LazyLock;
use std::time::{Instant, SystemTime};

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the clock was first read; never goes back.
pub fn now_ms() -> u64 {
    START.elapsed().as_millis() as u64
}

/// Now, as RFC 3339 with milliseconds (UTC): the time format of the state files, the
/// audit log and the diff log.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
