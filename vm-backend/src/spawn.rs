//! The VMM's control socket once the guest runs: `exec` (a new process in the
//! guest), `ps` (the guest's processes) and `kill` (a signal into one guest process,
//! or into all of them). The socket is the one `start` used (create.rs,
//! [`crate::create::CONTROL_SOCKET`]), in the domain's state directory.
//!
//! One request per connection: a single byte (with the new process's stdio and
//! preserved fds as SCM_RIGHTS, for `exec`), then a JSON object on one line:
//! `{"op":"exec","path":…,"args":[…],"env":[…],"cwd":…}`, `{"op":"ps"}`,
//! `{"op":"kill","signal":N}` or `{"op":"kill","signal":N,"pid":P}` (with
//! `"terminal":true`: to the foreground group of P's terminal), `{"op":"memory"}`
//! (the memory limit changed: see oom.rs). Answers are
//! lines: `error <message>`; for `exec` `pid <guest pid>` once the process runs and
//! `exit <wait status>` when it ends; for `ps` a JSON array of `{pid, ppid, args}`;
//! for `kill` `ok`.
//!
//! A process `exec` starts takes a free process slot and a free per-CPU slot (the
//! same atomic words the guest kernel takes them by), gets the fds as its fds 0, 1,
//! 2, …, its image loaded as execve loads one, and a vCPU that begins at the guest
//! kernel's spawn entry, which registers it (pid, no parent in the VM) and reports
//! its pid (MMIO_SPAWNED). Its exit (MMIO_PROC_EXIT) reports the status.

use crate::abi::*;
use crate::mem::GuestMem;
use crate::vcpu::{self, Machine, Start};
use std::io::{BufRead, BufReader, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The first byte of a control request (`start` sends another, create.rs).
pub const REQUEST_BYTE: u8 = b'r';
/// Most fds one `exec` passes (stdio and preserved fds).
const MAX_PASSED: usize = 253;
/// Longest request line (arguments and environment, as execve's limit, and room).
const MAX_REQUEST: u64 = 4 << 20;

/// Serves the control socket on a thread of its own (call after confinement: the
/// thread inherits the caller's seccomp filter).
pub fn serve(m: Arc<Machine>, listener: UnixListener) -> Result<(), String> {
    std::thread::Builder::new()
        .stack_size(128 << 10)
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(s) = conn else { continue };
                let m = Arc::clone(&m);
                // A thread per request: a slow client holds up no other.
                let _ = std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || handle(&m, s));
            }
        })
        .map(drop)
        .map_err(|e| format!("control thread: {e}"))
}

/// Reads the first byte and the fds that come with it.
fn receive(s: &UnixStream) -> Result<Vec<OwnedFd>, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX_PASSED]);
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("read the request: {e}"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| format!("read the request: {e}"))? {
        if let ControlMessageOwned::ScmRights(v) = c {
            // SAFETY: the kernel installed these fds for this process; nothing else
            // owns them.
            fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if msg.bytes != 1 || byte[0] != REQUEST_BYTE {
        return Err("not a control request (the VM has been started)".into());
    }
    Ok(fds)
}

fn handle(m: &Arc<Machine>, s: UnixStream) {
    let answer = |mut s: &UnixStream, line: &str| {
        let _ = s.write_all(format!("{line}\n").as_bytes());
    };
    let fds = match receive(&s) {
        Ok(f) => f,
        Err(e) => return answer(&s, &format!("error {e}")),
    };
    let mut line = String::new();
    let read = BufReader::new(std::io::Read::take(&s, MAX_REQUEST)).read_line(&mut line);
    let req: serde_json::Value = match read
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str(&line).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return answer(&s, &format!("error bad request: {e}")),
    };
    let r = match req["op"].as_str() {
        Some("exec") => {
            // The connection goes with the process (its exit status is told on it),
            // or comes back with the error.
            if let Err((e, s)) = exec(m, &req, fds, s) {
                answer(&s, &format!("error {e}"));
            }
            return;
        }
        Some("ps") => Ok(serde_json::Value::Array(processes(m)).to_string()),
        Some("kill") => kill(m, &req).map(|()| "ok".to_string()),
        // `update` changed the cgroup's limits: the OOM thread re-arms for the
        // memory limit.
        Some("memory") => match m.oom_kick.get().map(crate::oom::Kick::limit_changed) {
            Some(Err(e)) => Err(format!("the OOM watch: {e}")),
            _ => Ok("ok".to_string()),
        },
        _ => Err("bad request: unknown op".into()),
    };
    match r {
        Ok(l) => answer(&s, &l),
        Err(e) => answer(&s, &format!("error {e}")),
    }
}

/// Process slot `p`'s block word at `off`.
fn pi(m: &Machine, p: u64, off: u64) -> Option<&std::sync::atomic::AtomicU64> {
    m.mem.atomic_u64(PROC_INFO_GPA + p * PROC_INFO_SIZE + off)
}

/// The guest's processes: pid, parent pid and arguments of every taken slot.
fn processes(m: &Machine) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for p in 0..MAX_PROCS {
        let Some(pid) = m.guest_pid(p) else {
            continue;
        };
        let base = PROC_INFO_GPA + p * PROC_INFO_SIZE;
        let len = m.proc_word(p, PI_CMDLINE_SIZE).min(PI_CMDLINE_LEN);
        let args: Vec<String> = m
            .mem
            .slice(base + PI_CMDLINE, len)
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        v.push(serde_json::json!({"pid": pid, "ppid": m.proc_word(p, PI_PPID), "args": args}));
    }
    v
}

/// The process slot of guest process `pid`.
fn slot_of(m: &Machine, pid: u64) -> Option<u64> {
    (0..MAX_PROCS).find(|&p| m.guest_pid(p) == Some(pid))
}

fn kill(m: &Machine, req: &serde_json::Value) -> Result<(), String> {
    let sig = req["signal"]
        .as_u64()
        .filter(|s| (1..=64).contains(s))
        .ok_or("bad request: no signal 1..64")?;
    match req["pid"].as_u64() {
        // A signal of the `exec --tty` process's terminal (its proxy got it from
        // the host's tty): to that terminal's foreground group in the guest.
        Some(pid) if req["terminal"].as_bool() == Some(true) => {
            let p = slot_of(m, pid).ok_or(format!("no process {pid} in the VM"))?;
            let ring = m.ring.get().ok_or("the VM has no ring")?;
            let fg = ring
                .with_host(|h, _| h.ctty_rdev(p as usize).and_then(|r| h.tty_fg(r)))
                .flatten()
                .filter(|&g| m.mem.group_slots(g).next().is_some())
                .unwrap_or_else(|| m.proc_word(p, PI_PGID));
            m.post_group_signal(fg, sig);
        }
        Some(pid) => {
            let p = slot_of(m, pid).ok_or(format!("no process {pid} in the VM"))?;
            m.post_host_signal(p, sig);
        }
        None => {
            for p in (0..MAX_PROCS).filter(|&p| m.guest_pid(p).is_some()) {
                m.post_host_signal(p, sig);
            }
        }
    }
    Ok(())
}

/// Takes the first free index of `range` whose word (at `word(i)`) is 0, setting
/// it to 1.
fn take(m: &Machine, mut range: std::ops::Range<u64>, word: impl Fn(u64) -> u64) -> Option<u64> {
    range.find(|&i| {
        m.mem.atomic_u64(word(i)).is_some_and(|w| {
            w.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    })
}

fn strings(v: &serde_json::Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or(format!("bad request: no {what}"))?
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or(format!("bad request: {what} holds a non-string"))
        })
        .collect()
}

/// Starts the process; the guest kernel's MMIO_SPAWNED then answers `pid` on `s`.
/// This thread then watches the connection: a proxy that goes away (killed with
/// SIGKILL, which it cannot pass on) takes its process with it, as a process whose
/// exec session ends would otherwise run on unseen and keep its slot.
fn exec(
    m: &Arc<Machine>,
    req: &serde_json::Value,
    fds: Vec<OwnedFd>,
    s: UnixStream,
) -> Result<(), (String, UnixStream)> {
    let (start, undo) = match prepare(m, req, fds) {
        Ok(x) => x,
        Err(e) => return Err((e, s)),
    };
    let p = start.proc as usize;
    let s = Arc::new(s);
    if let Ok(mut x) = m.execs.lock() {
        x[p] = Some(Arc::clone(&s));
    }
    if let Err(e) = vcpu::launch(m, start) {
        let mine = m.execs.lock().ok().and_then(|mut x| x[p].take());
        undo.run(m);
        let e = format!("start a vCPU: {}", errno_text(e));
        drop(mine);
        return match Arc::try_unwrap(s) {
            Ok(s) => Err((e, s)),
            // Unreachable: the only other reference was just dropped.
            Err(_) => Ok(()),
        };
    }
    watch(m, p, &s);
    Ok(())
}

/// Waits until the exec connection `s` of process slot `p` hangs up; if the
/// process has not ended by then, SIGKILL for it.
fn watch(m: &Machine, p: usize, s: &Arc<UnixStream>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(
            s.as_fd(),
            PollFlags::from_bits_retain(libc::POLLRDHUP),
        )];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
    let still = m
        .execs
        .lock()
        .ok()
        .is_some_and(|x| x[p].as_ref().is_some_and(|w| Arc::ptr_eq(w, s)));
    if still {
        m.post_host_signal(p as u64, libc::SIGKILL as u64);
    }
}

/// What to give back when a process cannot start: its process and per-CPU slots,
/// its files and memory.
struct Undo {
    p: u64,
    slot: Option<u64>,
}

impl Undo {
    fn run(&self, m: &Machine) {
        let p = self.p;
        if let Ok(mut x) = m.execs.lock() {
            x[p as usize] = None;
        }
        if let Some(ring) = m.ring.get() {
            ring.with_host(|h, _| h.drop_files(p));
        }
        // Its own view only (`Machine::view` falls back to the first process's).
        let w = m.window(p);
        let view = m
            .views
            .lock()
            .ok()
            .and_then(|v| v.get(w as usize)?.as_ref().map(GuestMem::alias));
        match view {
            Some(v) => crate::window::forget(m, w, &v),
            None => {
                if let Ok(mut i) = m.images.lock() {
                    i[w as usize].clear();
                }
            }
        }
        if let Some(slot) = self.slot {
            free(m, PERCPU_GPA + slot * PERCPU_SIZE + PC_BUSY);
        }
        free(m, PROC_INFO_GPA + p * PROC_INFO_SIZE + PI_BUSY);
    }
}

/// Takes a process slot, installs the files and loads the image of the process
/// `req` describes, then takes a per-CPU slot for it; returns how to start its vCPU.
fn prepare(
    m: &Arc<Machine>,
    req: &serde_json::Value,
    fds: Vec<OwnedFd>,
) -> Result<(Start, Undo), String> {
    if !m.started.load(Ordering::SeqCst) {
        return Err("the VM has not been started".into());
    }
    let path = req["path"].as_str().ok_or("bad request: no path")?;
    let cwd = req["cwd"].as_str().unwrap_or("/");
    let (args, env) = (strings(&req["args"], "args")?, strings(&req["env"], "env")?);
    let ring = m.ring.get().ok_or("the VM has no ring")?;
    let block = |p: u64| PROC_INFO_GPA + p * PROC_INFO_SIZE;
    let p = take(m, 1..MAX_PROCS, |p| block(p) + PI_BUSY).ok_or(format!(
        "the VM runs {MAX_PROCS} processes already (its most)"
    ))?;
    // The block's words the guest reads for this slot start clean (a fork copies
    // them from its parent the same way).
    for off in [PI_TIMER_SIG, PI_HOSTSIG, PI_PID, PI_PPID, PI_PGID, PI_SID] {
        if let Some(w) = pi(m, p, off) {
            w.store(0, Ordering::SeqCst);
        }
    }
    let undo = |e: String| {
        Undo { p, slot: None }.run(m);
        e
    };
    let mut mem = crate::process::view(m, m.window(p)).map_err(|e| undo(errno_text(e)))?;
    let user = mem.user();
    ring.with_host(|h, views| {
        h.spawn_files(p, cwd, fds);
        // A new session on the terminal: its last one's foreground group goes.
        if let Some(r) = h.ctty_rdev(p as usize) {
            h.clear_tty_fg(r);
        }
        views[p as usize] = Some(user);
    });
    m.timers.clear(p);
    if let Some(c) = m.proc_cpu.get(p as usize) {
        c.store(0, Ordering::SeqCst);
    }
    m.oom_victims.fetch_and(!(1 << p), Ordering::SeqCst);
    let (rip, rsp) = crate::process::load(m, p, &mut mem, path.as_bytes(), &args, &env, false)
        .map_err(|e| undo(format!("{path}: {}", errno_text(e))))?;
    // The per-CPU slot last, and named as this process's at once: a slot taken
    // shows as a thread of the process its PC_PROC names.
    let area = |slot: u64| PERCPU_GPA + slot * PERCPU_SIZE;
    let Some(slot) = take(m, 1..MAX_VCPUS, |i| area(i) + PC_BUSY) else {
        return Err(undo(format!(
            "the VM runs {MAX_VCPUS} threads already (its most)"
        )));
    };
    let mut low = m.mem.alias();
    low.write_u64(area(slot) + PC_PROC, p);
    low.write_u64(area(slot) + PC_TID, 0);
    low.write_u64(area(slot) + PC_KSTACK_TOP, area(slot) + PERCPU_SIZE);
    // KVM's register order: rax rbx rcx rdx rsi rdi rsp ...; the spawn entry takes
    // rip in rdi and the user stack in rsi, and starts on the kernel stack.
    let mut regs = [0u64; 16];
    (regs[5], regs[4], regs[6]) = (rip, rsp, area(slot) + PERCPU_SIZE);
    let start = Start {
        regs,
        rflags: 0x202,
        fs: 0,
        slot,
        proc: p,
        entry: m.spawn_start,
    };
    Ok((
        start,
        Undo {
            p,
            slot: Some(slot),
        },
    ))
}

fn free(m: &Machine, gpa: u64) {
    if let Some(w) = m.mem.atomic_u64(gpa) {
        w.store(0, Ordering::Release);
    }
}

fn errno_text(e: i64) -> String {
    if e == crate::process::EXEC_LOST {
        return "the program could not be loaded".into();
    }
    nix::errno::Errno::from_raw((-e) as i32).desc().to_string()
}

/// MMIO_SPAWNED: the process `exec` started in process slot `p` runs as `pid`.
pub fn started(m: &Machine, p: u64, pid: u64) {
    let x = m.execs.lock().ok();
    if let Some(Some(s)) = x.as_ref().and_then(|x| x.get(p as usize)) {
        let _ = (&**s).write_all(format!("pid {pid}\n").as_bytes());
    }
}

/// The process in slot `p` ended with wait status `status`: the `exec` that
/// started it, if one did, is told.
pub fn ended(m: &Machine, p: u64, status: u64) {
    let s = m
        .execs
        .lock()
        .ok()
        .and_then(|mut x| x.get_mut(p as usize).and_then(Option::take));
    if let Some(s) = s {
        let _ = (&*s).write_all(format!("exit {status}\n").as_bytes());
    }
}
