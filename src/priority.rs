//! Work that must never delay a client request runs at a lower CPU priority than the
//! data path's threads, so that when it shares a core with them the kernel runs requests
//! first. Control-plane and admin threads get nice 19 (a reload may take longer, a request
//! should not); the shadow worker nice 10 (`SHADOW_NICE`).

use std::cell::Cell;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one that runs background work on a runtime of its own (the
/// shadow worker's).
pub fn mark_background_thread() {
    BACKGROUND.with(|b| b.set(true));
}

/// Whether the calling thread is off the data path (lowered, or marked background): a
/// connection it opens is driven by its runtime, so it is kept apart from the ones client
/// requests take, which would otherwise wait on this thread's turn on the CPU.
pub fn off_the_data_path() -> bool {
    LOWERED.with(Cell::get) || BACKGROUND.with(Cell::get)
}

/// The shadow worker's nice value. Low enough that a client request waking up takes the
/// core from it (the kernel preempts on wake-up in favour of the higher weight) and that
/// it never preempts a request's thread, high enough that it still gets about a tenth of a
/// normal thread's share when the host is busy with other work: at nice 19 or in the idle
/// class, a busy neighbour (the parallel test suite, say) starved the copies into
/// `dropped`. A tenth still falls behind when neighbours keep every core busy (four busy
/// loops on two cores: 79 of 300 copies dropped, counted as `worker_behind`).
pub const SHADOW_NICE: i32 = 10;

/// Lowers the calling thread's priority to nice 19 (once per thread).
pub fn lower_this_thread() {
    if LOWERED.with(Cell::get) {
        return;
    }
    LOWERED.with(|l| l.set(true));
    if let Err(e) = set_this_thread_nice(19) {
        tracing::debug!("could not lower the thread's priority: {e}");
    }
}

/// Sets the calling thread's nice value. Linux sets nice per thread; elsewhere this does
/// nothing.
pub fn set_this_thread_nice(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; they only read and set the
        // scheduling priority of the calling thread.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    /// The calling thread's nice value.
    pub fn nice() -> i32 {
        // SAFETY: gettid and getpriority take no pointers and only read.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[test]
    fn the_calling_thread_gets_nice_19_and_others_keep_theirs() {
        let before = nice();
        std::thread::spawn(|| {
            super::lower_this_thread();
            assert_eq!(nice(), 19);
        })
        .join()
        .expect("thread");
        assert_eq!(nice(), before, "only the thread that asked");
    }
}
