//! Client connections spread evenly over the data-path threads. Every thread accepts on
//! its own copy of the listening sockets and the first one awake wins, so the thread that
//! was idle wins most of a burst: the 64 connections of one load test landed 20 on one
//! thread and 44 on the other, and the busy thread then sets the pace while the other
//! sleeps and wakes for a few requests at a time (more CPU per request for both; nginx's
//! workers do the same). A thread that accepts a connection while another serves fewer
//! hands it over, before a byte is read, as Envoy's exact balance does; the connection is
//! then served start to end on that thread and registered with its reactor only.
//! Connections are counted from the moment a thread is chosen for them, so a burst
//! accepted by one thread is shared out before the others have started serving any.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A connection handed from the thread that accepted it to the one that serves it.
pub struct Handed {
    pub tcp: std::net::TcpStream,
    pub peer: SocketAddr,
    pub seat: Seat,
}

/// The threads' counts of connections (`banyan_thread_connections`, the gauge being the
/// count), and each thread's inbox for handed ones.
pub struct Balance {
    loads: Vec<IntGauge>,
    inboxes: Vec<UnboundedSender<Handed>>,
}

impl Balance {
    /// For `threads` threads (at least one); the receivers go to the threads, in order.
    pub fn new(
        threads: usize,
        gauges: &IntGaugeVec,
    ) -> (Arc<Self>, Vec<UnboundedReceiver<Handed>>) {
        let threads = threads.max(1);
        let (inboxes, receivers) = (0..threads).map(|_| unbounded_channel()).unzip();
        let loads = (0..threads)
            .map(|i| {
                let gauge = gauges.with_label_values(&[&i.to_string()]);
                gauge.set(0);
                gauge
            })
            .collect();
        (Arc::new(Balance { loads, inboxes }), receivers)
    }

    /// A seat for a connection thread `mine` accepted, on the thread that is to serve it.
    pub fn seat(self: &Arc<Self>, mine: usize) -> Seat {
        let loads = self
            .loads
            .iter()
            .map(|l| usize::try_from(l.get()).unwrap_or(0));
        self.seat_here(pick(loads, mine))
    }

    /// A seat on `thread` itself, whatever the others serve.
    pub fn seat_here(self: &Arc<Self>, thread: usize) -> Seat {
        let thread = thread.min(self.loads.len() - 1);
        self.loads[thread].inc();
        Seat {
            balance: Arc::clone(self),
            thread,
        }
    }

    /// Sends the connection to its seat's thread; it comes back if that thread has ended.
    pub fn hand(&self, handed: Handed) -> Result<(), Handed> {
        self.inboxes[handed.seat.thread]
            .send(handed)
            .map_err(|e| e.0)
    }

    #[cfg(test)]
    fn loads(&self) -> Vec<i64> {
        self.loads.iter().map(IntGauge::get).collect()
    }
}

/// The thread to serve a new connection accepted by thread `mine`, given each thread's
/// count: the one serving fewest, and `mine` while none serves fewer than it.
pub fn pick(loads: impl Iterator<Item = usize>, mine: usize) -> usize {
    // A `mine` that is not counted serves "more than anyone".
    let (mut best, mut own) = (None, usize::MAX);
    for (i, load) in loads.enumerate() {
        if i == mine {
            own = load;
        }
        if best.is_none_or(|(_, least)| load < least) {
            best = Some((i, load));
        }
    }
    match best {
        Some((i, least)) if least < own => i,
        _ => mine,
    }
}

/// A connection's place in its thread's count, given up when dropped (with the connection,
/// or when it could not be served).
pub struct Seat {
    balance: Arc<Balance>,
    thread: usize,
}

impl Seat {
    pub fn thread(&self) -> usize {
        self.thread
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.balance.loads[self.thread].dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_thread_serving_fewest_and_stays_on_a_tie() {
        assert_eq!(pick([3, 3].into_iter(), 0), 0);
        assert_eq!(pick([3, 2].into_iter(), 0), 1);
        assert_eq!(pick([2, 3].into_iter(), 1), 0);
        assert_eq!(
            pick([4, 1, 1, 5].into_iter(), 3),
            1,
            "the first of the least"
        );
        assert_eq!(pick([0].into_iter(), 0), 0);
        assert_eq!(pick([5, 0].into_iter(), 7), 1, "a thread not counted");
    }

    #[test]
    fn a_burst_on_one_thread_is_shared_out_and_seats_given_up_count_down() {
        let gauges =
            IntGaugeVec::new(prometheus::Opts::new("t", "t"), &["thread"]).expect("a gauge");
        let (balance, _receivers) = Balance::new(2, &gauges);
        let seats: Vec<Seat> = (0..64).map(|_| balance.seat(0)).collect();
        assert_eq!(balance.loads(), vec![32, 32]);
        assert_eq!(gauges.with_label_values(&["0"]).get(), 32);
        let on_one = seats.iter().filter(|s| s.thread() == 1).count();
        assert_eq!(on_one, 32);
        drop(seats);
        assert_eq!(balance.loads(), vec![0, 0]);
        assert_eq!(
            gauges.with_label_values(&["1"]).get(),
            0,
            "the gauge is the count"
        );
    }

    #[test]
    fn a_connection_handed_to_an_ended_thread_comes_back() {
        let gauges =
            IntGaugeVec::new(prometheus::Opts::new("t", "t"), &["thread"]).expect("a gauge");
        let (balance, mut receivers) = Balance::new(2, &gauges);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let tcp = std::net::TcpStream::connect(addr).expect("a connection");
        let busy = balance.seat_here(1);
        let seat = balance.seat(1);
        assert_eq!((busy.thread(), seat.thread()), (1, 0));
        let handed = Handed {
            tcp,
            peer: addr,
            seat,
        };
        let handed = match balance.hand(handed) {
            Ok(()) => receivers[0].try_recv().expect("in thread 0's inbox"),
            Err(_) => panic!("thread 0 is there"),
        };
        receivers.remove(0);
        assert!(balance.hand(handed).is_err(), "thread 0 has ended");
    }
}
