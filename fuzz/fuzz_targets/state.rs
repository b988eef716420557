//! state.json bytes -> the DomainRecord reader of the state store. What parses must
//! also survive a save/load round trip (the store writes what it read back).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("state.json");
    if let Ok(rec) = hyperjail_runtime::parse_record(data, path) {
        let Ok(bytes) = serde_json::to_vec(&rec) else {
            return;
        };
        if let Err(e) = hyperjail_runtime::parse_record(&bytes, path) {
            panic!("a record that parsed does not parse after saving: {e}");
        }
    }
});
