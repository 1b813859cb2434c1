//! Control-plane and admin work runs at the lowest CPU priority, so that when it shares a
//! core with the data path (a reload, a large status document), the kernel runs requests
//! first: a reload may take longer, a request should not.

use std::cell::Cell;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Lowers the calling thread's priority to nice 19 (once per thread). Linux sets nice per
/// thread; elsewhere this does nothing.
pub fn lower_this_thread() {
    if LOWERED.with(Cell::get) {
        return;
    }
    LOWERED.with(|l| l.set(true));
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers; they only read and set the
        // scheduling priority of the calling thread.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19)
        };
        if rc != 0 {
            tracing::debug!(
                "could not lower the control thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_calling_thread_gets_nice_19() {
        std::thread::spawn(|| {
            super::lower_this_thread();
            // SAFETY: as above; getpriority only reads.
            let nice = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            };
            assert_eq!(nice, 19);
        })
        .join()
        .expect("thread");
    }
}
