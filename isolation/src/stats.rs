//! Resource statistics and OOM notification of a container's cgroup, as `runc events`
//! reports them.
//!
//! [`stats`] reads the cpu, memory, pids, blkio and hugetlb controllers and returns the
//! JSON object runc prints as the `data` of an `events --stats` event (runc's
//! `types.Stats`: same field names, same units, zero values left out where runc's
//! `omitempty` leaves them out). Each controller is read where it is mounted: from its
//! v1 hierarchy if there is one, else from the container's cgroup v2 directory, so the
//! hybrid layout and pure v1 or v2 are all handled. A file that is missing or cannot be
//! parsed reads as zero: statistics never fail.
//!
//! [`OomWatcher`] waits for OOM kills (v1: an eventfd registered on
//! `memory.oom_control`; v2: the `oom_kill` counter of `memory.events`, polled for
//! changes), and [`oom_kills`] reads the cumulative count.

use crate::cgroups::{hierarchies, Cgroup, Hierarchy};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// USER_HZ: the unit of `cpuacct.stat` (a fixed 100 on Linux, as runc assumes too).
const CLOCK_TICKS: u64 = 100;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Where one controller's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ctl {
    dir: PathBuf,
    v2: bool,
}

/// The directory of each controller the statistics read (`None`: not available).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Dirs {
    cpu: Option<Ctl>,
    cpuacct: Option<Ctl>,
    memory: Option<Ctl>,
    pids: Option<Ctl>,
    blkio: Option<Ctl>,
    hugetlb: Option<Ctl>,
}

impl Dirs {
    /// The controllers of `cg` on this host's hierarchies.
    fn of(cg: &Cgroup) -> Dirs {
        Dirs::resolve(&hierarchies(), &cg.leaves())
    }

    /// Each leaf belongs to the hierarchy with the longest mount point containing it; a
    /// controller is taken from the v1 hierarchy that has it, else from the v2 leaf.
    fn resolve(hier: &[Hierarchy], leaves: &[&PathBuf]) -> Dirs {
        let owned: Vec<(&Hierarchy, &PathBuf)> = leaves
            .iter()
            .filter_map(|leaf| {
                hier.iter()
                    .filter(|h| leaf.starts_with(&h.mount_point))
                    .max_by_key(|h| h.mount_point.components().count())
                    .map(|h| (h, *leaf))
            })
            .collect();
        let find = |ctrl: &str| {
            owned
                .iter()
                .find(|(h, _)| !h.v2 && h.options.split(',').any(|o| o == ctrl))
                .or_else(|| owned.iter().find(|(h, _)| h.v2))
                .map(|(h, dir)| Ctl {
                    dir: (*dir).clone(),
                    v2: h.v2,
                })
        };
        Dirs {
            cpu: find("cpu"),
            cpuacct: find("cpuacct"),
            memory: find("memory"),
            pids: find("pids"),
            blkio: find("blkio"),
            hugetlb: find("hugetlb"),
        }
    }
}

/// The statistics of a container's cgroup as runc's `events --stats` prints its `data`:
/// `cpu` (`usage`: `total`, `percpu`, `percpu_kernel`, `percpu_user`, `kernel`, `user`
/// in nanoseconds; `throttling`: `periods`, `throttledPeriods`, `throttledTime`),
/// `memory` (`cache`, `usage`/`swap`/`kernel`/`kernelTCP` entries of `limit`, `usage`,
/// `max`, `failcnt`, and `raw` = memory.stat), `pids` (`current`, `limit`; no limit is
/// 0), `blkio` (`ioServiceBytesRecursive`, `ioServicedRecursive`, ... lists of `major`,
/// `minor`, `op`, `value`) and `hugetlb` (page size → `usage`, `max`, `failcnt`).
///
/// Unlimited memory reads as the kernel shows it on v1 (9223372036854771712) and as
/// `u64::MAX` for v2's `max`. On v2, `swap` is memory plus swap, as v1 reports it.
/// Missing controllers and files read as zero (and are left out where runc omits zero).
pub fn stats(cg: &Cgroup) -> Value {
    collect(&Dirs::of(cg))
}

fn collect(d: &Dirs) -> Value {
    json!({
        "cpu": cpu(d),
        "memory": d.memory.as_ref().map(memory).unwrap_or_else(|| memory_json(&Memory::default())),
        "pids": d.pids.as_ref().map(pids).unwrap_or_else(|| json!({})),
        "blkio": d.blkio.as_ref().map(blkio).unwrap_or_else(|| json!({})),
        "hugetlb": d.hugetlb.as_ref().map(hugetlb).unwrap_or_else(|| json!({})),
    })
}

// ---- file reading ----

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

/// A cgroup number: `max` is `u64::MAX`, a negative value (kernel accounting bugs) is 0.
fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    if let Some(neg) = s.strip_prefix('-') {
        return (!neg.is_empty() && neg.bytes().all(|b| b.is_ascii_digit())).then_some(0);
    }
    s.parse().ok()
}

fn read_u64(dir: &Path, file: &str) -> u64 {
    read(dir, file).and_then(|s| parse_u64(&s)).unwrap_or(0)
}

/// A flat keyed file (`key value` per line), in file order; malformed lines are skipped.
fn parse_flat(s: &str) -> Vec<(String, u64)> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?);
            if it.next().is_some() {
                return None;
            }
            Some((k.to_string(), parse_u64(v)?))
        })
        .collect()
}

fn read_flat(dir: &Path, file: &str) -> Vec<(String, u64)> {
    read(dir, file).map(|s| parse_flat(&s)).unwrap_or_default()
}

fn flat_get(flat: &[(String, u64)], key: &str) -> Option<u64> {
    flat.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

fn usec_to_ns(v: u64) -> u64 {
    v.saturating_mul(1000)
}

// ---- JSON as Go's encoding/json writes runc's types ----

/// Sets `key` unless `omitempty` and the value is zero.
fn put(m: &mut Map<String, Value>, key: &str, v: u64, omitempty: bool) {
    if v != 0 || !omitempty {
        m.insert(key.into(), v.into());
    }
}

fn put_list(m: &mut Map<String, Value>, key: &str, v: &[u64]) {
    if !v.is_empty() {
        m.insert(key.into(), v.into());
    }
}

// ---- cpu ----

#[derive(Default)]
struct Cpu {
    total: u64,
    percpu: Vec<u64>,
    percpu_kernel: Vec<u64>,
    percpu_user: Vec<u64>,
    kernel: u64,
    user: u64,
    periods: u64,
    throttled_periods: u64,
    throttled_time: u64,
}

fn cpu(d: &Dirs) -> Value {
    let mut c = Cpu::default();
    // On v2 one cpu.stat has both usage and throttling; v1 values (if any) come after.
    let v2 = [&d.cpuacct, &d.cpu].into_iter().flatten().find(|c| c.v2);
    if let Some(ctl) = v2 {
        cpu_v2(&ctl.dir, &mut c);
    }
    if let Some(ctl) = d.cpuacct.as_ref().filter(|c| !c.v2) {
        cpuacct_v1(&ctl.dir, &mut c);
    }
    if let Some(ctl) = d.cpu.as_ref().filter(|c| !c.v2) {
        cpu_v1(&ctl.dir, &mut c);
    }
    let mut usage = Map::new();
    put(&mut usage, "total", c.total, true);
    put_list(&mut usage, "percpu", &c.percpu);
    put_list(&mut usage, "percpu_kernel", &c.percpu_kernel);
    put_list(&mut usage, "percpu_user", &c.percpu_user);
    put(&mut usage, "kernel", c.kernel, false);
    put(&mut usage, "user", c.user, false);
    let mut throttling = Map::new();
    put(&mut throttling, "periods", c.periods, true);
    put(
        &mut throttling,
        "throttledPeriods",
        c.throttled_periods,
        true,
    );
    put(&mut throttling, "throttledTime", c.throttled_time, true);
    json!({ "usage": usage, "throttling": throttling })
}

/// v1 cpuacct: usage in ns, per-cpu usage, and user/system split (USER_HZ ticks).
fn cpuacct_v1(dir: &Path, c: &mut Cpu) {
    c.total = read_u64(dir, "cpuacct.usage");
    c.percpu = read(dir, "cpuacct.usage_percpu")
        .map(|s| s.split_whitespace().filter_map(parse_u64).collect())
        .unwrap_or_default();
    let stat = read_flat(dir, "cpuacct.stat");
    let ticks_to_ns = |t: u64| t.saturating_mul(NS_PER_SEC / CLOCK_TICKS);
    c.user = ticks_to_ns(flat_get(&stat, "user").unwrap_or(0));
    c.kernel = ticks_to_ns(flat_get(&stat, "system").unwrap_or(0));
    // cpuacct.usage_all: a "cpu user system" header, then one line per cpu, in ns.
    if let Some(all) = read(dir, "cpuacct.usage_all") {
        for line in all.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [_, user, system] = f[..] {
                if let (Some(u), Some(s)) = (parse_u64(user), parse_u64(system)) {
                    c.percpu_user.push(u);
                    c.percpu_kernel.push(s);
                }
            }
        }
    }
}

/// v1 cpu: CFS throttling (`throttled_time` already in ns).
fn cpu_v1(dir: &Path, c: &mut Cpu) {
    let stat = read_flat(dir, "cpu.stat");
    c.periods = flat_get(&stat, "nr_periods").unwrap_or(0);
    c.throttled_periods = flat_get(&stat, "nr_throttled").unwrap_or(0);
    c.throttled_time = flat_get(&stat, "throttled_time").unwrap_or(0);
}

/// v2 cpu.stat: usage and throttling, in microseconds.
fn cpu_v2(dir: &Path, c: &mut Cpu) {
    for (k, v) in read_flat(dir, "cpu.stat") {
        match k.as_str() {
            "usage_usec" => c.total = usec_to_ns(v),
            "user_usec" => c.user = usec_to_ns(v),
            "system_usec" => c.kernel = usec_to_ns(v),
            "nr_periods" => c.periods = v,
            "nr_throttled" => c.throttled_periods = v,
            "throttled_usec" => c.throttled_time = usec_to_ns(v),
            _ => {}
        }
    }
}

// ---- memory ----

#[derive(Clone, Copy, Default)]
struct MemEntry {
    limit: u64,
    usage: u64,
    max: u64,
    failcnt: u64,
}

#[derive(Default)]
struct Memory {
    cache: u64,
    usage: MemEntry,
    swap: MemEntry,
    kernel: MemEntry,
    kernel_tcp: MemEntry,
    raw: BTreeMap<String, u64>,
}

fn memory(ctl: &Ctl) -> Value {
    let dir = &ctl.dir;
    let raw: BTreeMap<String, u64> = read_flat(dir, "memory.stat").into_iter().collect();
    let mut m = Memory::default();
    if ctl.v2 {
        m.cache = raw.get("file").copied().unwrap_or(0);
        m.usage = MemEntry {
            usage: read_u64(dir, "memory.current"),
            limit: read_u64(dir, "memory.max"),
            max: read_u64(dir, "memory.peak"),
            failcnt: 0,
        };
        if dir.join("memory.swap.current").exists() {
            // v1 reports memory+swap: do the same.
            let limit = read_u64(dir, "memory.swap.max");
            m.swap = MemEntry {
                usage: read_u64(dir, "memory.swap.current").saturating_add(m.usage.usage),
                limit: if limit == u64::MAX {
                    limit
                } else {
                    limit.saturating_add(m.usage.limit)
                },
                max: 0,
                failcnt: 0,
            };
        }
    } else {
        m.cache = raw.get("cache").copied().unwrap_or(0);
        let entry = |prefix: &str| MemEntry {
            usage: read_u64(dir, &format!("{prefix}.usage_in_bytes")),
            max: read_u64(dir, &format!("{prefix}.max_usage_in_bytes")),
            failcnt: read_u64(dir, &format!("{prefix}.failcnt")),
            limit: read_u64(dir, &format!("{prefix}.limit_in_bytes")),
        };
        m.usage = entry("memory");
        m.swap = entry("memory.memsw");
        m.kernel = entry("memory.kmem");
        m.kernel_tcp = entry("memory.kmem.tcp");
    }
    m.raw = raw;
    memory_json(&m)
}

fn memory_json(m: &Memory) -> Value {
    let entry = |e: &MemEntry| {
        let mut o = Map::new();
        put(&mut o, "limit", e.limit, false);
        put(&mut o, "usage", e.usage, true);
        put(&mut o, "max", e.max, true);
        put(&mut o, "failcnt", e.failcnt, false);
        Value::Object(o)
    };
    let mut o = Map::new();
    put(&mut o, "cache", m.cache, true);
    o.insert("usage".into(), entry(&m.usage));
    o.insert("swap".into(), entry(&m.swap));
    o.insert("kernel".into(), entry(&m.kernel));
    o.insert("kernelTCP".into(), entry(&m.kernel_tcp));
    if !m.raw.is_empty() {
        let raw: Map<String, Value> = m
            .raw
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        o.insert("raw".into(), Value::Object(raw));
    }
    Value::Object(o)
}

// ---- pids ----

fn pids(ctl: &Ctl) -> Value {
    let dir = &ctl.dir;
    let current = match read(dir, "pids.current").and_then(|s| parse_u64(&s)) {
        Some(n) => n,
        // v2 without the pids controller: count the processes (as runc does).
        None if ctl.v2 => read(dir, "cgroup.procs")
            .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count() as u64)
            .unwrap_or(0),
        None => 0,
    };
    // "max" (no limit) is reported as 0.
    let limit = match read(dir, "pids.max") {
        Some(s) if s.trim() == "max" => 0,
        Some(s) => parse_u64(&s).unwrap_or(0),
        None => 0,
    };
    let mut o = Map::new();
    put(&mut o, "current", current, true);
    put(&mut o, "limit", limit, true);
    Value::Object(o)
}

// ---- blkio ----

#[derive(Clone, Debug, PartialEq, Eq)]
struct BlkioEntry {
    major: u64,
    minor: u64,
    op: String,
    value: u64,
}

/// runc's JSON keys, in the order the tables below list their files.
const BLKIO_KEYS: [&str; 8] = [
    "sectorsRecursive",
    "ioServiceTimeRecursive",
    "ioWaitTimeRecursive",
    "ioMergedRecursive",
    "ioQueueRecursive",
    "ioTimeRecursive",
    "ioServicedRecursive",
    "ioServiceBytesRecursive",
];

/// v1 blkio file groups, tried in runc's order: the first group whose first file has
/// entries is used. Each entry: (file, index into BLKIO_KEYS).
const BLKIO_GROUPS: [&[(&str, usize)]; 5] = [
    &[
        ("blkio.bfq.sectors_recursive", 0),
        ("blkio.bfq.io_service_time_recursive", 1),
        ("blkio.bfq.io_wait_time_recursive", 2),
        ("blkio.bfq.io_merged_recursive", 3),
        ("blkio.bfq.io_queued_recursive", 4),
        ("blkio.bfq.time_recursive", 5),
        ("blkio.bfq.io_serviced_recursive", 6),
        ("blkio.bfq.io_service_bytes_recursive", 7),
    ],
    &[
        ("blkio.bfq.io_serviced_recursive", 6),
        ("blkio.bfq.io_service_bytes_recursive", 7),
    ],
    &[
        ("blkio.sectors_recursive", 0),
        ("blkio.io_service_time_recursive", 1),
        ("blkio.io_wait_time_recursive", 2),
        ("blkio.io_merged_recursive", 3),
        ("blkio.io_queued_recursive", 4),
        ("blkio.time_recursive", 5),
        ("blkio.io_serviced_recursive", 6),
        ("blkio.io_service_bytes_recursive", 7),
    ],
    &[
        ("blkio.throttle.io_serviced_recursive", 6),
        ("blkio.throttle.io_service_bytes_recursive", 7),
    ],
    &[
        ("blkio.throttle.io_serviced", 6),
        ("blkio.throttle.io_service_bytes", 7),
    ],
];

/// A v1 blkio file: `major:minor [op] value` lines; the `Total n` line is skipped.
fn parse_blkio_v1(s: &str) -> Vec<BlkioEntry> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split([' ', ':']).filter(|x| !x.is_empty()).collect();
            let (major, minor) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
            let (op, value) = match f[..] {
                [_, _, v] => ("", v),
                [_, _, op, v] => (op, v),
                _ => return None,
            };
            Some(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value: parse_u64(value)?,
            })
        })
        .collect()
}

/// v2 io.stat, mapped to v1 tables as runc does: rbytes/wbytes → service bytes,
/// rios/wios → serviced (op `Read`/`Write`); other keys have no v1 equivalent.
fn parse_io_v2(s: &str) -> [Vec<BlkioEntry>; 8] {
    let mut t: [Vec<BlkioEntry>; 8] = Default::default();
    for line in s.lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let (table, op) = match k {
                "rbytes" => (7, "Read"),
                "wbytes" => (7, "Write"),
                "rios" => (6, "Read"),
                "wios" => (6, "Write"),
                _ => continue,
            };
            if let Some(value) = parse_u64(v) {
                t[table].push(BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                });
            }
        }
    }
    t
}

fn blkio(ctl: &Ctl) -> Value {
    let dir = &ctl.dir;
    let tables = if ctl.v2 {
        read(dir, "io.stat")
            .map(|s| parse_io_v2(&s))
            .unwrap_or_default()
    } else {
        let mut t: [Vec<BlkioEntry>; 8] = Default::default();
        for group in BLKIO_GROUPS {
            let parsed = |file: &str| {
                read(dir, file)
                    .map(|s| parse_blkio_v1(&s))
                    .unwrap_or_default()
            };
            let first = parsed(group[0].0);
            if first.is_empty() {
                continue;
            }
            t[group[0].1] = first;
            for (file, key) in &group[1..] {
                t[*key] = parsed(file);
            }
            break;
        }
        t
    };
    let mut o = Map::new();
    for (key, entries) in BLKIO_KEYS.iter().zip(tables) {
        if entries.is_empty() {
            continue;
        }
        let list: Vec<Value> = entries
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                put(&mut m, "major", e.major, true);
                put(&mut m, "minor", e.minor, true);
                if !e.op.is_empty() {
                    m.insert("op".into(), e.op.into());
                }
                put(&mut m, "value", e.value, true);
                Value::Object(m)
            })
            .collect();
        o.insert((*key).into(), list.into());
    }
    Value::Object(o)
}

// ---- hugetlb ----

fn hugetlb(ctl: &Ctl) -> Value {
    let dir = &ctl.dir;
    // Page sizes from the files themselves: hugetlb.<size>.usage_in_bytes (v1) or
    // hugetlb.<size>.current (v2); <size>.rsvd files are not page sizes.
    let suffix = if ctl.v2 {
        ".current"
    } else {
        ".usage_in_bytes"
    };
    let mut sizes: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
                (!size.is_empty() && !size.contains('.')).then(|| size.to_string())
            })
            .collect()
        })
        .unwrap_or_default();
    sizes.sort();
    let mut o = Map::new();
    for size in sizes {
        let p = format!("hugetlb.{size}");
        let (usage, max, failcnt) = if ctl.v2 {
            let events = read_flat(dir, &format!("{p}.events"));
            (
                read_u64(dir, &format!("{p}.current")),
                0,
                flat_get(&events, "max").unwrap_or(0),
            )
        } else {
            (
                read_u64(dir, &format!("{p}.usage_in_bytes")),
                read_u64(dir, &format!("{p}.max_usage_in_bytes")),
                read_u64(dir, &format!("{p}.failcnt")),
            )
        };
        let mut m = Map::new();
        put(&mut m, "usage", usage, true);
        put(&mut m, "max", max, true);
        put(&mut m, "failcnt", failcnt, false);
        o.insert(size, Value::Object(m));
    }
    Value::Object(o)
}

// ---- OOM ----

/// The cumulative number of OOM kills in a container's memory cgroup (v1
/// `memory.oom_control`, v2 `memory.events`, key `oom_kill`); 0 if unknown.
pub fn oom_kills(cg: &Cgroup) -> u64 {
    Dirs::of(cg).memory.as_ref().map(oom_kills_in).unwrap_or(0)
}

fn oom_kills_in(ctl: &Ctl) -> u64 {
    let file = if ctl.v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    flat_get(&read_flat(&ctl.dir, file), "oom_kill").unwrap_or(0)
}

/// Waits for OOM kills in a container's memory cgroup.
///
/// On cgroup v1 an eventfd is registered for OOM notifications of `memory.oom_control`
/// (as runc does); on v2 the `oom_kill` counter of `memory.events` is watched, the
/// kernel waking `poll` (POLLPRI) whenever that file changes.
#[derive(Debug)]
pub struct OomWatcher {
    watch: Watch,
}

#[derive(Debug)]
enum Watch {
    V1 {
        /// The registered eventfd (non-blocking).
        eventfd: File,
        /// memory.oom_control, kept open for as long as the registration.
        _control: File,
        dir: PathBuf,
        /// The cgroup was removed: no more events will come.
        gone: bool,
    },
    V2 {
        /// memory.events, read again through the same descriptor to re-arm poll.
        events: File,
        dir: PathBuf,
        /// The oom_kill counter when last reported.
        last: u64,
    },
}

impl OomWatcher {
    /// Starts watching the memory cgroup of `cg`: OOM kills from now on are reported
    /// by [`OomWatcher::wait`]. Fails if the container has no memory cgroup.
    pub fn new(cg: &Cgroup) -> Result<OomWatcher> {
        match Dirs::of(cg).memory {
            Some(ctl) => OomWatcher::watch(&ctl),
            None => Err(Error::Invalid(
                "no memory cgroup to watch for OOM kills".into(),
            )),
        }
    }

    fn watch(ctl: &Ctl) -> Result<OomWatcher> {
        let dir = ctl.dir.clone();
        if ctl.v2 {
            let path = dir.join("memory.events");
            let mut events = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            let last = read_counter(&mut events, &path)?;
            return Ok(OomWatcher {
                watch: Watch::V2 { events, dir, last },
            });
        }
        let path = dir.join("memory.oom_control");
        let control = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        // SAFETY: eventfd takes no pointers; its result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::sys("eventfd", Errno::last()));
        }
        // SAFETY: `fd` is a descriptor eventfd just returned, owned by nothing else.
        let eventfd = unsafe { File::from_raw_fd(fd) };
        let ec = dir.join("cgroup.event_control");
        fs::write(
            &ec,
            format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd()),
        )
        .map_err(|e| Error::io("register OOM eventfd", &ec, e))?;
        Ok(OomWatcher {
            watch: Watch::V1 {
                eventfd,
                _control: control,
                dir,
                gone: false,
            },
        })
    }

    /// Waits up to `timeout` (zero: just checks) and returns whether at least one OOM
    /// kill happened since the previous call (or since [`OomWatcher::new`]). On v1 an
    /// OOM notification of the cgroup counts as a kill. Fails once the cgroup is gone.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        match &mut self.watch {
            Watch::V1 {
                eventfd, dir, gone, ..
            } => {
                if *gone {
                    return Err(removed(dir));
                }
                if !poll_until(eventfd, PollFlags::POLLIN, deadline)? {
                    return Ok(false);
                }
                let mut buf = [0u8; 8];
                match eventfd.read(&mut buf) {
                    Ok(8) => {}
                    Ok(_) => return Ok(false),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(Error::io("read OOM eventfd", dir.as_path(), e)),
                }
                let n = u64::from_ne_bytes(buf);
                // The kernel also signals the eventfd once when the cgroup is removed.
                if !dir.join("cgroup.event_control").exists() {
                    *gone = true;
                    return if n > 1 { Ok(true) } else { Err(removed(dir)) };
                }
                Ok(n > 0)
            }
            Watch::V2 { events, dir, last } => {
                let path = dir.join("memory.events");
                loop {
                    let n = read_counter(events, &path)?;
                    if n != *last {
                        let more = n > *last;
                        *last = n;
                        if more {
                            return Ok(true);
                        }
                    }
                    if !poll_until(events, PollFlags::POLLPRI | PollFlags::POLLERR, deadline)? {
                        // Timed out: one last look (files that do not notify).
                        let n = read_counter(events, &path)?;
                        let more = n > *last;
                        *last = n;
                        return Ok(more);
                    }
                }
            }
        }
    }
}

fn removed(dir: &Path) -> Error {
    Error::Invalid(format!("memory cgroup {} was removed", dir.display()))
}

/// The `oom_kill` counter of memory.events, read from the start of `f`.
fn read_counter(f: &mut File, path: &Path) -> Result<u64> {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_string(&mut s))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(flat_get(&parse_flat(&s), "oom_kill").unwrap_or(0))
}

/// Polls `f` for `events` until `deadline`: whether any came.
fn poll_until(f: &File, events: PollFlags, deadline: Instant) -> Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000);
        let timeout = i32::try_from(ms).map_or(PollTimeout::MAX, |ms| {
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = [PollFd::new(f.as_fd(), events)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult, Pid};

    fn write(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).expect("mkdir");
        for (f, s) in files {
            fs::write(dir.join(f), s).expect("write");
        }
    }

    fn v1(dir: &Path) -> Option<Ctl> {
        Some(Ctl {
            dir: dir.to_path_buf(),
            v2: false,
        })
    }

    fn v2(dir: &Path) -> Option<Ctl> {
        Some(Ctl {
            dir: dir.to_path_buf(),
            v2: true,
        })
    }

    #[test]
    fn stats_v1_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        write(
            &root.join("cpuacct"),
            &[
                ("cpuacct.usage", "3000\n"),
                ("cpuacct.usage_percpu", "1 2 \n"),
                ("cpuacct.stat", "user 10\nsystem 5\n"),
                (
                    "cpuacct.usage_all",
                    "cpu user system\n0 100 200\n1 300 400\n",
                ),
            ],
        );
        write(
            &root.join("cpu"),
            &[(
                "cpu.stat",
                "nr_periods 4\nnr_throttled 1\nthrottled_time 777\n",
            )],
        );
        write(
            &root.join("memory"),
            &[
                ("memory.usage_in_bytes", "8192\n"),
                ("memory.max_usage_in_bytes", "16384\n"),
                ("memory.failcnt", "2\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.kmem.usage_in_bytes", "-4096\n"),
                ("memory.kmem.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory.stat",
                    "cache 4096\nrss 8192\ntotal_cache 4096\nbogus\n",
                ),
            ],
        );
        write(
            &root.join("pids"),
            &[("pids.current", "3\n"), ("pids.max", "max\n")],
        );
        write(
            &root.join("blkio"),
            &[
                ("blkio.bfq.io_service_bytes_recursive", ""),
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 100\n8:0 Write 50\n8:0 Total 150\nTotal 150\n",
                ),
                (
                    "blkio.throttle.io_serviced_recursive",
                    "8:0 Read 3\nTotal 3\n",
                ),
            ],
        );
        write(
            &root.join("hugetlb"),
            &[
                ("hugetlb.2MB.usage_in_bytes", "0\n"),
                ("hugetlb.2MB.max_usage_in_bytes", "2097152\n"),
                ("hugetlb.2MB.failcnt", "1\n"),
                ("hugetlb.2MB.rsvd.usage_in_bytes", "0\n"),
            ],
        );
        let d = Dirs {
            cpu: v1(&root.join("cpu")),
            cpuacct: v1(&root.join("cpuacct")),
            memory: v1(&root.join("memory")),
            pids: v1(&root.join("pids")),
            blkio: v1(&root.join("blkio")),
            hugetlb: v1(&root.join("hugetlb")),
        };
        let s = collect(&d);
        assert_eq!(
            s["cpu"],
            json!({
                "usage": {
                    "total": 3000, "percpu": [1, 2], "percpu_kernel": [200, 400],
                    "percpu_user": [100, 300], "kernel": 50_000_000u64, "user": 100_000_000u64,
                },
                "throttling": {"periods": 4, "throttledPeriods": 1, "throttledTime": 777},
            })
        );
        let m = &s["memory"];
        assert_eq!(m["cache"], 4096);
        assert_eq!(
            m["usage"],
            json!({"limit": 9223372036854771712u64, "usage": 8192, "max": 16384, "failcnt": 2})
        );
        assert_eq!(m["swap"], json!({"limit": 0, "failcnt": 0}));
        assert_eq!(
            m["kernel"],
            json!({"limit": 9223372036854771712u64, "failcnt": 0})
        );
        assert_eq!(m["kernelTCP"], json!({"limit": 0, "failcnt": 0}));
        assert_eq!(
            m["raw"],
            json!({"cache": 4096, "rss": 8192, "total_cache": 4096})
        );
        assert_eq!(s["pids"], json!({"current": 3}));
        assert_eq!(
            s["blkio"],
            json!({
                "ioServiceBytesRecursive": [
                    {"major": 8, "op": "Read", "value": 100},
                    {"major": 8, "op": "Write", "value": 50},
                    {"major": 8, "op": "Total", "value": 150},
                ],
                "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 3}],
            })
        );
        assert_eq!(s["hugetlb"], json!({"2MB": {"max": 2097152, "failcnt": 1}}));
    }

    #[test]
    fn stats_v2_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        write(
            dir,
            &[
                (
                    "cpu.stat",
                    "usage_usec 10\nuser_usec 7\nsystem_usec 3\nnr_periods 2\nnr_throttled 1\nthrottled_usec 5\n",
                ),
                ("memory.current", "1000\n"),
                ("memory.max", "max\n"),
                ("memory.peak", "2000\n"),
                ("memory.swap.current", "10\n"),
                ("memory.swap.max", "max\n"),
                ("memory.stat", "anon 1\nfile 4096\n"),
                ("pids.current", "2\n"),
                ("pids.max", "100\n"),
                (
                    "io.stat",
                    "8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
                ),
                ("hugetlb.2MB.current", "4194304\n"),
                ("hugetlb.2MB.events", "max 2\n"),
                ("hugetlb.2MB.rsvd.current", "0\n"),
            ],
        );
        let d = Dirs {
            cpu: v2(dir),
            cpuacct: v2(dir),
            memory: v2(dir),
            pids: v2(dir),
            blkio: v2(dir),
            hugetlb: v2(dir),
        };
        let s = collect(&d);
        assert_eq!(
            s["cpu"],
            json!({
                "usage": {"total": 10_000, "kernel": 3_000, "user": 7_000},
                "throttling": {"periods": 2, "throttledPeriods": 1, "throttledTime": 5_000},
            })
        );
        let m = &s["memory"];
        assert_eq!(m["cache"], 4096);
        assert_eq!(
            m["usage"],
            json!({"limit": u64::MAX, "usage": 1000, "max": 2000, "failcnt": 0})
        );
        assert_eq!(
            m["swap"],
            json!({"limit": u64::MAX, "usage": 1010, "failcnt": 0})
        );
        assert_eq!(m["raw"], json!({"anon": 1, "file": 4096}));
        assert_eq!(s["pids"], json!({"current": 2, "limit": 100}));
        assert_eq!(
            s["blkio"],
            json!({
                "ioServiceBytesRecursive": [
                    {"major": 8, "minor": 16, "op": "Read", "value": 1},
                    {"major": 8, "minor": 16, "op": "Write", "value": 2},
                ],
                "ioServicedRecursive": [
                    {"major": 8, "minor": 16, "op": "Read", "value": 3},
                    {"major": 8, "minor": 16, "op": "Write", "value": 4},
                ],
            })
        );
        assert_eq!(
            s["hugetlb"],
            json!({"2MB": {"usage": 4194304, "failcnt": 2}})
        );
    }

    #[test]
    fn stats_missing_files_read_as_zero() {
        let t = tempfile::tempdir().expect("tempdir");
        let empty = json!({
            "cpu": {"usage": {"kernel": 0, "user": 0}, "throttling": {}},
            "memory": {
                "usage": {"limit": 0, "failcnt": 0}, "swap": {"limit": 0, "failcnt": 0},
                "kernel": {"limit": 0, "failcnt": 0}, "kernelTCP": {"limit": 0, "failcnt": 0},
            },
            "pids": {}, "blkio": {}, "hugetlb": {},
        });
        assert_eq!(collect(&Dirs::default()), empty);
        for ctl in [v1, v2] {
            let c = ctl(t.path());
            let d = Dirs {
                cpu: c.clone(),
                cpuacct: c.clone(),
                memory: c.clone(),
                pids: c.clone(),
                blkio: c.clone(),
                hugetlb: c,
            };
            assert_eq!(collect(&d), empty);
        }
        let gone = t.path().join("gone");
        assert_eq!(
            collect(&Dirs {
                memory: v1(&gone),
                ..Dirs::default()
            }),
            empty
        );
    }

    #[test]
    fn stats_v2_pids_without_controller_counts_procs() {
        let t = tempfile::tempdir().expect("tempdir");
        write(t.path(), &[("cgroup.procs", "1\n2\n3\n")]);
        assert_eq!(pids(&v2(t.path()).expect("ctl")), json!({"current": 3}));
        assert_eq!(pids(&v1(t.path()).expect("ctl")), json!({}));
    }

    fn h(mount: &str, options: &str, v2: bool) -> Hierarchy {
        let mount_point = PathBuf::from(mount);
        Hierarchy {
            name: mount.rsplit('/').next().unwrap_or_default().into(),
            mount_point,
            options: options.into(),
            v2,
            root: PathBuf::from("/"),
        }
    }

    #[test]
    fn stats_resolve_hybrid_and_v2() {
        let hybrid = [
            h("/sys/fs/cgroup/cpu", "cpu", false),
            h("/sys/fs/cgroup/cpuacct", "cpuacct", false),
            h("/sys/fs/cgroup/memory", "memory", false),
            h("/sys/fs/cgroup/systemd", "name=systemd", false),
            h("/sys/fs/cgroup/unified", "", true),
            h("/sys/fs/cgroup/hugetlb", "hugetlb", false),
        ];
        let leaves: Vec<PathBuf> = ["cpu", "cpuacct", "memory", "systemd", "unified", "hugetlb"]
            .iter()
            .map(|n| PathBuf::from(format!("/sys/fs/cgroup/{n}/c1")))
            .collect();
        let refs: Vec<&PathBuf> = leaves.iter().collect();
        let d = Dirs::resolve(&hybrid, &refs);
        let at = |n: &str, v2: bool| {
            Some(Ctl {
                dir: PathBuf::from(format!("/sys/fs/cgroup/{n}/c1")),
                v2,
            })
        };
        assert_eq!(d.cpu, at("cpu", false));
        assert_eq!(d.cpuacct, at("cpuacct", false));
        assert_eq!(d.memory, at("memory", false));
        assert_eq!(d.hugetlb, at("hugetlb", false));
        // Not mounted as v1 here: the v2 leaf.
        assert_eq!(d.pids, at("unified", true));
        assert_eq!(d.blkio, at("unified", true));

        let combined = [h("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", false)];
        let leaf = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c1");
        let d = Dirs::resolve(&combined, &[&leaf]);
        assert_eq!(d.cpu, d.cpuacct);
        assert!(d.cpu.is_some() && d.memory.is_none());

        let pure = [h("/sys/fs/cgroup", "", true)];
        let leaf = PathBuf::from("/sys/fs/cgroup/system.slice/c1");
        let d = Dirs::resolve(&pure, &[&leaf]);
        let want = Some(Ctl {
            dir: leaf.clone(),
            v2: true,
        });
        assert_eq!((&d.cpu, &d.memory, &d.hugetlb), (&want, &want, &want));
    }

    #[test]
    fn stats_parse_numbers() {
        assert_eq!(parse_u64("max\n"), Some(u64::MAX));
        assert_eq!(parse_u64(" 12\n"), Some(12));
        assert_eq!(parse_u64("-5"), Some(0));
        assert_eq!(parse_u64("-"), None);
        assert_eq!(parse_u64("x"), None);
        assert_eq!(
            parse_flat("a 1\nb two\nc 3 4\n\nd 5"),
            vec![("a".to_string(), 1), ("d".to_string(), 5)]
        );
        assert_eq!(
            parse_blkio_v1("8:0 6792\n8:0 Read 1\nTotal 3\ngarbage\n"),
            vec![
                BlkioEntry {
                    major: 8,
                    minor: 0,
                    op: String::new(),
                    value: 6792
                },
                BlkioEntry {
                    major: 8,
                    minor: 0,
                    op: "Read".into(),
                    value: 1
                },
            ]
        );
    }

    #[test]
    fn stats_oom_counter_v2_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path();
        let ev = |n: u64| format!("low 0\nhigh 0\nmax 3\noom 1\noom_kill {n}\n");
        write(dir, &[("memory.events", &ev(1))]);
        let ctl = v2(dir).expect("ctl");
        assert_eq!(oom_kills_in(&ctl), 1);
        let mut w = OomWatcher::watch(&ctl).expect("watch");
        assert!(!w.wait(Duration::ZERO).expect("wait"));
        fs::write(dir.join("memory.events"), ev(3)).expect("write");
        assert!(w.wait(Duration::ZERO).expect("wait"));
        assert!(!w.wait(Duration::from_millis(20)).expect("wait"));
        // A change during the wait is seen when it ends.
        let p = dir.join("memory.events");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            fs::write(p, ev(4)).expect("write");
        });
        assert!(w.wait(Duration::from_millis(500)).expect("wait"));
        writer.join().expect("writer");
        assert_eq!(oom_kills_in(&ctl), 4);

        write(
            dir,
            &[(
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n",
            )],
        );
        assert_eq!(oom_kills_in(&v1(dir).expect("ctl")), 7);
        assert!(OomWatcher::watch(&v2(&dir.join("gone")).expect("ctl")).is_err());
    }

    /// Kills the child and removes the test cgroup, even when the test fails.
    struct Cleanup {
        dir: PathBuf,
        child: Option<Pid>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(pid) = self.child.take() {
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(e) = fs::remove_dir(&self.dir) {
                if e.kind() == ErrorKind::NotFound || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// A child in a 16 MiB v1 memory cgroup touches 64 MiB and is OOM-killed.
    #[test]
    fn stats_v1_oom_kill_is_reported() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped stats_v1_oom_kill_is_reported: needs root");
            return;
        }
        let Some(mem) = hierarchies()
            .into_iter()
            .find(|h| !h.v2 && h.options.split(',').any(|o| o == "memory"))
        else {
            eprintln!("skipped stats_v1_oom_kill_is_reported: no v1 memory hierarchy");
            return;
        };
        let dir = mem
            .mount_point
            .join(format!("hjtest-stats-{}", std::process::id()));
        if let Err(e) = fs::create_dir(&dir) {
            eprintln!(
                "skipped stats_v1_oom_kill_is_reported: mkdir {}: {e}",
                dir.display()
            );
            return;
        }
        let mut cleanup = Cleanup {
            dir: dir.clone(),
            child: None,
        };
        const LIMIT: u64 = 16 << 20;
        fs::write(dir.join("memory.limit_in_bytes"), LIMIT.to_string()).expect("set limit");
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            fs::write(dir.join("memory.memsw.limit_in_bytes"), LIMIT.to_string())
                .expect("set memsw limit");
        }
        let cg = Cgroup::from_dirs(vec![dir.clone()]);
        let mut watcher = OomWatcher::new(&cg).expect("watcher");
        assert!(!watcher.wait(Duration::ZERO).expect("wait"));
        let before = oom_kills(&cg);

        let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only calls read, mmap, writes to its own mapping and _exit
        // (all async-signal-safe): it never returns into the test harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let mut b = [0u8; 1];
                // SAFETY: reads at most one byte into `b`.
                unsafe { libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
                const SIZE: usize = 64 << 20;
                // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        SIZE,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p != libc::MAP_FAILED {
                    let p = p.cast::<u8>();
                    for off in (0..SIZE).step_by(4096) {
                        // SAFETY: `off` < SIZE, inside the mapping.
                        unsafe { p.add(off).write_volatile(1) };
                    }
                }
                // SAFETY: _exit never returns; no destructors or atexit handlers run.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                cleanup.child = Some(child);
                drop(go_r);
                fs::write(dir.join("cgroup.procs"), child.to_string()).expect("join cgroup");
                nix::unistd::write(&go_w, b"g").expect("start child");
                let oom = watcher.wait(Duration::from_secs(30)).expect("wait");
                let status = waitpid(child, None).expect("waitpid");
                cleanup.child = None;
                assert!(oom, "no OOM reported (child {status:?})");
                assert_eq!(status, WaitStatus::Signaled(child, Signal::SIGKILL, false));
                assert!(oom_kills(&cg) > before, "oom_kill counter did not grow");
                let s = stats(&cg);
                assert_eq!(s["memory"]["usage"]["limit"], LIMIT);
                // The peak reached the limit (failcnt is not asserted: with a memsw
                // limit, 6.x kernels leave both failcnt files at 0).
                let peak = s["memory"]["usage"]["max"].as_u64().unwrap_or(0);
                assert!(peak > LIMIT - (1 << 20), "peak {peak}: {s}");
            }
        }
        drop(cleanup);
        // After removal the watcher reports the cgroup gone (after any OOM notification
        // still pending) instead of blocking.
        let mut r = watcher.wait(Duration::from_secs(5));
        if matches!(r, Ok(true)) {
            r = watcher.wait(Duration::from_secs(5));
        }
        assert!(r.is_err(), "after rmdir: {r:?}");
    }
}
