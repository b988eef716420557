//! The front end of the forwarding ring (layout in abi.rs): posts a request into
//! the next slot, rings the doorbell only if the VMM's ring thread said it sleeps,
//! and polls for the completion; after [`SPIN_NS`] it asks the VMM to park this
//! vCPU until the request is done ([`MMIO_WAIT`]), so a long call (a sleep, a read
//! from a pipe) costs no CPU.

use crate::abi::*;
use crate::mem::{boot, mmio, rdtsc};
use core::sync::atomic::{fence, Ordering};

/// How long to poll for a completion before parking the vCPU.
const SPIN_NS: u64 = 100_000;

/// A word of this vCPU's ring page.
fn word(off: u64) -> *mut u64 {
    (RING_GPA + crate::percpu::slot() * PAGE + off) as *mut u64
}

/// The idle flag, on ring 0's page (one VMM thread serves every ring).
fn idle() -> *mut u64 {
    (RING_GPA + RG_VMM_IDLE) as *mut u64
}

/// TSC ticks in [`SPIN_NS`] (ns = ticks * mult >> 32).
fn spin_ticks() -> u64 {
    match boot(BI_TSC_MULT) {
        0 => SPIN_NS * 3,
        mult => ((u128::from(SPIN_NS) << 32) / u128::from(mult)) as u64,
    }
}

/// Forwards system call `nr` on this vCPU's ring.
pub fn call(nr: u64, a: [u64; 6]) -> i64 {
    let n = crate::percpu::get(PC_POSTED);
    let ring = RING_GPA + crate::percpu::slot() * PAGE;
    let slot = (ring + RG_SLOTS + (n % RING_SLOTS) * RQ_SIZE) as *mut u64;
    // SAFETY: the ring page is kernel memory in guest RAM laid out by abi.rs; slot
    // n % RING_SLOTS is free because every earlier request has completed (one call
    // at a time per vCPU, and the ring is this vCPU's).
    unsafe {
        slot.add((RQ_NR / 8) as usize).write_volatile(nr);
        for (i, v) in a.iter().enumerate() {
            slot.add((RQ_ARGS / 8) as usize + i).write_volatile(*v);
        }
        slot.add((RQ_RET / 8) as usize).write_volatile((-38i64) as u64);
        word(RG_REQ_PROD).write_volatile(n + 1);
    }
    crate::percpu::set(PC_POSTED, n + 1);
    // The post must be visible before the idle flag is read (the VMM does the
    // mirror image: sets idle, fences, reads req_prod).
    fence(Ordering::SeqCst);
    // SAFETY: ring words are aligned u64s of the ring page.
    if unsafe { idle().read_volatile() } != 0 {
        mmio(MMIO_KICK, 1);
    }
    let (start, limit) = (rdtsc(), spin_ticks());
    // SAFETY: as above.
    while unsafe { word(RG_RSP_PROD).read_volatile() } <= n {
        if rdtsc().wrapping_sub(start) > limit {
            mmio(MMIO_WAIT, n + 1);
        } else {
            core::hint::spin_loop();
        }
    }
    fence(Ordering::Acquire);
    // SAFETY: the VMM wrote the result before it published rsp_prod.
    let ret = unsafe { slot.add((RQ_RET / 8) as usize).read_volatile() };
    if ret != RQ_BLOCKED {
        return ret as i64;
    }
    // The call would wait: this vCPU's thread waits for it and performs it again.
    mmio(MMIO_BLOCK, slot as u64);
    // SAFETY: as above; the VMM wrote the result before the doorbell returned.
    let ret = unsafe { slot.add((RQ_RET / 8) as usize).read_volatile() as i64 };
    if ret == -crate::signal::EINTR && !crate::signal::deliverable() {
        // Woken for a signal that another thread took, or that was ignored.
        return call(nr, a);
    }
    ret
}
