//! The back end of the forwarding ring (layout in [`abi`](crate::abi)): the guest's
//! forwarded system calls, performed against the [`Host`] by whichever VMM thread
//! holds the consumer side.
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
use crate::mem::GuestMem;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EventFd;

/// How long the ring thread polls after the last request before it sleeps (it
/// keeps a host CPU busy meanwhile; the machines this runs on may have two).
const SPIN: Duration = Duration::from_micros(50);
/// Two kicks closer than this are a burst: the ring thread is woken to poll.
const BURST: Duration = Duration::from_micros(200);

/// The ring's shared words, as atomics over guest memory.
struct Words<'a> {
    req_prod: &'a AtomicU64,
    rsp_prod: &'a AtomicU64,
    idle: &'a AtomicU64,
}

fn words(mem: &GuestMem) -> Option<Words<'_>> {
    Some(Words {
        req_prod: mem.atomic_u64(RING_GPA + RG_REQ_PROD)?,
        rsp_prod: mem.atomic_u64(RING_GPA + RG_RSP_PROD)?,
        idle: mem.atomic_u64(RING_GPA + RG_VMM_IDLE)?,
    })
}

/// The consumer side: the host state the requests run against, and how far the
/// ring has been consumed. Held by one thread at a time.
struct Consumer {
    mem: GuestMem,
    host: Host,
    cons: u64,
}

impl Consumer {
    /// Performs every posted request and publishes the completions; false when the
    /// guest has corrupted the ring (more posted than there are slots).
    fn serve(&mut self, w: &Words<'_>) -> bool {
        let prod = w.req_prod.load(Ordering::Acquire);
        if prod.wrapping_sub(self.cons) > RING_SLOTS {
            return false;
        }
        while self.cons != prod {
            let slot = RING_GPA + RG_SLOTS + (self.cons % RING_SLOTS) * RQ_SIZE;
            hcall::handle(&mut self.mem, &mut self.host, slot);
            self.cons += 1;
            w.rsp_prod.store(self.cons, Ordering::Release);
        }
        true
    }
}

/// What the two threads share.
struct Shared {
    consumer: Mutex<Consumer>,
    /// Wakes the ring thread.
    kick: EventFd,
}

impl Shared {
    /// Serves the ring under the lock: when it returns, every request posted before
    /// the call has completed (the lock holder finishes its whole batch first). A
    /// corrupted ring ends the VMM.
    fn serve(&self, w: &Words<'_>) {
        let ok = match self.consumer.lock() {
            Ok(mut c) => c.serve(w),
            Err(_) => false,
        };
        if !ok {
            crate::vmm::crash_exit(libc::SIGSEGV, "the guest corrupted its forwarding ring");
        }
    }
}

/// The vCPU thread's handle on the ring.
pub struct Kicker {
    mem: GuestMem,
    shared: Arc<Shared>,
    last_kick: Cell<Option<Instant>>,
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
        let now = Instant::now();
        if self
            .last_kick
            .replace(Some(now))
            .is_some_and(|t| now.duration_since(t) < BURST)
        {
            let _ = self.shared.kick.write(1);
        }
    }

    /// The guest stopped polling for a completion (a long call: a sleep, a read
    /// from a pipe): this thread serves the ring itself, which waits for the ring
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
/// is returned. The eventfds are made here, before any seccomp filter.
pub fn start(
    mem: &GuestMem,
    host: Host,
    setup: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<Kicker, String> {
    let cons = words(mem)
        .ok_or("guest memory has no room for the ring")?
        .rsp_prod
        .load(Ordering::SeqCst);
    let shared = Arc::new(Shared {
        consumer: Mutex::new(Consumer {
            mem: mem.alias(),
            host,
            cons,
        }),
        kick: EventFd::new(0).map_err(|e| format!("eventfd: {e}"))?,
    });
    let (ring_mem, ring_shared) = (mem.alias(), Arc::clone(&shared));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("hyperjail-ring".into())
        .spawn(move || {
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
        shared,
        last_kick: Cell::new(None),
    })
}

/// The ring thread: polls while there is work, sleeps on `kick` when there is none.
fn poll(mem: &GuestMem, shared: &Shared) {
    let Some(w) = words(mem) else { return };
    let mut last = Instant::now();
    let mut spins = 0u32;
    loop {
        if w.req_prod.load(Ordering::Acquire) != w.rsp_prod.load(Ordering::Acquire) {
            shared.serve(&w);
            last = Instant::now();
            continue;
        }
        spins = spins.wrapping_add(1);
        if spins % 64 != 0 || last.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        w.idle.store(1, Ordering::SeqCst);
        if w.req_prod.load(Ordering::SeqCst) == w.rsp_prod.load(Ordering::SeqCst) {
            let _ = shared.kick.read();
        }
        w.idle.store(0, Ordering::SeqCst);
        last = Instant::now();
    }
}
