//! The runtime side of `create`: cgroup, sockets, fork, and the protocol with stage 1
//! and init.

use crate::init::{self, InitCtx};
use crate::sync::{Channel, Msg};
use crate::Error;
use hyperjail_isolation::cgroups::Cgroup;
use hyperjail_isolation::ns::{self, NsPlan};
use hyperjail_isolation::resources;
use hyperjail_oci::{run_hooks, HookKind, Status};
use hyperjail_runtime::{proc_stat, CreateRequest, DomainRecord, Runtime};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Name of the socket init waits on until `start`.
pub const START_SOCKET: &str = "start.sock";

/// A path to `name` in directory `dir` short enough for sun_path, through the
/// directory's fd (`/proc/self/fd/N/name`). The fd must stay open while it is used.
pub fn short_path(dir: &Path, name: &str) -> Result<(File, PathBuf), Error> {
    let f = File::open(dir).map_err(|e| Error::Init(format!("open {}: {e}", dir.display())))?;
    let p = PathBuf::from(format!("/proc/self/fd/{}/{name}", f.as_raw_fd()));
    Ok((f, p))
}

/// The cgroup path of a container: `linux.cgroupsPath`, or `/hyperjail/<id>`.
pub fn cgroup_path(spec: &oci_spec::runtime::Spec, id: &str) -> PathBuf {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/hyperjail/{id}")))
}

/// Builds the jail. See the crate docs for the process structure.
pub fn create(req: &CreateRequest<'_>, rec: &mut DomainRecord) -> Result<(), Error> {
    let spec = &req.bundle.spec;
    let linux = spec.linux().as_ref();
    let nslist = linux.and_then(|l| l.namespaces().as_deref()).unwrap_or(&[]);
    let plan = NsPlan::new(nslist);
    let process = spec.process().as_ref();
    if let Some(p) = process {
        hyperjail_isolation::process::check_lsm(
            p.apparmor_profile().as_deref(),
            p.selinux_label().as_deref(),
        )?;
    }
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    let console = match (&req.opts.console_socket, terminal) {
        (Some(path), true) => Some(connect_console(path)?),
        (None, true) => {
            return Err(Error::Unsupported(
                "process.terminal is true but no --console-socket was given".into(),
            ))
        }
        _ => None,
    };

    let cg_path = cgroup_path(spec, req.id.as_str());
    let settings = match linux.and_then(|l| l.resources().as_ref()) {
        Some(r) => resources::check_host(r, true).and_then(|()| {
            resources::plan(r, linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]))
        })?,
        None => Vec::new(),
    };
    if let Some(s) = linux.and_then(|l| l.seccomp().as_ref()) {
        hyperjail_isolation::seccomp::validate(s)?;
    }
    // Without root, cgroups are used where this user may write and skipped elsewhere
    // (rootless, as runc); limits that then have no cgroup fail in `apply`.
    let rootless = !nix::unistd::geteuid().is_root();
    // Recorded before the first mkdir: a crash from here on leaves a state from which
    // `delete --force` finds and removes the cgroups.
    let planned = Cgroup::plan(&cg_path);
    rec.cgroups = planned.dirs.clone();
    req.dir.save(rec)?;
    let cg = planned.make(rootless)?;
    rec.cgroups = cg.dirs.clone();
    cg.apply(&settings)?;

    let (dirf, sock_path) = short_path(req.dir.path(), START_SOCKET)?;
    let listener = UnixListener::bind(&sock_path)
        .map_err(|e| Error::Init(format!("bind start socket: {e}")))?;
    drop(dirf);
    let (ours, theirs) = Channel::pair()?;

    let ctx = InitCtx {
        id: req.id.as_str(),
        bundle: req.bundle,
        plan: &plan,
        cgroups: &cg.dirs,
        opts: req.opts,
        listener: &listener,
        console: console.as_ref(),
        lock_fd: req.dir.lock_fd(),
    };
    // Without namespaces to join and without user or time namespaces, init is cloned
    // straight into its namespaces; otherwise stage 1 sets them up and forks it.
    let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    let direct = plan.join.is_empty() && !plan.new.intersects(CloneFlags::CLONE_NEWUSER | time);
    let child = if direct {
        // SAFETY: the CLI is single-threaded; the child leaves through
        // std::process::exit in `init`.
        match unsafe { ns::clone_into(plan.new - CloneFlags::CLONE_NEWCGROUP) }? {
            None => {
                drop(ours);
                init::direct(theirs, &ctx)
            }
            Some(pid) => Pid::from_raw(pid),
        }
    } else {
        // SAFETY: the CLI is single-threaded, so the child may run arbitrary code after
        // fork; it leaves through std::process::exit in `init::stage1`.
        match unsafe { fork() }.map_err(|source| Error::Sys { op: "fork", source })? {
            ForkResult::Child => {
                drop(ours);
                init::stage1(theirs, &ctx)
            }
            ForkResult::Parent { child } => child,
        }
    };
    drop(theirs);
    drop(console);
    if direct {
        rec.pid = child.as_raw();
        rec.pid_start = proc_stat(rec.pid).map(|s| s.start_time).unwrap_or(0);
    }
    let r = drive(&ours, req, rec, &cg, child.as_raw(), direct);
    if r.is_err() {
        let _ = kill(child, Signal::SIGKILL);
        if rec.pid > 0 {
            let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
        }
        let _ = waitpid(child, None);
    }
    r
}

/// Connects to the engine's console socket (long paths through the parent's fd).
pub fn connect_console(path: &Path) -> Result<OwnedFd, Error> {
    let err = |e: std::io::Error| {
        Error::Init(format!("connect to console socket {}: {e}", path.display()))
    };
    let s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(_) if path.as_os_str().len() >= 100 => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (_f, p) = short_path(dir, &name)?;
            UnixStream::connect(p).map_err(err)?
        }
        Err(e) => return Err(err(e)),
    };
    Ok(OwnedFd::from(s))
}

/// The runtime's half of the protocol.
fn drive(
    ch: &Channel,
    req: &CreateRequest<'_>,
    rec: &mut DomainRecord,
    cg: &Cgroup,
    stage1: i32,
    direct: bool,
) -> Result<(), Error> {
    let spec = &req.bundle.spec;
    cg.add(stage1)?;
    if direct {
        // The pid is known already: record it before init runs anything.
        req.dir.save(rec)?;
    }
    ch.send(&Msg::Go)?;
    loop {
        match ch.recv()? {
            Msg::MapIds => {
                let linux = spec.linux().as_ref();
                let uid = linux
                    .and_then(|l| l.uid_mappings().as_deref())
                    .unwrap_or(&[]);
                let gid = linux
                    .and_then(|l| l.gid_mappings().as_deref())
                    .unwrap_or(&[]);
                // Only root may let a user namespace keep setgroups(2).
                let deny = !nix::unistd::geteuid().is_root();
                ns::write_id_maps(stage1, uid, gid, deny)?;
                ch.send(&Msg::Go)?;
            }
            Msg::Pid(pid) => {
                let _ = waitpid(Pid::from_raw(stage1), None);
                rec.pid = pid;
                rec.pid_start = proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
                req.dir.save(rec)?;
            }
            Msg::RunHooks => {
                // runtime-tools checks `created` here: the container exists and its
                // process has not run the user program yet.
                let state = Runtime::oci_state(rec, Status::Created);
                let json = serde_json::to_string(&state).map_err(|e| Error::Init(e.to_string()))?;
                run_hooks(spec, HookKind::Prestart, json.as_bytes())?;
                run_hooks(spec, HookKind::CreateRuntime, json.as_bytes())?;
                ch.send(&Msg::HooksDone(json))?;
            }
            Msg::Ready => return Ok(()),
            Msg::Failed(e) => return Err(Error::Init(e)),
            Msg::Go | Msg::HooksDone(_) => {
                return Err(Error::Channel("protocol error: unexpected message".into()))
            }
        }
    }
}
