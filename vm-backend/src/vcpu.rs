//! The vCPU loop, and threads: each guest thread runs on a vCPU of its own with a
//! host thread of its own, all in the VMM process (so in the domain's cgroup, under
//! its cpuset and scheduler). A guest `clone` starts a vCPU on the per-CPU slot the
//! guest kernel prepared, from the registers it passed; a vCPU whose thread exited
//! is kept and reused by the next `clone` (KVM cannot remove a vCPU).

use crate::abi::*;
use crate::futex::Futexes;
use crate::mem::GuestMem;
use crate::ring::{Kicker, SlotProcs};
use crate::vmm::{crash_exit, kvm_err, set_msrs, set_sregs, warn};
use kvm_bindings::{kvm_regs, CpuId};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

const EAGAIN: i64 = 11;
const EINVAL: i64 = 22;

/// Stack of a vCPU thread started by `clone`.
const THREAD_STACK: usize = 256 << 10;

/// What every vCPU thread shares.
#[derive(Debug)]
pub struct Machine {
    /// The VM (new vCPUs come from it).
    pub vm: VmFd,
    /// Guest memory.
    pub mem: GuestMem,
    /// The CPUID every vCPU gets.
    pub cpuid: CpuId,
    /// The guest kernel's syscall entry (LSTAR).
    pub lstar: u64,
    /// The guest kernel's thread entry: a new thread's vCPU starts there (abi.rs,
    /// PC_MXCSR).
    pub thread_start: u64,
    /// The guest kernel's kill entry: a faulting process's vCPU restarts there.
    pub kill_start: u64,
    /// The guest kernel's async entry: a vCPU kicked in user code continues there.
    pub async_start: u64,
    /// The guest kernel's spawn entry: a process `hyperjail exec` starts begins
    /// there.
    pub spawn_start: u64,
    /// Process slots whose process the OOM killer ended (a bit each): a fault there
    /// (its memory was taken while it ran) counts as the SIGKILL it got.
    pub oom_victims: AtomicU64,
    /// Wakes the OOM thread to look at a changed memory limit (set when it starts).
    pub oom_kick: std::sync::OnceLock<crate::oom::Kick>,
    /// The console terminal's foreground process group (the guest's TIOCSPGRP;
    /// see [`crate::files::Host::console_fg`]).
    pub console_fg: Arc<AtomicU64>,
    /// Per process slot: the CPU time of its threads that ended, in ns (reset
    /// when a new process takes the slot).
    pub proc_cpu: Vec<AtomicU64>,
    /// Per process slot: the connection of the `exec` that started its process,
    /// told the pid and then the exit status (see spawn.rs).
    pub execs: Mutex<Vec<Option<Arc<std::os::unix::net::UnixStream>>>>,
    /// The forwarding rings, once their thread runs.
    pub ring: OnceLock<Kicker>,
    /// The guest's futexes.
    pub futexes: Futexes,
    /// Guest threads running.
    pub live: AtomicUsize,
    /// The next KVM vCPU id.
    pub next_id: AtomicU64,
    /// vCPUs whose thread exited, for reuse.
    pub spare: Mutex<Vec<VcpuFd>>,
    /// Host threads waiting to run a vCPU again (see [`Parked`]).
    pub parked: Mutex<Vec<Arc<Parked>>>,
    /// System calls already reported as unsupported.
    pub reported: Mutex<BTreeSet<u64>>,
    /// The shared low memory (a memfd), mapped into every process's view.
    pub shared_low: std::os::fd::OwnedFd,
    /// Each window's view of guest memory (window 0: `mem`), made at its first use
    /// and kept (its memslot cannot move).
    pub views: Mutex<Vec<Option<GuestMem>>>,
    /// The window each process slot's process uses (`p` or `p + MAX_PROCS`).
    pub windows: [AtomicU64; MAX_PROCS as usize],
    /// Whether the second windows are used: their guest-physical addresses need
    /// 37 bits, which the CPU must have (CPUID 0x80000008).
    pub two_windows: bool,
    /// The process slot on each vCPU slot.
    pub slot_proc: Arc<SlotProcs>,
    /// process.user, for a new image's auxiliary vector.
    pub user: (u32, u32),
    /// Size of the stack region at the top of a process's memory.
    pub stack: u64,
    /// The VMM's /proc/self/pagemap (opened before confinement): which pages of a
    /// parent a fork copies.
    pub pagemap: Option<std::fs::File>,
    /// Each window's program segments mapped from their files (a fork maps them
    /// again in the child; only the pages written since are copied); an ended
    /// process's stay while its window is kept.
    pub images: Mutex<Vec<Vec<crate::setup::Mapped>>>,
    /// The pages each window's ended process left there for the next one (see
    /// [`crate::window`]); 0 for a live process's window.
    pub kept: Mutex<Vec<u64>>,
    /// Syscall-site rewrites kept from processes that ended or replaced their
    /// image, made again in the next image of the same program.
    pub patches: crate::patches::Patches,
    /// Each vCPU slot's interrupt (a signal for the thread there).
    pub intr: Arc<crate::intr::Interrupts>,
    /// Set when `start` let the first vCPU run.
    pub started: AtomicBool,
    /// The processes' interval timers.
    pub timers: crate::timers::Timers,
}

/// What a vCPU thread runs: its per-CPU slot, its process slot and that
/// process's view of guest memory.
#[derive(Debug)]
pub struct Ctx {
    /// Per-CPU (and ring) slot.
    pub slot: u64,
    /// Process slot.
    pub proc: u64,
    /// The process's memory.
    pub mem: GuestMem,
}

/// The page-table root (CR3) of window `w`.
pub fn cr3(w: u64) -> u64 {
    if w == 0 {
        PML4_GPA
    } else if w < MAX_PROCS {
        PROC_PT_GPA + w * PROC_PT_SIZE
    } else {
        PROC_PT2_GPA + (w - MAX_PROCS) * PROC_PT_SIZE
    }
}

impl Machine {
    /// Wakes or kicks every running thread of process slot `p` (a signal for it is
    /// in a mailbox of its).
    pub fn wake_process(&self, p: u64) {
        for slot in 0..MAX_VCPUS {
            let area = PERCPU_GPA + slot * PERCPU_SIZE;
            let busy = self.mem.read_u64(area + PC_BUSY).unwrap_or(0) != 0;
            if busy && self.slot_proc[slot as usize].load(Ordering::SeqCst) == p {
                self.intr.raise(slot);
                self.intr.kick(slot);
            }
        }
        self.futexes.interrupt();
    }

    /// The u64 at `off` in process slot `p`'s block (PI_*; 0 if out of range).
    pub fn proc_word(&self, p: u64, off: u64) -> u64 {
        self.mem.proc_word(p, off)
    }

    /// The pid of the process in slot `p`, if the slot holds one that has a pid.
    pub fn guest_pid(&self, p: u64) -> Option<u64> {
        self.mem.guest_pid(p)
    }

    /// Gives the terminal's signal `sig` to every process of the console's
    /// foreground group (to none when the group has no process left, as Linux's
    /// tty does).
    pub fn post_terminal_signal(&self, sig: u64) {
        self.post_group_signal(self.console_fg.load(Ordering::SeqCst), sig);
    }

    /// Puts signal `sig` in the host mailbox of every process of group `pgid`.
    pub fn post_group_signal(&self, pgid: u64, sig: u64) {
        for p in self.mem.group_slots(pgid) {
            self.post_host_signal(p, sig);
        }
    }

    /// Puts signal `sig` (1..=64) in process slot `p`'s host mailbox (PI_HOSTSIG)
    /// and wakes its threads to take it.
    pub fn post_host_signal(&self, p: u64, sig: u64) {
        if !(1..=64).contains(&sig) || p >= MAX_PROCS {
            return;
        }
        if let Some(w) = self
            .mem
            .atomic_u64(PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_HOSTSIG)
        {
            w.fetch_or(1 << (sig - 1), Ordering::SeqCst);
        }
        self.wake_process(p);
    }

    /// The window of the process in slot `p`.
    pub fn window(&self, p: u64) -> u64 {
        self.windows
            .get(p as usize)
            .map_or(0, |w| w.load(Ordering::SeqCst))
    }

    /// A handle on process slot `p`'s view of memory (slot 0's if it has none).
    pub fn view(&self, p: u64) -> GuestMem {
        self.window_view(self.window(p))
    }

    /// A handle on window `w`'s view of memory (window 0's if it has none).
    pub fn window_view(&self, w: u64) -> GuestMem {
        self.views
            .lock()
            .ok()
            .and_then(|v| v.get(w as usize)?.as_ref().map(GuestMem::alias))
            .unwrap_or_else(|| self.mem.alias())
    }
}

/// How a vCPU's run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// exit_group(code), or the last thread's exit(code).
    Exit(u8),
    /// This thread exited with this status (see [`finish`]).
    ThreadExit(u8),
    /// A fatal fault or guest error, reported as killed by this signal.
    Crash(i32, String),
}

enum Event {
    Write(u64, u64),
    Read,
    Continue,
    /// KVM_RUN was interrupted by a host signal (a kick, see crate::intr).
    Kicked,
    Fatal(String),
}

/// Runs `vcpu` until its thread or the guest ends.
pub fn run(m: &Arc<Machine>, vcpu: &mut VcpuFd, ctx: &mut Ctx) -> End {
    loop {
        // A kick that came while this thread was out of KVM_RUN (handling an
        // exit) found no KVM_RUN to stop: it is taken here.
        if m.intr.take_kick(ctx.slot) {
            if let Err(e) = async_signal(m, vcpu, ctx) {
                return End::Crash(libc::SIGSEGV, e);
            }
        }
        let ev = match vcpu.run() {
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let mut b = [0u8; 8];
                let n = data.len().min(8);
                b[..n].copy_from_slice(&data[..n]);
                Event::Write(addr, u64::from_le_bytes(b))
            }
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0);
                Event::Read
            }
            Ok(VcpuExit::Intr) => Event::Kicked,
            Ok(VcpuExit::Shutdown) => Event::Fatal("triple fault".into()),
            Ok(other) => Event::Fatal(format!("unexpected VM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR => Event::Kicked,
            Err(e) if e.errno() == libc::EAGAIN => Event::Continue,
            Err(e) => Event::Fatal(format!("KVM_RUN: {e}")),
        };
        match ev {
            Event::Write(MMIO_KICK, _) => {
                if let Some(r) = m.ring.get() {
                    r.kick();
                }
            }
            Event::Write(MMIO_WAIT, _) => {
                if let Some(r) = m.ring.get() {
                    r.wait();
                }
            }
            Event::Write(MMIO_BLOCK, blk) => {
                if let Some(r) = m.ring.get() {
                    r.block(ctx.slot, blk);
                }
            }
            Event::Write(MMIO_FUTEX, blk) => m.futexes.perform(
                &ctx.mem,
                blk,
                m.window(ctx.proc) * WINDOW,
                Some(m.intr.flag(ctx.slot)),
            ),
            Event::Write(MMIO_INTERRUPT, slot) if slot < MAX_VCPUS => interrupt(m, ctx, slot),
            Event::Kicked => {
                if m.intr.take_kick(ctx.slot) {
                    if let Err(e) = async_signal(m, vcpu, ctx) {
                        return End::Crash(libc::SIGSEGV, e);
                    }
                }
            }
            Event::Write(MMIO_CLONE, blk) => clone(m, ctx, blk),
            Event::Write(MMIO_FORK, blk) => crate::process::fork(m, ctx, blk),
            Event::Write(MMIO_EXEC, blk) => {
                let before = m.window(ctx.proc);
                crate::process::exec(m, ctx, blk);
                let now = m.window(ctx.proc);
                // The process moved to its slot's other window: its page tables
                // (and no TLS yet, as after any execve).
                if now != before {
                    if let Err(e) = set_sregs(vcpu, ctx.slot, 0, cr3(now)) {
                        return End::Crash(libc::SIGSEGV, e);
                    }
                }
            }
            Event::Write(MMIO_PROC_EXIT, status) => {
                put_cputime(m, ctx, process_cpu_ns(m, ctx.proc));
                crate::process::exit(m, ctx, status);
            }
            Event::Write(MMIO_SPAWNED, pid) => crate::spawn::started(m, ctx.proc, pid),
            Event::Write(MMIO_ITIMER, blk) => itimer(m, ctx, blk),
            Event::Write(MMIO_CPUTIME, which) => {
                let ns = if which == 0 {
                    m.intr.thread_ns(ctx.slot)
                } else {
                    process_cpu_ns(m, ctx.proc)
                };
                put_cputime(m, ctx, ns);
            }
            Event::Write(MMIO_THREAD_EXIT, code) => {
                release_work(m, ctx);
                return End::ThreadExit(code as u8);
            }
            Event::Write(MMIO_EXIT, code) => return End::Exit(code as u8),
            // Only numbers below 512 (the guest kernel's table): a guest cannot grow
            // the set or the log without bound.
            Event::Write(MMIO_UNSUPPORTED, nr) if nr < 512 => {
                let first = m.reported.lock().map(|mut r| r.insert(nr)).unwrap_or(false);
                if first {
                    warn(&format!(
                        "vm: unsupported system call {nr} ({}); returning ENOSYS",
                        crate::names::name(nr)
                    ));
                }
            }
            Event::Write(MMIO_FAULT, vector) => match fault(&ctx.mem, vcpu, vector) {
                // A process other than the first ends alone, as killed by the
                // signal (its parent sees it in wait4); the VM goes on.
                End::Crash(sig, what) if ctx.proc != 0 => {
                    let sig = if m.oom_victims.load(Ordering::SeqCst) & (1 << ctx.proc) != 0 {
                        libc::SIGKILL
                    } else {
                        sig
                    };
                    if let Err(e) = kill_process(m, vcpu, ctx, sig) {
                        return End::Crash(sig, format!("{what}; {e}"));
                    }
                }
                end => return end,
            },
            Event::Write(MMIO_PANIC, line) => {
                return End::Crash(libc::SIGABRT, format!("guest kernel panic (line {line})"))
            }
            Event::Write(..) | Event::Read | Event::Continue => {}
            Event::Fatal(msg) => return End::Crash(libc::SIGSEGV, msg),
        }
    }
}

/// MMIO_INTERRUPT: the thread on vCPU slot `slot` leaves a wait (or user code)
/// to take a signal.
fn interrupt(m: &Machine, ctx: &Ctx, slot: u64) {
    m.intr.raise(slot);
    m.futexes.interrupt();
    if slot != ctx.slot {
        m.intr.kick(slot);
    }
}

/// The answer to MMIO_CPUTIME (and MMIO_PROC_EXIT): `ns` in the vCPU's PC_CPUTIME.
fn put_cputime(m: &Machine, ctx: &Ctx, ns: u64) {
    if let Some(w) = m
        .mem
        .atomic_u64(PERCPU_GPA + ctx.slot * PERCPU_SIZE + PC_CPUTIME)
    {
        w.store(ns, Ordering::SeqCst);
    }
}

/// MMIO_THREAD_EXIT's batched work (PC_END_*, each taken and cleared): the vCPU
/// slots to interrupt, then the child-event words to wake. A word outside the
/// guest kernel's memory is no kernel's, and is left alone.
fn release_work(m: &Machine, ctx: &Ctx) {
    let take = |off| {
        m.mem
            .atomic_u64(PERCPU_GPA + ctx.slot * PERCPU_SIZE + off)
            .map_or(0, |w| w.swap(0, Ordering::SeqCst))
    };
    let (intr, wake, events) = (take(PC_END_INTR), take(PC_END_WAKE), take(PC_END_EVENTS));
    for slot in (0..MAX_VCPUS).filter(|s| intr & (1 << s) != 0) {
        interrupt(m, ctx, slot);
    }
    for p in (0..MAX_PROCS).filter(|p| wake & (1 << p) != 0) {
        let addr = events.wrapping_add(4 * p);
        if addr % 4 == 0 && addr.checked_add(4).is_some_and(|e| e <= LOW) {
            m.futexes.wake_all(addr);
        }
    }
}

/// MMIO_ITIMER: reads or sets one of the calling process's interval timers.
fn itimer(m: &Arc<Machine>, ctx: &Ctx, blk: u64) {
    let word = |off: u64| m.mem.read_u64(blk.wrapping_add(off)).unwrap_or(0);
    let which = word(IT_WHICH);
    let left = match word(IT_OP) {
        1 => m
            .timers
            .set(m, ctx.proc, which, word(IT_VALUE), word(IT_INTERVAL)),
        _ => m.timers.get(m, ctx.proc, which),
    };
    if let Some(w) = m.mem.atomic_u64(blk.wrapping_add(IT_RET)) {
        w.store(left, Ordering::SeqCst);
    }
}

/// A vCPU kicked for a signal: when it was in user code, it continues at the
/// guest kernel's async entry on its kernel stack, with the user's rip, rsp and
/// rflags in its per-CPU area and every other register as it was; in the guest
/// kernel it goes on (the signal is taken on the way out of the system call).
fn async_signal(m: &Machine, vcpu: &VcpuFd, ctx: &Ctx) -> Result<(), String> {
    let mut regs = vcpu.get_regs().map_err(kvm_err("get registers"))?;
    if regs.rip < LOW {
        return Ok(());
    }
    let area = PERCPU_GPA + ctx.slot * PERCPU_SIZE;
    let mut low = m.mem.alias();
    let kstack = low
        .read_u64(area + PC_KSTACK_TOP)
        .ok_or("no per-CPU area")?;
    let saved = low.write_u64(area + PC_USER_RSP, regs.rsp)
        && low.write_u64(area + PC_ASYNC_RIP, regs.rip)
        && low.write_u64(area + PC_ASYNC_FLAGS, regs.rflags);
    if !saved {
        return Err("no per-CPU area".into());
    }
    regs.rip = m.async_start;
    regs.rsp = kstack;
    regs.rflags = 0x202;
    vcpu.set_regs(&regs).map_err(kvm_err("set registers"))
}

/// Restarts `vcpu` at the guest kernel's kill entry, at CPL3 on its kernel stack,
/// with the signal in rdi.
fn kill_process(m: &Machine, vcpu: &VcpuFd, ctx: &Ctx, sig: i32) -> Result<(), String> {
    let area = PERCPU_GPA + ctx.slot * PERCPU_SIZE;
    let kstack = m
        .mem
        .read_u64(area + PC_KSTACK_TOP)
        .ok_or("no per-CPU area")?;
    set_sregs(vcpu, ctx.slot, 0, cr3(m.window(ctx.proc)))?;
    let regs = kvm_regs {
        rip: m.kill_start,
        rsp: kstack,
        rdi: sig as u64,
        rflags: 0x202,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("set registers"))
}

/// Gives back a thread's place: its vCPU (when given) for reuse, then the thread
/// count. Returns whether it was the last thread.
fn release(m: &Machine, vcpu: Option<VcpuFd>) -> bool {
    if let (Some(v), Ok(mut spare)) = (vcpu, m.spare.lock()) {
        spare.push(v);
    }
    m.live.fetch_sub(1, Ordering::SeqCst) == 1
}

/// Ends the vCPU thread of slot `slot` the way `end` says: the process's end, or,
/// for a thread that exited while others run on, its release (its vCPU, when given,
/// goes back for reuse; the slot is freed only after that, for the guest's next
/// clone). Returns only in that last case.
pub fn finish(m: &Machine, slot: u64, vcpu: Option<VcpuFd>, end: End) {
    match end {
        End::Exit(code) => std::process::exit(i32::from(code)),
        End::Crash(sig, what) => crash_exit(sig, &what),
        End::ThreadExit(code) => {
            let last = release(m, vcpu);
            if let Some(busy) = m.mem.atomic_u64(PERCPU_GPA + slot * PERCPU_SIZE + PC_BUSY) {
                busy.store(0, Ordering::SeqCst);
            }
            if last {
                std::process::exit(i32::from(code));
            }
        }
    }
}

/// CPU time of guest process `p`: its ended threads' (kept at their exit) and its
/// running threads' host CPU time, in ns.
pub(crate) fn process_cpu_ns(m: &Machine, p: u64) -> u64 {
    let Some(ended) = m.proc_cpu.get(p as usize) else {
        return 0;
    };
    let slots = (0..MAX_VCPUS).filter(|&s| {
        let busy = m
            .mem
            .atomic_u64(PERCPU_GPA + s * PERCPU_SIZE + PC_BUSY)
            .is_some_and(|b| b.load(Ordering::SeqCst) != 0);
        busy && m.slot_proc[s as usize].load(Ordering::SeqCst) == p
    });
    m.intr.process_cpu_ns(slots, ended)
}

/// MMIO_CLONE: starts the thread described by the clone block at `blk`, in the
/// caller's process.
fn clone(m: &Arc<Machine>, ctx: &Ctx, blk: u64) {
    let ret = match read_start(m, blk) {
        Ok(mut start) => {
            start.proc = ctx.proc;
            launch(m, start).map_or_else(|e| e, |()| 0)
        }
        Err(e) => e,
    };
    if let Some(w) = m.mem.atomic_u64(blk.wrapping_add(CL_RET)) {
        w.store(ret as u64, Ordering::SeqCst);
    }
}

/// How to start a vCPU for a new thread or process.
#[derive(Debug)]
pub struct Start {
    /// General registers in KVM's order (rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp,
    /// r8..r15).
    pub regs: [u64; 16],
    /// User rflags.
    pub rflags: u64,
    /// FS base (TLS).
    pub fs: u64,
    /// Per-CPU slot the guest kernel prepared.
    pub slot: u64,
    /// Process slot.
    pub proc: u64,
    /// Where the vCPU starts (the guest kernel's thread or spawn entry).
    pub entry: u64,
}

/// The registers, flags, TLS and slot of the clone block at `blk`.
pub fn read_start(m: &Machine, blk: u64) -> Result<Start, i64> {
    let word = |off| m.mem.read_u64(blk.wrapping_add(off)).ok_or(-EINVAL);
    let mut regs = [0u64; 16];
    for (i, v) in regs.iter_mut().enumerate() {
        *v = word(CL_REGS + 8 * i as u64)?;
    }
    let (rflags, fs, slot) = (word(CL_RFLAGS)?, word(CL_FS)?, word(CL_SLOT)?);
    if slot == 0 || slot >= MAX_VCPUS {
        return Err(-EINVAL);
    }
    Ok(Start {
        regs,
        rflags,
        fs,
        slot,
        proc: 0,
        entry: m.thread_start,
    })
}

/// Starts a vCPU (a spare one or a new one) on a host thread of its own.
pub fn launch(m: &Arc<Machine>, s: Start) -> Result<(), i64> {
    let (r, slot, proc) = (s.regs, s.slot, s.proc);
    if proc >= MAX_PROCS {
        return Err(-EINVAL);
    }
    // The guest's kernel cannot have more threads than slots; a guest that asks
    // anyway gets no more vCPUs (or host threads) than that. The count is taken
    // here and given back on every failure below.
    m.live
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_VCPUS as usize).then_some(n + 1)
        })
        .map_err(|_| -EAGAIN)?;
    let give_back = |vcpu: Option<VcpuFd>| {
        release(m, vcpu);
        -EAGAIN
    };
    let vcpu = match m.spare.lock().ok().and_then(|mut s| s.pop()) {
        Some(v) => v,
        None => match new_vcpu(m) {
            Ok(v) => v,
            Err(e) => {
                warn(&format!("vm: cannot start a thread: {e}"));
                return Err(give_back(None));
            }
        },
    };
    let regs = kvm_regs {
        rax: r[0],
        rbx: r[1],
        rcx: r[2],
        rdx: r[3],
        rsi: r[4],
        rdi: r[5],
        rsp: r[6],
        rbp: r[7],
        r8: r[8],
        r9: r[9],
        r10: r[10],
        r11: r[11],
        r12: r[12],
        r13: r[13],
        r14: r[14],
        r15: r[15],
        // Through the kernel's thread entry, which loads the parent's FPU/SSE
        // control words and jumps to `rip` (kept in the slot's per-CPU area), or
        // its spawn entry.
        rip: s.entry,
        // Only the user-visible flags; IF stays set.
        rflags: (s.rflags & 0xcd5) | 0x202,
    };
    // A reused vCPU's FPU/SSE registers are its last thread's: the thread entry
    // clears them and loads the control words (an ioctl here costs ≈10 µs).
    let ready = set_sregs(&vcpu, slot, s.fs, cr3(m.window(proc)))
        .and_then(|()| vcpu.set_regs(&regs).map_err(kvm_err("set registers")));
    if let Err(e) = ready {
        warn(&format!("vm: cannot start a thread: {e}"));
        return Err(give_back(Some(vcpu)));
    }
    m.slot_proc[slot as usize].store(proc, Ordering::Release);
    // Marks left by the slot's last thread are not this one's.
    m.intr.take(slot);
    m.intr.take_kick(slot);
    let job = Job {
        vcpu,
        ctx: Ctx {
            slot,
            proc,
            mem: m.view(proc),
        },
    };
    // A host thread that ran a guest thread before and waits for the next, else a
    // new one.
    let parked = m.parked.lock().ok().and_then(|mut p| p.pop());
    if let Some(p) = parked {
        if let Ok(mut j) = p.job.lock() {
            *j = Some(job);
            p.ready.notify_one();
            return Ok(());
        }
        // That thread is gone (its lock poisoned): a new one runs the job.
    }
    // Shared with the new thread, so the vCPU can be taken back if it cannot start.
    let cell = Arc::new(Mutex::new(Some(job)));
    let theirs = Arc::clone(&cell);
    let mach = Arc::clone(m);
    let spawned = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let Some(job) = theirs.lock().ok().and_then(|mut c| c.take()) else {
                return;
            };
            serve(&mach, job);
        });
    if spawned.is_err() {
        let vcpu = cell.lock().ok().and_then(|mut c| c.take()).map(|j| j.vcpu);
        return Err(give_back(vcpu));
    }
    Ok(())
}

/// A guest thread for a host thread to run: its vCPU, ready to enter, and where.
struct Job {
    vcpu: VcpuFd,
    ctx: Ctx,
}

/// A host thread between two guest threads, waiting for its next [`Job`]. Making
/// a host thread and having it run costs ≈100 µs on this host, waking a waiting
/// one a fraction of that, so a vCPU thread whose guest thread ended waits here
/// to run the next one: the VMM keeps about as many host threads as the guest
/// had threads at once (at most [`MAX_VCPUS`] run guest code at a time). Each
/// keeps its seccomp filter and signal mask; its CPU time is counted from where
/// it took its slot (see [`crate::intr::Interrupts::set_thread`]).
#[derive(Debug, Default)]
pub struct Parked {
    job: Mutex<Option<Job>>,
    ready: std::sync::Condvar,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("slot", &self.ctx.slot).finish()
    }
}

/// Runs `job`, then every job given to this thread while it is parked.
fn serve(m: &Arc<Machine>, mut job: Job) {
    let me = Arc::new(Parked::default());
    loop {
        let Job { mut vcpu, mut ctx } = job;
        let slot = ctx.slot;
        m.intr.set_thread(
            slot,
            Some(nix::sys::pthread::pthread_self()),
            crate::intr::thread_cpu_ns(),
        );
        let end = run(m, &mut vcpu, &mut ctx);
        // Its CPU time stays its process's (CLOCK_PROCESS_CPUTIME_ID).
        m.intr.end_thread(slot, m.proc_cpu.get(ctx.proc as usize));
        drop(ctx);
        // Parked before the slot is freed (in finish), so a clone the guest makes
        // as soon as it is free finds this thread waiting; its job lock is held
        // until it waits, so the job given meanwhile is seen.
        let mine = me.job.lock();
        let parked = mine.is_ok() && m.parked.lock().map(|mut p| p.push(Arc::clone(&me))).is_ok();
        finish(m, slot, Some(vcpu), end);
        let (true, Ok(mut mine)) = (parked, mine) else {
            return;
        };
        job = loop {
            if let Some(j) = mine.take() {
                break j;
            }
            mine = match me.ready.wait(mine) {
                Ok(g) => g,
                Err(_) => return,
            };
        };
    }
}

/// A fresh vCPU with the machine's CPUID and MSRs.
fn new_vcpu(m: &Machine) -> Result<VcpuFd, String> {
    let id = m.next_id.fetch_add(1, Ordering::SeqCst);
    let vcpu = m.vm.create_vcpu(id).map_err(kvm_err("create vCPU"))?;
    vcpu.set_cpuid2(&m.cpuid).map_err(kvm_err("set CPUID"))?;
    set_msrs(&vcpu, m.lstar)?;
    Ok(vcpu)
}

/// Describes the exception `vector` the IDT stub reported.
fn fault(mem: &GuestMem, vcpu: &VcpuFd, vector: u64) -> End {
    let regs = vcpu.get_regs().unwrap_or_default();
    let cr2 = vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0);
    let has_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
    let frame = regs.rsp + if has_code { 8 } else { 0 };
    let code = if has_code {
        mem.read_u64(regs.rsp).unwrap_or(0)
    } else {
        0
    };
    let rip = mem.read_u64(frame).unwrap_or(0);
    let (sig, what) = match vector {
        0 => (libc::SIGFPE, "divide error".to_string()),
        1 | 3 => (libc::SIGTRAP, "breakpoint".to_string()),
        6 => (libc::SIGILL, "invalid opcode".to_string()),
        13 => (
            libc::SIGSEGV,
            format!("general protection fault (error {code:#x})"),
        ),
        14 => (
            libc::SIGSEGV,
            format!("page fault at address {cr2:#x} (error {code:#x})"),
        ),
        16 | 19 => (libc::SIGFPE, "floating-point exception".to_string()),
        v => (libc::SIGSEGV, format!("exception {v}")),
    };
    End::Crash(sig, format!("{what} at rip {rip:#x}"))
}
