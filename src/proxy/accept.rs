//! Plain listeners, accepted by banyan's own data-path threads, as nginx's workers do: each
//! thread runs a single-threaded runtime and accepts on its own copy of every plain
//! listening socket; a connection is served, start to end, on one thread, whose reactor
//! holds its socket: the one that accepted it, or the one it hands it to when that one
//! serves fewer (`balance`). Pingora's listener accepts on one thread and
//! sends each connection to a random one, wraps it in its own stream type (about 900 bytes
//! an idle client holds), and, without work stealing, can spin in its accept loop when a
//! shutdown begins. TLS listeners stay Pingora's.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use pingora::server::{ListenFds, ShutdownWatch};
use tokio::net::{TcpListener, TcpStream};

use super::balance::{Balance, Handed};
use super::listener::PlainOrH2c;

/// The accept queue asked for, as Pingora and nginx ask (the kernel caps it at somaxconn).
const BACKLOG: libc::c_int = 65535;

/// Binds a plain listener now, so that a taken port fails `banyan run` before anything
/// starts.
pub fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<std::net::TcpListener> {
    // std sets SO_REUSEADDR, as Pingora does: a restart binds while old connections linger
    // in TIME_WAIT.
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} for the {what}"))?;
    // std listens with a short queue; listening again on Linux only changes its length.
    // SAFETY: the descriptor is the listener's own and open; listen(2) reads no memory.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot set the accept queue of {addr}"));
    }
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot make {addr} non-blocking"))?;
    Ok(listener)
}

/// The plain listeners as a Pingora service: it starts the threads, and Pingora's
/// shutdown watch stops them.
pub struct PlainListeners {
    app: Arc<PlainOrH2c>,
    listeners: Vec<std::net::TcpListener>,
    threads: usize,
}

impl PlainListeners {
    pub fn new(
        app: Arc<PlainOrH2c>,
        listeners: Vec<std::net::TcpListener>,
        threads: usize,
    ) -> Self {
        PlainListeners {
            app,
            listeners,
            threads: threads.max(1),
        }
    }
}

#[async_trait]
impl pingora::services::Service for PlainListeners {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let mut ended = Vec::with_capacity(self.threads);
        let (balance, inboxes) = Balance::new(self.threads, &self.app.metrics().thread_connections);
        for (i, inbox) in inboxes.into_iter().enumerate() {
            let mut copies = Vec::with_capacity(self.listeners.len());
            for l in &self.listeners {
                match l.try_clone() {
                    Ok(copy) => copies.push(copy),
                    Err(e) => tracing::error!("data-path thread {i}: cannot copy a listener: {e}"),
                }
            }
            let (app, shutdown) = (Arc::clone(&self.app), shutdown.clone());
            let share = Share {
                balance: Arc::clone(&balance),
                me: i,
                inbox,
            };
            let (done, end) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name(format!("banyan-proxy-{i}"))
                .spawn(move || {
                    run_thread(app, copies, share, shutdown);
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => ended.push(end),
                Err(e) => tracing::error!("cannot start data-path thread {i}: {e}"),
            }
        }
        // Each thread holds its own copies; the sockets close when the last copy does.
        self.listeners.clear();
        for end in ended {
            let _ = end.await;
        }
    }

    fn name(&self) -> &str {
        "banyan plain listeners"
    }

    /// The service's own runtime only waits for the threads.
    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

thread_local! {
    /// Connections this thread serves, waited for when a shutdown stops the accepting.
    static LIVE: Cell<usize> = const { Cell::new(0) };
    /// The most it served at once since `drained` last answered yes.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// Counts a connection on this thread while it lives.
pub struct Live(());

impl Live {
    pub fn count() -> Self {
        let n = LIVE.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        PEAK.with(|p| p.set(p.get().max(n)));
        Live(())
    }
}

/// Whether most of a crowd of connections on this thread (1,000 or more) has closed since
/// the last time it said so: then its memory is worth a thorough give-back.
pub fn drained() -> bool {
    const CROWD: usize = 1000;
    let live = LIVE.with(Cell::get);
    PEAK.with(|p| {
        let peak = p.get();
        if peak >= CROWD && live <= peak / 2 {
            p.set(live);
            true
        } else {
            false
        }
    })
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// A data-path thread's part in sharing out connections: its number, and its inbox for
/// those other threads hand it.
struct Share {
    balance: Arc<Balance>,
    me: usize,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handed>,
}

fn run_thread(
    app: Arc<PlainOrH2c>,
    listeners: Vec<std::net::TcpListener>,
    share: Share,
    shutdown: ShutdownWatch,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start a data-path runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        super::tidy::this_thread();
        let mut loops = Vec::with_capacity(listeners.len() + 1);
        let Share { balance, me, inbox } = share;
        for l in listeners {
            match TcpListener::from_std(l) {
                Ok(l) => loops.push(tokio::spawn(accept(
                    l,
                    Arc::clone(&app),
                    (Arc::clone(&balance), me),
                    shutdown.clone(),
                ))),
                Err(e) => tracing::error!("cannot register a listener: {e}"),
            }
        }
        loops.push(tokio::spawn(receive(
            inbox,
            Arc::clone(&app),
            shutdown.clone(),
        )));
        for l in loops {
            let _ = l.await;
        }
        // Accepting has stopped; the connections still open end as their requests do
        // (an idle one at once). The process exits after Pingora's grace period anyway.
        while LIVE.with(Cell::get) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

async fn accept(
    listener: TcpListener,
    app: Arc<PlainOrH2c>,
    (balance, me): (Arc<Balance>, usize),
    mut shutdown: ShutdownWatch,
) {
    let mut last_warned: Option<tokio::time::Instant> = None;
    loop {
        let Some(accepted) = unless_stopping(&mut shutdown, listener.accept()).await else {
            return;
        };
        match accepted {
            Ok((tcp, peer)) => share_out(&balance, me, &app, (tcp, peer), &shutdown),
            // A connection reset before it was accepted concerns only itself.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                // Out of descriptors or memory: the queue waits a moment rather than the
                // thread spinning on the same error.
                let now = tokio::time::Instant::now();
                if last_warned.is_none_or(|t| now >= t + Duration::from_secs(5)) {
                    tracing::warn!("accepting a client connection failed: {e}");
                    last_warned = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves a connection this thread accepted, or hands it to the thread chosen for it.
fn share_out(
    balance: &Arc<Balance>,
    me: usize,
    app: &Arc<PlainOrH2c>,
    (tcp, peer): (TcpStream, SocketAddr),
    shutdown: &ShutdownWatch,
) {
    let seat = balance.seat(me);
    if seat.thread() == me {
        return app.serve_accepted(tcp, peer, seat, shutdown);
    }
    // Out of this thread's reactor first: the other thread registers it with its own.
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => return tracing::debug!("a new connection could not be handed over: {e}"),
    };
    if let Err(back) = balance.hand(Handed { tcp, peer, seat }) {
        // That thread has stopped (a shutdown is under way): served here after all.
        drop(back.seat);
        match TcpStream::from_std(back.tcp) {
            Ok(tcp) => app.serve_accepted(tcp, peer, balance.seat_here(me), shutdown),
            Err(e) => tracing::debug!("a new connection could not be served: {e}"),
        }
    }
}

/// Serves the connections other threads hand this one, until a shutdown (those still
/// waiting then close with the inbox, as connections not yet accepted do).
async fn receive(
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    app: Arc<PlainOrH2c>,
    mut shutdown: ShutdownWatch,
) {
    while let Some(Some(Handed { tcp, peer, seat })) =
        unless_stopping(&mut shutdown, inbox.recv()).await
    {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => app.serve_accepted(tcp, peer, seat, &shutdown),
            Err(e) => tracing::debug!("a handed connection could not be registered: {e}"),
        }
    }
}

/// `next`, unless a shutdown begins first (`None`).
async fn unless_stopping<T>(
    shutdown: &mut ShutdownWatch,
    next: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut next = std::pin::pin!(next);
    loop {
        if *shutdown.borrow() {
            return None;
        }
        tokio::select! {
            biased;
            changed = shutdown.changed() => if changed.is_err() {
                return None;
            },
            out = next.as_mut() => return Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_that_left_is_drained_once() {
        let mut crowd: Vec<Live> = (0..1200).map(|_| Live::count()).collect();
        assert!(!drained(), "all still open");
        crowd.truncate(700);
        assert!(!drained(), "fewer than half closed");
        crowd.truncate(100);
        assert!(drained(), "most of them closed");
        assert!(!drained(), "said once");
        drop(crowd);
        let few: Vec<Live> = (0..500).map(|_| Live::count()).collect();
        drop(few);
        assert!(!drained(), "not a crowd");
    }
}
