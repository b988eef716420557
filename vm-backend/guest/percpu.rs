//! The vCPU's per-CPU area (abi.rs, PC_*): its address is the GS base the VMM gave
//! the vCPU, so the entry finds its kernel stack without touching a register.

use crate::abi::*;
use core::arch::asm;

/// The u64 at `off` in this vCPU's area.
pub fn get(off: u64) -> u64 {
    let v: u64;
    // SAFETY: GS points at this vCPU's per-CPU area (mapped guest RAM) and `off` is
    // one of the PC_* offsets inside it.
    unsafe {
        asm!("mov %gs:({0}), {1}", in(reg) off, out(reg) v,
             options(att_syntax, nostack, readonly, preserves_flags))
    };
    v
}

/// Sets the u64 at `off` in this vCPU's area.
pub fn set(off: u64, v: u64) {
    // SAFETY: as in `get`; the area belongs to this vCPU.
    unsafe {
        asm!("mov {1}, %gs:({0})", in(reg) off, in(reg) v,
             options(att_syntax, nostack, preserves_flags))
    };
}

/// This vCPU's area.
pub fn base() -> u64 {
    let v: u64;
    // SAFETY: rdgsbase reads the GS base (native at CPL3 on this host).
    unsafe { asm!("rdgsbase {}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// This vCPU's slot (index of its per-CPU area and of its ring).
pub fn slot() -> u64 {
    (base().wrapping_sub(PERCPU_GPA) / PERCPU_SIZE).min(MAX_VCPUS - 1)
}

/// The address of the u64 at `off` in slot `slot`'s area.
pub fn at(slot: u64, off: u64) -> *mut u64 {
    (PERCPU_GPA + slot * PERCPU_SIZE + off) as *mut u64
}

/// Threads running: the per-CPU slots taken.
pub fn running() -> u64 {
    (0..MAX_VCPUS)
        .filter(|&i| {
            // SAFETY: PC_BUSY of each slot is an aligned u64 of kernel memory.
            let busy = unsafe { at(i, PC_BUSY).read_volatile() };
            busy != 0
        })
        .count() as u64
}
