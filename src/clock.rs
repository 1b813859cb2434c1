//! A process-wide monotonic clock in milliseconds, for state kept in atomics (peer
//! back-off, circuit cool-downs, the guard's window): a `u64` fits in an `AtomicU64`
//! where an `Instant` does not. And time limits that read the clock only when needed.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tokio::time::Sleep;

/// Milliseconds on a monotonic clock; never goes back. It is read a few times per request
/// (kept connections, circuits, the guard's window), for limits of 100 ms and more, so it
/// is the kernel's coarse clock: one read of the vDSO's page, where a precise `Instant`
/// costs a TSC read and `Instant::elapsed`'s checked arithmetic (about 4 times the
/// instructions, 1.5 % of the proxy's CPU in a profile of S1). Its tick (1–4 ms) is far
/// below anything timed with it. Every kernel Rust runs on has it (Linux 2.6.32 and later;
/// std needs 3.2), and it cannot fail for a valid clock and a valid pointer.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given, which lives here.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    // A monotonic clock's fields are never negative.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

/// Now, as RFC 3339 with milliseconds (UTC): the time format of the state files, the
/// audit log and the diff log.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// `step` within `limit` (`None`: it ran out of time), with the timer set only if the
/// first poll finds `step` not done: a write the socket takes at once, or a read whose
/// bytes are there, costs no clock read and no timer.
pub async fn within<F: Future>(limit: Duration, step: F) -> Option<F::Output> {
    let mut step = std::pin::pin!(step);
    match first_poll(step.as_mut()).await {
        Poll::Ready(out) => Some(out),
        Poll::Pending => tokio::time::timeout(limit, step).await.ok(),
    }
}

/// Polls `step` once, without waiting.
async fn first_poll<F: Future>(mut step: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(step.as_mut().poll(cx))).await
}

/// `step` within `limit`, as `within`, on a timer the caller keeps (a connection's):
/// moved to the step's deadline instead of a timer made and taken out of tokio's wheel
/// for each step. Moving a timer to a later deadline is one atomic store.
pub async fn within_on<F: Future>(
    mut timer: Pin<&mut Sleep>,
    limit: Duration,
    step: F,
) -> Option<F::Output> {
    let mut step = std::pin::pin!(step);
    if let Poll::Ready(out) = first_poll(step.as_mut()).await {
        return Some(out);
    }
    timer.as_mut().reset(tokio::time::Instant::now() + limit);
    tokio::select! {
        biased;
        out = step => Some(out),
        () = timer => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_kept_timer_bounds_each_step_it_is_lent_to() {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(far));
        let done = within_on(timer.as_mut(), Duration::ZERO, async { 7 }).await;
        assert_eq!(done, Some(7));
        assert_eq!(
            timer.deadline(),
            far,
            "a step done at once leaves the timer be"
        );
        let stuck = std::future::pending::<()>();
        assert_eq!(
            within_on(timer.as_mut(), Duration::from_millis(10), stuck).await,
            None
        );
        let later = async {
            tokio::task::yield_now().await;
            8
        };
        let bounded = within_on(timer.as_mut(), Duration::from_secs(60), later).await;
        assert_eq!(bounded, Some(8), "a timer that fired is set again");
    }

    #[test]
    fn the_millisecond_clock_keeps_pace_with_instant_and_never_goes_back() {
        let (start, at) = (now_ms(), Instant::now());
        let mut last = start;
        while at.elapsed() < Duration::from_millis(30) {
            let now = now_ms();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        let passed = now_ms() - start;
        let real = at.elapsed().as_millis() as u64;
        // The coarse clock moves in ticks of 1–10 ms.
        assert!(
            passed + 10 >= 30 && passed <= real + 10,
            "{passed} ms passed on it, {real} ms on Instant"
        );
    }

    #[tokio::test]
    async fn a_step_done_at_once_needs_no_timer_and_a_stuck_one_runs_out() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await, Some(7));
        let stuck = std::future::pending::<()>();
        assert_eq!(within(Duration::from_millis(10), stuck).await, None);
        let later = async {
            tokio::task::yield_now().await;
            8
        };
        assert_eq!(within(Duration::from_secs(60), later).await, Some(8));
    }
}
