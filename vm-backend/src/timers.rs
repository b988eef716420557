//! The guest processes' real-time interval timers (alarm, setitimer ITIMER_REAL):
//! one VMM thread sleeps until the earliest expiry, then raises SIGALRM in the
//! process's mailbox (abi.rs, PI_TIMER_SIG) and wakes or kicks its threads.

use crate::abi::*;
use crate::vcpu::Machine;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const SIGALRM: u64 = 14;

/// Each process slot's timer: its next expiry and its period.
#[derive(Debug, Default)]
pub struct Timers {
    slots: Mutex<Timing>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Timing {
    armed: [Option<(Instant, Duration)>; MAX_PROCS as usize],
    /// Whether the timer thread runs (started at the first timer).
    running: bool,
}

impl Timers {
    /// Sets (or with `value` zero, disarms) process slot `p`'s timer; returns the
    /// ns that were left on it. Starts the timer thread the first time.
    pub fn set(&self, m: &Arc<Machine>, p: u64, value: u64, interval: u64) -> u64 {
        let Ok(mut t) = self.slots.lock() else {
            return 0;
        };
        let left = self.left(&t, p);
        if let Some(slot) = t.armed.get_mut(p as usize) {
            *slot = (value != 0).then(|| {
                (
                    Instant::now() + Duration::from_nanos(value),
                    Duration::from_nanos(interval),
                )
            });
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

    /// The ns left on process slot `p`'s timer.
    pub fn get(&self, p: u64) -> u64 {
        self.slots.lock().map_or(0, |t| self.left(&t, p))
    }

    fn left(&self, t: &Timing, p: u64) -> u64 {
        t.armed
            .get(p as usize)
            .copied()
            .flatten()
            .map_or(0, |(at, _)| {
                at.saturating_duration_since(Instant::now())
                    .as_nanos()
                    .max(1) as u64
            })
    }

    /// A process slot's timer goes (its process ended, or a new one forked there).
    pub fn clear(&self, p: u64) {
        if let Ok(mut t) = self.slots.lock() {
            if let Some(slot) = t.armed.get_mut(p as usize) {
                *slot = None;
            }
        }
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
        for (p, slot) in t.armed.iter_mut().enumerate() {
            if let Some((at, every)) = *slot {
                if at <= now {
                    fired.push(p as u64);
                    *slot = (!every.is_zero()).then(|| (now.max(at) + every, every));
                }
            }
        }
        for p in fired {
            fire(m, p);
        }
        let next = t.armed.iter().flatten().map(|(at, _)| *at).min();
        t = match next {
            None => timers.cv.wait(t).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                timers
                    .cv
                    .wait_timeout(t, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// SIGALRM for process slot `p`: into its mailbox, and its threads woken.
fn fire(m: &Machine, p: u64) {
    let b = PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_TIMER_SIG;
    if let Some(w) = m.mem.atomic_u64(b) {
        w.fetch_or(1 << (SIGALRM - 1), Ordering::SeqCst);
    }
    m.wake_process(p);
}
