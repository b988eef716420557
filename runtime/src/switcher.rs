//! The ARINC 653 partition switcher: one long-lived process per arinc653 pool, started
//! by the first domain that joins and gone once the pool has no domain left. At every
//! slot boundary it freezes every domain of the pool but the slot's and thaws that
//! one; after the last slot, until the frame ends, all are frozen.
//!
//! Its clock is CLOCK_MONOTONIC with absolute sleeps, so boundaries do not drift. It
//! writes `<root>/@cpupools/<pool>.frame` (the epoch and the slots) so that a
//! benchmark can compare when guests ran with when their slots began. The CLI verb
//! [`SWITCHER_VERB`] runs it, after giving itself a real-time priority on the pool's
//! CPUs.

use crate::pools::Pools;
use crate::{DomainRecord, Error, Result, Runtime, Status, Store};
use hyperjail_sched::{Arinc653, DomainSched};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hidden CLI verb that runs a pool's switcher: `hyperjail --root R
/// arinc653-switcher POOL`.
pub const SWITCHER_VERB: &str = "arinc653-switcher";

fn lock_path(root: &Path, pool: &str) -> PathBuf {
    Pools::new(root).dir().join(format!("{pool}.switcher"))
}

/// Whether a switcher holds the pool's switcher lock.
pub fn running(root: &Path, pool: &str) -> bool {
    let Ok(f) = OpenOptions::new().read(true).open(lock_path(root, pool)) else {
        return false;
    };
    matches!(
        Flock::lock(f, FlockArg::LockSharedNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

/// Starts the pool's switcher unless one runs, and waits until it does.
pub(crate) fn ensure(root: &Path, pool: &str) -> Result<()> {
    if running(root, pool) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "/proc/self/exe", e))?;
    let log = Pools::new(root).dir().join(format!("{pool}.switcher.log"));
    let err = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| Error::io("open", &log, e))?;
    // Its own process group, no stdio and no environment of ours: an engine that waits
    // for our stdout/stderr to close must not wait for the switcher, and it serves the
    // pool, not the caller.
    Command::new(exe)
        .env_clear()
        .arg("--root")
        .arg(root)
        .arg(SWITCHER_VERB)
        .arg(pool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Backend(format!("start the arinc653 switcher of {pool}: {e}")))?;
    let until = Instant::now() + Duration::from_secs(2);
    while !running(root, pool) {
        if Instant::now() > until {
            return Err(Error::Backend(format!(
                "the arinc653 switcher of pool {pool} did not start (see {})",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn now_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn sleep_until(ns: u64) {
    let ts = TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64);
    while let Err(Errno::EINTR) = clock_nanosleep(
        ClockId::CLOCK_MONOTONIC,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ts,
    ) {}
}

/// What the switcher acts on, refreshed by a helper thread off the pool's CPUs so
/// that reading state files never delays a slot boundary.
#[derive(Default)]
struct Snapshot {
    /// Running domains of the pool (the switcher leaves created ones alone: they wait
    /// for `start` and must be able to answer it).
    members: Vec<DomainRecord>,
    /// Domains of the pool that are not stopped (running or waiting for start).
    alive: usize,
    /// The pool's schedule.
    sched: Option<Arinc653>,
}

fn snapshot(store: &Store, pools: &Pools, pool: &str) -> Result<Snapshot> {
    let sched = pools.get(pool)?.arinc653.filter(|s| s.major_frame_us > 0);
    let mut members = Vec::new();
    let mut alive = 0;
    for id in store.ids()? {
        let Ok(Some(r)) = store.read(&id) else {
            continue;
        };
        if r.pool != pool || !matches!(r.sched, Some(DomainSched::Arinc653)) {
            continue;
        }
        if !r.process().is_some_and(|p| !matches!(p.state, 'Z' | 'X')) {
            continue;
        }
        alive += 1;
        if r.status == Status::Running {
            members.push(r);
        }
    }
    Ok(Snapshot {
        members,
        alive,
        sched,
    })
}

struct Switcher<'a> {
    rt: &'a Runtime,
    snap: Arc<Snapshot>,
    frozen: HashMap<String, bool>,
}

impl Switcher<'_> {
    fn take(&mut self, shared: &Mutex<Arc<Snapshot>>) {
        // Never wait for the refresher: it may hold the lock while preempted.
        if let Ok(s) = shared.try_lock() {
            self.snap = Arc::clone(&s);
        }
        let snap = Arc::clone(&self.snap);
        self.frozen
            .retain(|id, _| snap.members.iter().any(|r| &r.id == id));
    }

    /// Freezes every member but `slot` (and a user-paused one), then thaws `slot`.
    fn switch_to(&mut self, slot: Option<&str>) {
        for thaw in [false, true] {
            for r in &self.snap.members {
                let frozen = Some(r.id.as_str()) != slot || r.user_paused;
                if frozen == thaw || self.frozen.get(&r.id) == Some(&frozen) {
                    continue;
                }
                if let Ok(b) = self.rt.backend_of(r) {
                    if b.hold(r, frozen).is_ok() {
                        self.frozen.insert(r.id.clone(), frozen);
                    }
                }
            }
        }
    }
}

fn write_frame(root: &Path, pool: &str, t0: u64, s: &Arinc653) {
    let slots: Vec<serde_json::Value> = s
        .offsets()
        .iter()
        .map(|(o, sl)| {
            serde_json::json!({"domain": sl.domain, "offset_us": o, "runtime_us": sl.runtime_us})
        })
        .collect();
    let doc = serde_json::json!({"t0_ns": t0, "major_frame_us": s.major_frame_us, "slots": slots});
    let dir = Pools::new(root).dir().to_path_buf();
    let tmp = dir.join(format!(".{pool}.frame.tmp"));
    if fs::write(&tmp, doc.to_string()).is_ok() {
        let _ = fs::rename(&tmp, dir.join(format!("{pool}.frame")));
    }
}

/// Runs the switcher of `pool` until the pool has no live domain. Returns at once if
/// another switcher runs for it.
///
/// `realtime` is called on the switching thread once its helper thread runs: the CLI
/// gives it SCHED_FIFO on the pool's CPUs there.
pub fn run_switcher(rt: &Runtime, pool: &str, realtime: &dyn Fn()) -> Result<()> {
    let root = rt.store().root().to_path_buf();
    let pools = Pools::new(&root);
    // Not the pools lock: the `create` that starts us holds it while it waits.
    fs::create_dir_all(pools.dir()).map_err(|e| Error::io("create", pools.dir(), e))?;
    let lp = lock_path(&root, pool);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lp)
        .map_err(|e| Error::io("open", &lp, e))?;
    let _lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(()),
        Err((_, e)) => {
            return Err(Error::Sys {
                op: "flock switcher",
                source: e,
            })
        }
    };
    // The refresher: a normal-priority thread, started before the caller makes this
    // thread real-time (so it does not inherit that), wherever the host schedules it.
    let shared = Arc::new(Mutex::new(Arc::new(snapshot(rt.store(), &pools, pool)?)));
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        let (store, pools, pool) = (rt.store().clone(), pools.clone(), pool.to_string());
        let pool_cpus = pools.get(&pool).map(|p| p.cpus).unwrap_or_default();
        std::thread::spawn(move || {
            // Off the pool's CPUs where there are others: there it would only be
            // preempted by the partitions' real-time tasks.
            let mut set = nix::sched::CpuSet::new();
            let mut any = false;
            for c in crate::online_cpus().unwrap_or_default() {
                if !pool_cpus.contains(&c) && set.set(c as usize).is_ok() {
                    any = true;
                }
            }
            if any {
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
            }
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = snapshot(&store, &pools, &pool) {
                    if let Ok(mut g) = shared.lock() {
                        *g = Arc::new(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    realtime();
    let mut sw = Switcher {
        rt,
        snap: Arc::new(Snapshot::default()),
        frozen: HashMap::new(),
    };
    let mut idle_frames = 0;
    let mut sched: Option<Arinc653> = None;
    let mut t = now_ns() + 1_000_000;
    loop {
        // The snapshot and schedule as they are now; a new schedule starts a new epoch
        // at a frame boundary.
        sw.take(&shared);
        if sw.snap.sched != sched {
            sched = sw.snap.sched.clone();
            if let Some(s) = &sched {
                write_frame(&root, pool, t, s);
            }
        }
        let frame_ns = sched
            .as_ref()
            .map_or(20_000_000, |s| s.major_frame_us * 1000);
        match &sched {
            Some(s) if !s.slots.is_empty() => {
                for (off, slot) in s.offsets() {
                    sleep_until(t + off * 1000);
                    sw.switch_to(Some(&slot.domain));
                }
                let used: u64 = s.slots.iter().map(|s| s.runtime_us).sum::<u64>() * 1000;
                if used < frame_ns {
                    sleep_until(t + used);
                    sw.switch_to(None);
                }
            }
            _ => {
                // No slots: every domain of the pool stays frozen.
                sleep_until(t);
                sw.switch_to(None);
            }
        }
        idle_frames = if sw.snap.alive == 0 {
            idle_frames + 1
        } else {
            0
        };
        if idle_frames >= 3 {
            stop.store(true, Ordering::Relaxed);
            let _ = refresher.join();
            let _ = fs::remove_file(pools.dir().join(format!("{pool}.frame")));
            return Ok(());
        }
        t += frame_ns;
        // Fell behind (suspended, overloaded): skip to the next frame from now.
        let now = now_ns();
        if now > t + frame_ns {
            t += (now - t) / frame_ns * frame_ns;
        }
    }
}
