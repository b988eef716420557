//! The process half of a jail, shared by the container's init and by `exec`: terminal,
//! limits, cwd, identity, capabilities, no_new_privs, seccomp, then exec.

use crate::Error;
use hyperjail_isolation::{caps, console, process, seccomp};
use oci_spec::runtime::{LinuxSeccomp, Process};
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;

/// What a process needs around it, besides its `process` section.
#[derive(Debug)]
pub struct Env<'a> {
    /// `linux.seccomp` of the container.
    pub seccomp: Option<&'a LinuxSeccomp>,
    /// Whether the process is in a user namespace of the container's.
    pub userns: bool,
    /// Connected console socket when `process.terminal` is set.
    pub console: Option<&'a OwnedFd>,
    /// Bind the pty on /dev/console (the container's own /dev).
    pub bind_console: bool,
    /// Container state JSON (for a seccomp NOTIFY listener).
    pub state_json: &'a str,
    /// Pass fds 3 .. 3+N to the process.
    pub preserve_fds: u32,
    /// The runtime's own fds, never passed even inside that range.
    pub ours: &'a [RawFd],
}

/// A process ready to exec.
#[derive(Debug)]
pub struct Ready {
    /// Resolved executable path.
    pub exe: PathBuf,
    /// The seccomp filter still to load (after everything else, before exec).
    pub filter: Option<seccomp::Filter>,
    /// The environment, with HOME added when the config has none (as runc does).
    pub env: Vec<String>,
}

/// The home directory of `uid` in the container's /etc/passwd, else `/`.
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// Applies everything of `p` except the exec itself. The seccomp filter is built here
/// (the caller may build it earlier and pass it in `prebuilt`).
pub fn prepare(
    p: &Process,
    env: &Env<'_>,
    prebuilt: Option<seccomp::Filter>,
) -> Result<Ready, Error> {
    // Only stdio and the preserved fds reach the process (no runtime fd leaks in:
    // CVE-2024-21626). Done first: a seccomp filter loaded below may forbid it.
    process::cloexec_from(3 + env.preserve_fds)?;
    for fd in 3..3 + env.preserve_fds as i32 {
        if !env.ours.contains(&fd) {
            process::keep_fd(fd)?;
        }
    }
    let mut filter = match (prebuilt, env.seccomp) {
        (Some(f), _) => Some(f),
        (None, Some(s)) => Some(seccomp::build(s)?),
        (None, None) => None,
    };
    if let (true, Some(sock)) = (p.terminal().unwrap_or(false), env.console) {
        let size = p
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup(sock, size, env.bind_console)?;
    }
    process::set_rlimits(p.rlimits().as_deref().unwrap_or(&[]))?;
    if let Some(adj) = p.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    let cwd = p.cwd();
    if std::fs::metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd)
            .map_err(|e| Error::Init(format!("create cwd {}: {e}", cwd.display())))?;
    }
    std::env::set_current_dir(cwd)
        .map_err(|e| Error::Init(format!("chdir to cwd {}: {e}", cwd.display())))?;
    // A cwd reached through an fd of the runtime (/proc/self/fd/N) can lie outside the
    // root; getcwd then reports it unreachable (CVE-2024-21626).
    match std::env::current_dir() {
        Ok(d) if d.is_absolute() => {}
        _ => {
            return Err(Error::Init(format!(
                "process.cwd {} resolves outside the container's root",
                cwd.display()
            )))
        }
    }
    let mut vars = p.env().clone().unwrap_or_default();
    if !vars.iter().any(|v| v.starts_with("HOME=")) {
        vars.push(format!("HOME={}", home_of(p.user().uid())));
    }
    let a0 = p
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| Error::Init("process.args is empty".into()))?;
    let exe = process::find_executable(a0, &vars)?;
    let (aa, se) = (
        p.apparmor_profile().as_deref(),
        p.selinux_label().as_deref(),
    );
    process::check_lsm(aa, se)?;
    process::set_exec_lsm(aa, se)?;
    let nnp = p.no_new_privileges().unwrap_or(false);
    if !nnp {
        // Without no_new_privs only a process with CAP_SYS_ADMIN may load a filter:
        // load it now, before privileges are dropped (as runc does).
        if let Some(f) = filter.take() {
            f.load(env.state_json)?;
        }
    }
    if let Some(c) = p.capabilities() {
        caps::drop_bounding(c)?;
    }
    let setgroups_ok = !env.userns
        || std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow");
    process::set_user(p.user(), setgroups_ok)?;
    if let Some(c) = p.capabilities() {
        caps::apply(c)?;
    }
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(|source| Error::Sys {
            op: "prctl(PR_SET_NO_NEW_PRIVS)",
            source,
        })?;
    }
    Ok(Ready {
        exe,
        filter,
        env: vars,
    })
}

/// Execs the prepared process: clean signal state, only stdio and fds 3..3+`preserve`
/// (except `ours`) inherited, the seccomp filter loaded last. Returns only on error.
pub fn exec(p: &Process, ready: Ready, state_json: &str) -> Error {
    process::reset_signals();
    if let Some(f) = ready.filter {
        if let Err(e) = f.load(state_json) {
            return e.into();
        }
    }
    let args = p.args().clone().unwrap_or_default();
    process::exec(&ready.exe, &args, &ready.env).into()
}
