//! Interrupting a vCPU: the guest kernel rings MMIO_INTERRUPT for a thread that has
//! a signal to take. Its futex wait or sleep ends with EINTR, a blocked call (see
//! [`crate::wait`]) too; a wait that starts after the doorbell, before the thread
//! took the signal, ends at once. A vCPU running guest code is kicked out of
//! KVM_RUN with [`KICK`] (a host signal whose handler does nothing) and, if it was
//! in user code, sent to the guest kernel's async entry to take the signal.

use crate::abi::MAX_VCPUS;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::pthread::{pthread_kill, Pthread};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::Mutex;

/// The host signal that stops a vCPU thread's KVM_RUN (unused by anything else:
/// the VMM never forwards it to the guest).
pub const KICK: Signal = Signal::SIGSTKFLT;

extern "C" fn kicked(_: libc::c_int) {}

/// Installs [`KICK`]'s handler, which does nothing (without SA_RESTART, so
/// KVM_RUN returns EINTR). Call before the VMM is confined.
pub fn install_kick() -> Result<(), String> {
    let a = SigAction::new(
        SigHandler::Handler(kicked),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing at all, so it is async-signal-safe.
    unsafe { sigaction(KICK, &a) }
        .map(|_| ())
        .map_err(|e| format!("sigaction: {e}"))
}
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A flag and an eventfd per vCPU slot.
#[derive(Debug)]
pub struct Interrupts {
    flags: [AtomicBool; MAX_VCPUS as usize],
    fds: Vec<EventFd>,
    kicks: [AtomicBool; MAX_VCPUS as usize],
    /// The host thread running each slot's vCPU (0: none), under the lock so that
    /// a kick never goes to a thread that has ended.
    threads: Mutex<[Pthread; MAX_VCPUS as usize]>,
    /// Each slot's thread's host CPU time when it took the slot (a host thread runs
    /// one guest thread after another, see [`crate::vcpu`]), in ns.
    bases: [AtomicU64; MAX_VCPUS as usize],
}

impl Interrupts {
    /// The eventfds are made now (the VMM can still make them later, but this is
    /// set up with the VM).
    pub fn new() -> Result<Interrupts, String> {
        let fds = (0..MAX_VCPUS)
            .map(|_| {
                EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                    .map_err(|e| format!("eventfd: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Interrupts {
            flags: Default::default(),
            fds,
            kicks: Default::default(),
            threads: Mutex::new([0; MAX_VCPUS as usize]),
            bases: Default::default(),
        })
    }

    /// Marks slot `slot` interrupted and wakes a poll on its eventfd.
    pub fn raise(&self, slot: u64) {
        let Some(f) = self.flags.get(slot as usize) else {
            return;
        };
        f.store(true, Ordering::SeqCst);
        let _ = self.fds[slot as usize].write(1);
    }

    /// Records the host thread that runs slot `slot`'s vCPU (None: it ended), and
    /// its CPU time so far, `base` ns, which is not the guest thread's.
    pub fn set_thread(&self, slot: u64, t: Option<Pthread>, base: u64) {
        if let (Ok(mut th), true) = (self.threads.lock(), slot < MAX_VCPUS) {
            th[slot as usize] = t.unwrap_or(0);
            self.bases[slot as usize].store(base, Ordering::SeqCst);
        }
    }

    /// The CPU time of the guest thread on slot `slot`, when the calling host
    /// thread runs it (CLOCK_THREAD_CPUTIME_ID), in ns.
    pub fn thread_ns(&self, slot: u64) -> u64 {
        self.since_base(slot, thread_cpu_ns())
    }

    /// `host_ns` of slot `slot`'s host thread less what it had when it took the
    /// slot (see [`Interrupts::set_thread`]).
    fn since_base(&self, slot: u64, host_ns: u64) -> u64 {
        let base = self
            .bases
            .get(slot as usize)
            .map_or(0, |b| b.load(Ordering::SeqCst));
        host_ns.saturating_sub(base)
    }

    /// A process's CPU time in ns: `ended` (its ended threads') and the host CPU
    /// time of the threads running `slots`' vCPUs. The thread table's lock is held
    /// across, so no thread's handle goes stale meanwhile and none is counted both
    /// running and ended, or neither (see [`Interrupts::end_thread`]).
    pub fn process_cpu_ns(&self, slots: impl Iterator<Item = u64>, ended: &AtomicU64) -> u64 {
        let Ok(th) = self.threads.lock() else {
            return 0;
        };
        let mut sum = ended.load(Ordering::SeqCst);
        for s in slots {
            let Some(&t) = th.get(s as usize).filter(|&&t| t != 0) else {
                continue;
            };
            let mut id: libc::clockid_t = 0;
            // SAFETY: `t` is a live thread of this process (its entry is cleared,
            // under this lock, before it exits); `id` is a local the call writes.
            if unsafe { libc::pthread_getcpuclockid(t, &mut id) } != 0 {
                continue;
            }
            if let Ok(ts) = nix::time::clock_gettime(nix::time::ClockId::from_raw(id)) {
                sum += self.since_base(s, ns(ts));
            }
        }
        sum
    }

    /// The calling vCPU thread (slot `slot`'s) ends: its CPU time goes into
    /// `ended`, its process's, and its entry is cleared, both under the lock.
    pub fn end_thread(&self, slot: u64, ended: Option<&AtomicU64>) {
        if let Ok(mut th) = self.threads.lock() {
            if let Some(e) = ended {
                e.fetch_add(self.thread_ns(slot), Ordering::SeqCst);
            }
            if let Some(t) = th.get_mut(slot as usize) {
                *t = 0;
            }
        }
    }

    /// Stops slot `slot`'s vCPU if it is running guest code (see the module docs).
    pub fn kick(&self, slot: u64) {
        let Some(k) = self.kicks.get(slot as usize) else {
            return;
        };
        k.store(true, Ordering::SeqCst);
        if let Ok(th) = self.threads.lock() {
            let t = th[slot as usize];
            if t != 0 {
                let _ = pthread_kill(t, KICK);
            }
        }
    }

    /// Whether slot `slot` was kicked (the mark is taken).
    pub fn take_kick(&self, slot: u64) -> bool {
        self.kicks
            .get(slot as usize)
            .is_some_and(|k| k.swap(false, Ordering::SeqCst))
    }

    /// Whether slot `slot` was interrupted (the mark is taken).
    pub fn take(&self, slot: u64) -> bool {
        let Some(f) = self.flags.get(slot as usize) else {
            return false;
        };
        let _ = self.fds[slot as usize].read();
        f.swap(false, Ordering::SeqCst)
    }

    /// The flag of slot `slot` (the futex wait checks it under its lock).
    pub fn flag(&self, slot: u64) -> &AtomicBool {
        &self.flags[(slot as usize).min(MAX_VCPUS as usize - 1)]
    }

    /// The eventfd a blocked call on slot `slot` polls with its files.
    pub fn fd(&self, slot: u64) -> BorrowedFd<'_> {
        self.fds[(slot as usize).min(MAX_VCPUS as usize - 1)].as_fd()
    }
}

/// A time in ns.
fn ns(t: nix::sys::time::TimeSpec) -> u64 {
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// CPU time of the calling host thread (a vCPU's: its guest thread's), in ns.
pub fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, ns)
}
