//! `create` for the VM: plans the VM in the runtime process (so bad input fails before
//! anything exists), makes the domain's cgroup, and forks the VMM, which is the
//! container process. The VMM builds the VM inside the cgroup, reports ready (or the
//! error) over a socket pair, then waits on `start.sock` in the state directory.

use crate::vmm::{self, Plan};
use crate::{confine, program};
use hyperjail_isolation::cgroups::Cgroup;
use hyperjail_isolation::resources;
use hyperjail_oci::{run_hooks, HookKind, Status};
use hyperjail_runtime::{proc_stat, CreateRequest, DomainRecord, Error, Result, Runtime};
use nix::sys::signal::{kill, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::LinuxSeccomp;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Name of the VMM's socket in the state directory: `start` connects to it once,
/// then `exec`, `ps` and `kill --all` (spawn.rs).
pub const CONTROL_SOCKET: &str = "vmm.sock";
/// The byte `start` sends (a control request starts with another).
pub const START_BYTE: u8 = b's';

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

/// A sun_path-safe path to `name` in `dir`, through an fd that must stay open.
pub fn short_path(dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf)> {
    let f =
        std::fs::File::open(dir).map_err(|e| backend(format!("open {}: {e}", dir.display())))?;
    let p = PathBuf::from(format!("/proc/self/fd/{}/{name}", f.as_raw_fd()));
    Ok((f, p))
}

/// Builds the domain: see the module docs.
pub fn create(req: &CreateRequest<'_>, rec: &mut DomainRecord) -> Result<()> {
    if !Path::new("/dev/kvm").exists() {
        return Err(backend(
            "the VM backend needs /dev/kvm, which this machine lacks; the jail backend is available",
        ));
    }
    let plan = program::plan(req.bundle).map_err(backend)?;
    let console = match (&req.opts.console_socket, plan.terminal) {
        (Some(p), true) => Some(hyperjail_jail::connect_console(p).map_err(backend)?),
        (None, true) => {
            return Err(backend(
                "process.terminal is true but no --console-socket was given",
            ))
        }
        _ => None,
    };
    let kvm = vmm::open_kvm().map_err(backend)?;
    let profile = confine::profile().map_err(backend)?;
    let spec = &req.bundle.spec;
    let linux = spec.linux().as_ref();
    let cg_path = linux
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!("/hyperjail/{}", req.id)));
    let settings = match linux.and_then(|l| l.resources().as_ref()) {
        Some(r) => resources::check_host(r, true)
            .and_then(|()| resources::plan(r, &[]))
            .map_err(backend)?,
        None => Vec::new(),
    };
    let rootless = !nix::unistd::geteuid().is_root();
    let planned = Cgroup::plan(&cg_path);
    rec.cgroups = planned.dirs.clone();
    req.dir.save(rec)?;
    let cg = planned.make(rootless).map_err(backend)?;
    rec.cgroups = cg.dirs.clone();
    cg.apply(&settings).map_err(backend)?;

    let (dirf, sock) = short_path(req.dir.path(), CONTROL_SOCKET)?;
    let listener =
        UnixListener::bind(&sock).map_err(|e| backend(format!("bind start socket: {e}")))?;
    drop(dirf);
    let reports = open_reports(req)?;
    let oom = crate::oom::open(&cg, req.dir.path());
    let (mut ours, theirs) = UnixStream::pair().map_err(|e| backend(format!("socketpair: {e}")))?;
    // SAFETY: the CLI is single-threaded, so the child may run arbitrary code after
    // fork; it never returns: it leaves through std::process::exit in `vmm_main`.
    let child = match unsafe { fork() }.map_err(|e| backend(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(ours);
            vmm::set_reports(reports);
            let vmm = Vmm {
                plan,
                profile: &profile,
                console,
                oom,
            };
            vmm_main(theirs, listener, kvm, vmm, req.dir.lock_fd())
        }
        ForkResult::Parent { child } => {
            drop(console);
            drop(oom);
            child
        }
    };
    drop(theirs);
    drop(listener);
    drop(kvm);
    drop(reports);
    let r = drive(&mut ours, req, rec, &cg, child);
    if r.is_err() {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    r
}

/// The VMM's report files: the crash report in the state directory (empty unless
/// the guest crashes) and the `--log` file, if any.
fn open_reports(req: &CreateRequest<'_>) -> Result<vmm::Reports> {
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    let path = req.dir.path().join(hyperjail_runtime::CRASH_FILE);
    let crash = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| backend(format!("create {}: {e}", path.display())))?;
    let log = match &req.opts.log {
        Some(p) => Some((
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .map_err(|e| backend(format!("open log {}: {e}", p.display())))?,
            req.opts.log_json,
        )),
        None => None,
    };
    Ok(vmm::Reports {
        crash: Some(crash),
        log,
    })
}

/// The runtime's half: move the VMM into the cgroup, let it build, wait for ready.
fn drive(
    ch: &mut UnixStream,
    req: &CreateRequest<'_>,
    rec: &mut DomainRecord,
    cg: &Cgroup,
    child: Pid,
) -> Result<()> {
    cg.add(child.as_raw()).map_err(backend)?;
    rec.pid = child.as_raw();
    rec.pid_start = proc_stat(rec.pid).map(|s| s.start_time).unwrap_or(0);
    req.dir.save(rec)?;
    ch.write_all(b"g")
        .map_err(|e| backend(format!("VMM channel: {e}")))?;
    let mut msg = String::new();
    ch.read_to_string(&mut msg)
        .map_err(|e| backend(format!("VMM channel: {e}")))?;
    match msg.strip_prefix("ok") {
        Some(_) => {}
        None if msg.is_empty() => return Err(backend("the VMM died while building the VM")),
        None => return Err(backend(msg)),
    }
    let state = Runtime::oci_state(rec, Status::Created);
    let json = serde_json::to_string(&state).map_err(backend)?;
    run_hooks(&req.bundle.spec, HookKind::Prestart, json.as_bytes())?;
    run_hooks(&req.bundle.spec, HookKind::CreateRuntime, json.as_bytes())?;
    Ok(())
}

/// What the VMM process is given to build its VM.
struct Vmm<'a> {
    plan: Plan,
    profile: &'a LinuxSeccomp,
    /// The connection to the engine's console socket, for a terminal.
    console: Option<OwnedFd>,
    /// The memory cgroup's threshold notification, for the VMM's OOM killer.
    oom: Option<crate::oom::Watch>,
}

/// With a terminal: a new session whose controlling terminal is a fresh pty, the
/// master sent over the console socket, the slave on fds 0-2 (the guest's stdio).
fn attach_terminal(
    console: Option<OwnedFd>,
    size: Option<(u16, u16)>,
) -> std::result::Result<(), String> {
    let Some(sock) = console else { return Ok(()) };
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    hyperjail_isolation::console::setup(&sock, size, false).map_err(|e| e.to_string())
}

/// The VMM process: never returns.
fn vmm_main(
    mut ch: UnixStream,
    listener: UnixListener,
    kvm: kvm_ioctls::Kvm,
    Vmm {
        plan,
        profile,
        console,
        oom,
    }: Vmm<'_>,
    lock: RawFd,
) -> ! {
    // The runtime blocks every signal while it waits in `run`. The VMM blocks the
    // ones it passes to the guest (every thread it starts inherits the mask); its
    // signal thread takes them (vmm::forwarded). The others act as on any process.
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&vmm::forwarded()), None);
    let _ = nix::sys::prctl::set_name(c"hyperjail-vmm");
    // The runtime's lock on the domain must not live as long as the VM.
    let _ = nix::unistd::close(lock);
    let mut go = [0u8; 1];
    if ch.read_exact(&mut go).is_err() {
        std::process::exit(1);
    }
    let built = attach_terminal(console, plan.console_size)
        .and_then(|()| vmm::build(kvm, &plan))
        .and_then(|mut vm| {
            // While single-threaded: the rootfs as root of a mount namespace of
            // its own, the guest user's file identity, no capabilities beyond its
            // file access. Threads started later (the ring thread, vCPUs for guest
            // threads) inherit all of it; the seccomp filter is loaded per thread
            // (the ring thread's by itself; vCPU threads inherit their creator's).
            confine::enter_rootfs(&plan.rootfs)?;
            confine::file_identity(plan.user.0, plan.user.1, &plan.groups)?;
            confine::drop_caps(plan.capabilities.as_ref())?;
            let ring_profile = profile.clone();
            let ring_tid = vm.start_ring(move || confine::apply(&ring_profile))?;
            confine::apply(&confine::with_ring(profile, ring_tid)?)?;
            vm.forward_signals()?;
            if let Some(w) = oom {
                vm.watch_memory(w)?;
            }
            Ok(vm)
        });
    // The program is in guest memory now: its file copy, often most of the VMM's
    // own memory, goes.
    drop(plan);
    let mut vm = match built {
        Ok(vm) => vm,
        Err(e) => {
            let _ = ch.write_all(e.as_bytes());
            std::process::exit(1);
        }
    };
    if ch.write_all(b"ok").is_err() {
        std::process::exit(1);
    }
    drop(ch);
    // `start`: one connection and one byte; closing it tells `start` all is well.
    // A control request (`ps`, `exec`, `kill --all`) before then is refused.
    loop {
        let Ok((mut s, _)) = listener.accept() else {
            std::process::exit(1);
        };
        let mut b = [0u8; 1];
        match s.read_exact(&mut b) {
            Ok(()) if b[0] == START_BYTE => break,
            Ok(()) => {
                let _ = s.write_all(b"error the VM has not been started\n");
            }
            Err(_) => std::process::exit(1),
        }
    }
    // From now on the socket serves `exec`, `ps` and `kill --all`.
    if let Err(e) = vm.serve_control(listener) {
        vmm::warn(&format!(
            "vm: {e}; exec, ps and kill --all will not reach the guest"
        ));
    }
    vm.run()
}
