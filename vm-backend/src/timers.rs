//! The guest processes' interval timers (alarm, setitimer): one VMM thread sleeps
//! until the earliest expiry, then raises the timer's signal in the process's
//! mailbox (abi.rs, PI_TIMER_SIG) and wakes or kicks its threads. ITIMER_REAL runs
//! on the wall clock (SIGALRM); ITIMER_VIRTUAL (SIGVTALRM) and ITIMER_PROF
//! (SIGPROF) on the process's CPU time, which the thread reads while one is armed
//! at least every [`CPU_POLL`] (Linux counts them in ticks of 1–4 ms).

use crate::abi::*;
use crate::vcpu::Machine;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Each timer's signal: ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF.
const SIGNALS: [u64; 3] = [14, 26, 27];
/// Longest wait between two looks at the CPU time of a process with a CPU timer.
const CPU_POLL: Duration = Duration::from_millis(2);

/// Each process slot's timers.
#[derive(Debug, Default)]
pub struct Timers {
    slots: Mutex<Timing>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Timing {
    /// ITIMER_REAL: its next expiry and its period.
    real: [Option<(Instant, Duration)>; MAX_PROCS as usize],
    /// ITIMER_VIRTUAL and ITIMER_PROF: the process CPU time (ns) of the next
    /// expiry and the period (ns).
    cpu: [[Option<(u64, u64)>; 2]; MAX_PROCS as usize],
    /// Whether the timer thread runs (started at the first timer).
    running: bool,
}

impl Timers {
    /// Sets (or with `value` zero, disarms) process slot `p`'s timer `which`
    /// (IT_WHICH); returns the ns that were left on it. Starts the timer thread
    /// the first time.
    pub fn set(&self, m: &Arc<Machine>, p: u64, which: u64, value: u64, interval: u64) -> u64 {
        let Ok(mut t) = self.slots.lock() else {
            return 0;
        };
        let left = left(&t, m, p, which);
        let i = p as usize;
        match which {
            0 => {
                if let Some(slot) = t.real.get_mut(i) {
                    *slot = (value != 0).then(|| {
                        (
                            Instant::now() + Duration::from_nanos(value),
                            Duration::from_nanos(interval),
                        )
                    });
                }
            }
            1 | 2 => {
                let now = crate::vcpu::process_cpu_ns(m, p);
                if let Some(slot) = t.cpu.get_mut(i) {
                    slot[which as usize - 1] =
                        (value != 0).then(|| (now.saturating_add(value), interval));
                }
            }
            _ => return 0,
        }
        if !t.running && value != 0 {
            let mach = Arc::clone(m);
            // No thread name: naming a thread is a prctl, which the filter refuses.
            let spawned = std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || run(&mach));
            t.running = spawned.is_ok();
        }
        self.cv.notify_all();
        left
    }

    /// The ns left on process slot `p`'s timer `which`.
    pub fn get(&self, m: &Machine, p: u64, which: u64) -> u64 {
        self.slots.lock().map_or(0, |t| left(&t, m, p, which))
    }

    /// A process slot's timers go (its process ended, or a new one forked there).
    pub fn clear(&self, p: u64) {
        if let Ok(mut t) = self.slots.lock() {
            if let Some(slot) = t.real.get_mut(p as usize) {
                *slot = None;
            }
            if let Some(slot) = t.cpu.get_mut(p as usize) {
                *slot = [None; 2];
            }
        }
    }
}

/// The ns left on process slot `p`'s timer `which` (at least 1 when armed).
fn left(t: &Timing, m: &Machine, p: u64, which: u64) -> u64 {
    let i = p as usize;
    match which {
        0 => t.real.get(i).copied().flatten().map_or(0, |(at, _)| {
            at.saturating_duration_since(Instant::now())
                .as_nanos()
                .max(1) as u64
        }),
        1 | 2 => t
            .cpu
            .get(i)
            .and_then(|c| c[which as usize - 1])
            .map_or(0, |(at, _)| {
                at.saturating_sub(crate::vcpu::process_cpu_ns(m, p)).max(1)
            }),
        _ => 0,
    }
}

/// The timer thread.
fn run(m: &Machine) {
    let timers = &m.timers;
    let Ok(mut t) = timers.slots.lock() else {
        return;
    };
    loop {
        let now = Instant::now();
        let mut fired = Vec::new();
        for (p, slot) in t.real.iter_mut().enumerate() {
            if let Some((at, every)) = *slot {
                if at <= now {
                    fired.push((p as u64, SIGNALS[0]));
                    *slot = (!every.is_zero()).then(|| (now.max(at) + every, every));
                }
            }
        }
        let mut cpu_armed = false;
        for (p, slots) in t.cpu.iter_mut().enumerate() {
            if slots.iter().all(Option::is_none) {
                continue;
            }
            let used = crate::vcpu::process_cpu_ns(m, p as u64);
            for (k, slot) in slots.iter_mut().enumerate() {
                if let Some((at, every)) = *slot {
                    if at <= used {
                        fired.push((p as u64, SIGNALS[k + 1]));
                        *slot = (every != 0).then(|| (used.max(at).saturating_add(every), every));
                    }
                }
                cpu_armed |= slot.is_some();
            }
        }
        for (p, sig) in fired {
            fire(m, p, sig);
        }
        let mut wait = t
            .real
            .iter()
            .flatten()
            .map(|(at, _)| at.saturating_duration_since(Instant::now()))
            .min();
        if cpu_armed {
            wait = Some(wait.map_or(CPU_POLL, |w| w.min(CPU_POLL)));
        }
        t = match wait {
            None => timers.cv.wait(t).unwrap_or_else(|e| e.into_inner()),
            Some(left) => {
                timers
                    .cv
                    .wait_timeout(t, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// Signal `sig` for process slot `p`: into its mailbox, and its threads woken.
fn fire(m: &Machine, p: u64, sig: u64) {
    let b = PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_TIMER_SIG;
    if let Some(w) = m.mem.atomic_u64(b) {
        w.fetch_or(1 << (sig - 1), Ordering::SeqCst);
    }
    m.wake_process(p);
}
