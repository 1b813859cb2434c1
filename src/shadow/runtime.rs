//! Where shadow work runs: its own runtime, on threads at nice 19, so that on a busy core
//! the kernel runs client requests first. A saturated proxy serves its clients at full
//! rate and sheds shadows: the in-flight cap drops what cannot keep up and counts it
//! (`outcome="dropped"`). (`SCHED_IDLE` was measured too: it sheds as many shadows and
//! also starves them behind any other process on the machine.) Connections the shadow
//! side opens are registered with this runtime, so it keeps its own kept connections
//! (`upstream::Side::Shadow`).

use tokio::runtime::{Builder, Handle};

use crate::control::priority;

/// Starts the runtime with `threads` workers and returns its handle. It lives as long as
/// the process: shadows in flight at exit are abandoned, never waited for.
pub fn start(threads: usize) -> std::io::Result<Handle> {
    let runtime = Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("banyan-shadow")
        .on_thread_start(priority::lower_this_thread)
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    // Dropping a runtime blocks until its tasks end, which would make an exit wait for the
    // slowest shadow; this one is never dropped.
    std::mem::forget(runtime);
    Ok(handle)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    fn nice() -> i32 {
        // SAFETY: gettid and getpriority take no pointers and only read.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[test]
    fn shadow_work_runs_at_the_lowest_priority() {
        let handle = super::start(1).expect("runtime");
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let _ = tx.send(nice());
        });
        let nice_there = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the task ran");
        assert_eq!(nice_there, 19, "shadow threads run at nice 19");
    }
}
