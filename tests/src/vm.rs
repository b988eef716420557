//! Helpers for the VM backend's tests: a busybox bundle routed to the VM, and
//! static C programs compiled into its rootfs.

use crate::{Bundle, Hyperjail, Output};
use serde_json::json;
use std::fs;
use std::process::Command;

/// A busybox bundle routed to the VM backend.
pub fn vm_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.config_mut()["annotations"] = json!({"org.hyperjail.backend": "vm"});
    b
}

/// In a test: returns from it (a printed SKIP) without KVM or a working `gcc
/// -static`; else compiles `src` with `flags` into a fresh VM bundle's rootfs at
/// `/name` ([`compile_static`]) and evaluates to `(Hyperjail, Bundle)`.
#[macro_export]
macro_rules! vm_program {
    ($name:expr, $src:expr, $flags:expr) => {{
        $crate::require_kvm!();
        let hj = $crate::Hyperjail::new();
        let b = $crate::vm::vm_bundle();
        let flags: &[&str] = $flags;
        $crate::skip_unless!(
            $crate::vm::compile_static(&b, $name, $src, flags),
            format!(
                "gcc {} does not work here (apt-get install gcc libc6-dev)",
                flags.join(" ")
            )
        );
        (hj, b)
    }};
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

/// Compiles `src` with gcc as a dynamically linked program into the rootfs at
/// `/name`, and copies its loader and libraries (as `ldd` lists them) to the same
/// paths in the rootfs; false (the test skips) if gcc or ldd does not work here.
pub fn compile_dynamic(b: &Bundle, name: &str, src: &str, extra: &[&str]) -> bool {
    let dir = b.path().join("src");
    fs::create_dir_all(&dir).expect("mkdir src");
    let c = dir.join(format!("{name}.c"));
    fs::write(&c, src).expect("write C source");
    let bin = b.rootfs().join(name);
    let Ok(out) = Command::new("gcc")
        .args(["-O2", "-w", "-o"])
        .arg(&bin)
        .arg(&c)
        .args(extra)
        .output()
    else {
        return false;
    };
    assert!(
        out.status.success(),
        "gcc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Ok(ldd) = Command::new("ldd").arg(&bin).output() else {
        return false;
    };
    let listing = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libs: Vec<&str> = listing
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .collect();
    if !ldd.status.success() || libs.is_empty() {
        return false;
    }
    for lib in libs {
        copy_into_rootfs(b, lib);
    }
    true
}

/// Copies the host file `path` (symlinks followed) to the same path in the rootfs.
pub fn copy_into_rootfs(b: &Bundle, path: &str) {
    let dst = b.rootfs().join(path.trim_start_matches('/'));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).expect("mkdir in the rootfs");
    }
    fs::copy(path, &dst).unwrap_or_else(|e| panic!("copy {path} into the rootfs: {e}"));
}

/// The VM half of a test that compares a program's run in the VM with its run on
/// the host: runs the bundle's process as container `tag` and asserts exit `code`,
/// exactly `host_out` on stdout, nothing on stderr and nothing left behind.
/// Returns the output for further checks.
pub fn assert_vm_matches_host(
    hj: &Hyperjail,
    b: &Bundle,
    tag: &str,
    code: i32,
    host_out: &str,
) -> Output {
    let c = hj.container(tag);
    let out = c.run(b, &[]);
    assert_eq!(out.code, Some(code), "{out}");
    assert_eq!(out.stdout, host_out, "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    c.assert_nothing_left(b);
    out
}

/// A test that a program prints exactly `want` and exits 0, on the host and in the
/// VM: runs the rootfs's `/name` on the host and asserts its stdout, then runs it
/// as the bundle's process (container `tag`) with [`assert_vm_matches_host`].
pub fn assert_host_then_vm(hj: &Hyperjail, b: &mut Bundle, name: &str, tag: &str, want: &str) {
    let host = Command::new(b.rootfs().join(name))
        .output()
        .expect("run the program on the host");
    assert_eq!(String::from_utf8_lossy(&host.stdout), want, "host run");
    b.args(&[&format!("/{name}")]);
    assert_vm_matches_host(hj, b, tag, 0, want);
}
