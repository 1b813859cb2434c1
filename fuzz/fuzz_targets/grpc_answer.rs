//! A gRPC answer's body read without its schema (`compare::protowire`): any bytes become
//! a tree or a reason not to compare, never a panic; and two answers compare whatever
//! their bytes.
#![no_main]

use banyan::compare::{self, protowire, Answer};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = protowire::tree(data);
    let half = data.len() / 2;
    let answer = |body: &[u8]| {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/grpc"));
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
