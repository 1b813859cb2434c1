//! The shadow worker: a thread of its own with its own runtime, at a lower CPU priority
//! than the data path's (`crate::priority::SHADOW_NICE`). The data path hands it finished
//! requests' copies through a lock-free channel and goes on; the worker sends them and
//! compares the answers when the cores have time, and a client request that becomes ready
//! takes the core back from it: the kernel preempts the copy mid-way, where on the data
//! path's runtime a client task would queue behind it until it yielded. While the cores
//! are busy, copies wait in the channel, each holding its in-flight slot, and beyond
//! `shadow::MAX_WAITING` waiting or `max_in_flight` under way new ones are dropped and
//! counted with the bound that turned them away: when CPU runs short, mirroring gives
//! way, clients do not. Once started, a copy still waits on this runtime for a moment
//! without client requests (`quiet.rs`) before it is sent.
//!
//! Everything a copy touches belongs to this runtime: the connections it opens are polled
//! by this thread alone, which is why shadow copies keep their own connections
//! (`upstream::Lane`).

use std::future::Future;
use std::io;

use tokio::sync::mpsc;

/// The sending side; dropping it stops the worker (copies not yet done are abandoned).
pub struct Worker<T> {
    tx: mpsc::UnboundedSender<T>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts the worker's thread: `serve` runs, as a task of its own, for each item sent.
    pub fn start<F, Fut>(name: &str, serve: F) -> io::Result<Self>
    where
        F: Fn(T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<T>();
        let thread = name.to_string();
        std::thread::Builder::new()
            .name(thread.clone())
            .spawn(move || {
                crate::priority::mark_background_thread();
                let nice = crate::priority::SHADOW_NICE;
                if let Err(e) = crate::priority::set_this_thread_nice(nice) {
                    tracing::warn!("{thread} runs at the data path's priority: {e}");
                }
                runtime.block_on(async move {
                    while let Some(item) = rx.recv().await {
                        tokio::spawn(serve(item));
                    }
                });
            })?;
        Ok(Worker { tx })
    }

    /// Hands `item` to the worker, or gives it back when the worker is gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        self.tx.send(item).map_err(|e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, RecvTimeoutError};
    use std::time::Duration;

    const DEADLINE: Duration = Duration::from_secs(10);

    #[test]
    fn items_are_served_on_a_lower_priority_thread_of_its_own() {
        let (back, answers) = channel();
        let worker = Worker::start("test-shadow", move |n: u32| {
            let back = back.clone();
            async move {
                // Served inside the worker's runtime, where timers work.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let name = std::thread::current().name().map(str::to_string);
                #[cfg(target_os = "linux")]
                let nice = crate::priority::tests::nice();
                #[cfg(not(target_os = "linux"))]
                let nice = crate::priority::SHADOW_NICE;
                assert!(crate::priority::off_the_data_path(), "marked background");
                let _ = back.send((n, name, nice));
            }
        })
        .expect("start");
        for n in 0..3 {
            assert!(worker.send(n).is_ok());
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (n, name, nice) = answers.recv_timeout(DEADLINE).expect("served");
            assert_eq!(name.as_deref(), Some("test-shadow"));
            assert_eq!(nice, crate::priority::SHADOW_NICE);
            seen.push(n);
        }
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn dropping_the_worker_stops_its_thread() {
        let (alive, ended) = channel::<()>();
        let worker = Worker::start("test-shadow-stop", move |()| {
            let _alive = alive.clone();
            async {}
        })
        .expect("start");
        assert!(worker.send(()).is_ok());
        drop(worker);
        // The closure, and with it the last sender, goes when the thread's loop ends.
        assert_eq!(
            ended.recv_timeout(DEADLINE),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
