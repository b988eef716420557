//! hyperjail's built-in guest kernel (first milestone).
//!
//! A freestanding blob that the VMM loads at `KERNEL_GPA`; `LSTAR` points at its
//! system-call entry. The VMM loads the program, builds its stack and starts the vCPU
//! at the program's entry at CPL3: this kernel only ever runs on a `syscall`. It
//! implements the process-local system calls itself (memory, identity, time, TLS) and
//! forwards I/O to the VMM through a shared-memory ring (ring.rs). The first trap of
//! each syscall site rewrites it into a jump to this kernel (patch.rs).
//!
//! Built by `vm-backend/build.rs` with rustc for x86_64-unknown-linux-gnu, no_std,
//! panic=abort, static relocation, linked with `link.ld` and turned into a flat binary.

#![no_std]
#![no_main]

#[path = "../src/abi.rs"]
mod abi;
mod entry;
mod info;
mod mem;
mod patch;
mod percpu;
mod proc;
mod procfs;
mod ring;
mod signal;
mod sys;
mod thread;
mod time;

use abi::*;

/// Stops the guest: tells the VMM the kernel panicked (it reports it and exits).
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let line = info.location().map(|l| l.line()).unwrap_or(0);
    loop {
        mem::mmio(MMIO_PANIC, u64::from(line));
    }
}

/// The precompiled libcore was built to unwind, and some of its functions (atomic
/// compare-exchange's panic path) name the personality routine; with panic=abort
/// nothing ever calls it.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// Where the VMM restarts a vCPU whose user code faulted in a process other than
/// the first (rdi: the signal): the process ends as killed by it.
#[no_mangle]
extern "C" fn hj_killed(sig: u64) -> ! {
    proc::killed(sig)
}

/// Called by the entry with the saved registers; returns the value for rax. From
/// the async entry (the VMM stopped this vCPU in user code because a signal is to be
/// taken; rcx and r11 are in the per-CPU area) no system call runs: the user's own
/// rax goes back, unless a handler runs.
#[no_mangle]
extern "C" fn hj_syscall(frame: *mut entry::Frame) -> u64 {
    // SAFETY: the entry passes a pointer to the frame it just pushed on the kernel
    // stack; nothing else refers to it until this function returns.
    let f = unsafe { &mut *frame };
    match entry::how() {
        entry::Entry::Async => {
            let rax = f.rax as i64;
            return signal::deliver(f, rax, None) as u64;
        }
        entry::Entry::Trapped => patch::try_patch(f),
        entry::Entry::Fast => {}
    }
    let nr = f.rax;
    let ret = sys::dispatch(f);
    signal::deliver(f, ret, Some(nr)) as u64
}
