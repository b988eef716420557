//! Signals: actions per process, a blocked mask and pending set per thread (and
//! per process), delivery with a Linux rt_sigframe on the user stack, and
//! rt_sigreturn. Signals are delivered when a thread returns from a system call; a
//! thread that waits (a futex, a sleep, wait4, a read from a pipe, sigsuspend) is
//! woken by the VMM to take it, and one that runs user code is stopped by the VMM
//! and enters the kernel through the async entry (entry.rs).

use crate::abi::*;
use crate::entry::Frame;
use crate::mem::{mmio, put, user_ok};
use crate::percpu;
use crate::sys::{with, State, EFAULT, EINVAL};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const EINTR: i64 = 4;
const EIO: i64 = 5;
const SIGTTIN: u64 = 21;
const ESRCH: i64 = 3;
const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SIGKILL: u64 = 9;
const SIGSEGV: u64 = 11;
const SIGCHLD: u64 = 17;
const SIGCONT: u64 = 18;
const SA_NOCLDSTOP: u64 = 1;
/// si_code of SIGCHLD for a stopped and a continued child.
const CLD_STOPPED: i32 = 5;
const CLD_CONTINUED: i32 = 6;
const SIGSTOP: u64 = 19;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_ONSTACK: u64 = 0x0800_0000;
const SS_ONSTACK: u64 = 1;
const SS_DISABLE: u64 = 2;
const SS_AUTODISARM: u64 = 1 << 31;
const MINSIGSTKSZ: u64 = 2048;
const EPERM: i64 = 1;
const ENOMEM: i64 = 12;
const SA_RESTART: u64 = 0x1000_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
/// Signals no mask or handler can touch.
const UNBLOCKABLE: u64 = bit(SIGKILL) | bit(SIGSTOP);

const fn bit(sig: u64) -> u64 {
    1 << (sig - 1)
}

/// One signal's action (the kernel's struct sigaction).
#[derive(Clone, Copy, Default)]
pub struct Action {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

/// What the receiver's siginfo says about a signal: si_code, si_pid, si_status.
#[derive(Clone, Copy, Default)]
pub struct Info {
    code: i32,
    pid: u32,
    status: i32,
}

/// A process's signal actions and the info of its pending signals (kept in its
/// [`crate::sys::Proc`]; the pending set itself is [`PENDING`]).
#[derive(Clone, Copy)]
pub struct Signals {
    actions: [Action; 64],
    info: [Info; 64],
}

/// Signals pending for each process slot (any of its threads may take them): read
/// without the state lock on every return from a system call.
static PENDING: [AtomicU64; MAX_PROCS as usize] = [const { AtomicU64::new(0) }; MAX_PROCS as usize];

/// A new process (fork) starts with nothing pending.
pub fn clear_pending(p: u64) {
    PENDING[p.min(MAX_PROCS - 1) as usize].store(0, Ordering::SeqCst);
}

impl Signals {
    /// No handlers, nothing pending.
    pub const EMPTY: Signals = Signals {
        actions: [Action {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        }; 64],
        info: [Info {
            code: 0,
            pid: 0,
            status: 0,
        }; 64],
    };

    /// execve: handlers go back to the default (ignored signals stay ignored).
    pub fn exec(&mut self) {
        for a in self.actions.iter_mut() {
            if a.handler != SIG_IGN {
                *a = Action::default();
            }
        }
    }

    fn ignored(&self, sig: u64) -> bool {
        let a = &self.actions[(sig - 1) as usize];
        a.handler == SIG_IGN || (a.handler == SIG_DFL && default_ignored(sig))
    }
}

/// Signals whose default action is to do nothing (SIGCONT's continuing is done
/// when it is sent: see [`post`]).
fn default_ignored(sig: u64) -> bool {
    matches!(sig, 17 | 18 | 23 | 28)
}

/// The signals whose default action stops the process: SIGSTOP, SIGTSTP,
/// SIGTTIN, SIGTTOU.
fn is_stop(sig: u64) -> bool {
    (19..=22).contains(&sig)
}

/// Non-zero while the process in that slot is stopped: its threads wait on it
/// (a futex word) in [`stop_point`].
static STOPPED: [AtomicU32; MAX_PROCS as usize] = [const { AtomicU32::new(0) }; MAX_PROCS as usize];

/// Process slot `p` starts (fork, exec from the host) or ends: not stopped.
pub fn clear_stopped(p: u64) {
    STOPPED[p.min(MAX_PROCS - 1) as usize].store(0, Ordering::SeqCst);
}

/// While the calling thread's process is stopped, the thread waits: SIGCONT or
/// SIGKILL end the stop (see [`post`]), also when the host sent them (its
/// mailbox is looked at after each wake-up), and a SIGKILL for this thread alone
/// (another thread ending the process) lets it go.
fn stop_point() {
    let p = percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize;
    let w = &STOPPED[p];
    if w.load(Ordering::Relaxed) == 0 {
        // The common case, on every way out of the kernel: one load.
        return;
    }
    loop {
        host_signals();
        let kill = (PENDING[p].load(Ordering::SeqCst)
            | thread_pending(percpu::slot()).load(Ordering::SeqCst))
            & bit(SIGKILL);
        if w.load(Ordering::SeqCst) == 0 || kill != 0 {
            return;
        }
        crate::thread::futex_call(0, w.as_ptr() as u64, 1, u64::MAX, 0);
    }
}

/// Tells the parent in slot `parent` that child `pid` stopped (`code`
/// CLD_STOPPED, `sig` the stop signal) or continued: SIGCHLD unless it ignores
/// it or asked SA_NOCLDSTOP; returns the slots to [`interrupt`] (a wait4 of the
/// parent's is woken by [`crate::proc::child_changed`]).
fn notify_parent(s: &mut State, parent: usize, pid: u64, code: i32, sig: u64) -> u64 {
    let a = s.procs[parent].signals.actions[(SIGCHLD - 1) as usize];
    let mut slots = 0;
    if a.handler != SIG_IGN && a.flags & SA_NOCLDSTOP == 0 {
        slots |= post(
            s,
            parent,
            SIGCHLD,
            Info {
                code,
                pid: pid as u32,
                status: sig as i32,
            },
        );
    }
    slots
}

/// The slot of the live parent of the process in slot `p`, if it has one here.
fn parent_of(s: &State, p: usize) -> Option<usize> {
    let ppid = s.procs[p].ppid;
    (ppid != 0)
        .then(|| s.procs.iter().position(|q| q.live && q.pid == ppid))
        .flatten()
}

/// The default action of stop signal `sig` for the calling thread's process,
/// decided under the state lock (the same hold that dequeued it, so a SIGCONT or
/// SIGKILL sent meanwhile cannot be missed): the process is marked stopped and its
/// parent told. Returns the slots to [`interrupt`] (its other threads, which stop
/// at their next way out of the kernel, and the parent's) and the parent's slot.
fn stop_locked(s: &mut State, p: usize, sig: u64) -> (u64, Option<usize>) {
    STOPPED[p].store(1, Ordering::SeqCst);
    s.procs[p].stop_report = sig;
    s.procs[p].cont_report = false;
    let mut slots = slots_of(p as u64) & !(1 << percpu::slot());
    let parent = parent_of(s, p);
    if let Some(par) = parent {
        let pid = s.procs[p].pid;
        slots |= notify_parent(s, par, pid, CLD_STOPPED, sig);
    }
    (slots, parent)
}

/// Whether the process group `pgid` is orphaned: none of its members has a
/// parent here in another group of the same session (Linux then drops the
/// default action of SIGTSTP, SIGTTIN and SIGTTOU).
fn orphaned(s: &State, pgid: u64, sid: u64) -> bool {
    !s.procs.iter().filter(|q| q.live && q.pgid == pgid).any(|q| {
        s.procs
            .iter()
            .any(|r| r.live && r.pid == q.ppid && r.pgid != pgid && r.sid == sid)
    })
}

/// After process `pid` left: every process group now orphaned with a stopped
/// member gets SIGHUP then SIGCONT, as Linux sends them (nobody is left to
/// continue it). Returns the slots to [`interrupt`].
pub fn orphaned_stopped(s: &mut State) -> u64 {
    let mut slots = 0;
    for i in 0..s.procs.len() {
        let q = s.procs[i];
        if !q.live || STOPPED[i].load(Ordering::SeqCst) == 0 || !orphaned(s, q.pgid, q.sid) {
            continue;
        }
        for j in 0..s.procs.len() {
            if s.procs[j].live && s.procs[j].pgid == q.pgid {
                slots |= post(s, j, 1, Info::default());
                slots |= post(s, j, SIGCONT, Info::default());
            }
        }
    }
    slots
}

/// Thread-directed pending signals of the thread on per-CPU slot `slot`.
fn thread_pending(slot: u64) -> &'static AtomicU64 {
    // SAFETY: PC_SIGPEND of each slot is an aligned u64 of kernel memory, only
    // ever accessed atomically.
    unsafe { AtomicU64::from_ptr(percpu::at(slot, PC_SIGPEND)) }
}

/// rt_sigaction(2).
pub fn sigaction(sig: u64, act: u64, old: u64, size: u64) -> i64 {
    if size != 8 || sig == 0 || sig > 64 {
        return -EINVAL;
    }
    if act != 0 && (sig == SIGKILL || sig == SIGSTOP) {
        return -EINVAL;
    }
    if (act != 0 && !user_ok(act, 32)) || (old != 0 && !user_ok(old, 32)) {
        return -EFAULT;
    }
    let new = (act != 0).then(|| {
        // SAFETY: checked to be 32 bytes of guest RAM.
        let w = |i: u64| unsafe { ((act + 8 * i) as *const u64).read_unaligned() };
        Action {
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3) & !UNBLOCKABLE,
        }
    });
    let p = percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize;
    let prev = with(|s| {
        let sigs = &mut s.me().signals;
        let prev = sigs.actions[(sig - 1) as usize];
        if let Some(a) = new {
            sigs.actions[(sig - 1) as usize] = a;
            // Setting SIG_IGN (or a default that ignores) drops it if pending.
            if sigs.ignored(sig) {
                PENDING[p].fetch_and(!bit(sig), Ordering::SeqCst);
            }
        }
        prev
    });
    if old != 0 {
        crate::mem::put_u64s(old, &[prev.handler, prev.flags, prev.restorer, prev.mask]);
    }
    0
}

/// rt_sigprocmask(2).
pub fn sigprocmask(how: u64, set: u64, old: u64, size: u64) -> i64 {
    if size != 8 {
        return -EINVAL;
    }
    if (set != 0 && !user_ok(set, 8)) || (old != 0 && !user_ok(old, 8)) {
        return -EFAULT;
    }
    let cur = percpu::get(PC_SIGMASK);
    if set != 0 {
        // SAFETY: checked to be 8 bytes of guest RAM.
        let s = unsafe { (set as *const u64).read_unaligned() };
        let new = match how {
            0 => cur | s,
            1 => cur & !s,
            2 => s,
            _ => return -EINVAL,
        };
        percpu::set(PC_SIGMASK, new & !UNBLOCKABLE);
    }
    if old != 0 {
        put(old, &cur.to_le_bytes());
    }
    0
}

/// rt_sigpending(2).
pub fn sigpending(set: u64, size: u64) -> i64 {
    if size != 8 {
        return -EINVAL;
    }
    let me = percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize;
    let p = PENDING[me].load(Ordering::SeqCst) | thread_pending(percpu::slot()).load(Ordering::SeqCst);
    if put(set, &p.to_le_bytes()) {
        0
    } else {
        -EFAULT
    }
}

/// Marks `sig` pending for process slot `p` (with `info`), under the state lock;
/// returns the per-CPU slots of its threads, to wake with [`interrupt`] once the
/// lock is released. Ignored signals are dropped.
pub fn post(s: &mut State, p: usize, sig: u64, info: Info) -> u64 {
    let init = s.procs[p].pid == 1;
    let woken = job_control(s, p, sig);
    let sigs = &mut s.procs[p].signals;

    if sig == 0 || sigs.ignored(sig) || (init && sigs.actions[(sig - 1) as usize].handler == SIG_DFL) {
        // The first process is the VM's init: as in a PID namespace, only the
        // signals it has a handler for reach it.
        return woken;
    }
    sigs.info[(sig - 1) as usize] = info;
    PENDING[p].fetch_or(bit(sig), Ordering::SeqCst);
    woken | slots_of(p as u64)
}

/// Job control, when a signal is sent to the process in slot `p` (by any means):
/// SIGCONT continues a stopped process (blocked or ignored, as on Linux) and drops
/// its pending stop signals; a stop signal drops a pending SIGCONT; SIGKILL ends a
/// stop so it can take effect. Returns the slots to [`interrupt`].
fn job_control(s: &mut State, p: usize, sig: u64) -> u64 {
    let init = s.procs[p].pid == 1;
    let mut woken = 0;
    if sig == SIGCONT && !init {
        PENDING[p].fetch_and(!(0xf << 18), Ordering::SeqCst);
        if STOPPED[p].swap(0, Ordering::SeqCst) != 0 {
            s.procs[p].stop_report = 0;
            s.procs[p].cont_report = true;
            woken = slots_of(p as u64);
            if let Some(par) = parent_of(s, p) {
                let pid = s.procs[p].pid;
                woken |= notify_parent(s, par, pid, CLD_CONTINUED, SIGCONT);
                CHILD_CHANGED.fetch_or(1 << par, Ordering::SeqCst);
            }
        }
    } else if is_stop(sig) {
        PENDING[p].fetch_and(!bit(SIGCONT), Ordering::SeqCst);
    } else if sig == SIGKILL && STOPPED[p].swap(0, Ordering::SeqCst) != 0 {
        woken = slots_of(p as u64);
    }
    // The same for what is pending for single threads of it.
    let drop = match sig {
        SIGCONT if !init => 0xf << 18,
        x if is_stop(x) => bit(SIGCONT),
        _ => 0,
    };
    if drop != 0 {
        for slot in 0..MAX_VCPUS {
            if slots_of(p as u64) & (1 << slot) != 0 {
                thread_pending(slot).fetch_and(!drop, Ordering::SeqCst);
            }
        }
    }
    woken
}

/// Parents (a bit per process slot) whose child was continued while the state
/// lock was held: [`interrupt`]'s caller cannot bump their wait words then, so
/// the next [`deliverable`] check by anyone does.
static CHILD_CHANGED: AtomicU64 = AtomicU64::new(0);

/// Bumps the wait words of the parents [`post`] noted.
fn flush_child_changed() {
    let mut bits = CHILD_CHANGED.swap(0, Ordering::SeqCst);
    while bits != 0 {
        let par = u64::from(bits.trailing_zeros());
        bits &= bits - 1;
        crate::proc::child_changed(par);
    }
}

/// The per-CPU slots running threads of process slot `p`, as a bit mask.
fn slots_of(p: u64) -> u64 {
    let mut slots = 0;
    for slot in 0..MAX_VCPUS {
        // SAFETY: per-CPU words of kernel memory, read atomically enough (a stale
        // value costs a spurious wake-up or a signal taken at the next call).
        let (busy, proc_) = unsafe {
            (
                percpu::at(slot, PC_BUSY).read_volatile(),
                percpu::at(slot, PC_PROC).read_volatile(),
            )
        };
        if busy != 0 && proc_ == p {
            slots |= 1 << slot;
        }
    }
    slots
}

/// Has the VMM wake the threads on per-CPU slots `slots` from their waits, so they
/// take their signals.
pub fn interrupt(slots: u64) {
    flush_child_changed();
    for slot in 0..MAX_VCPUS {
        if slots & (1 << slot) != 0 {
            mmio(MMIO_INTERRUPT, slot);
        }
    }
}

/// [`interrupt`], done by the VMM when this vCPU is released (PC_END_INTR): the
/// last thing a process's last thread does.
pub fn interrupt_on_release(slots: u64) {
    flush_child_changed();
    percpu::set(PC_END_INTR, percpu::get(PC_END_INTR) | slots);
}

/// The info of a signal sent by the calling process with kill (SI_USER) or tgkill
/// (SI_TKILL).
fn sender(s: &mut State, code: i32) -> Info {
    Info {
        code,
        pid: s.me().pid as u32,
        status: 0,
    }
}

/// kill(2).
pub fn kill(pid: i64, sig: u64) -> i64 {
    if sig > 64 {
        return -EINVAL;
    }
    let r = with(|s| {
        let info = sender(s, 0);
        let (me, group) = {
            let m = s.me();
            (m.pid, m.pgid)
        };
        let mut slots = 0;
        let mut found = false;
        for p in 0..MAX_PROCS as usize {
            let q = s.procs[p];
            let hit = q.live
                && match pid {
                    x if x > 0 => q.pid == x as u64,
                    0 => q.pgid == group,
                    -1 => q.pid != 1 && q.pid != me,
                    x => q.pgid == x.unsigned_abs(),
                };
            if hit {
                found = true;
                slots |= post(s, p, sig, info);
            }
        }
        // A zombie can be signalled (nothing happens).
        found |= pid > 0 && s.zombies.iter().any(|z| z.used && z.pid == pid as u64);
        if found {
            Ok(slots)
        } else {
            Err(-ESRCH)
        }
    });
    match r {
        Ok(slots) => {
            interrupt(slots);
            0
        }
        Err(e) => e,
    }
}

/// tgkill(2) and tkill(2) (`tgid` None): `sig` to thread `tid`.
pub fn tgkill(tgid: Option<u64>, tid: u64, sig: u64) -> i64 {
    if sig > 64 || tid as i64 <= 0 {
        return -EINVAL;
    }
    let r = with(|s| {
        let info = sender(s, -6);
        for slot in 0..MAX_VCPUS {
            // SAFETY: per-CPU words of kernel memory.
            let (busy, t, p) = unsafe {
                (
                    percpu::at(slot, PC_BUSY).read_volatile(),
                    percpu::at(slot, PC_TID).read_volatile(),
                    percpu::at(slot, PC_PROC).read_volatile().min(MAX_PROCS - 1),
                )
            };
            if busy == 0 || t != tid || tgid.is_some_and(|g| s.procs[p as usize].pid != g) {
                continue;
            }
            let init = s.procs[p as usize].pid == 1;
            let sigs = &mut s.procs[p as usize].signals;
            let unhandled = init && sigs.actions[(sig.max(1) - 1) as usize].handler == SIG_DFL;
            let woken = if sig != 0 {
                job_control(s, p as usize, sig)
            } else {
                0
            };
            let sigs = &mut s.procs[p as usize].signals;
            if sig != 0 && !sigs.ignored(sig) && !unhandled {
                sigs.info[(sig - 1) as usize] = info;
                thread_pending(slot).fetch_or(bit(sig), Ordering::SeqCst);
                return Ok(woken | 1 << slot);
            }
            return Ok(woken);
        }
        Err(-ESRCH)
    });
    match r {
        Ok(slots) => {
            interrupt(slots);
            0
        }
        Err(e) => e,
    }
}

/// SIGKILL to every thread of process slot `p` but the caller; returns their slots
/// (to [`interrupt`]).
pub fn kill_other_threads(p: u64) -> u64 {
    // A stopped thread must be able to die (see `stop_point`).
    let others = slots_of(p) & !(1 << percpu::slot());
    for slot in 0..MAX_VCPUS {
        if others & (1 << slot) != 0 {
            thread_pending(slot).fetch_or(bit(SIGKILL), Ordering::SeqCst);
        }
    }
    others
}

/// `sig` to the calling thread (taken on the way out of the current call), from
/// the kernel (si_code SI_KERNEL).
pub fn raise_self(sig: u64) {
    let p = percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize;
    let slot = percpu::slot();
    with(|s| {
        let sigs = &mut s.procs[p].signals;
        if !sigs.ignored(sig) {
            sigs.info[(sig - 1) as usize] = Info {
                code: 0x80,
                pid: 0,
                status: 0,
            };
            thread_pending(slot).fetch_or(bit(sig), Ordering::SeqCst);
        }
    });
}

/// SIGCHLD to the parent in slot `parent` of a child `pid` that ended with wait
/// status `status`: None when the parent ignores it (SIG_IGN: the child is not kept
/// as a zombie, as Linux does), else the slots to [`interrupt`].
pub fn child_exited(s: &mut State, parent: usize, pid: u64, status: u64) -> Option<u64> {
    let a = s.procs[parent].signals.actions[(SIGCHLD - 1) as usize];
    if a.handler == SIG_IGN {
        return None;
    }
    let (code, st) = if status & 0x7f != 0 {
        (2, (status & 0x7f) as i32)
    } else {
        (1, ((status >> 8) & 0xff) as i32)
    };
    Some(post(
        s,
        parent,
        SIGCHLD,
        Info {
            code,
            pid: pid as u32,
            status: st,
        },
    ))
}

/// Whether the calling thread has a signal to take (not blocked, not ignored).
pub fn deliverable() -> bool {
    host_signals();
    let blocked = percpu::get(PC_SIGMASK);
    let t = thread_pending(percpu::slot()).load(Ordering::SeqCst);
    let p = percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize;
    (t | PENDING[p].load(Ordering::SeqCst)) & !blocked != 0
}

/// Signals the VMM put in a mailbox (a u64 of kernel memory at `addr`, a bit per
/// signal) become pending for process slot `p`, with `info`.
fn take_mailbox(addr: u64, p: u64, info: Info) {
    // SAFETY: the mailboxes are aligned u64s of kernel memory, only ever accessed
    // atomically.
    let mailbox = unsafe { AtomicU64::from_ptr(addr as *mut u64) };
    if mailbox.load(Ordering::Relaxed) == 0 {
        return;
    }
    let sigs = mailbox.swap(0, Ordering::SeqCst);
    let slots = with(|s| {
        let mut slots = 0;
        for sig in 1..=64 {
            if sigs & bit(sig) != 0 {
                slots |= post(s, p as usize, sig, info);
            }
        }
        slots
    });
    interrupt(slots & !(1 << percpu::slot()));
}

/// The signals waiting for the calling process in the VMM's mailboxes become
/// pending, when one of its threads looks: its timers' (PI_TIMER_SIG, from the
/// kernel) and the host's (PI_HOSTSIG: `hyperjail kill`, `kill --all`, an `exec`
/// proxy's).
fn host_signals() {
    let p = percpu::get(PC_PROC).min(MAX_PROCS - 1);
    let kernel = Info {
        code: 0x80,
        pid: 0,
        status: 0,
    };
    take_mailbox(PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_TIMER_SIG, p, kernel);
    take_mailbox(PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_HOSTSIG, p, Info::default());
}

/// Puts mask `m` in force until the current system call returns (the old one is
/// restored then, or by the handler's return: rt_sigsuspend, ppoll, epoll_pwait).
pub fn set_temporary_mask(m: u64) {
    let old = percpu::get(PC_SIGMASK);
    percpu::set(PC_SIGMASK, m & !UNBLOCKABLE);
    percpu::set(PC_SAVED_MASK, old);
    percpu::set(PC_MASK_SAVED, 1);
}

/// rt_sigsuspend(2) (and pause(2) with the current mask): waits with `mask` until a
/// signal is to be taken; -EINTR, with the old mask restored after the handler.
pub fn sigsuspend(mask: Option<u64>) -> i64 {
    if let Some(m) = mask {
        set_temporary_mask(m);
    }
    while !deliverable() {
        // A wait on a word that stays 0, with no timeout: only an interrupt ends it.
        crate::thread::futex_call(0, percpu::base() + PC_SLEEP, 0, u64::MAX, 0);
    }
    -EINTR
}

/// After a system call: takes one pending signal that is not blocked and runs its
/// action: a handler gets a signal frame (and `ret` is saved in it), a default
/// action that terminates ends the process. Returns the value for rax.
pub fn deliver(f: &mut Frame, ret: i64, syscall: Option<u64>) -> i64 {
    stop_point();
    if !deliverable() {
        return ret;
    }
    let blocked = percpu::get(PC_SIGMASK);
    let tp = thread_pending(percpu::slot());
    let pp = &PENDING[percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize];
    let taken = with(|s| {
        let me = s.me();
        let t = tp.load(Ordering::SeqCst) & !blocked;
        let (sig, from_thread) = if t != 0 {
            (u64::from(t.trailing_zeros()) + 1, true)
        } else {
            let p = pp.load(Ordering::SeqCst) & !blocked;
            if p == 0 {
                return None;
            }
            (u64::from(p.trailing_zeros()) + 1, false)
        };
        if from_thread {
            tp.fetch_and(!bit(sig), Ordering::SeqCst);
        } else {
            pp.fetch_and(!bit(sig), Ordering::SeqCst);
        }
        let i = (sig - 1) as usize;
        let mut action = me.signals.actions[i];
        if action.handler > SIG_IGN && action.flags & SA_RESETHAND != 0 {
            me.signals.actions[i] = Action::default();
        }
        let info = me.signals.info[i];
        let (pgid, sid) = (me.pgid, me.sid);
        // A stop is decided here, under the lock that dequeued it: a SIGCONT or
        // SIGKILL sent meanwhile sees the process stopped. Linux drops SIGTSTP,
        // SIGTTIN and SIGTTOU for an orphaned process group.
        let mut stopped = None;
        if action.handler == SIG_DFL && is_stop(sig) {
            if sig != SIGSTOP && orphaned(s, pgid, sid) {
                action.handler = SIG_IGN;
            } else {
                let p = percpu::get(PC_PROC).min(MAX_PROCS - 1) as usize;
                stopped = Some(stop_locked(s, p, sig));
            }
        }
        Some((sig, action, info, stopped))
    });
    let Some((sig, action, info, stopped)) = taken else {
        restore_suspended_mask();
        return ret;
    };
    if let Some((slots, parent)) = stopped {
        interrupt(slots);
        if let Some(par) = parent {
            crate::proc::child_changed(par as u64);
        }
        stop_point();
        restore_suspended_mask();
        // Continued: a signal pending now is taken at once (a SIGCONT handler);
        // else a call the stop interrupted runs again, as Linux restarts it when
        // no handler ran.
        if deliverable() {
            return deliver(f, ret, syscall);
        }
        if ret == -EINTR && syscall.is_some_and(restartable) {
            f.rcx = f.rcx.wrapping_sub(2);
            return syscall.map_or(ret, |nr| nr as i64);
        }
        return ret;
    }
    match action.handler {
        SIG_IGN | SIG_DFL if action.handler == SIG_IGN || default_ignored(sig) => {
            restore_suspended_mask();
            ret
        }
        SIG_DFL => crate::proc::killed(sig),
        handler => {
            let old = if percpu::get(PC_MASK_SAVED) != 0 {
                percpu::set(PC_MASK_SAVED, 0);
                percpu::get(PC_SAVED_MASK)
            } else {
                blocked
            };
            // SA_RESTART: a call the signal interrupted runs again after the handler
            // (its `syscall` instruction, which stays in place even at a rewritten
            // site, with its number in rax), as Linux restarts it.
            let restart = ret == -EINTR
                && action.flags & SA_RESTART != 0
                && syscall.is_some_and(restartable);
            let saved = if restart {
                f.rcx = f.rcx.wrapping_sub(2);
                syscall.map_or(ret, |nr| nr as i64)
            } else {
                ret
            };
            if action.flags & SA_RESTORER == 0 || !frame(f, saved, sig, handler, &action, info, old) {
                // No way back from the handler, or no room for the frame: as Linux,
                // the process dies of SIGSEGV.
                crate::proc::killed(SIGSEGV);
            }
            let add = if action.flags & SA_NODEFER != 0 { 0 } else { bit(sig) };
            percpu::set(PC_SIGMASK, (blocked | action.mask | add) & !UNBLOCKABLE);
            0
        }
    }
}

/// A read of the console from outside its foreground group (the VMM answered
/// RQ_TTIN): SIGTTIN to the caller's process group and EINTR, so that the group
/// stops and the read runs again once continued; EIO when the caller ignores or
/// blocks SIGTTIN, or its group is orphaned, as Linux.
pub fn background_read() -> i64 {
    let blocked = percpu::get(PC_SIGMASK) & bit(SIGTTIN) != 0;
    let group = with(|s| {
        let me = s.me();
        let ignored = me.signals.actions[(SIGTTIN - 1) as usize].handler == SIG_IGN;
        let (pgid, sid) = (me.pgid, me.sid);
        (!(ignored || blocked || orphaned(s, pgid, sid))).then_some(pgid)
    });
    match group {
        Some(g) => {
            kill(-(g as i64), SIGTTIN);
            -EINTR
        }
        None => -EIO,
    }
}

/// The calls SA_RESTART restarts (Linux never restarts the sleeps, waits with a
/// timeout, poll/select/epoll or sigsuspend).
fn restartable(nr: u64) -> bool {
    matches!(nr, 0 | 1 | 17 | 18 | 19 | 20 | 40 | 61 | 247)
}

/// After rt_sigsuspend when no handler ran (another thread took the signal, or it
/// was ignored): its mask goes, the saved one comes back.
fn restore_suspended_mask() {
    if percpu::get(PC_MASK_SAVED) != 0 {
        percpu::set(PC_MASK_SAVED, 0);
        percpu::set(PC_SIGMASK, percpu::get(PC_SAVED_MASK));
    }
}

/// Offsets in the kernel's rt_sigframe (at the handler's rsp): the return address,
/// then struct ucontext (flags, link, stack_t, sigcontext, sigmask), then siginfo.
const UC: u64 = 8;
const MCONTEXT: u64 = UC + 40;
const SIGMASK: u64 = UC + 296;
const INFO: u64 = UC + 304;
const FRAME: u64 = INFO + 128;
/// Order of the general registers in struct sigcontext.
const GREGS: usize = 18;

/// The user registers of `f` as struct sigcontext lays them out (r8..r15, rdi, rsi,
/// rbp, rbx, rdx, rax, rcx, rsp, rip, eflags).
fn gregs(f: &Frame, rax: i64, rsp: u64) -> [u64; GREGS] {
    // After an async entry the user's rcx and r11 are in the per-CPU area; after a
    // system call they hold the return address and flags (the `syscall` ABI).
    let (rcx, r11) = if percpu::get(PC_FULL_RET) != 0 {
        (percpu::get(PC_RET_RCX), percpu::get(PC_RET_R11))
    } else {
        (f.rcx, f.r11)
    };
    [
        f.r8, f.r9, f.r10, r11, f.r12, f.r13, f.r14, f.r15, f.rdi, f.rsi, f.rbp, f.rbx, f.rdx,
        rax as u64, rcx, rsp, f.rcx, f.r11,
    ]
}

/// Builds the signal frame below the user's stack (past the red zone) and points
/// `f` at the handler; false when the stack is not writable memory.
/// The calling thread's alternate signal stack: base, size (0: none), flags.
fn altstack() -> (u64, u64, u64) {
    (percpu::get(PC_ALT_SP), percpu::get(PC_ALT_SIZE), percpu::get(PC_ALT_FLAGS))
}

/// Whether user stack pointer `rsp` is on the alternate signal stack (never,
/// with SS_AUTODISARM: as Linux's on_sig_stack).
fn on_altstack(rsp: u64) -> bool {
    let (sp, size, flags) = altstack();
    size != 0 && flags & SS_AUTODISARM == 0 && rsp > sp && rsp - sp <= size
}

/// The ss_flags sigaltstack and a signal frame report for the stack at `rsp`.
fn altstack_flags(rsp: u64) -> u64 {
    let (_, size, flags) = altstack();
    if size == 0 {
        SS_DISABLE
    } else if on_altstack(rsp) {
        SS_ONSTACK
    } else {
        flags & SS_AUTODISARM
    }
}

/// sigaltstack(2): the calling thread's alternate signal stack.
pub fn sigaltstack(ss: u64, old: u64) -> i64 {
    let rsp = percpu::get(PC_USER_RSP);
    let (sp, size, _) = altstack();
    let old_flags = altstack_flags(rsp);
    if ss != 0 {
        if !user_ok(ss, 24) {
            return -EFAULT;
        }
        // SAFETY: checked to be 24 bytes of guest RAM (a stack_t).
        let (nsp, nflags, nsize) = unsafe {
            (
                (ss as *const u64).read_unaligned(),
                u64::from(((ss + 8) as *const u32).read_unaligned()),
                ((ss + 16) as *const u64).read_unaligned(),
            )
        };
        if on_altstack(rsp) {
            return -EPERM;
        }
        match nflags & !SS_AUTODISARM {
            SS_DISABLE => {
                percpu::set(PC_ALT_SIZE, 0);
                percpu::set(PC_ALT_SP, 0);
                percpu::set(PC_ALT_FLAGS, 0);
            }
            0 | SS_ONSTACK => {
                if nsize < MINSIGSTKSZ {
                    return -ENOMEM;
                }
                percpu::set(PC_ALT_SP, nsp);
                percpu::set(PC_ALT_SIZE, nsize);
                percpu::set(PC_ALT_FLAGS, nflags & SS_AUTODISARM);
            }
            _ => return -EINVAL,
        }
    }
    if old != 0 {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&sp.to_le_bytes());
        b[8..12].copy_from_slice(&(old_flags as u32).to_le_bytes());
        b[16..].copy_from_slice(&size.to_le_bytes());
        if !put(old, &b) {
            return -EFAULT;
        }
    }
    0
}

fn frame(f: &mut Frame, ret: i64, sig: u64, handler: u64, a: &Action, info: Info, old: u64) -> bool {
    let user_rsp = percpu::get(PC_USER_RSP);
    // SA_ONSTACK with an alternate stack the thread is not on already: the frame
    // goes at its top (no red zone to skip there).
    let (alt_sp, alt_size, alt_flags) = altstack();
    let uc_stack = [alt_sp, altstack_flags(user_rsp), alt_size];
    let top = if a.flags & SA_ONSTACK != 0 && alt_size != 0 && !on_altstack(user_rsp) {
        alt_sp.wrapping_add(alt_size)
    } else {
        user_rsp.wrapping_sub(128)
    };
    // SS_AUTODISARM: off for the handler (any handler, as Linux), back at its
    // rt_sigreturn from the frame's uc_stack.
    if alt_flags & SS_AUTODISARM != 0 {
        percpu::set(PC_ALT_SIZE, 0);
        percpu::set(PC_ALT_SP, 0);
        percpu::set(PC_ALT_FLAGS, 0);
    }
    let fp = (top.wrapping_sub(512)) & !63;
    let at = ((fp - FRAME) & !15) - 8;
    if !user_ok(at, fp + 512 - at) {
        return false;
    }
    // The user's FPU/SSE state: the image the entry saved below the frame.
    // SAFETY: the entry's fxsave image is 512 bytes right below `f` (entry.rs);
    // [fp, fp+512) was checked to be guest RAM.
    unsafe {
        let fx = (f as *mut Frame as *const u8).sub(520);
        core::ptr::copy_nonoverlapping(fx, fp as *mut u8, 512);
    }
    crate::mem::zero(at, fp - at);
    let mut ok = crate::mem::put_u64s(at, &[a.restorer]);
    ok &= crate::mem::put_u64s(at + UC + 16, &uc_stack);
    ok &= crate::mem::put_u64s(at + MCONTEXT, &gregs(f, ret, user_rsp));
    // cs/gs/fs/ss, err, trapno, oldmask, cr2, fpstate
    ok &= crate::mem::put_u64s(at + MCONTEXT + 8 * GREGS as u64, &[0x2b_0000_0000_0033, 0, 0, old, 0, fp]);
    ok &= crate::mem::put_u64s(at + SIGMASK, &[old]);
    let mut si = [0u8; 32];
    si[..4].copy_from_slice(&(sig as i32).to_le_bytes());
    si[8..12].copy_from_slice(&info.code.to_le_bytes());
    si[16..20].copy_from_slice(&info.pid.to_le_bytes());
    si[24..28].copy_from_slice(&info.status.to_le_bytes());
    ok &= put(at + INFO, &si);
    if !ok {
        return false;
    }
    f.rdi = sig;
    f.rsi = at + INFO;
    f.rdx = at + UC;
    f.rcx = handler;
    f.r11 &= !0x500; // DF and TF off in the handler
    percpu::set(PC_USER_RSP, at);
    true
}

/// rt_sigreturn(2): back from a handler; the registers, FPU state and mask come
/// from the frame at the user's stack (the handler's `ret` popped the return
/// address). Returns the interrupted rax.
pub fn sigreturn(f: &mut Frame) -> i64 {
    let uc = percpu::get(PC_USER_RSP);
    let at = uc - UC;
    if !user_ok(at, FRAME) {
        crate::proc::killed(SIGSEGV);
    }
    // SAFETY: [at, at+FRAME) was checked to be guest RAM.
    let w = |off: u64| unsafe { ((at + off) as *const u64).read_unaligned() };
    let g: [u64; GREGS] = core::array::from_fn(|i| w(MCONTEXT + 8 * i as u64));
    let fp = w(MCONTEXT + 8 * (GREGS as u64 + 5));
    (f.r8, f.r9, f.r10, f.r12, f.r13, f.r14, f.r15) = (g[0], g[1], g[2], g[4], g[5], g[6], g[7]);
    (f.rdi, f.rsi, f.rbp, f.rbx, f.rdx) = (g[8], g[9], g[10], g[11], g[12]);
    f.rcx = g[16];
    f.r11 = (g[17] & 0xcd5) | 0x202;
    percpu::set(PC_USER_RSP, g[15]);
    // Back exactly where the handler interrupted, rcx and r11 included.
    percpu::set(PC_RET_RCX, g[14]);
    percpu::set(PC_RET_R11, g[3]);
    percpu::set(PC_FULL_RET, 1);
    percpu::set(PC_SIGMASK, w(SIGMASK) & !UNBLOCKABLE);
    // An alternate stack SS_AUTODISARM turned off for the handler comes back.
    let (ss_sp, ss_flags, ss_size) = (w(UC + 16), w(UC + 24) & 0xffff_ffff, w(UC + 32));
    if ss_flags & SS_AUTODISARM != 0 && ss_size >= MINSIGSTKSZ {
        percpu::set(PC_ALT_SP, ss_sp);
        percpu::set(PC_ALT_SIZE, ss_size);
        percpu::set(PC_ALT_FLAGS, SS_AUTODISARM);
    }
    if fp != 0 && user_ok(fp, 512) {
        // SAFETY: the entry's fxsave image is 512 bytes right below `f`; [fp,
        // fp+512) is guest RAM. MXCSR's reserved bits are cleared so that the
        // restore cannot fault.
        unsafe {
            let fx = (f as *mut Frame as *mut u8).sub(520);
            core::ptr::copy_nonoverlapping(fp as *const u8, fx, 512);
            let mx = fx.add(24) as *mut u32;
            mx.write_unaligned(mx.read_unaligned() & 0xffbf);
        }
    }
    g[13] as i64
}
