//! `exec --process` JSON -> oci-spec Process -> the spec rules a process section must
//! follow (hyperjail_oci::validate on a spec holding it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::{Process, Spec};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = serde_json::from_slice::<Process>(data) else {
        return;
    };
    let mut spec = Spec::default();
    spec.set_process(Some(p));
    let _ = hyperjail_oci::validate(&spec);
});
