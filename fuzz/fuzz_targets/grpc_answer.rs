//! A gRPC answer's body read without its schema (`compare::protowire`): any bytes become
//! a tree or a reason not to compare, never a panic; and two answers compare whatever
//! their bytes, compressed messages (gzip) included.
#![no_main]

use banyan::compare::{self, protowire, Answer};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let gzip = http::HeaderValue::from_static("gzip");
    let _ = protowire::tree(data, None, 1 << 16);
    let _ = protowire::tree(data, Some(&gzip), 1 << 16);
    let half = data.len() / 2;
    // Compressed messages are read in the first answer's encoding when its first byte is odd.
    let coded = data.first().is_some_and(|b| b & 1 == 1);
    let answer = |body: &[u8]| {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/grpc"));
        if coded {
            headers.insert("grpc-encoding", gzip.clone());
        }
        Answer {
            status: 200,
            headers,
            body: Bytes::copy_from_slice(body),
            complete: true,
        }
    };
    let _ = compare::compare(
        &answer(&data[..half]),
        &answer(&data[half..]),
        false,
        &compare::Rules::default(),
        &compare::Noise::default(),
    );
});
