//! `overrides.json`: any text is read or refused, never a panic; what it reads, written
//! out again, reads back the same.
#![no_main]

use std::path::Path;

use banyan::control::overrides;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("state/overrides.json");
    if let Ok(read) = overrides::parse(path, text) {
        let written = overrides::render(&read);
        let again = overrides::parse(path, &written).expect("banyan reads what it writes");
        assert_eq!(overrides::render(&again), written);
    }
});
