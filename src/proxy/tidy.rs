//! Each data-path thread tidies itself once a second: what it kept for a burst (spare read
//! buffers, spare request blocks) is let go once a second has passed without needing it,
//! and its allocator heap's empty pages go back to the process, which only the thread that
//! owns a heap can do (`memory::give_back` from the control loop purges the rest).

use std::cell::Cell;
use std::time::Duration;

/// Starts this thread's tidying, once per thread: a task on the thread's runtime (each
/// data-path thread runs one; with work stealing on, it tidies whichever thread runs it).
pub fn this_thread() {
    thread_local! {
        static STARTED: Cell<bool> = const { Cell::new(false) };
    }
    if STARTED.with(|s| s.replace(true)) {
        return;
    }
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            super::pending::trim_spares();
            super::spared::trim_spares();
            crate::memory::give_back(super::accept::drained());
        }
    });
}
