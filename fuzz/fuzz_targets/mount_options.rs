//! mounts[].options of config.json (a JSON array of strings) -> the mount flag parser
//! hyperjail_isolation::mounts::parse_options. Nothing is mounted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(opts) = serde_json::from_slice::<Vec<String>>(data) else {
        return;
    };
    let _ = hyperjail_isolation::mounts::parse_options(&opts);
});
