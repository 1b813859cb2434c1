//! The chunked decoder, both ways: fed whole or in two pieces it decides the same; what it
//! accepts the reference decoder reads alike; and banyan's own chunks decode to the data.
#![no_main]

use banyan::http1::chunked::{self, Decoder};
use banyan_fuzz::dechunk;
use libfuzzer_sys::fuzz_target;

fn run(pieces: &[&[u8]]) -> (Result<usize, ()>, bool, Vec<u8>) {
    let mut d = Decoder::default();
    let mut data = Vec::new();
    let mut taken = 0;
    for p in pieces {
        match d.feed(p, |x| data.extend_from_slice(x)) {
            Ok(n) => taken += n,
            Err(_) => return (Err(()), false, data),
        }
        if d.done() {
            break;
        }
    }
    (Ok(taken), d.done(), data)
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let split = usize::from(split).min(data.len());
    let whole = run(&[data]);
    let halves = run(&[&data[..split], &data[split..]]);
    assert_eq!(whole, halves, "split at {split}");
    if let (Ok(n), true, decoded) = &whole {
        match dechunk(data) {
            Some(Ok((m, reference))) => {
                assert_eq!(*n, m, "where the body ends");
                assert_eq!(decoded, &reference);
            }
            other => panic!("banyan ended a body the reference reads as {other:?}"),
        }
        let mut out = Vec::new();
        for piece in decoded.chunks(7) {
            chunked::encode(&mut out, piece);
        }
        out.extend_from_slice(chunked::LAST);
        assert_eq!(
            chunked::decode_whole(&out),
            Ok(Some((out.len(), decoded.clone())))
        );
    }
});
