//! Out of memory inside the guest: the VMM's own OOM killer.
//!
//! Every guest page is VMM memory, charged to the domain's memory cgroup, whose
//! limit is the domain's. Left alone, the kernel's OOM killer would end the whole
//! VMM when the guest's processes together reach it. Instead the VMM asks the
//! cgroup (v1: a `memory.usage_in_bytes` threshold on `cgroup.event_control`) to be
//! told when usage crosses the limit less a margin. If what the kernel cannot
//! reclaim (anonymous and shared memory, from memory.stat: page cache is dropped
//! before memory runs out) is over that mark too, its OOM thread SIGKILLs the
//! guest process with the most resident memory of its own (pages of its window,
//! from the VMM's pagemap), as Linux's OOM killer would; if that process has not
//! ended within a few ms its memory is given back at once (MADV_DONTNEED on its
//! window). Each kill appends a line to `oom.log` in the state directory, which
//! the runtime's `events` reports as an `oom` event. While usage stays above the
//! mark (page cache can keep it there) memory is looked at every 2 ms. The
//! guest's first process is its init: when it is the one, the VMM ends (status
//! 137), as a container ends when its init is OOM-killed.
//!
//! The limit can change (`update`): the thread reads it each time it wakes and
//! registers a threshold for a new one on the same eventfd (the old ones stay
//! and only wake it early). It wakes when `update` tells the VMM (the control
//! socket's `memory` op), and once a second in any case (a paused VM cannot be
//! told). A domain created without a limit is watched too, from the first one set.
//!
//! cgroup v2 has no usage threshold events (its `memory.high` throttles instead);
//! there the kernel's OOM killer ends the VMM and the cgroup's own `oom` event
//! reports it.

use crate::abi::*;
use crate::vcpu::Machine;
use hyperjail_isolation::cgroups::Cgroup;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The report file in the state directory: a JSON line per guest process killed.
pub const OOM_FILE: &str = "oom.log";
/// The margin below the limit at which the VMM kills: a sixth of the limit, at
/// least this much (a guest touching memory at full speed fills it in a few ms;
/// the OOM thread wakes in microseconds).
const MIN_MARGIN: u64 = 4 << 20;
/// How often memory is looked at while usage is above the threshold (a guest
/// touching memory at full speed takes a few MiB in that time).
const POLL_MS: i32 = 2;
/// Pagemap entries read at once.
const CHUNK: usize = 4096;

/// How often the thread looks at the limit when nothing woke it (ms).
const LIMIT_POLL_MS: i32 = 1000;

/// What the OOM thread watches, opened by the runtime before the VMM is forked.
#[derive(Debug)]
pub struct Watch {
    /// Signalled when usage crosses a threshold (either way), or by [`Kick`].
    event: File,
    /// Registers the thresholds; shared with the control socket ([`Kick`]).
    armer: Arc<Mutex<Armer>>,
    /// The cgroup's memory.usage_in_bytes, memory.stat and memory.limit_in_bytes.
    usage: Arc<File>,
    stat: File,
    limit: Arc<File>,
    /// The state directory's [`OOM_FILE`].
    report: File,
}

fn read_u64(f: &File) -> Option<u64> {
    let mut b = [0u8; 32];
    let n = f.read_at(&mut b, 0).ok()?;
    std::str::from_utf8(&b[..n]).ok()?.trim().parse().ok()
}

/// Sets up the threshold notification of the domain's v1 memory cgroup and
/// creates the report file in `dir`; `None` without a v1 memory controller, a
/// memory limit, or a cgroup that takes the notification (rootless): the kernel's
/// OOM killer is then the only one.
pub fn open(cg: &Cgroup, dir: &Path) -> Option<Watch> {
    watch(cg, dir).ok().flatten()
}

fn watch(cg: &Cgroup, dir: &Path) -> Result<Option<Watch>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(mem) = cg.controller_dir("memory") else {
        return Ok(None);
    };
    let file = |name: &str| mem.join(name);
    let err = |what: &str, e: std::io::Error| format!("OOM watch: {what}: {e}");
    let usage = Arc::new(File::open(file("memory.usage_in_bytes")).map_err(|e| err("usage", e))?);
    let stat = File::open(file("memory.stat")).map_err(|e| err("stat", e))?;
    let limit = Arc::new(File::open(file("memory.limit_in_bytes")).map_err(|e| err("limit", e))?);
    // SAFETY: eventfd takes two integers; the fd it returns is owned from here on.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(err("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: just created, owned by nothing else.
    let event = File::from(unsafe { OwnedFd::from_raw_fd(efd) });
    // A second handle on the eventfd, made now: the VMM cannot dup once confined.
    let event2 = event.try_clone().map_err(|e| err("eventfd", e))?;
    let control = std::fs::OpenOptions::new()
        .write(true)
        .open(file("cgroup.event_control"))
        .map_err(|e| err("cgroup.event_control", e))?;
    let path = dir.join(OOM_FILE);
    let report = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| err(&path.display().to_string(), e))?;
    report.set_len(0).map_err(|e| err("truncate", e))?;
    let mut armer = Armer {
        event: event2,
        usage: Arc::clone(&usage),
        limit: Arc::clone(&limit),
        control,
        armed: None,
    };
    // A cgroup that refuses the notification (rootless) leaves OOM to the kernel.
    armer.arm().map_err(|e| err("cgroup.event_control", e))?;
    Ok(Some(Watch {
        event,
        armer: Arc::new(Mutex::new(armer)),
        usage,
        stat,
        limit,
        report,
    }))
}

/// The cgroup's memory limit, if it has one ("no limit" reads as a page-rounded
/// i64::MAX).
fn limit_of(f: &File) -> Option<u64> {
    read_u64(f).filter(|&l| l < 1 << 62)
}

/// Registers usage thresholds for the cgroup's memory limit on the OOM thread's
/// eventfd (`event` is a second handle on it).
#[derive(Debug)]
struct Armer {
    event: File,
    usage: Arc<File>,
    limit: Arc<File>,
    /// The cgroup's cgroup.event_control.
    control: File,
    /// The threshold last registered (None: no limit yet).
    armed: Option<u64>,
}

impl Armer {
    /// Registers the threshold of the current limit, unless it is the one
    /// registered last.
    fn arm(&mut self) -> std::io::Result<()> {
        let Some(t) = limit_of(&self.limit).map(threshold) else {
            return Ok(());
        };
        if self.armed == Some(t) {
            return Ok(());
        }
        // Recorded first: a threshold the cgroup refuses is not tried again.
        self.armed = Some(t);
        let line = format!("{} {} {t}", self.event.as_raw_fd(), self.usage.as_raw_fd());
        self.control.write_all(line.as_bytes())
    }
}

/// What the control socket's `memory` op uses (the machine keeps it,
/// [`Machine::oom_kick`]).
#[derive(Debug)]
pub struct Kick(Arc<Mutex<Armer>>);

impl Kick {
    /// Registers the threshold of the new limit, then wakes the OOM thread to
    /// look at memory against it; the caller answers only after both.
    pub fn limit_changed(&self) -> std::io::Result<()> {
        let mut a = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let r = a.arm();
        let _ = (&a.event).write_all(&1u64.to_ne_bytes());
        r
    }
}

/// Where the killer acts for memory limit `limit`: a sixth below it.
fn threshold(limit: u64) -> u64 {
    let margin = (limit / 6).max(MIN_MARGIN);
    limit.saturating_sub(margin).max(limit / 2)
}

/// The memory of the cgroup the kernel cannot reclaim (anonymous and shared
/// memory; page cache is not: the kernel drops it before it runs out), from
/// memory.stat, read into `buf` without allocating.
fn unreclaimable(stat: &File, buf: &mut [u8]) -> u64 {
    let Ok(n) = stat.read_at(buf, 0) else {
        return 0;
    };
    let mut sum = 0;
    for line in buf[..n].split(|&b| b == b'\n') {
        let mut f = line.splitn(2, |&b| b == b' ');
        let (Some(key), Some(val)) = (f.next(), f.next()) else {
            continue;
        };
        if key == b"total_rss" || key == b"total_shmem" {
            sum += std::str::from_utf8(val)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    sum
}

/// Waits up to `ms` for the eventfd (or just `ms`, as a sleep); true when it
/// fired.
fn wait_event(event: &File, ms: i32) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(event.as_fd(), PollFlags::POLLIN)];
    let t = if ms < 0 {
        PollTimeout::NONE
    } else {
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
    };
    poll(&mut fds, t).is_ok_and(|n| n > 0)
}

/// Starts the OOM thread (after confinement: it inherits the seccomp filter).
pub fn start(m: Arc<Machine>, w: Watch) -> Result<(), String> {
    let _ = m.oom_kick.set(Kick(Arc::clone(&w.armer)));
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || run(&m, w))
        .map(drop)
        .map_err(|e| format!("OOM thread: {e}"))
}

fn run(m: &Machine, mut w: Watch) {
    // Allocated now: by the time they are needed, memory is short.
    let mut buf = vec![0u8; 8 * CHUNK];
    let mut stat = vec![0u8; 8192];
    let mut count = [0u8; 8];
    // Above the threshold (the usage event fired and usage has not gone back
    // down): page cache may keep it there, so memory is looked at every POLL_MS
    // until it does.
    let mut above = false;
    loop {
        if wait_event(&w.event, if above { POLL_MS } else { LIMIT_POLL_MS })
            && (&w.event).read_exact(&mut count).is_err()
        {
            return;
        }
        let armed = w.armer.lock().map(|mut a| a.arm());
        if let Ok(Err(e)) = armed {
            crate::vmm::warn(&format!("vm: OOM watch: a new memory limit: {e}"));
        }
        let Some(limit) = limit_of(&w.limit) else {
            continue;
        };
        let threshold = threshold(limit);
        above = read_u64(&w.usage).is_some_and(|u| u >= threshold);
        if !above || unreclaimable(&w.stat, &mut stat) < threshold {
            continue;
        }
        // What ended processes left for their slots' next ones goes first; a kill
        // follows at once if that was not enough (a guest touching memory at full
        // speed reaches the limit within a few ms).
        if crate::window::drop_kept(m) && unreclaimable(&w.stat, &mut stat) < threshold {
            continue;
        }
        let Some((p, pid, bytes)) = victim(m, &mut buf) else {
            continue;
        };
        let alive = || m.guest_pid(p) == Some(pid);
        if !alive() {
            // It ended meanwhile: memory is looked at again.
            continue;
        }
        if p == 0 {
            // The guest's init: the domain ends with it.
            report(&mut w.report, pid, bytes);
            std::process::exit(128 + libc::SIGKILL);
        }
        // Reported first, as Linux's oom event comes with the kill: whoever sees
        // the process end (its parent, `events`) finds the event already there.
        report(&mut w.report, pid, bytes);
        m.oom_victims.fetch_or(1 << p, Ordering::SeqCst);
        m.post_host_signal(p, libc::SIGKILL as u64);
        // Its exit gives its memory back; if it has not ended within a few ms (its
        // vCPU may wait for memory in a fault), the memory goes now. A fault this
        // causes before it takes the SIGKILL counts as the SIGKILL (vcpu.rs). The
        // wait ends early while the usage event is pending: memory is still moving
        // (it is not read here), and waiting longer lets the kernel's OOM killer
        // end the whole VMM first.
        for _ in 0..5 {
            if !alive() {
                break;
            }
            wait_event(&w.event, 1);
        }
        if alive() {
            m.view(p).release(LOW);
        }
    }
}

/// A kill in the report file and the log.
fn report(f: &mut File, pid: u64, bytes: u64) {
    let _ = f.write_all(format!("{{\"pid\":{pid},\"rss\":{bytes}}}\n").as_bytes());
    crate::vmm::warn(&format!(
        "vm: out of memory: killed guest process {pid} ({} MiB of its own)",
        bytes >> 20
    ));
}

/// The process slot, pid and resident bytes of the guest process with the most
/// memory of its own.
fn victim(m: &Machine, buf: &mut [u8]) -> Option<(u64, u64, u64)> {
    let pagemap = m.pagemap.as_ref()?;
    let mut best: Option<(u64, u64, u64)> = None;
    for p in 0..MAX_PROCS {
        let Some(pid) = m.guest_pid(p) else {
            continue;
        };
        let view = m.view(p);
        if p != 0 && view.host_addr() == m.mem.host_addr() {
            // No window of its own yet.
            continue;
        }
        let bytes = resident(pagemap, view.host_addr() + LOW, view.size() - LOW, buf);
        if best.is_none_or(|(_, _, b)| bytes > b) {
            best = Some((p, pid, bytes));
        }
    }
    best
}

/// Resident (present or swapped) bytes of the VMM's memory [at, at + len).
fn resident(pagemap: &File, at: u64, len: u64, buf: &mut [u8]) -> u64 {
    let (first, pages) = (at / PAGE, len / PAGE);
    let mut n = 0;
    let mut i = 0;
    while i < pages {
        let k = (pages - i).min(CHUNK as u64) as usize;
        let chunk = &mut buf[..8 * k];
        if pagemap.read_exact_at(chunk, (first + i) * 8).is_err() {
            break;
        }
        n += chunk.chunks_exact(8).filter(|e| e[7] & 0xc0 != 0).count() as u64;
        i += k as u64;
    }
    n * PAGE
}
