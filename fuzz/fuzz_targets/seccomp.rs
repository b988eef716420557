//! linux.seccomp JSON -> oci-spec LinuxSeccomp -> the translation of
//! hyperjail_isolation::seccomp up to a libseccomp filter built in memory. Nothing is
//! loaded into the kernel and no listener socket is connected.
#![no_main]

use hyperjail_isolation::seccomp;
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::LinuxSeccomp;

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = serde_json::from_slice::<LinuxSeccomp>(data) else {
        return;
    };
    let _ = seccomp::needs_notify(&profile);
    let valid = seccomp::validate(&profile).is_ok();
    let built = seccomp::check_build(&profile);
    if !valid {
        assert!(
            built.is_err(),
            "check_build accepted a profile validate rejects"
        );
    }
});
