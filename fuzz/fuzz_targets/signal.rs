//! `kill` signal argument -> hyperjail_runtime::parse_signal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = hyperjail_runtime::parse_signal(s) {
            // Linux signal numbers are 1..=SIGRTMAX (64, at most 127 anywhere).
            assert!((1..128).contains(&n), "{s:?} parsed to {n}");
        }
    }
});
