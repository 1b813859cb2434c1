//! Following a client's bytes for Pingora (`http1::follow`): fed whole or in pieces it
//! decides the same; and a stream it follows to a boundary between requests is one the
//! reference framer reads as whole requests ending at the same place, so a body banyan
//! lets Pingora read is never framed differently by a next hop.
#![no_main]

use banyan::http1::follow::Follower;
use banyan_fuzz::{frame_request, Framed};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], step: usize) -> (Option<String>, bool, bool) {
    let mut f = Follower::default();
    for piece in data.chunks(step.max(1)) {
        if let Err((clear, stop)) = f.feed(piece) {
            assert!(clear < piece.len(), "the refused piece is not clear of it");
            return (Some(stop.to_string()), f.following(), f.between());
        }
    }
    (None, f.following(), f.between())
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else {
        return;
    };
    let whole = run(data, data.len());
    let pieces = run(data, usize::from(step % 64) + 1);
    assert_eq!(whole, pieces, "fed in pieces of {}", step % 64 + 1);
    if let (None, true, true) = whole {
        let mut at = 0;
        while at < data.len() {
            match frame_request(&data[at..]) {
                Framed::Whole { wire_len, .. } if wire_len > 0 => at += wire_len,
                other => panic!("followed to a boundary, but the reference reads {other:?} at {at}"),
            }
        }
    }
});
