//! `exec`: a new process inside a live jail. It joins the cgroup, every namespace of
//! the container's init that differs from ours (user first), and its root; then it is
//! confined like the container's own process.

use crate::create::connect_console;
use crate::proc_setup;
use crate::sync::{Channel, Msg};
use crate::Error;
use hyperjail_isolation::cgroups::Cgroup;
use hyperjail_runtime::{DomainRecord, ExecRequest, Runtime, Status};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::Spec;
use std::fs::File;
use std::os::fd::OwnedFd;

/// Namespace kinds in the order they are joined (user first: it owns the others).
const KINDS: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// The namespaces of `pid` that are not ours, opened.
fn foreign_namespaces(pid: i32) -> Result<Vec<(CloneFlags, File)>, Error> {
    let mut out = Vec::new();
    for (name, flag) in KINDS {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
        let ours = std::fs::read_link(format!("/proc/self/ns/{name}"));
        match (theirs, ours) {
            (Ok(t), Ok(o)) if t != o => {
                let f = File::open(format!("/proc/{pid}/ns/{name}"))
                    .map_err(|e| Error::Init(format!("open {name} namespace of pid {pid}: {e}")))?;
                out.push((*flag, f));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Runs `req.process` inside the jail of `rec`; returns the new process's host pid.
pub fn exec(rec: &DomainRecord, config: &Spec, req: &ExecRequest) -> Result<i32, Error> {
    let nss = foreign_namespaces(rec.pid)?;
    let root = File::open(format!("/proc/{}/root", rec.pid))
        .map_err(|e| Error::Init(format!("open root of pid {}: {e}", rec.pid)))?;
    let console = match (&req.console_socket, req.process.terminal().unwrap_or(false)) {
        (Some(p), true) => Some(connect_console(p)?),
        (None, true) => {
            return Err(Error::Unsupported(
                "process.terminal is true but no --console-socket was given".into(),
            ))
        }
        _ => None,
    };
    let state = Runtime::oci_state(rec, Status::Running);
    let state_json = serde_json::to_string(&state).map_err(|e| Error::Init(e.to_string()))?;
    let (ours, theirs) = Channel::pair()?;
    let userns = nss.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER)
        || config
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|n| {
                n.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
            });
    let ctx = Ctx {
        nss: &nss,
        root: &root,
        config,
        req,
        console: console.as_ref(),
        userns,
        state_json: &state_json,
    };
    // SAFETY: the CLI is single-threaded; the child leaves through process::exit.
    let stage1 = match unsafe { fork() }.map_err(|source| Error::Sys { op: "fork", source })? {
        ForkResult::Child => {
            drop(ours);
            stage1(theirs, &ctx)
        }
        ForkResult::Parent { child } => child,
    };
    drop(theirs);
    drop(console);
    let r = drive(&ours, rec, stage1);
    let _ = waitpid(stage1, None);
    r
}

fn drive(ch: &Channel, rec: &DomainRecord, stage1: Pid) -> Result<i32, Error> {
    let cg = Cgroup::from_dirs(rec.cgroups.clone());
    if let Err(e) = cg.add(stage1.as_raw()) {
        let _ = kill(stage1, Signal::SIGKILL);
        return Err(e.into());
    }
    ch.send(&Msg::Go)?;
    let pid = match ch.recv()? {
        Msg::Pid(p) => p,
        Msg::Failed(e) => return Err(Error::Init(e)),
        m => return Err(Error::Channel(format!("protocol error: got {m:?}"))),
    };
    // The process sends Failed if it cannot exec; the channel closes when it does.
    match ch.recv() {
        Err(Error::Channel(_)) => Ok(pid),
        Ok(Msg::Failed(e)) => Err(Error::Init(e)),
        Ok(m) => Err(Error::Channel(format!("protocol error: got {m:?}"))),
        Err(e) => Err(e),
    }
}

struct Ctx<'a> {
    nss: &'a [(CloneFlags, File)],
    root: &'a File,
    config: &'a Spec,
    req: &'a ExecRequest,
    console: Option<&'a OwnedFd>,
    userns: bool,
    state_json: &'a str,
}

fn stage1(ch: Channel, ctx: &Ctx<'_>) -> ! {
    if let Some(fd) = ctx.req.lock_fd {
        crate::sync::close_inherited(fd);
    }
    let r = (|| -> Result<(), Error> {
        ch.expect(Msg::Go)?;
        // Until it execs, this image is hyperjail's: keep container processes from
        // opening it through /proc/<pid>/exe or /proc/<pid>/fd (CVE-2019-5736).
        nix::sys::prctl::set_dumpable(false).map_err(|source| Error::Sys {
            op: "prctl(PR_SET_DUMPABLE)",
            source,
        })?;
        for (flag, f) in ctx.nss {
            nix::sched::setns(f, *flag).map_err(|source| Error::Sys {
                op: "setns",
                source,
            })?;
        }
        // The container's root (pivoted, or chrooted when it shares our mount ns).
        nix::unistd::fchdir(ctx.root).map_err(|source| Error::Sys {
            op: "fchdir root",
            source,
        })?;
        nix::unistd::chroot(".").map_err(|source| Error::Sys {
            op: "chroot",
            source,
        })?;
        // SAFETY: single-threaded child of the single-threaded CLI.
        match unsafe { fork() }.map_err(|source| Error::Sys { op: "fork", source })? {
            ForkResult::Child => process(&ch, ctx),
            ForkResult::Parent { child } => ch.send(&Msg::Pid(child.as_raw())),
        }
    })();
    if let Err(e) = r {
        let _ = ch.send(&Msg::Failed(e.to_string()));
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn process(ch: &Channel, ctx: &Ctx<'_>) -> ! {
    let p = &ctx.req.process;
    if p.terminal().unwrap_or(false) {
        let _ = nix::unistd::setsid();
    }
    let env = proc_setup::Env {
        seccomp: ctx
            .config
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref()),
        userns: ctx.userns,
        console: ctx.console,
        bind_console: false,
        preserve_fds: ctx.req.preserve_fds,
        ours: &[ch.raw_fd()],
        state_json: ctx.state_json,
    };
    let e = match proc_setup::prepare(p, &env, None) {
        Ok(ready) => proc_setup::exec(p, ready, ctx.state_json),
        Err(e) => e,
    };
    let _ = ch.send(&Msg::Failed(e.to_string()));
    std::process::exit(127)
}
