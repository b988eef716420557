//! Syscall-site rewriting. On this host the `syscall` instruction itself costs a VM
//! exit (≈3 µs, ../shared/PVM-NOTES.md), while a jump into this kernel is native. So
//! the first time a site traps, the instruction just before its `syscall` is moved
//! into a trampoline and replaced by a `jmp` to it; the trampoline runs the moved
//! instruction, loads the return address into rcx and enters the kernel through
//! [`hj_fast_entry`](crate::entry), which returns past the `syscall`. The `syscall`
//! bytes stay where they are, so code that jumps straight to them still works, and
//! the user's stack (red zone included) is never touched.
//!
//! Only the instruction *before* the `syscall` is moved, and its boundaries are not
//! known for sure (x86 cannot be decoded backwards). A site is patched only when
//! exactly one reading of the bytes is a position-independent instruction that is
//! consistent with the registers the trap saved (`mov $imm,%reg` with `reg == imm`,
//! or glibc's whole `syscall()` body); anything else keeps trapping, correctly.
//! Sites are rewritten only while the process has one thread (one vCPU), so the
//! 5-byte write races with nothing (each process writes its own copy of its code);
//! after its first clone, its sites keep trapping. Trampolines are shared kernel
//! memory: a forked child uses its parent's, and a program run again (execve) finds
//! the trampolines its sites had before. Each rewrite is logged for the VMM, which
//! makes it again when it loads the same program next (so the next process does not
//! trap at that site first: a first trap and its copy-on-write of a code page cost
//! ≈15 µs here).

use crate::abi::{
    MAX_PROCS, PATCH_LOG_GPA, PATCH_LOG_SIZE, PC_PROC, PL_COUNT, PL_MAX, PL_RECORDS,
    PL_RECORD_SIZE, USER_MIN,
};
use crate::entry::Frame;
use crate::mem::user_ok;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Bytes per trampoline: the moved instruction (≤ 7), `mov $ret,%ecx` (5), `jmp` (5).
const SLOT: usize = 32;
/// Number of trampolines (sites that can be rewritten).
const SLOTS: usize = 2048;

/// glibc's `syscall(2)` function: six register moves and a stack load before the
/// `syscall`; the load (the last 5 bytes) is what gets moved.
const GLIBC_SYSCALL: [u8; 23] = [
    0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca, 0x4d, 0x89, 0xc2,
    0x4d, 0x89, 0xc8, 0x4c, 0x8b, 0x4c, 0x24, 0x08,
];

#[repr(C, align(32))]
struct Pool {
    code: UnsafeCell<[u8; SLOT * SLOTS]>,
    used: AtomicUsize,
}
// SAFETY: a slot is written only by the caller that took it from `used` (under the
// kernel lock), before any site jumps to it; after that it is only read.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool {
    code: UnsafeCell::new([0xcc; SLOT * SLOTS]),
    used: AtomicUsize::new(0),
};

extern "C" {
    /// The entry a trampoline jumps to (entry.rs).
    fn hj_fast_entry();
}

/// The value the trap saved for register number `r` (x86 encoding), if it is one the
/// entry saves and `syscall` does not clobber.
fn reg(f: &Frame, r: u8) -> Option<u64> {
    match r {
        0 => Some(f.rax),
        2 => Some(f.rdx),
        6 => Some(f.rsi),
        7 => Some(f.rdi),
        8 => Some(f.r8),
        9 => Some(f.r9),
        10 => Some(f.r10),
        _ => None,
    }
}

fn imm32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Length of the instruction that ends at the `syscall`, when exactly one reading of
/// `p` (the 23 bytes before it) is a movable instruction consistent with `f`.
fn movable(p: &[u8; 23], f: &Frame) -> Option<usize> {
    if *p == GLIBC_SYSCALL {
        return Some(5);
    }
    let mut found = None;
    let mut count = 0;
    let mut consider = |len: usize, ok: bool| {
        if ok {
            found = Some(len);
            count += 1;
        }
    };
    let op = p[18];
    // b8+r imm32: mov $imm,%r32 (zero-extends).
    if (0xb8..=0xbf).contains(&op) {
        let v = reg(f, op - 0xb8);
        consider(5, v == Some(u64::from(imm32(&p[19..]))));
        // 41 b8+r imm32: mov $imm,%r8d..%r15d.
        if p[17] == 0x41 {
            let v = reg(f, 8 + op - 0xb8);
            consider(6, v == Some(u64::from(imm32(&p[19..]))));
        }
    }
    // c7 c0+r imm32: mov $imm,%r32 (the long form).
    if p[17] == 0xc7 && (0xc0..=0xc7).contains(&op) {
        let v = reg(f, op - 0xc0);
        consider(6, v == Some(u64::from(imm32(&p[19..]))));
        // 48 c7 c0+r imm32: mov $imm,%r64 (sign-extends).
        if p[16] == 0x48 {
            let want = imm32(&p[19..]) as i32 as i64 as u64;
            consider(7, v == Some(want));
        }
    }
    if count == 1 {
        found
    } else {
        None
    }
}

/// Rewrites the site whose `syscall` ends at `f.rcx`, if it can; see the module docs.
pub fn try_patch(f: &Frame) {
    if !crate::thread::single() {
        return;
    }
    let ret = f.rcx;
    if ret < USER_MIN + 25 || ret > u64::from(u32::MAX) || !user_ok(ret - 25, 25) {
        return;
    }
    // SAFETY: the 25 bytes before the return address are guest RAM (checked above).
    let before = unsafe { &*((ret - 25) as *const [u8; 25]) };
    if before[23..] != [0x0f, 0x05] {
        return;
    }
    let mut p = [0u8; 23];
    p.copy_from_slice(&before[..23]);
    let Some(len) = movable(&p, f) else { return };
    let site = ret - 2 - len as u64;
    let mut t = [0xccu8; SLOT];
    t[..len].copy_from_slice(&p[23 - len..]);
    t[len] = 0xb9; // mov $ret,%ecx (ret < 4 GiB, checked above)
    t[len + 1..len + 5].copy_from_slice(&(ret as u32).to_le_bytes());
    t[len + 5] = 0xe9; // jmp hj_fast_entry
    let Some(slot) = trampoline(&mut t, len) else {
        return;
    };
    let to_slot = slot as i64 - (site as i64 + 5);
    let Ok(to_slot) = i32::try_from(to_slot) else {
        return;
    };
    let mut j = [0xccu8; 7];
    j[0] = 0xe9; // jmp slot
    j[1..5].copy_from_slice(&to_slot.to_le_bytes());
    // SAFETY: [site, site+len) is user RAM inside the checked 25 bytes, in this
    // process's own copy of its code; the process's only thread is this one.
    unsafe { core::ptr::copy_nonoverlapping(j.as_ptr(), site as *mut u8, len) };
    log(site, &p[23 - len..], &j[..len]);
}

/// Appends a rewrite to this process's patch log (abi.rs, [`PATCH_LOG_GPA`]), from
/// which the VMM makes it again in the next process that runs the same program, so
/// that one does not trap there first. A full log drops the record (that site then
/// traps once in each later process, as it does without the log).
fn log(site: u64, old: &[u8], new: &[u8]) {
    let proc = crate::percpu::get(PC_PROC).min(MAX_PROCS - 1);
    let base = PATCH_LOG_GPA + proc * PATCH_LOG_SIZE;
    let word = |i: u64| (base + i) as *mut u64;
    let pack = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
        u64::from_le_bytes(w)
    };
    // SAFETY: the log is kernel memory laid out by abi.rs, this process slot's own;
    // only the process's only thread writes it (sites are rewritten while it has
    // one), and the VMM reads it only once that thread no longer runs this image
    // (exit, execve).
    unsafe {
        let n = word(PL_COUNT).read_volatile();
        if n >= PL_MAX {
            return;
        }
        let rec = PL_RECORDS + n * PL_RECORD_SIZE;
        word(rec).write_volatile(site);
        word(rec + 8).write_volatile(old.len() as u64);
        word(rec + 16).write_volatile(pack(old));
        word(rec + 24).write_volatile(pack(new));
        word(PL_COUNT).write_volatile(n + 1);
    }
}

/// The address of a trampoline with the bytes `t` (its jump to the entry filled in
/// here, after the moved instruction of `len` bytes): one made before with the same
/// bytes, or a new one from the pool; None when the pool is full.
fn trampoline(t: &mut [u8; SLOT], len: usize) -> Option<u64> {
    let base = POOL.code.get() as u64;
    crate::sys::with(|_| {
        let used = POOL.used.load(Ordering::Acquire);
        for i in 0..used {
            let at = base + (i * SLOT) as u64;
            let jmp_at = at + len as u64 + 5;
            let to_entry = i32::try_from(hj_fast_entry as *const () as i64 - (jmp_at as i64 + 5)).ok()?;
            t[len + 6..len + 10].copy_from_slice(&to_entry.to_le_bytes());
            // SAFETY: slots below `used` are complete and only read.
            if unsafe { &*(at as *const [u8; SLOT]) } == t {
                return Some(at);
            }
        }
        if used == SLOTS {
            return None;
        }
        let at = base + (used * SLOT) as u64;
        let jmp_at = at + len as u64 + 5;
        let to_entry = i32::try_from(hj_fast_entry as *const () as i64 - (jmp_at as i64 + 5)).ok()?;
        t[len + 6..len + 10].copy_from_slice(&to_entry.to_le_bytes());
        // SAFETY: slot `used` is free and ours under the kernel lock; it is complete
        // before `used` counts it and before any site jumps to it.
        unsafe { core::ptr::copy_nonoverlapping(t.as_ptr(), at as *mut u8, SLOT) };
        POOL.used.store(used + 1, Ordering::Release);
        Some(at)
    })
}
