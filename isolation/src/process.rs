//! The container process's own settings: rlimits, identity, keyring, host names,
//! sysctls, the executable lookup and the fds it inherits.

use crate::{Error, Result};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType, User};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Applies `process.rlimits`.
pub fn set_rlimits(limits: &[PosixRlimit]) -> Result<()> {
    for l in limits {
        setrlimit(resource(l.typ()), l.soft(), l.hard()).map_err(|e| {
            Error::sys(
                format!(
                    "setrlimit {:?} soft={} hard={}",
                    l.typ(),
                    l.soft(),
                    l.hard()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Writes a /proc file, refusing one that is not on procfs: a mount inside the
/// container could otherwise redirect the runtime's write (CVE-2025-52881).
pub fn write_proc(path: &Path, value: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let fs = nix::sys::statfs::fstatfs(&f).map_err(|e| Error::path("statfs", path, e))?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Error::Invalid(format!(
            "{} is not on procfs (something is mounted over it); refusing to write",
            path.display()
        )));
    }
    f.write_all(value.as_bytes())
        .map_err(|e| Error::io("write", path, e))
}

/// Writes /proc/self/oom_score_adj.
pub fn set_oom_score_adj(v: i32) -> Result<()> {
    write_proc(Path::new("/proc/self/oom_score_adj"), &v.to_string())
}

/// Switches to the configured uid, gid and supplementary groups, keeping the
/// permitted capabilities so that [`crate::caps::apply`] can set them afterwards.
pub fn set_user(u: &User, setgroups_allowed: bool) -> Result<()> {
    if setgroups_allowed {
        let groups: Vec<Gid> = u
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        nix::unistd::setgroups(&groups).map_err(|e| Error::sys("setgroups", e))?;
    }
    nix::sys::prctl::set_keepcaps(true).map_err(|e| Error::sys("prctl(PR_SET_KEEPCAPS)", e))?;
    let g = Gid::from_raw(u.gid());
    nix::unistd::setresgid(g, g, g).map_err(|e| Error::sys(format!("setresgid {}", u.gid()), e))?;
    let uid = Uid::from_raw(u.uid());
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| Error::sys(format!("setresuid {}", u.uid()), e))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| Error::sys("prctl(PR_SET_KEEPCAPS)", e))?;
    if let Some(m) = u.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
    Ok(())
}

/// Joins a new session keyring named after the container, as runc does unless
/// `--no-new-keyring`. Kernels without keyrings are fine.
pub fn join_session_keyring(name: &str) -> Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let c = CString::new(name).map_err(|_| Error::Invalid("keyring name has a NUL".into()))?;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated string that
    // `c` keeps alive for the duration of the call; it touches no other memory.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if r < 0 {
        let e = nix::errno::Errno::last();
        if e != nix::errno::Errno::ENOSYS {
            return Err(Error::sys("keyctl(JOIN_SESSION_KEYRING)", e));
        }
    }
    Ok(())
}

/// Sets the hostname and domainname (uts namespace).
pub fn set_names(hostname: Option<&str>, domainname: Option<&str>) -> Result<()> {
    if let Some(h) = hostname {
        nix::unistd::sethostname(h).map_err(|e| Error::sys(format!("sethostname {h:?}"), e))?;
    }
    if let Some(d) = domainname {
        // SAFETY: setdomainname reads exactly `len` bytes from the pointer, which
        // points into `d`, alive for the call.
        let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if r != 0 {
            return Err(Error::sys(
                format!("setdomainname {d:?}"),
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

/// Writes `linux.sysctl` entries under /proc/sys (container's /proc).
pub fn set_sysctls(sysctl: &HashMap<String, String>) -> Result<()> {
    for (k, v) in sysctl {
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        write_proc(&p, v)?;
    }
    Ok(())
}

/// Whether the host has AppArmor enabled.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
}

/// Whether the host has SELinux enabled.
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// Checks `apparmorProfile` and `selinuxLabel` against the host, as runc does: asking
/// for an LSM the kernel does not run is an error, never a silent downgrade.
pub fn check_lsm(apparmor: Option<&str>, selinux: Option<&str>) -> Result<()> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        if !apparmor_enabled() {
            return Err(Error::Invalid(format!(
                "apparmor profile {p:?} is set but AppArmor is not enabled on this host"
            )));
        }
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        if !selinux_enabled() {
            return Err(Error::Invalid(format!(
                "selinux label {l:?} is set but SELinux is disabled or not supported on this host"
            )));
        }
    }
    Ok(())
}

/// Arranges for the next exec to enter the AppArmor profile and/or SELinux label.
pub fn set_exec_lsm(apparmor: Option<&str>, selinux: Option<&str>) -> Result<()> {
    if let Some(p) = apparmor.filter(|p| !p.is_empty()) {
        let path = if std::path::Path::new("/proc/thread-self/attr/apparmor/exec").exists() {
            "/proc/thread-self/attr/apparmor/exec"
        } else {
            "/proc/thread-self/attr/exec"
        };
        write_proc(Path::new(path), &format!("exec {p}"))?;
    }
    if let Some(l) = selinux.filter(|l| !l.is_empty()) {
        write_proc(Path::new("/proc/thread-self/attr/exec"), l)?;
    }
    Ok(())
}

/// Finds `arg0` as execvp would, with PATH from the container's environment.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match std::fs::metadata(&p) {
            Ok(_) if is_exec(&p) => Ok(p),
            Ok(_) => Err(Error::Invalid(format!("exec: {arg0:?}: permission denied"))),
            Err(_) => Err(Error::Invalid(format!(
                "exec: {arg0:?}: no such file or directory"
            ))),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(arg0))
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "exec: {arg0:?}: executable file not found in $PATH"
            ))
        })
}

/// Marks every fd from `first` up close-on-exec, so only stdio and the preserved fds
/// reach the container process (no runtime fd leaks in: CVE-2024-21626).
pub fn cloexec_from(first: u32) -> Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds of this
    // process; it reads and writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        return Err(Error::sys("close_range", nix::errno::Errno::last()));
    }
    Ok(())
}

/// Clears close-on-exec on fd `fd` (a preserved fd).
pub fn keep_fd(fd: i32) -> Result<()> {
    // SAFETY: F_SETFD on an integer fd changes only that fd's flag; an fd that is not
    // open gives EBADF, which we ignore (the caller asked for fds it did not pass).
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r != 0 && nix::errno::Errno::last() != nix::errno::Errno::EBADF {
        return Err(Error::sys(
            format!("keep fd {fd}"),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Unblocks every signal and resets all handlers to their defaults, so the user
/// process starts with a clean signal state whatever the runtime blocked.
///
/// Ignored signals matter most: SIG_IGN survives execve, so a runtime started under
/// `nohup` (SIGHUP ignored) or by a shell that ignores SIGINT would hand that on, and a
/// shell in the container could not even trap it.
pub fn reset_signals() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL registers no handler code, so nothing can run in
        // an async-signal context; called in the single-threaded process about to exec.
        // Invalid numbers (reserved by libc) fail with EINVAL and are skipped.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Replaces this process with `path`.
pub fn exec(path: &Path, args: &[String], env: &[String]) -> Error {
    let c =
        |s: &str| CString::new(s).map_err(|_| Error::Invalid(format!("{s:?} contains a NUL byte")));
    let build = || -> Result<(CString, Vec<CString>, Vec<CString>)> {
        let p = c(&path.to_string_lossy())?;
        let a = args.iter().map(|s| c(s)).collect::<Result<Vec<_>>>()?;
        let e = env.iter().map(|s| c(s)).collect::<Result<Vec<_>>>()?;
        Ok((p, a, e))
    };
    match build() {
        Ok((p, a, e)) => match nix::unistd::execve(&p, &a, &e) {
            Err(err) => Error::sys(format!("exec {}", path.display()), err),
            Ok(never) => match never {},
        },
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_in_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let p = find_executable("sh", &env).expect("sh");
        assert!(p.ends_with("sh"));
        assert!(find_executable("no-such-program-xyz", &env)
            .unwrap_err()
            .to_string()
            .contains("not found in $PATH"));
        let tmp = tempfile::tempdir().expect("tmp");
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, "x").expect("write");
        let e = find_executable(&plain.to_string_lossy(), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("permission denied"), "{e}");
    }
}
