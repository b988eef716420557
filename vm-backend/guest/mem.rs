//! Memory primitives: the C memory functions the compiler may call, user-pointer
//! checks and copies, MMIO doorbells and the boot-info page.

use crate::abi::*;
use core::arch::asm;

/// compiler-required memcpy (`rep movsb`, so the compiler cannot turn it into a call
/// to itself).
#[no_mangle]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and do not overlap.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// compiler-required memmove.
#[no_mangle]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: forward copy is correct when dst is below src or past its end.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backward copy with the direction flag set, cleared again after.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dst
}

/// compiler-required memset.
#[no_mangle]
unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// compiler-required memcmp.
#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// compiler-required bcmp.
#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Writes `val` to an MMIO doorbell: the VMM handles it before the next instruction.
pub fn mmio(addr: u64, val: u64) {
    // SAFETY: MMIO addresses are mapped by the VMM's page tables to a GPA outside RAM;
    // the write exits to the VMM and touches no guest memory.
    unsafe { (addr as *mut u64).write_volatile(val) }
}

/// A u64 of the boot-info page.
pub fn boot(off: u64) -> u64 {
    // SAFETY: the boot-info page is mapped guest RAM written by the VMM before start.
    unsafe { ((BOOT_INFO_GPA + off) as *const u64).read_volatile() }
}

/// Whether [ptr, ptr+len) lies in a program's part of guest RAM (above the
/// kernel's low memory, which no system call argument may name).
pub fn user_ok(ptr: u64, len: u64) -> bool {
    ptr >= LOW && ptr.checked_add(len).is_some_and(|e| e <= boot(BI_RAM_END))
}

/// Copies `src` to user address `dst`; false (nothing written) if the range is bad.
pub fn put(dst: u64, src: &[u8]) -> bool {
    if !user_ok(dst, src.len() as u64) {
        return false;
    }
    // SAFETY: the range was checked to be mapped guest RAM; src is a kernel slice.
    unsafe { memcpy(dst as *mut u8, src.as_ptr(), src.len()) };
    true
}

/// Writes u64s to user memory.
pub fn put_u64s(dst: u64, vals: &[u64]) -> bool {
    if !user_ok(dst, 8 * vals.len() as u64) {
        return false;
    }
    for (i, v) in vals.iter().enumerate() {
        // SAFETY: checked above; unaligned writes are fine on x86-64.
        unsafe { ((dst + 8 * i as u64) as *mut u64).write_unaligned(*v) };
    }
    true
}

/// Zeroes user memory (already checked by the caller or kernel-owned).
pub fn zero(dst: u64, len: u64) -> bool {
    if !user_ok(dst, len) {
        return false;
    }
    // SAFETY: checked above.
    unsafe { memset(dst as *mut u8, 0, len as usize) };
    true
}

/// Reads the TSC.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc reads a counter (CR4.TSD is clear); no memory is touched.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}
