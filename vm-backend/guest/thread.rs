//! Threads: each guest thread runs on a vCPU of its own, so the host scheduler (and
//! the domain's cgroup, cpuset and Xen-style controls) time-slices them, and an idle
//! thread is a sleeping host thread. `clone` prepares a free per-CPU slot and asks
//! the VMM to start a vCPU on it with the parent's registers; futexes are kept by
//! the VMM, whose vCPU threads sleep on them.

use crate::abi::*;
use crate::entry::Frame;
use crate::mem::{mmio, put};
use crate::percpu;
use crate::sys::{unsupported, EFAULT, EINVAL, ENOSYS};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const EAGAIN: i64 = 11;
const ETIMEDOUT: i64 = 110;

const CLONE_VM: u64 = 0x100;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_THREAD: u64 = 0x1_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;

/// The next thread id (the first thread is 1, the process id).
static NEXT_TID: AtomicU64 = AtomicU64::new(2);
/// Set for a process once it started a second thread: from then on its code is
/// not rewritten (another vCPU could be executing the bytes being changed). Cleared
/// by fork (the child) and execve (a new image, one thread).
static MULTI: [AtomicBool; MAX_PROCS as usize] = [const { AtomicBool::new(false) }; MAX_PROCS as usize];

fn me() -> usize {
    percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize
}

/// Whether the calling process only ever had one thread (since its fork or its
/// last execve).
pub fn single() -> bool {
    !MULTI[me()].load(Ordering::Acquire)
}

/// Process slot `p` starts over with one thread.
pub fn set_single(p: u64) {
    MULTI[p.min(MAX_PROCS - 1) as usize].store(false, Ordering::Release);
}

/// Takes a free per-CPU slot (slot 0 is the first thread's).
pub fn take_slot() -> Option<u64> {
    (1..MAX_VCPUS).find(|&i| {
        // SAFETY: PC_BUSY of slot i is an aligned u64 of kernel memory; every access
        // to it is atomic.
        let busy = unsafe { AtomicU64::from_ptr(percpu::at(i, PC_BUSY)) };
        busy.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

pub fn write_tid(addr: u64, tid: u64) -> bool {
    put(addr, &(tid as u32).to_le_bytes())
}

/// Prepares taken per-CPU slot `slot` for a new thread `tid` of process slot
/// `proc` that starts at user `rip` with clear_child_tid `clear`.
pub fn prepare_slot(slot: u64, tid: u64, clear: u64, rip: u64, proc: u64) {
    let area = |off| percpu::at(slot, off);
    let ring_posted = (RING_GPA + slot * PAGE + RG_REQ_PROD) as *const u64;
    // SAFETY: the slot was taken by the caller and no vCPU runs on it: its area is
    // kernel memory nothing else touches until the VMM starts the thread.
    unsafe {
        area(PC_KSTACK_TOP).write_volatile(PERCPU_GPA + (slot + 1) * PERCPU_SIZE);
        area(PC_TID).write_volatile(tid);
        area(PC_TRAPPED).write_volatile(0);
        area(PC_CLEAR_TID).write_volatile(clear);
        // The slot's ring carries on from where its last thread left it.
        area(PC_POSTED).write_volatile(ring_posted.read_volatile());
        // The FPU/SSE control words, as a Linux thread inherits them (rounding
        // mode, exception masks); the kernel never changes them, so they are the
        // user's. The thread entry loads them and jumps to the user's rip.
        // stmxcsr and fnstcw store 4 and 2 bytes into the two locals.
        let (mut mxcsr, mut fcw) = (0u32, 0u16);
        core::arch::asm!("stmxcsr ({0})", "fnstcw ({1})",
            in(reg) &mut mxcsr, in(reg) &mut fcw, options(att_syntax, nostack));
        area(PC_MXCSR).write_volatile(u64::from(mxcsr));
        area(PC_FCW).write_volatile(u64::from(fcw));
        area(PC_START_RIP).write_volatile(rip);
        area(PC_PROC).write_volatile(proc);
        // The creator's signal mask; nothing pending.
        area(PC_SIGMASK).write_volatile(percpu::get(PC_SIGMASK));
        area(PC_SIGPEND).write_volatile(0);
        area(PC_MASK_SAVED).write_volatile(0);
        area(PC_FULL_RET).write_volatile(0);
        // No alternate signal stack (a forked child gets its parent's: proc.rs).
        area(PC_ALT_SIZE).write_volatile(0);
        area(PC_ALT_SP).write_volatile(0);
        area(PC_ALT_FLAGS).write_volatile(0);
    }
}

/// Fills this vCPU's clone block for a thread or process that starts on `slot`
/// with the caller's registers (rax 0), on `stack` (0: the caller's), with FS base
/// `tls` (None: the caller's); returns the block's address.
pub fn start_block(f: &Frame, stack: u64, tls: Option<u64>, slot: u64) -> u64 {
    let fs = tls.unwrap_or_else(|| {
        let v: u64;
        // SAFETY: rdfsbase reads FS.base.
        unsafe { core::arch::asm!("rdfsbase {}", out(reg) v, options(nomem, nostack)) };
        v
    });
    // Without a new stack the child carries on on the parent's (as Linux does).
    let stack = if stack == 0 {
        percpu::get(PC_USER_RSP)
    } else {
        stack
    };
    // KVM's register order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15.
    let regs = [
        0, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, stack, f.rbp, f.r8, f.r9, f.r10, f.r11, f.r12,
        f.r13, f.r14, f.r15,
    ];
    let blk = percpu::base() + PC_BLOCK;
    let w = |off: u64, v: u64| {
        // SAFETY: the block is in this vCPU's per-CPU area.
        unsafe { ((blk + off) as *mut u64).write_volatile(v) }
    };
    for (i, r) in regs.iter().enumerate() {
        w(CL_REGS + 8 * i as u64, *r);
    }
    w(CL_RFLAGS, f.r11);
    w(CL_FS, fs);
    w(CL_SLOT, slot);
    blk
}

/// clone(2): threads only (CLONE_VM | CLONE_THREAD); a new process is -ENOSYS.
pub fn clone(f: &Frame) -> i64 {
    let (flags, stack, ptid, ctid, tls) = (f.rdi, f.rsi, f.rdx, f.r10, f.r8);
    let thread = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD;
    if flags & thread != thread {
        return unsupported(56);
    }
    let Some(slot) = take_slot() else {
        return -EAGAIN;
    };
    let tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    let area = |off| percpu::at(slot, off);
    let clear = if flags & CLONE_CHILD_CLEARTID != 0 { ctid } else { 0 };
    prepare_slot(slot, tid, clear, f.rcx, percpu::get(PC_PROC));
    if (flags & CLONE_PARENT_SETTID != 0 && !write_tid(ptid, tid))
        || (flags & CLONE_CHILD_SETTID != 0 && !write_tid(ctid, tid))
    {
        // SAFETY: as above.
        unsafe { area(PC_BUSY).write_volatile(0) };
        return -EFAULT;
    }
    let blk = start_block(f, stack, (flags & CLONE_SETTLS != 0).then_some(tls), slot);
    let w = |off: u64, v: u64| {
        // SAFETY: the block is in this vCPU's per-CPU area.
        unsafe { ((blk + off) as *mut u64).write_volatile(v) }
    };
    w(CL_RET, (-ENOSYS) as u64);
    MULTI[me()].store(true, Ordering::Release);
    crate::sys::with(|s| s.me().threads += 1);
    mmio(MMIO_CLONE, blk);
    // SAFETY: as for the writes.
    let ret = unsafe { ((blk + CL_RET) as *const u64).read_volatile() } as i64;
    if ret < 0 {
        crate::sys::with(|s| s.me().threads -= 1);
        // SAFETY: the VMM did not start a vCPU on the slot.
        unsafe { area(PC_BUSY).write_volatile(0) };
        return ret;
    }
    tid as i64
}

/// The id the next thread (or process) will get.
pub fn next_tid_peek() -> u64 {
    NEXT_TID.load(Ordering::Relaxed)
}

/// The next thread (and process) id.
pub fn next_tid() -> u64 {
    NEXT_TID.fetch_add(1, Ordering::Relaxed)
}

/// exit(2): ends this thread; clear_child_tid is cleared and woken first (how
/// pthread_join learns of it). The VMM frees the slot once the vCPU has stopped.
/// The last thread of a process ends the process.
pub fn exit(code: u64) -> i64 {
    let clear = percpu::get(PC_CLEAR_TID);
    if clear != 0 && write_tid(clear, 0) {
        futex_call(1, clear, 1, u64::MAX, 0);
    }
    let last = crate::sys::with(|s| {
        let me = s.me();
        me.threads = me.threads.saturating_sub(1);
        me.threads == 0
    });
    if last {
        crate::proc::exit_group(code);
    }
    release(code)
}

/// Gives this thread's vCPU back to the VMM (it never returns).
pub fn release(code: u64) -> ! {
    loop {
        mmio(MMIO_THREAD_EXIT, code & 0xff);
    }
}

/// Performs a futex operation in the VMM (which sleeps this vCPU's thread for a
/// wait); returns the Linux result.
pub fn futex_call(op: u64, addr: u64, val: u64, timeout: u64, absolute: u64) -> i64 {
    let blk = percpu::base() + PC_BLOCK;
    let w = |off: u64, v: u64| {
        // SAFETY: the block is in this vCPU's per-CPU area.
        unsafe { ((blk + off) as *mut u64).write_volatile(v) }
    };
    w(FX_OP, op);
    w(FX_ADDR, addr);
    w(FX_VAL, val);
    w(FX_TIMEOUT, timeout);
    w(FX_ABSOLUTE, absolute);
    w(FX_RET, (-ENOSYS) as u64);
    mmio(MMIO_FUTEX, blk);
    // SAFETY: as for the writes.
    unsafe { ((blk + FX_RET) as *const u64).read_volatile() as i64 }
}

/// A `struct timespec` at `p` in ns; None when unreadable or invalid.
fn timespec_ns(p: u64) -> Option<u64> {
    if !crate::mem::user_ok(p, 16) {
        return None;
    }
    // SAFETY: checked to be guest RAM; unaligned reads are fine on x86-64.
    let (s, ns) = unsafe {
        (
            (p as *const i64).read_unaligned(),
            ((p + 8) as *const i64).read_unaligned(),
        )
    };
    if s < 0 || !(0..1_000_000_000).contains(&ns) {
        return None;
    }
    Some((s as u64).saturating_mul(1_000_000_000).saturating_add(ns as u64))
}

/// nanosleep(2) and clock_nanosleep(2) (`clock` for an absolute time): a futex wait
/// with a timeout on a word nobody wakes, so this vCPU's host thread sleeps and
/// other threads go on (also their forwarded calls, which a sleep in the ring
/// thread would hold up).
pub fn sleep(req: u64, absolute_clock: Option<u64>) -> i64 {
    let Some(ns) = timespec_ns(req) else {
        return -EINVAL;
    };
    // A relative sleep becomes a deadline on CLOCK_MONOTONIC, so that a wake-up
    // with no signal to take can go back to sleep for the rest.
    let (deadline, absolute) = match absolute_clock {
        None => (crate::time::monotonic_ns().saturating_add(ns), 1),
        Some(0) => (ns, 2), // CLOCK_REALTIME
        Some(_) => (ns, 1),
    };
    loop {
        match futex_call(0, percpu::base() + PC_SLEEP, 0, deadline, absolute) {
            r if r == -crate::signal::EINTR && crate::signal::deliverable() => return r,
            r if r == -crate::signal::EINTR => continue,
            r if r == -ETIMEDOUT || r == 0 => return 0,
            r => return r,
        }
    }
}

/// futex(2): WAIT, WAKE, WAIT_BITSET, WAKE_BITSET (bitsets treated as all: a
/// spurious wake-up, which callers must tolerate), REQUEUE and CMP_REQUEUE (every
/// waiter is woken instead of moved: the same).
pub fn futex(a: [u64; 6]) -> i64 {
    const PRIVATE: u64 = 128;
    const CLOCK_REALTIME: u64 = 256;
    let (addr, op, val, utime) = (a[0], a[1], a[2] as u32 as u64, a[3]);
    if addr % 4 != 0 || !crate::mem::user_ok(addr, 4) {
        return -EFAULT;
    }
    let cmd = op & !(PRIVATE | CLOCK_REALTIME);
    match cmd {
        0 | 9 => {
            let timeout = match utime {
                0 => u64::MAX,
                p => match timespec_ns(p) {
                    Some(ns) => ns,
                    None => return -EINVAL,
                },
            };
            // WAIT takes a relative timeout; WAIT_BITSET an absolute one on
            // CLOCK_MONOTONIC, or on CLOCK_REALTIME with FUTEX_CLOCK_REALTIME.
            let absolute = match (cmd, op & CLOCK_REALTIME != 0) {
                (0, _) => 0,
                (_, false) => 1,
                (_, true) => 2,
            };
            match futex_call(0, addr, val, timeout, absolute) {
                // Woken for a signal another thread took (or one that is ignored):
                // a spurious wake-up, which FUTEX_WAIT may have.
                r if r == -crate::signal::EINTR && !crate::signal::deliverable() => 0,
                r => r,
            }
        }
        1 | 10 => futex_call(1, addr, val, u64::MAX, 0),
        3 | 4 => {
            if cmd == 4 {
                // SAFETY: checked above to be 4 aligned bytes of guest RAM.
                let cur = unsafe { (addr as *const u32).read_volatile() };
                if u64::from(cur) != a[5] as u32 as u64 {
                    return -EAGAIN;
                }
            }
            futex_call(1, addr, u64::from(u32::MAX >> 1), u64::MAX, 0)
        }
        _ => unsupported(202),
    }
}
