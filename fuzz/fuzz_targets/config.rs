//! config.json bytes -> parsing and validation, as `create` does before touching
//! anything (hyperjail_oci::parse_config: oci-spec, root.path, then the spec rules).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = hyperjail_oci::parse_config(data, Path::new("config.json"));
});
