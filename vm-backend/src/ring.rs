//! The back end of the forwarding rings (layout in [`abi`](crate::abi), one ring
//! per vCPU slot): the guest's forwarded system calls, performed against the
//! [`Host`] by whichever VMM thread holds the consumer side.
//!
//! A ring thread polls the ring while there is work (a request is picked up within
//! a fraction of a microsecond). After [`SPIN`] without a request it sets the ring's
//! idle flag and sleeps. A guest that posts a request and finds the flag set rings
//! the [`MMIO_KICK`](crate::abi::MMIO_KICK) doorbell: that exits to the vCPU thread,
//! which performs the pending requests itself ([`Kicker::kick`]) and, when kicks
//! come in a burst, wakes the ring thread for the requests that follow. Waking a
//! sleeping host thread costs ≈21 µs on the machines this was measured on (an idle
//! vCPU of a nested VM; ≈7 µs of it on the waker), more than the exit, so the
//! request that found the VMM asleep never waits for a wake-up (an ioeventfd
//! doorbell measured 38 µs per lone request here, this path 28 µs).
//! The guest polls for its completion; when it stops polling it exits to the vCPU
//! thread, which sleeps until the request is done ([`Kicker::wait`]).
//!
//! The idle flag is a Dekker-style handshake: the ring thread sets it, fences and
//! reads `req_prod`; the guest publishes `req_prod`, fences and reads the flag; so a
//! request is never left unseen by a sleeping ring thread.

use crate::abi::*;
use crate::files::Host;
use crate::hcall;
use crate::intr::Interrupts;
use crate::mem::GuestMem;
use crate::wait;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

/// How long the ring thread polls after the last request before it sleeps (it
/// keeps a host CPU busy meanwhile; the machines this runs on may have two).
const SPIN: Duration = Duration::from_micros(50);
/// Two kicks closer than this are a burst: the ring thread is woken to poll.
const BURST: Duration = Duration::from_micros(200);

/// Ring `i`'s counters, as atomics over guest memory.
struct Ring<'a> {
    req_prod: &'a AtomicU64,
    rsp_prod: &'a AtomicU64,
}

/// Every ring, and the idle flag (on ring 0's page).
struct Words<'a> {
    rings: Vec<Ring<'a>>,
    idle: &'a AtomicU64,
}

fn words(mem: &GuestMem) -> Option<Words<'_>> {
    let ring = |i: u64| {
        let page = RING_GPA + i * PAGE;
        Some(Ring {
            req_prod: mem.atomic_u64(page + RG_REQ_PROD)?,
            rsp_prod: mem.atomic_u64(page + RG_RSP_PROD)?,
        })
    };
    Some(Words {
        rings: (0..MAX_VCPUS).map(ring).collect::<Option<Vec<_>>>()?,
        idle: mem.atomic_u64(RING_GPA + RG_VMM_IDLE)?,
    })
}

impl Words<'_> {
    /// Whether some ring has a request that was not completed.
    fn pending(&self, order: Ordering) -> bool {
        self.rings
            .iter()
            .any(|r| r.req_prod.load(order) != r.rsp_prod.load(order))
    }
}

/// Which process slot runs on each vCPU slot (set when a vCPU is started), so a
/// ring's requests are performed in that process's memory and files.
pub type SlotProcs = [AtomicU64; MAX_VCPUS as usize];

/// The consumer side: the host state the requests run against, each process's
/// view of guest memory, and how far each ring has been consumed. Held by one
/// thread at a time.
struct Consumer {
    views: Vec<Option<GuestMem>>,
    host: Host,
    cons: [u64; MAX_VCPUS as usize],
    slot_proc: Arc<SlotProcs>,
}

impl Consumer {
    /// Performs request block `blk` of a request on vCPU slot `slot`, in its
    /// process's memory and files.
    fn handle(&mut self, slot: usize, blk: u64) {
        let p = self.slot_proc[slot].load(Ordering::Acquire) as usize;
        let p = if self.views.get(p).is_some_and(Option::is_some) {
            p
        } else {
            0
        };
        self.host.set_current(p as u64);
        if let Some(mem) = self.views[p].as_mut() {
            hcall::handle(mem, &mut self.host, blk);
        }
    }

    /// The view of the process on vCPU slot `slot`.
    fn view(&self, slot: usize) -> Option<&GuestMem> {
        let p = self.slot_proc.get(slot)?.load(Ordering::Acquire) as usize;
        self.views.get(p)?.as_ref().or(self.views[0].as_ref())
    }

    /// Performs every posted request, ring by ring, and publishes the completions;
    /// Ok(whether there were any), or Err when the guest has corrupted a ring (more
    /// posted than there are slots).
    fn serve(&mut self, w: &Words<'_>) -> Result<bool, ()> {
        let mut did = false;
        for (i, r) in w.rings.iter().enumerate() {
            let prod = r.req_prod.load(Ordering::Acquire);
            let cons = self.cons[i];
            if prod.wrapping_sub(cons) > RING_SLOTS {
                return Err(());
            }
            did |= cons != prod;
            while self.cons[i] != prod {
                let page = RING_GPA + i as u64 * PAGE;
                let slot = page + RG_SLOTS + (self.cons[i] % RING_SLOTS) * RQ_SIZE;
                self.handle(i, slot);
                self.cons[i] += 1;
                r.rsp_prod.store(self.cons[i], Ordering::Release);
            }
        }
        Ok(did)
    }

    /// Whether a ring has requests beyond this consumer's cursor (the guest's own
    /// counters are not trusted for this: the ring thread would spin forever).
    fn has_work(&self, w: &Words<'_>) -> bool {
        w.rings
            .iter()
            .zip(&self.cons)
            .any(|(r, c)| r.req_prod.load(Ordering::SeqCst) != *c)
    }
}

/// What the threads share.
struct Shared {
    consumer: Mutex<Consumer>,
    /// Wakes the ring thread.
    kick: EventFd,
}

impl Shared {
    /// Serves the rings under the lock: when it returns, every request posted before
    /// the call has completed (the lock holder finishes its whole batch first). A
    /// corrupted ring ends the VMM.
    fn serve(&self, w: &Words<'_>) -> bool {
        let r = match self.consumer.lock() {
            Ok(mut c) => c.serve(w),
            Err(_) => Err(()),
        };
        match r {
            Ok(did) => did,
            Err(()) => {
                crate::vmm::crash_exit(libc::SIGSEGV, "the guest corrupted its forwarding ring")
            }
        }
    }

    /// Whether there is work beyond the consumer's cursors.
    fn has_work(&self, w: &Words<'_>) -> bool {
        self.consumer.lock().map(|c| c.has_work(w)).unwrap_or(false)
    }
}

/// The vCPU threads' handle on the rings.
pub struct Kicker {
    mem: GuestMem,
    intr: Arc<Interrupts>,
    shared: Arc<Shared>,
    epoch: Instant,
    /// When the last kick came, in ns since `epoch` (0: never).
    last_kick: AtomicU64,
    /// The ring thread's thread id (0 until it runs).
    ring_tid: Arc<AtomicI32>,
    /// The CPU the ring thread is kept off (-1: none).
    away_from: AtomicI32,
}

impl std::fmt::Debug for Kicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kicker")
    }
}

impl Kicker {
    /// The guest rang MMIO_KICK (the ring thread sleeps): performs the pending
    /// requests on this thread. When the previous kick was recent, requests are
    /// coming in a burst: the ring thread is woken to poll for the next ones (the
    /// wake costs this thread ≈7 µs, which a lone request should not pay).
    pub fn kick(&self) {
        let Some(w) = words(&self.mem) else { return };
        self.shared.serve(&w);
        let now = self.epoch.elapsed().as_nanos().max(1) as u64;
        let last = self.last_kick.swap(now, Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < BURST.as_nanos() as u64 {
            self.steer();
            let _ = self.shared.kick.write(1);
        }
    }

    /// The ring thread's thread id (0 until it runs): the only thread whose CPUs
    /// the VMM's seccomp filter lets the vCPU threads set (see [`Kicker::steer`]).
    pub fn ring_tid(&self) -> i32 {
        self.ring_tid.load(Ordering::SeqCst)
    }

    /// Keeps the ring thread off the CPU the calling vCPU thread runs on, when the
    /// VMM may use another. The scheduler places a thread it wakes on the waker's
    /// CPU (this host's two CPUs share no cache level it knows of), where the ring
    /// thread then either preempts the vCPU whose requests it is to serve, or waits
    /// behind it while the other CPU idles (measured: ≈60 µs per wake, where the
    /// guest made its next request 30 µs later). The thread's CPUs change only when
    /// the waker's CPU does; they are the waker's own less its CPU (the domain's
    /// cpuset, as it is now).
    fn steer(&self) {
        let Ok(cpu) = nix::sched::sched_getcpu() else {
            return;
        };
        let tid = self.ring_tid.load(Ordering::Relaxed);
        let Ok(me) = i32::try_from(cpu) else { return };
        if tid == 0 || self.away_from.load(Ordering::Relaxed) == me {
            return;
        }
        let Ok(mut set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
            return;
        };
        let others = set.unset(cpu).is_ok()
            && (0..nix::sched::CpuSet::count()).any(|c| set.is_set(c).unwrap_or(false));
        // Done (or nothing to do: no other CPU) until the waker's CPU changes; a
        // refused call is tried again at the next burst.
        if !others || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set).is_ok() {
            self.away_from.store(me, Ordering::Relaxed);
        }
    }

    /// The guest's request at `blk` (on vCPU slot `slot`'s ring) was answered [`RQ_BLOCKED`]: this vCPU thread waits
    /// for what the call needs with no lock held (other vCPUs' I/O goes on), then
    /// performs it again, until it completes or its timeout passes (then it
    /// returns 0, as poll and epoll_wait do).
    pub fn block(&self, slot: u64, blk: u64) {
        let slot = (slot as usize).min(MAX_VCPUS as usize - 1);
        let mut deadline = None;
        let mut first = true;
        loop {
            let wait = match self.shared.consumer.lock() {
                Ok(mut c) => {
                    if self.mem.read_u64(blk.wrapping_add(RQ_RET)) != Some(RQ_BLOCKED) {
                        return;
                    }
                    let p = c.slot_proc[slot].load(Ordering::Acquire);
                    c.host.set_current(p);
                    let c = &*c;
                    c.view(slot).and_then(|mem| {
                        hcall::decode(&mem.whole(), blk)
                            .and_then(|(nr, a)| wait::what(mem, &c.host, nr, a))
                    })
                }
                Err(_) => return,
            };
            let ms = match (&wait, deadline) {
                (Some(w), None) if first && w.timeout_ms >= 0 => {
                    deadline = Some(Instant::now() + Duration::from_millis(w.timeout_ms as u64));
                    w.timeout_ms
                }
                (_, Some(d)) => d.saturating_duration_since(Instant::now()).as_millis() as i64,
                _ => -1,
            };
            first = false;
            if let Some(w) = &wait {
                w.poll(ms, self.intr.fd(slot as u64));
            }
            if self.intr.take(slot as u64) {
                // A signal for this thread: the call ends with EINTR.
                if let Some(w) = self.mem.atomic_u64(blk.wrapping_add(RQ_RET)) {
                    w.store((-(libc::EINTR as i64)) as u64, Ordering::SeqCst);
                }
                return;
            }
            let Ok(mut c) = self.shared.consumer.lock() else {
                return;
            };
            c.handle(slot, blk);
            if self.mem.read_u64(blk.wrapping_add(RQ_RET)) != Some(RQ_BLOCKED) {
                return;
            }
            // Its time is up, or it has nothing to wait for (its fd was closed
            // meanwhile; a call that cannot make progress is not retried).
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if expired || wait.is_none() {
                let ret = if expired { 0 } else { -(libc::EAGAIN as i64) };
                if let Some(w) = self.mem.atomic_u64(blk.wrapping_add(RQ_RET)) {
                    w.store(ret as u64, Ordering::SeqCst);
                }
                return;
            }
        }
    }

    /// Runs `f` on the host files and the processes' memory views, with the
    /// consumer lock held (no request is being performed meanwhile); None if the
    /// lock is poisoned.
    pub fn with_host<R>(
        &self,
        f: impl FnOnce(&mut Host, &mut Vec<Option<GuestMem>>) -> R,
    ) -> Option<R> {
        let mut c = self.shared.consumer.lock().ok()?;
        let c = &mut *c;
        Some(f(&mut c.host, &mut c.views))
    }

    /// The guest stopped polling for a completion (a long call: a sleep, a read
    /// from a pipe): this thread serves the rings itself, which waits for the ring
    /// thread's batch in progress, so the vCPU sleeps on the lock instead of
    /// spinning, and a request posted without a kick still gets done.
    pub fn wait(&self) {
        if let Some(w) = words(&self.mem) {
            self.shared.serve(&w);
        }
    }
}

/// Starts the ring thread serving `host` over `mem`. `setup` runs first on that
/// thread (its file identity and seccomp filter, which are per thread); its error
/// is returned. The eventfd is made here, before any seccomp filter.
pub fn start(
    mem: &GuestMem,
    host: Host,
    slot_proc: Arc<SlotProcs>,
    intr: Arc<Interrupts>,
    setup: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<Kicker, String> {
    let w = words(mem).ok_or("guest memory has no room for the rings")?;
    let mut cons = [0u64; MAX_VCPUS as usize];
    for (c, r) in cons.iter_mut().zip(&w.rings) {
        *c = r.rsp_prod.load(Ordering::SeqCst);
    }
    let shared = Arc::new(Shared {
        consumer: Mutex::new(Consumer {
            views: (0..MAX_PROCS)
                .map(|p| (p == 0).then(|| mem.user()))
                .collect(),
            host,
            cons,
            slot_proc,
        }),
        kick: EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?,
    });
    let (ring_mem, ring_shared) = (mem.alias(), Arc::clone(&shared));
    let ring_tid = Arc::new(AtomicI32::new(0));
    let tid = Arc::clone(&ring_tid);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("hyperjail-ring".into())
        .spawn(move || {
            tid.store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
            let ready = setup();
            let ok = ready.is_ok();
            let _ = tx.send(ready);
            if ok {
                poll(&ring_mem, &ring_shared);
            }
        })
        .map_err(|e| format!("ring thread: {e}"))?;
    rx.recv()
        .map_err(|_| "ring thread: died during setup".to_string())??;
    Ok(Kicker {
        mem: mem.alias(),
        intr,
        shared,
        epoch: Instant::now(),
        last_kick: AtomicU64::new(0),
        ring_tid,
        away_from: AtomicI32::new(-1),
    })
}

/// The ring thread: polls while there is work, sleeps on `kick` when there is none.
fn poll(mem: &GuestMem, shared: &Shared) {
    let Some(w) = words(mem) else { return };
    let mut last = Instant::now();
    let mut spins = 0u32;
    loop {
        // A guest that leaves its counters unequal without posting anything only
        // gets a serve that does nothing, and the thread still goes to sleep.
        if w.pending(Ordering::Acquire) && shared.serve(&w) {
            last = Instant::now();
            continue;
        }
        spins = spins.wrapping_add(1);
        if spins % 64 != 0 || last.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        w.idle.store(1, Ordering::SeqCst);
        if !shared.has_work(&w) {
            let _ = shared.kick.read();
        }
        w.idle.store(0, Ordering::SeqCst);
        last = Instant::now();
    }
}
