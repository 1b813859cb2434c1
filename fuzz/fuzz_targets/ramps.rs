//! `state/ramps.json`: any bytes are read or refused, never a panic; what is read,
//! written out again, reads back the same, and every reading of it (time at the step, the
//! step's percent) answers.
#![no_main]

use std::path::Path;

use banyan::control::ramp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("state/ramps.json");
    if let Ok(read) = ramp::parse(path, data) {
        let written = ramp::render(&read);
        let again = ramp::parse(path, written.as_bytes()).expect("banyan reads what it writes");
        assert_eq!(ramp::render(&again), written);
        for r in read.values() {
            let _ = r.held();
            let _ = r.percent_bp(&[100, 500, 10_000]);
            let _ = r.percent_bp(&[]);
        }
    }
});
