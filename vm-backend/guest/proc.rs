//! Processes: fork, execve, exit and wait. Each process has an address space of its
//! own (the VMM's window and page tables for its slot); the kernel, its tables and
//! this process table are in the low memory every address space shares. A forked
//! child runs on a vCPU of its own, like a thread; the VMM copies the parent's used
//! memory into the child's window and loads a new image for execve.

use crate::abi::*;
use crate::entry::Frame;
use crate::mem::{mmio, put, user_ok};
use crate::percpu;
use crate::sys::{pi, set_pi, unsupported, with, Proc, Zombie, EFAULT, EINVAL, ENOSYS};
use crate::thread;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

const EAGAIN: i64 = 11;
const ECHILD: i64 = 10;
const EPERM: i64 = 1;
const ESRCH: i64 = 3;
const SIGSEGV: u64 = 11;

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
/// The VMM's answer to an execve that failed after the old image was gone.
const EXEC_LOST: i64 = -4095;

/// Set while a process slot's process is ending: its other threads, killed by
/// then, only give their vCPUs back.
static DYING: [AtomicBool; MAX_PROCS as usize] = [const { AtomicBool::new(false) }; MAX_PROCS as usize];

/// Bumped (and futex-woken) when a child of the process in that slot exits.
static CHILD_EVENT: [AtomicU32; MAX_PROCS as usize] =
    [const { AtomicU32::new(0) }; MAX_PROCS as usize];

fn me() -> u64 {
    percpu::get(PC_PROC).min(MAX_PROCS - 1)
}

/// Process slot `p`'s PI_BUSY word.
fn busy(p: u64) -> &'static AtomicU64 {
    // SAFETY: PI_BUSY of each slot is an aligned u64 of kernel memory, only ever
    // accessed atomically.
    unsafe { AtomicU64::from_ptr((PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_BUSY) as *mut u64) }
}

/// Takes a free process slot (its PI_BUSY from 0 to 1).
fn take_proc() -> Option<u64> {
    (1..MAX_PROCS).find(|&p| {
        busy(p)
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

fn free_proc(p: u64) {
    busy(p).store(0, Ordering::Release);
}

/// fork(2), vfork(2) (a copy too: its child may only exec or exit anyway) and
/// clone(2) without CLONE_THREAD.
pub fn fork(f: &Frame, flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64) -> i64 {
    let known = 0xff
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID
        | CLONE_CHILD_SETTID
        | CLONE_VM
        | CLONE_VFORK;
    let vm_ok = flags & CLONE_VM == 0 || flags & CLONE_VFORK != 0;
    if flags & !known != 0 || !vm_ok {
        return unsupported(56);
    }
    let Some(slot) = thread::take_slot() else {
        return -EAGAIN;
    };
    let Some(child) = take_proc() else {
        // SAFETY: the per-CPU slot was taken above and is given back unused.
        unsafe { percpu::at(slot, PC_BUSY).write_volatile(0) };
        return -EAGAIN;
    };
    let pid = thread::next_tid();
    let parent = me();
    // The child's block and state start as copies of the parent's.
    // SAFETY: both blocks are kernel memory; the child's slot is ours (taken).
    unsafe {
        let (from, to) = (PROC_INFO_GPA + parent * PROC_INFO_SIZE, PROC_INFO_GPA + child * PROC_INFO_SIZE);
        core::ptr::copy_nonoverlapping(
            (from + PI_BRK_START) as *const u8,
            (to + PI_BRK_START) as *mut u8,
            (PROC_INFO_SIZE - PI_BRK_START) as usize,
        );
        ((to + PI_GEN) as *mut u64).write_volatile(pi(parent, PI_GEN));
        // Timer and host signals the parent has not taken yet are not the child's,
        // nor its pids (set below, once the child's are known).
        for off in [PI_TIMER_SIG, PI_HOSTSIG, PI_PID, PI_PPID, PI_PGID, PI_SID] {
            ((to + off) as *mut u64).write_volatile(0);
        }
    }
    crate::signal::clear_pending(child);
    crate::signal::clear_stopped(child);
    DYING[child as usize].store(false, Ordering::SeqCst);
    let ranges = with(|s| {
        let mut c = *s.me();
        let ranges = c.used_ranges(percpu::get(PC_USER_RSP));
        (c.ppid, c.pid, c.threads, c.live, c.it_interval) = (c.pid, pid, 1, true, [0; 3]);
        c.children_cpu = 0;
        (c.stop_report, c.cont_report) = (0, false);
        // With the group itself, under the lock (a setpgid may move the parent).
        set_pi(child, PI_PGID, c.pgid);
        set_pi(child, PI_SID, c.sid);
        s.procs[child as usize] = c;
        ranges
    });
    let clear = if flags & CLONE_CHILD_CLEARTID != 0 { ctid } else { 0 };
    thread::prepare_slot(slot, pid, clear, f.rcx, child);
    // The child's thread keeps the caller's alternate signal stack, as fork's does.
    for off in [PC_ALT_SP, PC_ALT_SIZE, PC_ALT_FLAGS] {
        // SAFETY: the slot was taken above; no vCPU runs on it yet.
        unsafe { percpu::at(slot, off).write_volatile(percpu::get(off)) };
    }
    let undo = |e: i64| {
        with(|s| s.procs[child as usize].live = false);
        free_proc(child);
        // SAFETY: no vCPU was started on the slot.
        unsafe { percpu::at(slot, PC_BUSY).write_volatile(0) };
        e
    };
    if flags & CLONE_PARENT_SETTID != 0 && !thread::write_tid(ptid, pid) {
        return undo(-EFAULT);
    }
    let blk = thread::start_block(f, stack, (flags & CLONE_SETTLS != 0).then_some(tls), slot);
    let w = |off: u64, v: u64| {
        // SAFETY: the block is in this vCPU's per-CPU area.
        unsafe { ((blk + off) as *mut u64).write_volatile(v) }
    };
    w(CL_PROC, child);
    w(CL_CTID, if flags & CLONE_CHILD_SETTID != 0 { ctid } else { 0 });
    w(CL_TID, pid);
    for (i, (a, b)) in ranges.iter().enumerate() {
        w(CL_RANGES + 16 * i as u64, *a);
        w(CL_RANGES + 16 * i as u64 + 8, *b);
    }
    w(CL_RET, (-ENOSYS) as u64);
    thread::set_single(child);
    set_pi(child, PI_PPID, pi(parent, PI_PID));
    set_pi(child, PI_PID, pid);
    mmio(MMIO_FORK, blk);
    // SAFETY: as for the writes.
    let ret = unsafe { ((blk + CL_RET) as *const u64).read_volatile() } as i64;
    if ret < 0 {
        set_pi(child, PI_PID, 0);
        return undo(ret);
    }
    pid as i64
}

/// Where a process the VMM started for `hyperjail exec` begins (the spawn entry,
/// on a vCPU of its own whose PC_PROC the VMM set, with the image loaded): it is
/// registered without a parent in the VM, as `runc exec` starts a process in a PID
/// namespace (ppid 0; its orphans go to init), in a session of its own, with no
/// signal blocked. Returns the user stack; the entry jumps to `rip` with every
/// other register zero.
#[no_mangle]
extern "C" fn hj_spawned(rip: u64, rsp: u64) -> u64 {
    let p = me();
    let pid = thread::next_tid();
    thread::prepare_slot(percpu::slot(), pid, 0, rip, p);
    // A new program's control words (this vCPU may be a reused one: the words it
    // holds are an earlier thread's); no signal blocked.
    percpu::set(PC_MXCSR, 0x1f80);
    percpu::set(PC_FCW, 0x37f);
    percpu::set(PC_SIGMASK, 0);
    percpu::set(PC_USER_RSP, rsp);
    crate::signal::clear_pending(p);
    crate::signal::clear_stopped(p);
    DYING[p as usize].store(false, Ordering::SeqCst);
    thread::set_single(p);
    with(|s| s.procs[p as usize] = Proc::started(pid));
    set_pi(p, PI_PPID, 0);
    set_pi(p, PI_PGID, pid);
    set_pi(p, PI_SID, pid);
    set_pi(p, PI_PID, pid);
    mmio(MMIO_SPAWNED, pid);
    rsp
}

/// execve(2): the VMM loads the new image into this process's memory; on success
/// the system call returns into it with fresh registers.
pub fn execve(f: &mut Frame, path: u64, argv: u64, envp: u64) -> i64 {
    let blk = percpu::base() + PC_BLOCK;
    let w = |off: u64, v: u64| {
        // SAFETY: the block is in this vCPU's per-CPU area.
        unsafe { ((blk + off) as *mut u64).write_volatile(v) }
    };
    let r = |off: u64| {
        // SAFETY: as above.
        unsafe { ((blk + off) as *const u64).read_volatile() }
    };
    // Read now: the caller's memory is gone once the new image is in.
    let name = exec_name(path);
    // The whole block each time: the futex calls in between share it.
    let ask = |check: u64| {
        w(EX_PATH, path);
        w(EX_ARGV, argv);
        w(EX_ENVP, envp);
        w(EX_CHECK, check);
        w(EX_RET, (-ENOSYS) as u64);
        mmio(MMIO_EXEC, blk);
        r(EX_RET) as i64
    };
    let p = me();
    let threaded = with(|s| s.me().threads) > 1;
    if threaded {
        // As Linux: once the execve cannot fail, the other threads end first (as
        // by SIGKILL, without ending the process) and this one carries on alone.
        let ret = ask(1);
        if ret < 0 {
            return ret;
        }
        if DYING[p as usize].swap(true, Ordering::SeqCst) {
            // Another thread is ending the process, or exec'ing: this one goes.
            thread::release(0);
        }
        end_other_threads(p);
        with(|s| s.me().threads = 1);
        DYING[p as usize].store(false, Ordering::SeqCst);
    }
    let ret = ask(0);
    if ret < 0 && threaded {
        // The other threads are gone: as Linux after de_thread, no way back.
        end(SIGSEGV);
    }
    if ret == EXEC_LOST {
        // The old image is gone and the new one could not be loaded.
        end(SIGSEGV);
    }
    if ret < 0 {
        return ret;
    }
    // A fresh start: every register zero but rip and rsp, default FPU/SSE state,
    // no TLS, flags with interrupts on.
    let (rip, rsp) = (r(EX_RIP), r(EX_RSP));
    // SAFETY: the entry saved 512 bytes of fxsave image right below the frame
    // (entry.rs: `sub $520, %rsp; fxsave64 (%rsp)`, then the frame 520 bytes up);
    // the restore loads this image on the way out.
    unsafe {
        let fx = (f as *mut Frame as *mut u8).sub(520);
        core::ptr::write_bytes(fx, 0, 512);
        (fx as *mut u16).write_unaligned(0x37f);
        (fx.add(24) as *mut u32).write_unaligned(0x1f80);
        core::arch::asm!("wrfsbase {}", in(reg) 0u64, options(nostack));
        core::ptr::write_bytes(f as *mut Frame, 0, 1);
    }
    f.rcx = rip;
    f.r11 = 0x202;
    percpu::set(PC_USER_RSP, rsp);
    percpu::set(PC_CLEAR_TID, 0);
    // The one thread left is the process's leader: its tid is the pid.
    percpu::set(PC_TID, with(|s| s.me().pid));
    percpu::set(PC_ALT_SIZE, 0);
    percpu::set(PC_ALT_SP, 0);
    percpu::set(PC_ALT_FLAGS, 0);
    with(|s| {
        let me = s.me();
        me.signals.exec();
        me.comm = name;
    });
    thread::set_single(me());
    0
}

/// A new image's name, as Linux gives it: the file name of the path execve got.
fn exec_name(path: u64) -> [u8; 16] {
    let mut name = [0u8; 16];
    let mut k = 0;
    let mut i = 0u64;
    while i < 4096 && crate::mem::user_ok(path + i, 1) {
        // SAFETY: checked to be guest RAM.
        let c = unsafe { ((path + i) as *const u8).read_volatile() };
        match c {
            0 => break,
            b'/' => {
                name = [0; 16];
                k = 0;
            }
            c if k < 15 => {
                name[k] = c;
                k += 1;
            }
            _ => {}
        }
        i += 1;
    }
    name
}

/// exit_group(2): the first process's exit ends the VM; another's ends it alone.
pub fn exit_group(code: u64) -> ! {
    end((code & 0xff) << 8)
}

/// The calling process was killed by signal `sig` (a fault in its code).
pub fn killed(sig: u64) -> ! {
    end(sig & 0x7f)
}

/// Ends the calling process with wait status `status`.
fn end(status: u64) -> ! {
    let p = me();
    if p == 0 {
        if DYING[0].load(Ordering::SeqCst) {
            // Another thread of the first process is exec'ing (it killed this one).
            thread::release(status >> 8);
        }
        let code = if status & 0x7f != 0 { 128 + (status & 0x7f) } else { status >> 8 };
        crate::sys::exit(code);
    }
    if DYING[p as usize].swap(true, Ordering::SeqCst) {
        // Another thread is ending the process, or exec'ing (it killed this one).
        thread::release(status >> 8);
    }
    end_other_threads(p);
    // Memory and files go next (a pipe's reader then sees its end); the VMM
    // answers with its CPU time, all its threads' now, for its parent's wait.
    mmio(MMIO_PROC_EXIT, status);
    let cpu = percpu::get(PC_CPUTIME);
    let (parent, orphans, slots) = with(|s| {
        let me = s.procs[p as usize];
        s.procs[p as usize].live = false;
        // Gone from /proc and `ps` before a zombie of it can be waited for.
        set_pi(p, PI_PID, 0);
        // Children go to the first process (pid 1), as to init.
        let mut orphans = false;
        for (i, q) in s.procs.iter_mut().enumerate().filter(|(_, q)| q.live && q.ppid == me.pid) {
            q.ppid = 1;
            set_pi(i as u64, PI_PPID, 1);
        }
        for z in s.zombies.iter_mut().filter(|z| z.used && z.ppid == me.pid) {
            z.ppid = 1;
            orphans = true;
        }
        let parent = s
            .procs
            .iter()
            .position(|q| q.live && q.pid == me.ppid)
            .unwrap_or(0);
        // A group this leaves orphaned with a stopped member: SIGHUP and SIGCONT.
        let hup = crate::signal::orphaned_stopped(s);
        // SIGCHLD; a parent that ignores it keeps no zombie. A process started
        // from the host has no parent here: the VMM got its status (MMIO_PROC_EXIT).
        let slots = if me.ppid == 0 {
            None
        } else {
            crate::signal::child_exited(s, parent, me.pid, status)
        };
        if slots.is_some() {
            let z = Zombie {
                used: true,
                pid: me.pid,
                ppid: me.ppid,
                pgid: me.pgid,
                status,
                cpu: cpu.saturating_add(me.children_cpu),
            };
            // A full table overwrites its first entry (a zombie never waited for).
            let at = s.zombies.iter().position(|z| !z.used).unwrap_or(0);
            s.zombies[at] = z;
        }
        (parent as u64, orphans, slots.unwrap_or(0) | hup)
    });
    crate::signal::clear_stopped(p);
    free_proc(p);
    // The interrupts and wakes go with this vCPU's release: one exit for them all.
    crate::signal::interrupt_on_release(slots);
    for slot in [Some(parent), orphans.then_some(0)].into_iter().flatten() {
        let slot = slot.min(MAX_PROCS - 1);
        CHILD_EVENT[slot as usize].fetch_add(1, Ordering::SeqCst);
        percpu::set(PC_END_EVENTS, CHILD_EVENT.as_ptr() as u64);
        percpu::set(PC_END_WAKE, percpu::get(PC_END_WAKE) | 1 << slot);
    }
    thread::release(status >> 8)
}

/// A child of the process in slot `slot` exited, stopped or continued: its waits
/// look again.
pub fn child_changed(slot: u64) {
    let ev = &CHILD_EVENT[slot.min(MAX_PROCS - 1) as usize];
    ev.fetch_add(1, Ordering::SeqCst);
    thread::futex_call(1, ev.as_ptr() as u64, u64::from(u32::MAX >> 1), u64::MAX, 0);
}

/// Ends every thread of process slot `p` but the caller (DYING is set): SIGKILL
/// ends each at its next entry into the kernel (from a wait, or from user code
/// through the VMM's kick); their slots are free once their vCPUs have stopped.
fn end_other_threads(p: u64) {
    loop {
        let others = crate::signal::kill_other_threads(p);
        if others == 0 {
            break;
        }
        crate::signal::interrupt(others);
        thread::futex_call(0, percpu::base() + PC_SLEEP, 0, 1_000_000, 0);
    }
}

/// What a wait found.
enum Found {
    /// pid, wait status, CPU time in ns (an exited child's and its children's).
    Reaped(u64, u64, u64),
    Wait,
    None,
}

/// WUNTRACED (wait4) / WSTOPPED (waitid): report stopped children too.
const WUNTRACED: u64 = 2;
/// Report exited children (wait4 always does).
const WEXITED: u64 = 4;
/// Report continued children too.
const WCONTINUED: u64 = 8;

/// Which children a wait takes: by pid (-1 any, 0 the caller's group, >0 that one,
/// <-1 that group); with `flags` WUNTRACED and WCONTINUED, also live children that
/// stopped or continued since last reported (status 0x7f | sig << 8, or 0xffff).
fn wait_for(
    pid: i64,
    nohang: bool,
    reap: bool,
    flags: u64,
) -> Result<Option<(u64, u64, u64)>, i64> {
    let p = me();
    loop {
        let ev = CHILD_EVENT[p as usize].load(Ordering::SeqCst);
        let found = with(|s| {
            let (mine, group) = (s.procs[p as usize].pid, s.procs[p as usize].pgid);
            let matches = |zpid: u64, zpgid: u64| match pid {
                -1 => true,
                0 => zpgid == group,
                x if x > 0 => zpid == x as u64,
                x => zpgid == x.unsigned_abs(),
            };
            if let Some(z) = s
                .zombies
                .iter_mut()
                .filter(|_| flags & WEXITED != 0)
                .find(|z| z.used && z.ppid == mine && matches(z.pid, z.pgid))
            {
                z.used &= !reap;
                if reap {
                    let me = &mut s.procs[p as usize];
                    me.children_cpu = me.children_cpu.saturating_add(z.cpu);
                }
                return Found::Reaped(z.pid, z.status, z.cpu);
            }
            for q in s
                .procs
                .iter_mut()
                .filter(|q| q.live && q.ppid == mine && matches(q.pid, q.pgid))
            {
                if flags & WUNTRACED != 0 && q.stop_report != 0 {
                    let status = 0x7f | q.stop_report << 8;
                    if reap {
                        q.stop_report = 0;
                    }
                    return Found::Reaped(q.pid, status, 0);
                }
                if flags & WCONTINUED != 0 && q.cont_report {
                    q.cont_report &= !reap;
                    return Found::Reaped(q.pid, 0xffff, 0);
                }
            }
            if s.procs
                .iter()
                .any(|q| q.live && q.ppid == mine && matches(q.pid, q.pgid))
            {
                Found::Wait
            } else {
                Found::None
            }
        });
        match found {
            Found::Reaped(child, status, cpu) => return Ok(Some((child, status, cpu))),
            Found::None => return Err(-ECHILD),
            Found::Wait if nohang => return Ok(None),
            Found::Wait => {
                let word = CHILD_EVENT[p as usize].as_ptr() as u64;
                let r = thread::futex_call(0, word, u64::from(ev), u64::MAX, 0);
                if r == -crate::signal::EINTR && crate::signal::deliverable() {
                    return Err(r);
                }
            }
        }
    }
}

/// wait4(2); the rusage has the child's CPU time (and its waited-for children's) as
/// user time, the rest zero.
pub fn wait4(pid: i64, wstatus: u64, options: u64, rusage: u64) -> i64 {
    const WNOHANG: u64 = 1;
    const KNOWN: u64 = 1 | 2 | 8 | 0x2000_0000 | 0x4000_0000 | 0x8000_0000;
    if options & !KNOWN != 0 || pid == i64::from(i32::MIN) {
        return -EINVAL;
    }
    if (wstatus != 0 && !user_ok(wstatus, 4)) || (rusage != 0 && !user_ok(rusage, 144)) {
        return -EFAULT;
    }
    match wait_for(pid, options & WNOHANG != 0, true, options | WEXITED) {
        Ok(Some((child, status, cpu))) => {
            if wstatus != 0 {
                put(wstatus, &(status as u32).to_le_bytes());
            }
            if rusage != 0 {
                crate::time::put_rusage(rusage, cpu);
            }
            child as i64
        }
        Ok(None) => 0,
        Err(e) => e,
    }
}

/// waitid(2): P_ALL, P_PID, P_PGID; WEXITED, WSTOPPED, WCONTINUED, WNOHANG,
/// WNOWAIT; the child's siginfo and, as wait4's, its CPU time in the rusage.
pub fn waitid(idtype: u64, id: u64, info: u64, options: u64, rusage: u64) -> i64 {
    const WNOHANG: u64 = 1;
    const WNOWAIT: u64 = 0x0100_0000;
    const KNOWN: u64 = 1 | 2 | 4 | 8 | WNOWAIT | 0x2000_0000 | 0x4000_0000 | 0x8000_0000;
    let id = id as u32 as i64;
    let pid = match idtype {
        0 => -1,
        1 if id > 0 => id,
        2 if id > 0 => -id,
        2 if id == 0 => 0,
        _ => return -EINVAL,
    };
    if options & !KNOWN != 0 || options & (WEXITED | 2 | 8) == 0 {
        return -EINVAL;
    }
    if (info != 0 && !user_ok(info, 128)) || (rusage != 0 && !user_ok(rusage, 144)) {
        return -EFAULT;
    }
    let found = match wait_for(pid, options & WNOHANG != 0, options & WNOWAIT == 0, options) {
        Ok(f) => f,
        Err(e) => return e,
    };
    if info != 0 {
        let mut si = [0u8; 128];
        if let Some((child, status, _)) = found {
            let (code, st) = if status == 0xffff {
                (6i32, 18) // CLD_CONTINUED by SIGCONT
            } else if status & 0xff == 0x7f {
                (5, ((status >> 8) & 0xff) as i32) // CLD_STOPPED
            } else if status & 0x7f != 0 {
                (2, (status & 0x7f) as i32)
            } else {
                (1, ((status >> 8) & 0xff) as i32)
            };
            si[..4].copy_from_slice(&17i32.to_le_bytes()); // SIGCHLD
            si[8..12].copy_from_slice(&code.to_le_bytes());
            si[16..20].copy_from_slice(&(child as u32).to_le_bytes());
            si[20..24].copy_from_slice(&(crate::mem::boot(BI_UID) as u32).to_le_bytes());
            si[24..28].copy_from_slice(&st.to_le_bytes());
        }
        put(info, &si);
    }
    if rusage != 0 {
        crate::time::put_rusage(rusage, found.map_or(0, |(_, _, cpu)| cpu));
    }
    0
}

/// getpid(2).
pub fn getpid() -> i64 {
    with(|s| s.me().pid) as i64
}

/// getppid(2) (0 for the first process, whose parent is outside the VM).
pub fn getppid() -> i64 {
    with(|s| s.me().ppid) as i64
}

/// The slot of the live process `pid` (0: the caller).
fn find(s: &mut crate::sys::State, pid: u64) -> Option<usize> {
    if pid == 0 {
        return Some(me() as usize);
    }
    s.procs.iter().position(|q| q.live && q.pid == pid)
}

/// getpgid(2) (getpgrp with 0).
pub fn getpgid(pid: u64) -> i64 {
    with(|s| find(s, pid).map_or(-ESRCH, |i| s.procs[i].pgid as i64))
}

/// getsid(2).
pub fn getsid(pid: u64) -> i64 {
    with(|s| find(s, pid).map_or(-ESRCH, |i| s.procs[i].sid as i64))
}

/// setpgid(2): the caller or one of its children, into a group of its session.
pub fn setpgid(pid: u64, pgid: u64) -> i64 {
    // A pid_t: negative is EINVAL.
    let Ok(pgid) = u64::try_from(pgid as i32) else {
        return -EINVAL;
    };
    with(|s| {
        let mine = s.procs[me() as usize];
        let Some(i) = find(s, pid) else {
            return -ESRCH;
        };
        let t = s.procs[i];
        if t.pid != mine.pid && t.ppid != mine.pid {
            return -ESRCH;
        }
        if t.sid != mine.sid || t.pid == t.sid {
            return -EPERM;
        }
        let pgid = if pgid == 0 { t.pid } else { pgid };
        s.procs[i].pgid = pgid;
        set_pi(i as u64, PI_PGID, pgid);
        0
    })
}

/// setsid(2).
pub fn setsid() -> i64 {
    with(|s| {
        let i = me() as usize;
        let pid = s.procs[i].pid;
        if s.procs.iter().any(|q| q.live && q.pgid == pid) {
            return -EPERM;
        }
        s.procs[i].sid = pid;
        s.procs[i].pgid = pid;
        set_pi(i as u64, PI_PGID, pid);
        set_pi(i as u64, PI_SID, pid);
        pid as i64
    })
}
