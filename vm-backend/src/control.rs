//! The runtime's side of the VMM's control socket (spawn.rs): `ps`, `kill --all`
//! and `exec` into a running VM domain.
//!
//! `exec` forks a proxy: the host process the runtime waits for, signals and
//! names in `--pid-file`, in the domain's cgroup. It hands its stdio (a pty's slave with `terminal`) and
//! the preserved fds to the VMM for the new guest process, forwards the signals it
//! gets into that process, and exits with its status (128+n when signal n ended
//! it; 137 when the VM ended first, as a PID namespace's processes are killed when
//! its init exits).

use crate::create::{short_path, CONTROL_SOCKET};
use hyperjail_runtime::{DomainRecord, Error, ExecRequest, GuestProcess, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{fork, ForkResult};
use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long `ps` and `kill` wait for the VMM's answer (a paused VM answers only
/// once resumed).
const ANSWER_WAIT: Duration = Duration::from_secs(5);

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

/// Connects to the VMM of `rec` and sends a request: the first byte (with `fds`)
/// and the JSON line.
fn request(rec: &DomainRecord, req: &serde_json::Value, fds: &[RawFd]) -> Result<UnixStream> {
    let (_dir, path) = short_path(&rec.dir, CONTROL_SOCKET)?;
    let s = UnixStream::connect(&path)
        .map_err(|e| backend(format!("cannot reach the VMM of {}: {e}", rec.id)))?;
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&[crate::spawn::REQUEST_BYTE])],
        if fds.is_empty() { &[] } else { &cmsg },
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| backend(format!("send a request to the VMM: {e}")))?;
    let mut line = req.to_string();
    line.push('\n');
    (&s).write_all(line.as_bytes())
        .map_err(|e| backend(format!("send a request to the VMM: {e}")))?;
    Ok(s)
}

/// One answer line (without its newline); an `error` line is an Err.
fn answer(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err(backend("the VMM closed the connection")),
        Ok(_) => {
            let line = line.trim_end_matches('\n');
            match line.strip_prefix("error ") {
                Some(e) => Err(backend(e)),
                None => Ok(line.to_string()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err(backend("the VMM did not answer (is the container paused?)"))
        }
        Err(e) => Err(backend(format!("read the VMM's answer: {e}"))),
    }
}

/// The guest's processes.
pub fn ps(rec: &DomainRecord) -> Result<Vec<GuestProcess>> {
    let s = request(rec, &serde_json::json!({"op": "ps"}), &[])?;
    let _ = s.set_read_timeout(Some(ANSWER_WAIT));
    let line = answer(&mut BufReader::new(&s))?;
    let v: serde_json::Value = serde_json::from_str(&line).map_err(backend)?;
    let num = |p: &serde_json::Value, k: &str| p[k].as_i64().unwrap_or(0) as i32;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| GuestProcess {
                    pid: num(p, "pid"),
                    ppid: num(p, "ppid"),
                    args: p["args"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Sends `signal` of guest process `pid`'s terminal to that terminal's foreground
/// group in the guest (an `exec --tty` proxy's ^C, ^Z, ^\\ and window size).
fn terminal_signal(rec: &DomainRecord, signal: i32, pid: i32) -> Result<()> {
    let req = serde_json::json!({"op": "kill", "signal": signal, "pid": pid, "terminal": true});
    let s = request(rec, &req, &[])?;
    let _ = s.set_read_timeout(Some(ANSWER_WAIT));
    answer(&mut BufReader::new(&s)).map(drop)
}

/// Tells the VMM its memory limit changed, so that its OOM killer acts at the new
/// one at once (it looks at the limit every second anyway, so a VMM that cannot be
/// told now, being paused, catches up). Not waited for when `paused`.
pub fn memory_changed(rec: &DomainRecord, paused: bool) -> Result<()> {
    let s = request(rec, &serde_json::json!({"op": "memory"}), &[])?;
    if paused {
        return Ok(());
    }
    let _ = s.set_read_timeout(Some(ANSWER_WAIT));
    answer(&mut BufReader::new(&s)).map(drop)
}

/// Sends `signal` to guest process `pid`, or to every guest process. A paused VMM
/// (`paused`) takes the request once resumed: it is not waited for.
pub fn kill(rec: &DomainRecord, signal: i32, pid: Option<i32>, paused: bool) -> Result<()> {
    let mut req = serde_json::json!({"op": "kill", "signal": signal});
    if let Some(p) = pid {
        req["pid"] = p.into();
    }
    let s = request(rec, &req, &[])?;
    if paused {
        return Ok(());
    }
    let _ = s.set_read_timeout(Some(ANSWER_WAIT));
    match answer(&mut BufReader::new(&s)) {
        // A paused VMM takes the request (it waits in the socket) once resumed.
        Err(Error::Backend(e)) if e.contains("did not answer") => Ok(()),
        r => r.map(drop),
    }
}

/// `exec`: the program is looked up in the rootfs as `create` looks up the first
/// one (PATH of the process's env); returns the proxy's host pid once the guest
/// process runs.
pub fn exec(
    rec: &DomainRecord,
    config: &oci_spec::runtime::Spec,
    req: &ExecRequest,
) -> Result<i32> {
    let p = &req.process;
    let args = p.args().clone().unwrap_or_default();
    let Some(arg0) = args.first() else {
        return Err(backend("process.args is empty"));
    };
    let (uid, gid) = (p.user().uid(), p.user().gid());
    let want = config
        .process()
        .as_ref()
        .map(|p| (p.user().uid(), p.user().gid()));
    if let Some((wu, wg)) = want {
        if (uid, gid) != (wu, wg) {
            return Err(backend(format!(
                "exec as user {uid}:{gid} is not supported in a VM domain: its processes run as the container's user {wu}:{wg}"
            )));
        }
    }
    let env = p.env().clone().unwrap_or_default();
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(backend(format!(
            "process.cwd {cwd:?} is not an absolute path"
        )));
    }
    let found = crate::program::find(&rec.rootfs, arg0, &env, &cwd).map_err(backend)?;
    let terminal = p.terminal().unwrap_or(false);
    let console = match (&req.console_socket, terminal) {
        (Some(path), true) => Some(hyperjail_jail::connect_console(path).map_err(backend)?),
        (None, true) => {
            return Err(backend(
                "process.terminal is true but no --console-socket was given",
            ))
        }
        _ => None,
    };
    let size = p
        .console_size()
        .as_ref()
        .map(|b| (b.height() as u16, b.width() as u16));
    let msg = serde_json::json!({
        "op": "exec",
        "path": found.path,
        "args": args,
        "env": env,
        "cwd": cwd,
    });
    if req.preserve_fds > MAX_PRESERVE {
        return Err(backend(format!(
            "--preserve-fds {} is more than a VM domain takes ({MAX_PRESERVE})",
            req.preserve_fds
        )));
    }
    // Every fd the guest process gets is open from here on (a closed one as
    // /dev/null), so the fds made below cannot take one of their numbers.
    fill_holes(3 + req.preserve_fds as RawFd)?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(backend)?;
    // SAFETY: the CLI is single-threaded; the child leaves through process::exit.
    match unsafe { fork() }.map_err(|source| Error::Sys { op: "fork", source })? {
        ForkResult::Child => {
            drop(ready_r);
            if let Some(l) = req.lock_fd {
                let _ = nix::unistd::close(l);
            }
            proxy(rec, &msg, console, size, req.preserve_fds, ready_w)
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(console);
            let mut msg = String::new();
            let _ = std::fs::File::from(ready_r).read_to_string(&mut msg);
            if msg == READY {
                return Ok(child.as_raw());
            }
            let _ = nix::sys::wait::waitpid(child, None);
            Err(backend(if msg.is_empty() {
                "the exec proxy ended before the process started".to_string()
            } else {
                msg
            }))
        }
    }
}

/// Most fds `--preserve-fds` passes into a VM (with stdio, what one SCM_RIGHTS
/// message carries).
const MAX_PRESERVE: u32 = 250;
/// What the proxy tells `exec` once the guest process runs.
const READY: &str = "ok";

/// Whether fd `fd` is open.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads the fd's flags and touches no memory.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Opens /dev/null on every closed fd below `end`.
fn fill_holes(end: RawFd) -> Result<()> {
    for fd in 0..end {
        if is_open(fd) {
            continue;
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| backend(format!("open /dev/null: {e}")))?;
        if null.as_raw_fd() != fd {
            // SAFETY: dup2 onto a closed fd number: nothing owns `fd` yet; it is
            // kept open on purpose (the guest process gets it).
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(backend(format!(
                    "dup2 /dev/null to fd {fd}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        } else {
            std::mem::forget(null);
        }
    }
    Ok(())
}

/// Closes every fd of this process but `keep` (the proxy never execs, so
/// close-on-exec does not help: the engine's pipes must not be held open).
fn close_all_but(keep: &[RawFd]) {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        if !keep.contains(&fd) {
            // SAFETY: closing a number this process no longer uses; the proxy holds
            // no owned handle on any fd but those in `keep`.
            unsafe { libc::close(fd) };
        }
    }
}

/// The proxy process: never returns.
fn proxy(
    rec: &DomainRecord,
    msg: &serde_json::Value,
    console: Option<OwnedFd>,
    size: Option<(u16, u16)>,
    preserve: u32,
    ready: OwnedFd,
) -> ! {
    let mut ready = std::fs::File::from(ready);
    let fail = |ready: &mut std::fs::File, e: String| -> ! {
        let _ = ready.write_all(e.as_bytes());
        std::process::exit(1)
    };
    // In the domain's cgroup, as a jail's exec'd process is: `pause` freezes it and
    // `delete --force` ends it with the domain.
    let me = std::process::id() as i32;
    if let Err(e) = hyperjail_isolation::cgroups::Cgroup::from_dirs(rec.cgroups.clone()).add(me) {
        fail(&mut ready, format!("join the domain's cgroup: {e}"));
    }
    // Every signal is taken from a signalfd and passed on into the guest.
    let all = SigSet::all();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    let sigs = match SignalFd::with_flags(&all, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => fail(&mut ready, format!("signalfd: {e}")),
    };
    if let Some(sock) = console {
        let r = nix::unistd::setsid()
            .map_err(|e| format!("setsid: {e}"))
            .and_then(|_| {
                hyperjail_isolation::console::setup(&sock, size, false).map_err(|e| e.to_string())
            });
        if let Err(e) = r {
            fail(&mut ready, e);
        }
    }
    // Fds 0-2 and the preserved ones (all open: see `fill_holes`).
    let fds: Vec<RawFd> = (0..3 + preserve as RawFd).collect();
    let s = match request(rec, msg, &fds) {
        Ok(s) => s,
        Err(e) => fail(&mut ready, e.to_string()),
    };
    let mut r = BufReader::new(&s);
    let pid: i32 = match answer(&mut r) {
        Ok(l) => match l.strip_prefix("pid ").and_then(|p| p.parse().ok()) {
            Some(p) => p,
            None => fail(&mut ready, format!("the VMM answered {l:?}")),
        },
        Err(e) => fail(&mut ready, e.to_string()),
    };
    let _ = ready.write_all(READY.as_bytes());
    drop(ready);
    // The stdio the guest process has now are the VMM's copies: the proxy's own
    // go (and every other fd it inherited), so a pipe's reader sees its end when
    // the guest process closes it.
    close_all_but(&[s.as_raw_fd(), sigs.as_raw_fd()]);
    let mut pfds = [
        nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN),
        nix::poll::PollFd::new(sigs.as_fd(), nix::poll::PollFlags::POLLIN),
    ];
    loop {
        // The exit line may have come with the pid's, into the reader's buffer.
        let buffered = !r.buffer().is_empty();
        if !buffered && nix::poll::poll(&mut pfds, nix::poll::PollTimeout::NONE).is_err() {
            continue;
        }
        let sig_ready = pfds[1]
            .revents()
            .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN));
        if sig_ready {
            if let Ok(Some(info)) = sigs.read_signal() {
                let n = info.ssi_signo as i32;
                // The terminal's own signals (sent by the host kernel: a key, a new
                // size) go to its foreground group in the guest, as the console's.
                let tty = matches!(
                    Signal::try_from(n),
                    Ok(Signal::SIGINT | Signal::SIGQUIT | Signal::SIGTSTP | Signal::SIGWINCH)
                ) && info.ssi_code == libc::SI_KERNEL;
                if tty {
                    let _ = terminal_signal(rec, n, pid);
                } else if n != Signal::SIGCHLD as i32 {
                    let _ = kill(rec, n, Some(pid), false);
                }
            }
        }
        if buffered || pfds[0].revents().is_some_and(|r| !r.is_empty()) {
            let code = match answer(&mut r) {
                Ok(l) => match l.strip_prefix("exit ").and_then(|s| s.parse::<u64>().ok()) {
                    Some(st) if st & 0x7f != 0 => 128 + (st & 0x7f) as i32,
                    Some(st) => ((st >> 8) & 0xff) as i32,
                    None => 255,
                },
                Err(_) => 137,
            };
            std::process::exit(code);
        }
    }
}
