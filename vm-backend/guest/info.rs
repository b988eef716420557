//! Identity and naming: uname, readlink of /proc/self/exe, prctl names.

use crate::abi::*;
use crate::mem::{boot, put, user_ok};
use crate::sys::{EFAULT, EINVAL};

pub fn uname(buf: u64) -> i64 {
    let mut u = [0u8; 65 * 6];
    let fields: [&[u8]; 6] = [
        b"hyperjail",
        b"",
        b"0.1.0-hyperjail",
        b"#1 hyperjail paravirtual guest",
        b"x86_64",
        b"(none)",
    ];
    for (i, f) in fields.iter().enumerate() {
        u[65 * i..65 * i + f.len()].copy_from_slice(f);
    }
    for i in 0..64 {
        u[65 + i] = boot_byte(BI_HOSTNAME + i as u64);
    }
    if put(buf, &u) {
        0
    } else {
        -EFAULT
    }
}

fn boot_byte(off: u64) -> u8 {
    // SAFETY: the boot-info page is mapped guest RAM; off stays within it.
    unsafe { ((BOOT_INFO_GPA + off) as *const u8).read_volatile() }
}

/// Length of the NUL-terminated boot-info string at `off` (at most `max` - 1).
fn boot_strlen(off: u64, max: u64) -> u64 {
    let mut n = 0;
    while n < max - 1 && boot_byte(off + n) != 0 {
        n += 1;
    }
    n
}

/// Copies `n` bytes of the boot-info string at `off` to user memory.
fn put_boot_str(off: u64, n: u64, buf: u64) -> bool {
    if !user_ok(buf, n) {
        return false;
    }
    for i in 0..n {
        put(buf + i, &[boot_byte(off + i)]);
    }
    true
}

/// readlink of /proc/self/exe (glibc's static start-up asks for it): None for any
/// other path, which the VMM resolves in the rootfs.
pub fn readlink(path: u64, buf: u64, size: u64) -> Option<i64> {
    const EXE: &[u8] = b"/proc/self/exe\0";
    if !user_ok(path, EXE.len() as u64) {
        return None;
    }
    // SAFETY: the range was checked to be guest RAM.
    let p = unsafe { core::slice::from_raw_parts(path as *const u8, EXE.len()) };
    if p != EXE {
        return None;
    }
    // The process's block, as an offset from the boot-info page.
    let p = crate::percpu::get(PC_PROC).min(MAX_PROCS - 1);
    let exe = PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_EXE - BOOT_INFO_GPA;
    let n = boot_strlen(exe, PI_EXE_LEN).min(size);
    if !put_boot_str(exe, n, buf) {
        return Some(-EFAULT);
    }
    Some(n as i64)
}

pub fn prctl(option: u64, arg: u64) -> i64 {
    match option {
        15 => {
            // PR_SET_NAME: up to 15 bytes of a string (the process's name here).
            let mut name = [0u8; 16];
            for (i, b) in name.iter_mut().take(15).enumerate() {
                if !user_ok(arg + i as u64, 1) {
                    return -EFAULT;
                }
                // SAFETY: checked to be guest RAM.
                let c = unsafe { ((arg + i as u64) as *const u8).read_volatile() };
                if c == 0 {
                    break;
                }
                *b = c;
            }
            crate::sys::with(|s| s.me().comm = name);
            0
        }
        16 => {
            // PR_GET_NAME
            let mut name = [0u8; 16];
            let n = crate::procfs::comm_of(crate::percpu::get(PC_PROC).min(MAX_PROCS - 1), &mut name);
            if put(arg, &name[..=n.min(15)]) {
                0
            } else {
                -EFAULT
            }
        }
        _ => -EINVAL,
    }
}

/// sched_getaffinity: the domain's CPUs (the first `BI_NCPUS`); the size written.
pub fn getaffinity(len: u64, mask: u64) -> i64 {
    if len < 8 || len % 8 != 0 {
        return -EINVAL;
    }
    let n = boot(BI_NCPUS).clamp(1, 64);
    let bits = if n == 64 { u64::MAX } else { (1 << n) - 1 };
    if put(mask, &bits.to_le_bytes()) {
        8
    } else {
        -EFAULT
    }
}

/// sysinfo: uptime, guest RAM, memory not yet handed out, and the running threads.
pub fn sysinfo(buf: u64) -> i64 {
    let (brk, low) = crate::sys::with(|s| s.me().heap_bounds());
    let procs = crate::percpu::running();
    let mut b = [0u64; 14];
    b[0] = crate::time::uptime_ns() / 1_000_000_000;
    b[4] = boot(BI_RAM_END);
    b[5] = low.saturating_sub(brk);
    b[10] = procs; // u16 at offset 80, then padding
    b[13] = 1; // mem_unit (u32 at offset 104)
    let bytes: [u8; 112] = core::array::from_fn(|i| b[i / 8].to_le_bytes()[i % 8]);
    if put(buf, &bytes) {
        0
    } else {
        -EFAULT
    }
}
