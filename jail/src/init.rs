//! The container side: stage 1 (namespaces) and init (rootfs, process setup, wait for
//! `start`, exec). Both run in children forked from the single-threaded runtime.

use crate::proc_setup;
use crate::sync::{Channel, Msg};
use crate::Error;
use hyperjail_isolation::mounts::{mount_entry, MountCtx};
use hyperjail_isolation::ns::{self, NsPlan};
use hyperjail_isolation::{process, rootfs, seccomp};
use hyperjail_oci::{run_hooks, Bundle, HookKind, OciState, Status};
use hyperjail_runtime::CreateOpts;
use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult, Gid, Uid};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// What the children need; valid in them because fork copies the runtime's memory.
#[derive(Debug)]
pub struct InitCtx<'a> {
    /// Container id.
    pub id: &'a str,
    /// The bundle.
    pub bundle: &'a Bundle,
    /// Namespaces to create and join.
    pub plan: &'a NsPlan,
    /// The container's cgroup directories.
    pub cgroups: &'a [PathBuf],
    /// CLI options.
    pub opts: &'a CreateOpts,
    /// The start socket.
    pub listener: &'a UnixListener,
    /// Connected console socket, when process.terminal is set.
    pub console: Option<&'a OwnedFd>,
    /// The runtime's lock on the state directory: closed at once in the children, or a
    /// runtime killed during create would leave the lock held by init.
    pub lock_fd: RawFd,
}

/// Drops this child's copy of the state-directory lock (the runtime keeps its own).
fn release_lock(ctx: &InitCtx<'_>) {
    crate::sync::close_inherited(ctx.lock_fd);
}

/// Init created directly in its namespaces (no joins, no user or time namespace): it
/// waits for its cgroup, enters a new cgroup namespace if asked, and carries on.
pub fn direct(ch: Channel, ctx: &InitCtx<'_>) -> ! {
    release_lock(ctx);
    let r = ch.expect(Msg::Go).and_then(|()| {
        if ctx.plan.new.contains(CloneFlags::CLONE_NEWCGROUP) {
            ns::unshare(CloneFlags::CLONE_NEWCGROUP)?;
        }
        Ok(())
    });
    if let Err(e) = r {
        let _ = ch.send(&Msg::Failed(e.to_string()));
        std::process::exit(1);
    }
    init(&ch, ctx)
}

/// Stage 1: namespaces, then fork init. Never returns.
pub fn stage1(ch: Channel, ctx: &InitCtx<'_>) -> ! {
    release_lock(ctx);
    let code = match stage1_inner(&ch, ctx) {
        Ok(()) => 0,
        Err(e) => {
            let _ = ch.send(&Msg::Failed(e.to_string()));
            1
        }
    };
    std::process::exit(code)
}

fn stage1_inner(ch: &Channel, ctx: &InitCtx<'_>) -> Result<(), Error> {
    ch.expect(Msg::Go)?;
    // A joined pid namespace may hold other processes: keep them from opening this
    // image (still hyperjail's) through /proc/<pid>/exe until init execs
    // (CVE-2019-5736). A new pid namespace holds nobody else.
    if ctx
        .plan
        .join
        .iter()
        .any(|(f, _)| f.contains(CloneFlags::CLONE_NEWPID))
    {
        nix::sys::prctl::set_dumpable(false).map_err(|source| Error::Sys {
            op: "prctl(PR_SET_DUMPABLE)",
            source,
        })?;
    }
    let plan = ctx.plan;
    let user = CloneFlags::CLONE_NEWUSER;
    let joins = plan.open_joins()?;
    ns::join(&joins, |f| f == user)?;
    if plan.new.contains(user) {
        ns::unshare(user)?;
        ch.send(&Msg::MapIds)?;
        ch.expect(Msg::Go)?;
        // Become root of the new user namespace (if the maps make it exist).
        let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    ns::join(&joins, |f| f != user)?;
    drop(joins);
    ns::unshare(plan.new - user)?;
    let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    if plan.new.contains(time) {
        let offsets: Vec<(String, i64, u32)> = ctx
            .bundle
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().clone())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, v.secs().unwrap_or(0), v.nanosecs().unwrap_or(0)))
            .collect();
        ns::write_time_offsets(&offsets)?;
    }
    // SAFETY: single-threaded (forked from the single-threaded runtime).
    match unsafe { fork() }.map_err(|source| Error::Sys {
        op: "fork init",
        source,
    })? {
        ForkResult::Child => init(ch, ctx),
        ForkResult::Parent { child } => ch.send(&Msg::Pid(child.as_raw())),
    }
}

/// Everything init prepared before it waits for `start`.
struct Prepared {
    /// None when config.json has no process (start then fails, as the spec says).
    ready: Option<proc_setup::Ready>,
    state_json: String,
}

fn init(ch: &Channel, ctx: &InitCtx<'_>) -> ! {
    match setup(ch, ctx) {
        Ok(p) => {
            if ch.send(&Msg::Ready).is_err() {
                std::process::exit(1);
            }
            wait_and_exec(ctx, p)
        }
        Err(e) => {
            let _ = ch.send(&Msg::Failed(e.to_string()));
            std::process::exit(1)
        }
    }
}

fn setup(ch: &Channel, ctx: &InitCtx<'_>) -> Result<Prepared, Error> {
    let spec = &ctx.bundle.spec;
    let linux = spec.linux().as_ref();
    let process = spec.process().as_ref();
    nix::unistd::setsid().map_err(|source| Error::Sys {
        op: "setsid",
        source,
    })?;
    if !ctx.opts.no_new_keyring {
        process::join_session_keyring(ctx.id)?;
    }

    // The rootfs and the configured mounts, all resolved inside the rootfs.
    let rootfs = &ctx.bundle.rootfs;
    let own_mntns = ctx.plan.has(CloneFlags::CLONE_NEWNS);
    let propagation =
        rootfs::wanted_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()));
    let root = rootfs::prepare(rootfs, propagation, own_mntns)?;
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let mctx = MountCtx {
        root: &root,
        bundle: &ctx.bundle.dir,
        new_netns: ctx.plan.has(CloneFlags::CLONE_NEWNET),
        new_ipcns: ctx.plan.has(CloneFlags::CLONE_NEWIPC),
        new_cgroupns: ctx.plan.has(CloneFlags::CLONE_NEWCGROUP),
        cgroups: ctx.cgroups,
    };
    for m in mounts {
        mount_entry(&mctx, m)?;
    }
    let dev_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && (m.typ().as_deref() == Some("bind")
                || m.options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind"))
    });
    let terminal = process.and_then(|p| p.terminal()).unwrap_or(false);
    if !dev_bound {
        let devices = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
        rootfs::setup_dev(&root, devices, terminal)?;
    }

    ch.send(&Msg::RunHooks)?;
    let state_json = match ch.recv()? {
        Msg::HooksDone(s) => s,
        Msg::Failed(e) => return Err(Error::Init(e)),
        m => return Err(Error::Channel(format!("protocol error: got {m:?}"))),
    };
    run_hooks(spec, HookKind::CreateContainer, state_json.as_bytes())?;
    drop(root);
    // Built before pivot_root: a NOTIFY listener socket is a host path.
    let filter = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(seccomp::build(s)?),
        None => None,
    };

    let how = match (own_mntns, ctx.opts.no_pivot) {
        (false, _) => rootfs::EnterRoot::Chroot,
        (true, true) => rootfs::EnterRoot::Move,
        (true, false) => rootfs::EnterRoot::Pivot,
    };
    rootfs::enter_root(rootfs, how)?;
    if own_mntns {
        rootfs::finish_propagation(propagation)?;
    }
    // Host names and sysctls first: /proc/sys is usually among the read-only paths.
    let host = spec.hostname().as_deref().filter(|h| !h.is_empty());
    let domain = spec.domainname().as_deref().filter(|h| !h.is_empty());
    process::set_names(host, domain)?;
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        process::set_sysctls(sysctl)?;
    }
    if let Some(l) = linux {
        rootfs::mask_paths(l.masked_paths().as_deref().unwrap_or(&[]))?;
        rootfs::readonly_paths(l.readonly_paths().as_deref().unwrap_or(&[]))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        rootfs::readonly_root()?;
    }

    let Some(p) = process else {
        return Ok(Prepared {
            ready: None,
            state_json,
        });
    };
    let env = proc_setup::Env {
        seccomp: linux.and_then(|l| l.seccomp().as_ref()),
        userns: ctx.plan.has(CloneFlags::CLONE_NEWUSER),
        console: ctx.console,
        bind_console: !dev_bound,
        state_json: &state_json,
        preserve_fds: ctx.opts.preserve_fds,
        ours: &[ch.raw_fd(), ctx.listener.as_raw_fd()],
    };
    let ready = proc_setup::prepare(p, &env, filter)?;
    Ok(Prepared {
        ready: Some(ready),
        state_json,
    })
}

/// Waits for `start`, runs startContainer hooks, and execs the user program. An error
/// goes back to `start` over its connection.
fn wait_and_exec(ctx: &InitCtx<'_>, p: Prepared) -> ! {
    let mut conn = loop {
        match ctx.listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => std::process::exit(1),
        }
    };
    // `start` sends one byte; wait for it so a stray connect cannot start us.
    let mut b = [0u8; 1];
    if conn.read_exact(&mut b).is_err() {
        std::process::exit(1);
    }
    let fail = |conn: &mut std::os::unix::net::UnixStream, msg: String| -> ! {
        let _ = conn.write_all(msg.as_bytes());
        std::process::exit(127)
    };
    let spec = &ctx.bundle.spec;
    let (Some(ready), Some(proc_)) = (p.ready, spec.process().as_ref()) else {
        fail(&mut conn, "config.json has no process to start".into())
    };
    let state = serde_json::from_str::<OciState>(&p.state_json).map(|mut s| {
        s.status = Status::Running;
        serde_json::to_string(&s).unwrap_or_default()
    });
    if let Err(e) = run_hooks(
        spec,
        HookKind::StartContainer,
        state.unwrap_or_default().as_bytes(),
    ) {
        fail(&mut conn, e.to_string())
    }
    let e = proc_setup::exec(proc_, ready, &p.state_json);
    fail(&mut conn, e.to_string())
}
