//! Following an upstream's answers below Pingora (`http1::answers`): never panics, and fed
//! whole or in pieces it reaches the same verdict and the same idea of whether the
//! connection is between exchanges (so whether a connection is kept cannot depend on how
//! the upstream's bytes were split into reads).
#![no_main]

use banyan::http1::answers::Answers;
use libfuzzer_sys::fuzz_target;

fn run(request: &[u8], data: &[u8], step: usize) -> (Option<&'static str>, bool) {
    let mut a = Answers::default();
    a.sent(request);
    for piece in data.chunks(step.max(1)) {
        if let Err(why) = a.received(piece) {
            return (Some(why.as_str()), false);
        }
    }
    (None, a.idle())
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let request: &[u8] = match flags & 3 {
        0 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        1 => b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
        2 => b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        _ => b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    let whole = run(request, data, data.len());
    let pieces = run(request, data, usize::from(flags >> 2) + 1);
    assert_eq!(whole, pieces, "fed in pieces of {}", (flags >> 2) + 1);
});
