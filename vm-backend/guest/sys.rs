//! System calls: the ones this kernel implements, and forwarding to the VMM.

use crate::abi::*;
use crate::mem::{boot, mmio, put, put_u64s, user_ok, zero};
use crate::entry::Frame;
use crate::{info, percpu, proc, procfs, signal, thread, time};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

const ENOMEM: i64 = 12;
const SIGCHLD: u64 = 17;
const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x1_0000;
pub const EFAULT: i64 = 14;
const ENODEV: i64 = 19;
const EOPNOTSUPP: i64 = 95;
pub const EINVAL: i64 = 22;
pub const ENOSYS: i64 = 38;

/// Gap kept free between the heap (brk) and the lowest anonymous mapping.
const GAP: u64 = 0x10_000;

/// Most exited children not yet waited for, in the whole VM.
const MAX_ZOMBIES: usize = 64;

/// One process's kernel state (its memory bookkeeping and identity).
#[derive(Clone, Copy)]
pub struct Proc {
    /// The PI_GEN its memory bookkeeping was taken from.
    gen: u64,
    brk_start: u64,
    brk_cur: u64,
    brk_max: u64,
    mmap_low: u64,
    /// Process id, parent's, group, session.
    pub pid: u64,
    /// Parent process id.
    pub ppid: u64,
    /// Process group id.
    pub pgid: u64,
    /// Session id.
    pub sid: u64,
    /// Its threads.
    pub threads: u64,
    /// Whether the slot holds a running process.
    pub live: bool,
    /// Signal actions.
    pub signals: crate::signal::Signals,
    /// Its name (prctl PR_SET_NAME, /proc's Name), NUL-padded; empty: the
    /// program's file name.
    pub comm: [u8; 16],
    /// The periods of its interval timers in ns (ITIMER_REAL, ITIMER_VIRTUAL,
    /// ITIMER_PROF; the VMM keeps the expiries).
    pub it_interval: [u64; 3],
    /// The stop signal that stopped it, until a wait with WUNTRACED reports it.
    pub stop_report: u64,
    /// Continued by SIGCONT, until a wait with WCONTINUED reports it.
    pub cont_report: bool,
    /// Its file mappings (address, length), the most recent [`FILE_MAPS`] of
    /// them, for mremap; (0, 0) when unused.
    pub file_maps: [(u64, u64); FILE_MAPS],
    /// Where the next file mapping is noted in `file_maps`.
    pub file_next: usize,
    /// CPU time, in ns, of its children that ended and were waited for, theirs
    /// included (getrusage's RUSAGE_CHILDREN, times' tms_cutime).
    pub children_cpu: u64,
}

/// File mappings a process keeps track of (see [`Proc::file_maps`]).
pub const FILE_MAPS: usize = 16;

impl Proc {
    /// Notes a file mapping (the oldest noted one is forgotten when all are in use).
    fn note_file_map(&mut self, at: u64, len: u64) {
        self.file_maps[self.file_next % FILE_MAPS] = (at, len);
        self.file_next = (self.file_next + 1) % FILE_MAPS;
    }

    const EMPTY: Proc = Proc {
        gen: 0,
        brk_start: 0,
        brk_cur: 0,
        brk_max: 0,
        mmap_low: 0,
        pid: 0,
        ppid: 0,
        pgid: 0,
        sid: 0,
        threads: 0,
        live: false,
        signals: crate::signal::Signals::EMPTY,
        comm: [0; 16],
        it_interval: [0; 3],
        stop_report: 0,
        cont_report: false,
        file_maps: [(0, 0); FILE_MAPS],
        file_next: 0,
        children_cpu: 0,
    };

    /// A process started from the host (`hyperjail exec`): pid `pid`, no parent in
    /// the VM, a session and group of its own, default signal actions.
    pub const fn started(pid: u64) -> Proc {
        Proc {
            pid,
            pgid: pid,
            sid: pid,
            threads: 1,
            live: true,
            ..Proc::EMPTY
        }
    }

    /// Where the heap starts, where it ends now, and the lowest mapping (the
    /// regions /proc/PID/maps lists).
    pub fn regions(&self) -> (u64, u64, u64) {
        (self.brk_start, self.brk_cur, self.mmap_low)
    }

    /// The heap's highest end so far and the lowest mapping: the room between is
    /// memory not handed out yet.
    pub fn heap_bounds(&self) -> (u64, u64) {
        (self.brk_max, self.mmap_low)
    }

    /// The user ranges a fork copies: the image and heap, the mappings, and the
    /// stack from `rsp` (less the red zone) up.
    pub fn used_ranges(&self, rsp: u64) -> [(u64, u64); CL_NRANGES as usize] {
        let top = boot(BI_RAM_END);
        let mmap_top = pi(self.slot_hint(), PI_MMAP_TOP);
        [
            (USER_MIN, self.brk_max),
            (self.mmap_low, mmap_top),
            (rsp.saturating_sub(128) & !(PAGE - 1), top),
            (0, 0),
        ]
    }

    fn slot_hint(&self) -> u64 {
        crate::percpu::get(PC_PROC).min(MAX_PROCS - 1)
    }
}

/// A child that exited and was not waited for yet.
#[derive(Clone, Copy)]
pub struct Zombie {
    /// Whether the entry is taken.
    pub used: bool,
    /// Its pid, parent, group.
    pub pid: u64,
    /// Its parent's pid.
    pub ppid: u64,
    /// Its process group.
    pub pgid: u64,
    /// Its wait status.
    pub status: u64,
    /// Its CPU time and its waited-for children's, in ns.
    pub cpu: u64,
}

/// The kernel state, shared by every vCPU (of every process: kernel memory is
/// the same in every address space) under [`with`]'s spin lock.
pub struct State {
    init: bool,
    /// Every process slot's state.
    pub procs: [Proc; MAX_PROCS as usize],
    /// Exited children not waited for.
    pub zombies: [Zombie; MAX_ZOMBIES],
    rng: [u64; 2],
    reported: [u64; 8],
}

/// A u64 of process slot `p`'s block (written by the VMM).
pub fn pi(p: u64, off: u64) -> u64 {
    // SAFETY: the process blocks are kernel memory laid out by abi.rs; p is clamped.
    unsafe { ((PROC_INFO_GPA + p.min(MAX_PROCS - 1) * PROC_INFO_SIZE + off) as *const u64).read_volatile() }
}

/// Sets the u64 at `off` of process slot `p`'s block (PI_PID, PI_PPID: what the
/// VMM's `ps` reads).
pub fn set_pi(p: u64, off: u64, v: u64) {
    // SAFETY: as for `pi`.
    unsafe { ((PROC_INFO_GPA + p.min(MAX_PROCS - 1) * PROC_INFO_SIZE + off) as *mut u64).write_volatile(v) }
}

impl State {
    /// The calling process's state; its memory bookkeeping starts afresh when the
    /// VMM gave it a new image (its PI_GEN moved).
    pub fn me(&mut self) -> &mut Proc {
        let p = crate::percpu::get(PC_PROC).min(MAX_PROCS - 1);
        let pr = &mut self.procs[p as usize];
        let gen = pi(p, PI_GEN);
        if pr.gen != gen {
            pr.gen = gen;
            pr.brk_start = pi(p, PI_BRK_START);
            pr.brk_cur = pr.brk_start;
            pr.brk_max = pr.brk_start;
            pr.mmap_low = pi(p, PI_MMAP_TOP);
            pr.file_maps = [(0, 0); FILE_MAPS];
        }
        pr
    }
}

struct Global {
    locked: AtomicBool,
    state: UnsafeCell<State>,
}
// SAFETY: `state` is only reached through `with`, which holds `locked`.
unsafe impl Sync for Global {}

static STATE: Global = Global {
    locked: AtomicBool::new(false),
    state: UnsafeCell::new(State {
        init: false,
        procs: [Proc::EMPTY; MAX_PROCS as usize],
        zombies: [Zombie {
            used: false,
            pid: 0,
            ppid: 0,
            pgid: 0,
            status: 0,
            cpu: 0,
        }; MAX_ZOMBIES],
        rng: [0; 2],
        reported: [0; 8],
    }),
};

/// Runs `f` on the kernel state with the lock held (never across a blocking call:
/// the holder only computes and writes guest memory).
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    while STATE
        .locked
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held, so this is the only reference until it is released.
    let s = unsafe { &mut *STATE.state.get() };
    if !s.init {
        s.init = true;
        s.rng = [boot(BI_SEED) | 1, boot(BI_SEED + 8) | 1];
        // The first process: pid 1, its own group and session.
        let first = &mut s.procs[0];
        (first.pid, first.pgid, first.sid, first.threads, first.live) = (1, 1, 1, 1, true);
    }
    let r = f(s);
    STATE.locked.store(false, Ordering::Release);
    r
}

/// Runs the system call in `f` (number in rax); returns the Linux return value.
pub fn dispatch(f: &mut Frame) -> i64 {
    let (nr, a) = (f.rax, [f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9]);
    match nr {
        // open/openat of /proc: made here (procfs.rs), else the VMM's.
        2 => procfs::open(a[0], a[1]).unwrap_or_else(|| forward(nr, a)),
        257 => procfs::open(a[1], a[2]).unwrap_or_else(|| forward(nr, a)),
        // Console and file I/O, paths, the fd table and the working directory: the
        // VMM's ring.
        0..=8 | 16..=22 | 32 | 33 | 40 | 72 | 79..=84 | 87 | 88 => forward(nr, a),
        137 | 138 | 217 | 258 | 262..=264 | 266 | 269 | 292 | 316 | 326 | 332 | 436 | 439 => forward(nr, a),
        // socketpair and what its ends take (send/recv without addresses, shutdown).
        44 | 45 | 48 | 51 | 52 | 53 => forward(nr, a),
        // pselect6's sixth argument: {sigset pointer, size}.
        270 if a[5] != 0 => {
            if !user_ok(a[5], 16) {
                return -EFAULT;
            }
            // SAFETY: checked to be 16 bytes of guest RAM.
            let (set, size) = unsafe {
                (
                    (a[5] as *const u64).read_unaligned(),
                    ((a[5] + 8) as *const u64).read_unaligned(),
                )
            };
            if set == 0 {
                select(nr, a)
            } else {
                with_mask(set, size, || select(nr, a))
            }
        }
        23 | 270 => select(nr, a),
        // ppoll and epoll_pwait with a signal mask: the mask holds during the wait.
        271 if a[3] != 0 => with_mask(a[3], a[4], || forward(nr, a)),
        281 if a[4] != 0 => with_mask(a[4], a[5], || forward(nr, a)),
        // Pipes, eventfds, timerfds, poll and epoll: host objects in the VMM's fd table.
        213 | 232 | 233 | 271 | 281 | 283 | 284 | 286 | 287 | 290 | 291 | 293 => forward(nr, a),
        35 => thread::sleep(a[0], None),
        36 => time::getitimer(a[0], a[1]),
        37 => time::alarm(a[0]),
        98 => time::getrusage(a[0] as i32, a[1]),
        100 => time::times(a[0]),
        38 => time::setitimer(a[0], a[1], a[2]),
        230 => thread::sleep(a[2], (a[1] & 1 != 0).then_some(a[0])),
        // readlink: /proc/self/exe is known here, anything else is a rootfs path.
        89 => info::readlink(a[0], a[1], a[2]).unwrap_or_else(|| forward(nr, a)),
        267 => info::readlink(a[1], a[2], a[3]).unwrap_or_else(|| forward(nr, a)),
        9 => mmap(a),
        25 => mremap(a),
        57 => proc::fork(f, SIGCHLD, 0, 0, 0, 0),
        58 => proc::fork(f, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0),
        59 => proc::execve(f, a[0], a[1], a[2]),
        61 => proc::wait4(a[0] as i32 as i64, a[1], a[2], a[3]),
        247 => proc::waitid(a[0], a[1], a[2], a[3], a[4]),
        109 => proc::setpgid(a[0], a[1]),
        112 => proc::setsid(),
        10 | 11 | 26 | 28 => 0, // mprotect, munmap, msync, madvise: accepted
        12 => with(|s| brk(s.me(), a[0])),
        13 => signal::sigaction(a[0], a[1], a[2], a[3]),
        14 => signal::sigprocmask(a[0], a[1], a[2], a[3]),
        15 => signal::sigreturn(f),
        34 => signal::sigsuspend(None),
        62 => signal::kill(a[0] as i32 as i64, a[1]),
        127 => signal::sigpending(a[0], a[1]),
        130 => match a[1] {
            8 if user_ok(a[0], 8) => {
                // SAFETY: checked to be 8 bytes of guest RAM.
                signal::sigsuspend(Some(unsafe { (a[0] as *const u64).read_unaligned() }))
            }
            8 => -EFAULT,
            _ => -EINVAL,
        },
        200 => signal::tgkill(None, a[0], a[1]),
        234 => signal::tgkill(Some(a[0]), a[1], a[2]),
        24 => 0, // sched_yield
        39 => proc::getpid(),
        186 => percpu::get(PC_TID) as i64,
        56 if a[0] & CLONE_THREAD != 0 => thread::clone(f),
        56 => proc::fork(f, a[0], a[1], a[2], a[3], a[4]),
        60 => thread::exit(a[0]),
        231 => proc::exit_group(a[0]),
        202 => thread::futex(a),
        63 => info::uname(a[0]),
        99 => info::sysinfo(a[0]),
        204 => info::getaffinity(a[1], a[2]),
        221 => 0, // fadvise64: advice only
        // The xattr calls: the guest's file systems keep no extended attributes.
        188..=199 => -EOPNOTSUPP,
        157 => info::prctl(a[0], a[1]),
        95 => 0o022, // umask
        96 => time::gettimeofday(a[0]),
        97 => rlimit(a[0], 0, a[1]),
        102 | 107 => boot(BI_UID) as i64, // getuid, geteuid
        104 | 108 => boot(BI_GID) as i64, // getgid, getegid
        110 => proc::getppid(),
        111 => proc::getpgid(0),
        121 => proc::getpgid(a[0]),
        124 => proc::getsid(a[0]),
        115 => 0,                         // getgroups: none
        131 => crate::signal::sigaltstack(a[0], a[1]),
        158 => arch_prctl(a[0], a[1]),
        201 => time::time(a[0]),
        218 => {
            percpu::set(PC_CLEAR_TID, a[0]);
            percpu::get(PC_TID) as i64
        }
        228 => time::clock_gettime(a[0], a[1]),
        229 => time::clock_getres(a[1]),
        273 => 0, // set_robust_list
        302 => rlimit(a[1], a[2], a[3]),
        318 => with(|s| getrandom(s, a[0], a[1])),
        // clone3 (glibc falls back to clone), rseq (glibc copes): not worth a log line.
        334 | 435 => -ENOSYS,
        _ => unsupported(nr),
    }
}

/// -ENOSYS, reported to the VMM the first time `nr` is seen.
pub fn unsupported(nr: u64) -> i64 {
    // Numbers from 512 on are not system calls at all: no report (the VMM ignores
    // them too).
    let first = nr < 512
        && with(|s| {
            let (w, b) = ((nr / 64) as usize, nr % 64);
            let first = s.reported[w] & (1 << b) == 0;
            s.reported[w] |= 1 << b;
            first
        });
    if first {
        mmio(MMIO_UNSUPPORTED, nr);
    }
    -ENOSYS
}

/// select and pselect6 (forwarded): on a timeout the sets come back empty, as
/// Linux returns them (the VMM leaves them as they were while the call waits).
fn select(nr: u64, a: [u64; 6]) -> i64 {
    let r = forward(nr, a);
    if r == 0 {
        let bytes = a[0].min(1024).div_ceil(64) * 8;
        for set in [a[1], a[2], a[3]] {
            if set != 0 {
                zero(set, bytes);
            }
        }
    }
    r
}

/// Runs `call` with the signal mask at `mask` (a sigset of `size` bytes) in force,
/// as ppoll and epoll_pwait do; the old mask comes back on the way out (after the
/// handler, if a signal is taken).
fn with_mask(mask: u64, size: u64, call: impl FnOnce() -> i64) -> i64 {
    if size != 8 {
        return -EINVAL;
    }
    if !user_ok(mask, 8) {
        return -EFAULT;
    }
    // SAFETY: checked to be 8 bytes of guest RAM.
    let m = unsafe { (mask as *const u64).read_unaligned() };
    signal::set_temporary_mask(m);
    if signal::deliverable() {
        return -signal::EINTR;
    }
    call()
}

/// Hands a system call to the VMM through this vCPU's forwarding ring.
pub fn forward(nr: u64, a: [u64; 6]) -> i64 {
    const EPIPE: i64 = 32;
    let r = crate::ring::call(nr, a);
    if r == RQ_TTIN as i64 {
        return signal::background_read();
    }
    // A write to a pipe or socket nobody reads: SIGPIPE to the writer as well
    // (write, pwrite64, writev, sendfile, and sendto without MSG_NOSIGNAL).
    const MSG_NOSIGNAL: u64 = 0x4000;
    if r == -EPIPE && (matches!(nr, 1 | 18 | 20 | 40) || (nr == 44 && a[3] & MSG_NOSIGNAL == 0)) {
        signal::raise_self(13);
    }
    r
}

/// The VM ends with `code` (the first process's exit).
pub fn exit(code: u64) -> ! {
    loop {
        mmio(MMIO_EXIT, code & 0xff);
    }
}

/// mmap: anonymous memory, and private file mappings (the file's bytes are read
/// into fresh memory: a copy, as MAP_PRIVATE promises until a write; a shared
/// mapping is accepted read-only, where a copy cannot be told apart).
fn mmap(a: [u64; 6]) -> i64 {
    const PROT_WRITE: u64 = 2;
    const MAP_SHARED: u64 = 1;
    const MAP_ANONYMOUS: u64 = 0x20;
    let (len, prot, flags, fd, off) = (a[1], a[2], a[3], a[4], a[5]);
    if flags & MAP_ANONYMOUS != 0 {
        return with(|s| place(s.me(), a));
    }
    if flags & MAP_SHARED != 0 && prot & PROT_WRITE != 0 {
        return -ENODEV;
    }
    if off % PAGE != 0 || fd > i32::MAX as u64 {
        return -EINVAL;
    }
    let at = with(|s| {
        let me = s.me();
        let at = place(me, a);
        if at >= 0 {
            me.note_file_map(at as u64, (len + PAGE - 1) & !(PAGE - 1));
        }
        at
    });
    if at < 0 {
        return at;
    }
    // Outside the lock: the reads may block. Past the file's end the memory stays
    // zero, as Linux's partial last page.
    let mut done = 0;
    while done < len {
        let n = forward(17, [fd, at as u64 + done, len - done, off + done, 0, 0]);
        if n < 0 {
            return n;
        }
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    at
}

/// mremap(2) of anonymous or private memory: a shrink stays where it is (the
/// tail stays mapped, as munmap leaves memory here); growing moves the contents to
/// a new mapping (MREMAP_MAYMOVE; ENOMEM without it, as nothing grows in place
/// here, and for a file mapping). MREMAP_FIXED and MREMAP_DONTUNMAP are refused
/// (EINVAL).
fn mremap(a: [u64; 6]) -> i64 {
    const MREMAP_MAYMOVE: u64 = 1;
    let (old, old_len, new_len, flags) = (a[0], a[1], a[2], a[3]);
    if flags & !MREMAP_MAYMOVE != 0 || old % PAGE != 0 || new_len == 0 || old_len == 0 {
        return -EINVAL;
    }
    let round = |n: u64| n.checked_add(PAGE - 1).map(|n| n & !(PAGE - 1));
    let (Some(old_len), Some(new_len)) = (round(old_len), round(new_len)) else {
        return -EINVAL;
    };
    if !user_ok(old, old_len.max(PAGE)) {
        return -EFAULT;
    }
    if new_len <= old_len {
        return old as i64;
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return -ENOMEM;
    }
    // A file mapping would need the file's bytes past its old end: ENOMEM, and
    // the caller maps the file anew (as SQLite and glibc do).
    let at = with(|s| {
        let me = s.me();
        if me.file_maps.iter().any(|&(a, n)| old >= a && old - a < n) {
            return -ENOMEM;
        }
        place(me, [0, new_len, 0, 0, 0, 0])
    });
    if at < 0 {
        return at;
    }
    // Outside the lock (it may be megabytes). SAFETY: both ranges were checked to
    // be user memory of this process; `copy` allows them to overlap (an `old`
    // the process never mapped may lie where the new mapping went).
    unsafe { core::ptr::copy(old as *const u8, at as *mut u8, old_len as usize) };
    at
}

/// Finds room for a mapping (or zeroes a MAP_FIXED range); its address or -errno.
fn place(s: &mut Proc, a: [u64; 6]) -> i64 {
    const MAP_FIXED: u64 = 0x10;
    let (addr, len, flags) = (a[0], a[1], a[3]);
    if len == 0 || len > boot(BI_RAM_END) {
        return -EINVAL;
    }
    let len = (len + PAGE - 1) & !(PAGE - 1);
    if flags & MAP_FIXED != 0 {
        if addr % PAGE != 0 || !zero(addr, len) {
            return -ENOMEM;
        }
        return addr as i64;
    }
    match s.mmap_low.checked_sub(len) {
        Some(low) if low >= s.brk_max + GAP => {
            s.mmap_low = low;
            low as i64
        }
        _ => -ENOMEM,
    }
}

fn brk(s: &mut Proc, addr: u64) -> i64 {
    if addr < s.brk_start || addr.saturating_add(GAP) > s.mmap_low {
        return s.brk_cur as i64;
    }
    if addr > s.brk_cur {
        // Memory freed by an earlier shrink must read as zero again.
        let end = addr.min(s.brk_max);
        if end > s.brk_cur {
            zero(s.brk_cur, end - s.brk_cur);
        }
    }
    s.brk_cur = addr;
    s.brk_max = s.brk_max.max(addr);
    addr as i64
}

fn arch_prctl(code: u64, addr: u64) -> i64 {
    match code {
        0x1002 => {
            // SAFETY: wrfsbase runs natively at CPL3 here and only sets FS.base.
            unsafe { core::arch::asm!("wrfsbase {}", in(reg) addr, options(nostack)) };
            0
        }
        0x1003 => {
            let v: u64;
            // SAFETY: rdfsbase reads FS.base.
            unsafe { core::arch::asm!("rdfsbase {}", out(reg) v, options(nostack)) };
            if put_u64s(addr, &[v]) {
                0
            } else {
                -EFAULT
            }
        }
        _ => -EINVAL,
    }
}

fn rlimit(resource: u64, new: u64, old: u64) -> i64 {
    let _ = new; // limits are not enforced in the guest yet
    let v = match resource {
        3 => [8 << 20, u64::MAX], // RLIMIT_STACK
        7 => [1024, 1024],        // RLIMIT_NOFILE
        _ => [u64::MAX, u64::MAX],
    };
    if old != 0 && !put_u64s(old, &v) {
        return -EFAULT;
    }
    0
}

fn getrandom(s: &mut State, buf: u64, len: u64) -> i64 {
    if !user_ok(buf, len) {
        return -EFAULT;
    }
    let mut off = 0;
    while off < len {
        // xorshift128+ seeded by the VMM from the host's getrandom.
        let (mut x, y) = (s.rng[0], s.rng[1]);
        s.rng[0] = y;
        x ^= x << 23;
        s.rng[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
        let v = s.rng[1].wrapping_add(y).to_le_bytes();
        let n = (len - off).min(8);
        put(buf + off, &v[..n as usize]);
        off += n;
    }
    len as i64
}
