//! Clocks from the TSC and the VMM's clock bases: no exit on the hot path.

use crate::abi::*;
use crate::mem::{self, boot, put_u64s};
use crate::sys::{EFAULT, EINVAL};

/// (realtime?, ns) now from the TSC and the VMM's clock bases.
fn now_ns(realtime: bool) -> u64 {
    let ns = uptime_ns();
    let base = if realtime {
        boot(BI_REALTIME_NS)
    } else {
        boot(BI_MONOTONIC_NS)
    };
    base.wrapping_add(ns)
}

/// CLOCK_MONOTONIC in ns.
pub fn monotonic_ns() -> u64 {
    now_ns(false)
}

/// ns since the guest started (its uptime).
pub fn uptime_ns() -> u64 {
    let delta = mem::rdtsc().wrapping_sub(boot(BI_BOOT_TSC));
    ((u128::from(delta) * u128::from(boot(BI_TSC_MULT))) >> 32) as u64
}

pub fn clock_gettime(clk: u64, ts: u64) -> i64 {
    if clk > 11 {
        return -EINVAL;
    }
    let ns = match clk {
        // CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID: the vCPU threads'
        // host CPU time, from the VMM.
        2 | 3 => cpu_ns(clk == 2),
        _ => now_ns(matches!(clk, 0 | 5 | 8 | 11)),
    };
    if put_u64s(ts, &[ns / 1_000_000_000, ns % 1_000_000_000]) {
        0
    } else {
        -EFAULT
    }
}

/// The CPU time of the calling thread or of its whole process, in ns.
pub fn cpu_ns(process: bool) -> u64 {
    crate::mem::mmio(MMIO_CPUTIME, u64::from(process));
    crate::percpu::get(PC_CPUTIME)
}

/// Writes a `struct rusage` at `at` (checked by the caller) with `ns` of CPU time
/// as its user time (the VMM's vCPU threads' time does not split user from
/// system), everything else zero.
pub fn put_rusage(at: u64, ns: u64) {
    crate::mem::zero(at, 144);
    put_u64s(at, &[ns / 1_000_000_000, ns % 1_000_000_000 / 1000]);
}

/// getrusage(2): RUSAGE_SELF, RUSAGE_THREAD and RUSAGE_CHILDREN, CPU time only
/// (see [`put_rusage`]).
pub fn getrusage(who: i32, at: u64) -> i64 {
    let ns = match who {
        0 => cpu_ns(true),
        1 => cpu_ns(false),
        -1 => crate::sys::with(|s| s.me().children_cpu),
        _ => return -EINVAL,
    };
    if !crate::mem::user_ok(at, 144) {
        return -EFAULT;
    }
    put_rusage(at, ns);
    0
}

/// times(2): the process's and its waited-for children's CPU time in clock
/// ticks (USER_HZ, 100 a second) as user time, system time zero; returns the
/// ticks of the monotonic clock.
pub fn times(at: u64) -> i64 {
    const TICK_NS: u64 = 10_000_000;
    if at != 0 {
        let (me, children) = (cpu_ns(true), crate::sys::with(|s| s.me().children_cpu));
        if !put_u64s(at, &[me / TICK_NS, 0, children / TICK_NS, 0]) {
            return -EFAULT;
        }
    }
    (now_ns(true) / TICK_NS) as i64
}

pub fn clock_getres(ts: u64) -> i64 {
    if ts != 0 && !put_u64s(ts, &[0, 1]) {
        return -EFAULT;
    }
    0
}

pub fn gettimeofday(tv: u64) -> i64 {
    let ns = now_ns(true);
    if tv != 0 && !put_u64s(tv, &[ns / 1_000_000_000, (ns % 1_000_000_000) / 1000]) {
        return -EFAULT;
    }
    0
}

pub fn time(tloc: u64) -> i64 {
    let t = now_ns(true) / 1_000_000_000;
    if tloc != 0 && !put_u64s(tloc, &[t]) {
        return -EFAULT;
    }
    t as i64
}

/// The VMM's timer `which` (IT_WHICH) for the calling process: `set` with a value
/// and period in ns (0: disarm), or a read; returns the ns that were left.
fn itimer(which: u64, set: Option<(u64, u64)>) -> u64 {
    let blk = crate::percpu::base() + PC_BLOCK;
    let w = |off: u64, v: u64| {
        // SAFETY: the block is in this vCPU's per-CPU area.
        unsafe { ((blk + off) as *mut u64).write_volatile(v) }
    };
    let (value, interval) = set.unwrap_or((0, 0));
    w(IT_OP, u64::from(set.is_some()));
    w(IT_VALUE, value);
    w(IT_INTERVAL, interval);
    w(IT_RET, 0);
    w(IT_WHICH, which);
    mem::mmio(MMIO_ITIMER, blk);
    // SAFETY: as for the writes; the VMM wrote the result before the doorbell
    // returned.
    unsafe { ((blk + IT_RET) as *const u64).read_volatile() }
}

/// alarm(2): SIGALRM in `secs` seconds (0: none); the seconds that were left
/// (rounded up).
pub fn alarm(secs: u64) -> i64 {
    let secs = secs.min(u64::from(u32::MAX));
    crate::sys::with(|s| s.me().it_interval[0] = 0);
    let left = itimer(0, Some((secs * 1_000_000_000, 0)));
    left.div_ceil(1_000_000_000) as i64
}

/// A struct timeval in ns; None when it is out of range.
fn timeval_ns(s: u64, us: u64) -> Option<u64> {
    ((s as i64) >= 0 && us < 1_000_000).then(|| s.saturating_mul(1_000_000_000).saturating_add(us * 1000))
}

/// Writes an itimerval (interval, then value; timevals) for `interval` and `left`
/// ns.
fn put_itimerval(at: u64, interval: u64, left: u64) -> bool {
    let tv = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000 / 1000];
    let (i, v) = (tv(interval), tv(left));
    put_u64s(at, &[i[0], i[1], v[0], v[1]])
}

/// setitimer(2): ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF (the VMM keeps them).
pub fn setitimer(which: u64, new: u64, old: u64) -> i64 {
    if which > 2 {
        return -EINVAL;
    }
    let (interval, value) = if new == 0 {
        (0, 0)
    } else {
        if !mem::user_ok(new, 32) {
            return -EFAULT;
        }
        // SAFETY: checked to be 32 bytes of guest RAM.
        let r = |i: u64| unsafe { ((new + 8 * i) as *const u64).read_unaligned() };
        match (timeval_ns(r(0), r(1)), timeval_ns(r(2), r(3))) {
            (Some(i), Some(v)) => (i, v),
            _ => return -EINVAL,
        }
    };
    if old != 0 && !mem::user_ok(old, 32) {
        return -EFAULT;
    }
    let interval = if value == 0 { 0 } else { interval };
    let prev = crate::sys::with(|s| core::mem::replace(&mut s.me().it_interval[which as usize], interval));
    let left = itimer(which, Some((value, interval)));
    if old != 0 && !put_itimerval(old, if left == 0 { 0 } else { prev }, left) {
        return -EFAULT;
    }
    0
}

/// getitimer(2): ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF.
pub fn getitimer(which: u64, cur: u64) -> i64 {
    if which > 2 {
        return -EINVAL;
    }
    let left = itimer(which, None);
    let interval = crate::sys::with(|s| s.me().it_interval[which as usize]);
    if put_itimerval(cur, if left == 0 { 0 } else { interval }, left) {
        0
    } else {
        -EFAULT
    }
}
