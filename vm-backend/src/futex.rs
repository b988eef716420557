//! Futexes for the guest's threads. Each guest thread runs on its own vCPU thread,
//! so a futex wait is that host thread sleeping here, and a wake wakes it. The
//! value check and the enqueue happen under one lock, which every wake takes too,
//! so a wake that follows the waker's store to the word is never lost; a wake
//! names the waiters it wakes, so a later waiter cannot take it.

use crate::abi::*;
use crate::mem::GuestMem;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EAGAIN: i64 = 11;
const EFAULT: i64 = 14;
const EINTR: i64 = 4;
const EINVAL: i64 = 22;
const ENOSYS: i64 = 38;
const ETIMEDOUT: i64 = 110;

/// The waiters of every futex word (by guest address, in arrival order) and the
/// waiters woken but not yet returned. A wake-up names the waiters it wakes, so a
/// thread that starts waiting after a wake can never take it from the one it was
/// meant for.
#[derive(Debug, Default)]
struct Table {
    queues: BTreeMap<u64, VecDeque<u64>>,
    woken: BTreeSet<u64>,
    next_id: u64,
}

/// The guest's futexes.
#[derive(Debug, Default)]
pub struct Futexes {
    table: Mutex<Table>,
    cv: Condvar,
}

impl Futexes {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Performs the futex block at `blk` (abi.rs, FX_*) for a thread of the process
    /// whose memory `mem` is and whose window starts at GPA `window`, and writes its
    /// result. Futexes are keyed by guest-physical address: the same word in the
    /// shared low memory for every process, a process's own word in its window.
    pub fn perform(&self, mem: &GuestMem, blk: u64, window: u64, intr: Option<&AtomicBool>) {
        let Some(ret_word) = mem.atomic_u64(blk.wrapping_add(FX_RET)) else {
            return;
        };
        let field = |off| mem.read_u64(blk.wrapping_add(off)).unwrap_or(u64::MAX);
        let (op, addr, val) = (field(FX_OP), field(FX_ADDR), field(FX_VAL));
        let key = if addr < LOW {
            addr
        } else {
            window.wrapping_add(addr)
        };
        let ret = match op {
            0 => match deadline(field(FX_TIMEOUT), field(FX_ABSOLUTE)) {
                Ok(d) => match mem.atomic_u32(addr) {
                    Some(word) => self.wait(word, key, val as u32, d, intr),
                    None => -EFAULT,
                },
                Err(e) => e,
            },
            1 => self.wake(key, val),
            _ => -ENOSYS,
        };
        ret_word.store(ret as u64, Ordering::SeqCst);
    }

    /// FUTEX_WAIT: sleeps while `word` (keyed `addr`) is `val`, until woken,
    /// `until`, or `intr` is raised (EINTR; see [`Futexes::interrupt`]).
    fn wait(
        &self,
        word: &AtomicU32,
        addr: u64,
        val: u32,
        until: Option<Instant>,
        intr: Option<&AtomicBool>,
    ) -> i64 {
        let mut t = self.lock();
        if word.load(Ordering::SeqCst) != val {
            return -EAGAIN;
        }
        let me = t.next_id;
        t.next_id += 1;
        t.queues.entry(addr).or_default().push_back(me);
        loop {
            if t.woken.remove(&me) {
                return 0;
            }
            let interrupted = intr.is_some_and(|f| f.swap(false, Ordering::SeqCst));
            if interrupted || until.is_some_and(|d| Instant::now() >= d) {
                if let Some(q) = t.queues.get_mut(&addr) {
                    q.retain(|&w| w != me);
                    if q.is_empty() {
                        t.queues.remove(&addr);
                    }
                }
                return if interrupted { -EINTR } else { -ETIMEDOUT };
            }
            t = match until {
                None => self.cv.wait(t).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    self.cv
                        .wait_timeout(t, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Wakes every waiter to look at its interrupt flag (raised just before).
    pub fn interrupt(&self) {
        let _t = self.lock();
        self.cv.notify_all();
    }

    /// Wakes every waiter on the guest kernel's word at `addr` (below LOW, where a
    /// word's key is its address).
    pub fn wake_all(&self, addr: u64) {
        self.wake(addr, u64::MAX);
    }

    /// FUTEX_WAKE: wakes up to `n` of the waiters on `addr`, oldest first; returns
    /// how many.
    fn wake(&self, addr: u64, n: u64) -> i64 {
        let mut t = self.lock();
        let Some(q) = t.queues.get_mut(&addr) else {
            return 0;
        };
        let k = (n.min(i32::MAX as u64) as usize).min(q.len());
        let woken: Vec<u64> = q.drain(..k).collect();
        if q.is_empty() {
            t.queues.remove(&addr);
        }
        t.woken.extend(woken);
        if k > 0 {
            self.cv.notify_all();
        }
        k as i64
    }
}

/// The deadline of a wait: `timeout` ns (u64::MAX: none), relative when `absolute`
/// is 0, else an absolute CLOCK_MONOTONIC (1) or CLOCK_REALTIME (2) time.
fn deadline(timeout: u64, absolute: u64) -> Result<Option<Instant>, i64> {
    if timeout == u64::MAX {
        return Ok(None);
    }
    let left = match absolute {
        0 => timeout,
        1 => {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map_err(|_| -EINVAL)?;
            let now = Duration::from(now).as_nanos() as u64;
            timeout.saturating_sub(now)
        }
        2 => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            timeout.saturating_sub(now)
        }
        _ => return Err(-EINVAL),
    };
    Ok(Instant::now().checked_add(Duration::from_nanos(left)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    impl Futexes {
        /// A wait on the word at `addr` of `mem`, keyed by `addr`.
        fn wait_at(&self, mem: &GuestMem, addr: u64, val: u32, until: Option<Instant>) -> i64 {
            mem.atomic_u32(addr)
                .map_or(-EFAULT, |w| self.wait(w, addr, val, until, None))
        }
    }

    #[test]
    fn wait_checks_the_value_and_wakes_count() {
        let mem = Arc::new(GuestMem::new(0x2000).expect("mmap"));
        let f = Arc::new(Futexes::default());
        // The word is 0, not 1: no sleep.
        assert_eq!(f.wait_at(&mem, 0x100, 1, None), -EAGAIN);
        assert_eq!(f.wait_at(&mem, 0x101, 0, None), -EFAULT);
        assert_eq!(f.wait_at(&mem, 0x4000, 0, None), -EFAULT);
        // Times out.
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(f.wait_at(&mem, 0x100, 0, Some(soon)), -ETIMEDOUT);
        assert_eq!(f.wake(0x100, 1), 0, "nobody waits any more");
        // Two waiters, woken one by one.
        let spawn = || {
            let (m, f) = (Arc::clone(&mem), Arc::clone(&f));
            std::thread::spawn(move || f.wait_at(&m, 0x100, 0, None))
        };
        let (a, b) = (spawn(), spawn());
        let mut woken = 0;
        let end = Instant::now() + Duration::from_secs(10);
        while woken < 2 && Instant::now() < end {
            woken += f.wake(0x100, 1);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(woken, 2);
        assert_eq!(a.join().expect("waiter a"), 0);
        assert_eq!(b.join().expect("waiter b"), 0);
        let t = f.lock();
        assert!(t.queues.is_empty() && t.woken.is_empty());
    }

    /// A wake-up belongs to the waiters that were queued: a thread that starts
    /// waiting after it (on the new value) must not take it.
    #[test]
    fn a_later_waiter_cannot_take_a_wake() {
        let mem = Arc::new(GuestMem::new(0x2000).expect("mmap"));
        let f = Arc::new(Futexes::default());
        let (m, ff) = (Arc::clone(&mem), Arc::clone(&f));
        let a = std::thread::spawn(move || ff.wait_at(&m, 0x200, 0, None));
        let end = Instant::now() + Duration::from_secs(10);
        while f.lock().queues.get(&0x200).map_or(0, |q| q.len()) == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        mem.atomic_u32(0x200)
            .expect("word")
            .store(1, Ordering::SeqCst);
        assert_eq!(f.wake(0x200, 1), 1);
        let soon = Instant::now() + Duration::from_millis(30);
        assert_eq!(f.wait_at(&mem, 0x200, 1, Some(soon)), -ETIMEDOUT);
        assert_eq!(a.join().expect("waiter a"), 0);
    }
}
