//! Helpers for the VM backend's tests: a busybox bundle routed to the VM, and
//! static C programs compiled into its rootfs.

use crate::Bundle;
use serde_json::json;
use std::fs;
use std::process::Command;

/// A busybox bundle routed to the VM backend.
pub fn vm_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.config_mut()["annotations"] = json!({"org.hyperjail.backend": "vm"});
    b
}

/// Whether `gcc -static` works here (compiler and static libc present).
pub fn static_cc_works(b: &Bundle) -> bool {
    let dir = b.path().join("src");
    fs::create_dir_all(&dir).expect("mkdir src");
    let c = dir.join("probe.c");
    fs::write(&c, "int main(void) { return 0; }\n").expect("write probe");
    Command::new("gcc")
        .args(["-static", "-o"])
        .arg(dir.join("probe"))
        .arg(&c)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles `src` with gcc and `extra` flags into the bundle's rootfs at `/name`;
/// false (the test skips) if `gcc -static` does not work on this machine. A
/// compile error in `src` fails the test.
pub fn compile_static(b: &Bundle, name: &str, src: &str, extra: &[&str]) -> bool {
    if !static_cc_works(b) {
        return false;
    }
    let c = b.path().join("src").join(format!("{name}.c"));
    fs::write(&c, src).expect("write C source");
    let out = Command::new("gcc")
        .args(extra)
        .args(["-O2", "-w"])
        .arg("-o")
        .arg(b.rootfs().join(name))
        .arg(&c)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
