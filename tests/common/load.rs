//! Continuous GET load on `/api/orders/...` through a proxy: `clients` keep-alive clients,
//! each on its own thread and runtime, until stopped. Every answer that is not a 200 (or
//! no answer) is kept as a failure.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Requests per client at most, so a test that forgets to stop still ends.
const MAX_PER_CLIENT: u64 = 1_000_000;

pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Client `c`'s request `i` is `GET /api/orders/{c}-{i}` from user `u{c}-{i}`.
    pub fn start(proxy: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|c| {
                let (stop, served, failures) = (
                    Arc::clone(&stop),
                    Arc::clone(&served),
                    Arc::clone(&failures),
                );
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let client = reqwest::Client::new();
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) && i < MAX_PER_CLIENT {
                            i += 1;
                            let r = client
                                .get(format!("http://{proxy}/api/orders/{c}-{i}"))
                                .header("x-user-id", format!("u{c}-{i}"))
                                .send()
                                .await;
                            let failure = match r {
                                Ok(r) if r.status() == 200 => {
                                    served.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                Ok(r) => format!("status {}", r.status()),
                                Err(e) => e.to_string(),
                            };
                            failures.lock().expect("lock").push(failure);
                        }
                    });
                })
            })
            .collect();
        Load {
            stop,
            served,
            failures,
            threads,
        }
    }

    /// 200 answers so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops every client and returns (200 answers, failures).
    pub fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load client");
        }
        let failures = std::mem::take(&mut *self.failures.lock().expect("lock"));
        (self.served.load(Ordering::Relaxed), failures)
    }
}
