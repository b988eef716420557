//! /proc, made by the guest kernel: opening one of its files builds the text here
//! and hands it to the VMM, which installs it as a read-only file in the caller's
//! fd table (HJ_BUFFER_FILE). Files: /proc/uptime, meminfo, loadavg, cpuinfo, and
//! /proc/self (or /proc/PID) status, stat, cmdline, comm and maps. The VMM lists
//! the directories and answers stat and readlink for them (the VMM's procdir.rs).

use crate::abi::*;
use crate::mem::{boot, user_ok};
use crate::percpu;
use crate::sys::{pi, with};
use core::fmt::Write;

const ENOENT: i64 = 2;
const EACCES: i64 = 13;
const O_ACCMODE: u64 = 3;
const O_CLOEXEC: u64 = 0o2000000;

/// A text being made, on the kernel stack.
struct Text {
    b: [u8; 4096],
    n: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s.as_bytes()[..k]);
        self.n += k;
        Ok(())
    }
}

impl Text {
    fn bytes(&mut self, b: &[u8]) {
        let k = b.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&b[..k]);
        self.n += k;
    }
}

/// The path at user address `p` if it is under /proc/ (at most 63 bytes).
fn proc_path(p: u64) -> Option<([u8; 64], usize)> {
    let mut b = [0u8; 64];
    for i in 0..64u64 {
        if !user_ok(p + i, 1) {
            return None;
        }
        // SAFETY: checked to be guest RAM.
        let c = unsafe { ((p + i) as *const u8).read_volatile() };
        if c == 0 {
            return b.starts_with(b"/proc/").then_some((b, i as usize));
        }
        b[i as usize] = c;
    }
    None
}

/// open/openat of `path` with `flags`: Some(result) when it is one of the files
/// made here (or a /proc path that does not exist), None to let the VMM open it.
pub fn open(path: u64, flags: u64) -> Option<i64> {
    let (b, n) = proc_path(path)?;
    let rest = &b[6..n];
    let mut t = Text { b: [0; 4096], n: 0 };
    let made = match rest {
        b"uptime" => uptime(&mut t),
        b"meminfo" => meminfo(&mut t),
        b"loadavg" => loadavg(&mut t),
        b"cpuinfo" => cpuinfo(&mut t),
        _ => {
            let at = rest.iter().position(|&c| c == b'/')?;
            let (who, file) = (&rest[..at], &rest[at + 1..]);
            let slot = process(who)?;
            match slot {
                None => return Some(-ENOENT),
                Some(p) => match file {
                    b"status" => status(&mut t, p),
                    b"stat" => stat(&mut t, p),
                    b"cmdline" => cmdline(&mut t, p),
                    b"maps" => maps(&mut t, p),
                    b"comm" => {
                        comm(&mut t, p);
                        t.bytes(b"\n");
                        true
                    }
                    _ => return None,
                },
            }
        }
    };
    if !made {
        return None;
    }
    if flags & O_ACCMODE != 0 {
        return Some(-EACCES);
    }
    let cloexec = u64::from(flags & O_CLOEXEC != 0);
    Some(crate::sys::forward(
        HJ_BUFFER_FILE,
        [t.b.as_ptr() as u64, t.n as u64, cloexec, 0, 0, 0],
    ))
}

/// The process slot `who` names ("self", or a pid): Some(None) for a pid that is
/// not running here, None when `who` is neither.
fn process(who: &[u8]) -> Option<Option<u64>> {
    if who == b"self" || who == b"thread-self" {
        return Some(Some(percpu::get(PC_PROC).min(MAX_PROCS - 1)));
    }
    let mut pid = 0u64;
    for &c in who {
        if !c.is_ascii_digit() || pid > u64::from(u32::MAX) {
            return None;
        }
        pid = pid * 10 + u64::from(c - b'0');
    }
    Some(with(|s| {
        s.procs
            .iter()
            .position(|q| q.live && q.pid == pid)
            .map(|i| i as u64)
    }))
}

fn uptime(t: &mut Text) -> bool {
    let ns = crate::time::uptime_ns();
    let _ = writeln!(t, "{}.{:02} 0.00", ns / 1_000_000_000, ns / 10_000_000 % 100);
    true
}

fn meminfo(t: &mut Text) -> bool {
    let (brk, low) = with(|s| s.me().heap_bounds());
    let total = boot(BI_RAM_END) >> 10;
    let free = low.saturating_sub(brk) >> 10;
    let _ = write!(
        t,
        "MemTotal:       {total:8} kB\nMemFree:        {free:8} kB\nMemAvailable:   {free:8} kB\n\
         Buffers:               0 kB\nCached:                0 kB\nSwapTotal:             0 kB\n\
         SwapFree:              0 kB\n"
    );
    true
}

fn loadavg(t: &mut Text) -> bool {
    let n = percpu::running();
    let last = crate::thread::next_tid_peek().saturating_sub(1);
    let _ = writeln!(t, "0.00 0.00 0.00 1/{n} {last}");
    true
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn cpuinfo(t: &mut Text) -> bool {
    let v = cpuid(0);
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&v[1].to_le_bytes());
    vendor[4..8].copy_from_slice(&v[3].to_le_bytes());
    vendor[8..].copy_from_slice(&v[2].to_le_bytes());
    let mut brand = [0u8; 48];
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        for (j, r) in cpuid(leaf).iter().enumerate() {
            brand[16 * i + 4 * j..16 * i + 4 * j + 4].copy_from_slice(&r.to_le_bytes());
        }
    }
    let brand_len = brand.iter().position(|&c| c == 0).unwrap_or(48);
    for cpu in 0..boot(BI_NCPUS).clamp(1, 64) {
        let _ = write!(t, "processor\t: {cpu}\nvendor_id\t: ");
        t.bytes(&vendor);
        let _ = write!(t, "\nmodel name\t: ");
        t.bytes(brand[..brand_len].trim_ascii());
        let _ = write!(t, "\n\n");
    }
    true
}

/// Process slot `p`'s name into `out` (NUL-padded): the one it set with
/// PR_SET_NAME, else its program's file name, at most 15 bytes; returns its length.
pub fn comm_of(p: u64, out: &mut [u8; 16]) -> usize {
    let set = with(|s| s.procs[p.min(MAX_PROCS - 1) as usize].comm);
    if set[0] != 0 {
        *out = set;
        return set.iter().position(|&c| c == 0).unwrap_or(16);
    }
    let mut exe = [0u8; 256];
    let base = PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_EXE;
    let mut n = 0;
    while n < exe.len() {
        // SAFETY: the process block is kernel memory; PI_EXE has PI_EXE_LEN bytes.
        let c = unsafe { ((base + n as u64) as *const u8).read_volatile() };
        if c == 0 {
            break;
        }
        exe[n] = c;
        n += 1;
    }
    let name = exe[..n].rsplit(|&c| c == b'/').next().unwrap_or(&[]);
    let k = name.len().min(15);
    *out = [0; 16];
    out[..k].copy_from_slice(&name[..k]);
    k
}

fn comm(t: &mut Text, p: u64) {
    let mut name = [0u8; 16];
    let n = comm_of(p, &mut name);
    t.bytes(&name[..n]);
}

fn status(t: &mut Text, p: u64) -> bool {
    let q = with(|s| s.procs[p as usize]);
    let _ = write!(t, "Name:\t");
    comm(t, p);
    let (uid, gid) = (boot(BI_UID), boot(BI_GID));
    let _ = write!(
        t,
        "\nUmask:\t0022\nState:\tR (running)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t{ppid}\n\
         TracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\n\
         Threads:\t{threads}\n",
        pid = q.pid,
        ppid = q.ppid,
        threads = q.threads,
    );
    true
}

fn stat(t: &mut Text, p: u64) -> bool {
    let q = with(|s| s.procs[p as usize]);
    let _ = write!(t, "{} (", q.pid);
    comm(t, p);
    let _ = write!(t, ") R {} {} {} 0 -1 0", q.ppid, q.pgid, q.sid);
    // Fields 10 to 52: priority (18) 20, num_threads (20), exit_signal (38) 17.
    for field in 10..=52 {
        let v = match field {
            18 => 20,
            20 => q.threads,
            38 => 17,
            _ => 0,
        };
        let _ = write!(t, " {v}");
    }
    let _ = writeln!(t);
    true
}

/// /proc/PID/maps, as the guest kernel lays a process out: its image (the program
/// and its loader), the heap, the mappings below the stack region, and the stack
/// (glibc finds the first thread's stack there).
fn maps(t: &mut Text, p: u64) -> bool {
    let me = percpu::get(PC_PROC).min(MAX_PROCS - 1) == p;
    // The caller's own bookkeeping is brought up to date by `me()`.
    let (brk_start, brk_cur, mmap_low) = with(|s| {
        if me {
            s.me().regions()
        } else {
            s.procs[p as usize].regions()
        }
    });
    let (mmap_top, ram_end) = (pi(p, PI_MMAP_TOP), boot(BI_RAM_END));
    let mut line = |from: u64, to: u64, perms: &str, name: &[u8]| {
        if from < to {
            let _ = write!(t, "{from:08x}-{to:08x} {perms} 00000000 00:00 0");
            if !name.is_empty() {
                let _ = write!(t, "{:>w$}", "", w = 10);
                t.bytes(name);
            }
            let _ = writeln!(t);
        }
    };
    let exe_at = PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_EXE;
    // SAFETY: the process block is kernel memory with PI_EXE_LEN bytes there.
    let exe = unsafe { core::slice::from_raw_parts(exe_at as *const u8, PI_EXE_LEN as usize) };
    let exe = &exe[..exe.iter().position(|&c| c == 0).unwrap_or(0)];
    line(USER_MIN, brk_start, "r-xp", exe);
    line(brk_start, brk_cur, "rw-p", b"[heap]");
    line(mmap_low, mmap_top, "rw-p", b"");
    line(mmap_top, ram_end, "rw-p", b"[stack]");
    true
}

fn cmdline(t: &mut Text, p: u64) -> bool {
    let n = pi(p, PI_CMDLINE_SIZE).min(PI_CMDLINE_LEN) as usize;
    let base = PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_CMDLINE;
    // SAFETY: the process block is kernel memory with PI_CMDLINE_LEN bytes there.
    let b = unsafe { core::slice::from_raw_parts(base as *const u8, n) };
    t.bytes(b);
    true
}
