//! Builds the guest kernel (`guest/`) into a flat binary that `src/guest.rs` embeds:
//! rustc (no_std, panic=abort, static relocation) links it with `guest/link.ld`, and
//! objcopy (binutils) turns the ELF into the image loaded at `KERNEL_GPA`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let guest = dir.join("guest");
    // A directory is scanned as a whole for changes.
    println!("cargo:rerun-if-changed={}", guest.display());
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("src/abi.rs").display()
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let elf = out.join("hj-guest.elf");
    let link = guest.join("link.ld");
    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "hj_guest",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "debuginfo=0",
        ])
        .args([
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args([
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        .args(["-C", "link-arg=-Wl,--gc-sections"])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", link.display()))
        .arg("-o")
        .arg(&elf)
        .arg(guest.join("main.rs"))
        .status()
        .expect("run rustc for the guest kernel");
    assert!(status.success(), "building the guest kernel failed");
    let bin = out.join("hj-guest.bin");
    let status = Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin)
        .status()
        .expect("run objcopy (Debian package binutils) for the guest kernel");
    assert!(status.success(), "objcopy of the guest kernel failed");
}
