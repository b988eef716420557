//! Confines the VMM once the VM is built: no_new_privs and a seccomp allow-list of
//! only what serving the guest needs. Anything else kills the VMM (SIGSYS), so a
//! guest that found a bug in the VMM still cannot open files, exec or use the network.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// System calls the VMM makes after setup (stdio and file forwarding, `start`, memory
/// for small allocations, sleeping, exiting). Files are only ever opened with openat2
/// relative to the rootfs fd (RESOLVE_IN_ROOT); plain open/openat are not allowed.
const ALLOWED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "lseek",
    "close",
    "fstat",
    "newfstatat",
    "openat2",
    "getdents64",
    "readlinkat",
    "faccessat2",
    "mkdirat",
    "unlinkat",
    "renameat2",
    "symlinkat",
    "accept",
    "accept4",
    "sendto",
    "recvfrom",
    "mmap",
    "munmap",
    "mremap",
    "madvise",
    "brk",
    "futex",
    "rt_sigreturn",
    "rt_sigprocmask",
    "sigaltstack",
    "clock_gettime",
    "clock_nanosleep",
    "nanosleep",
    "restart_syscall",
    "sched_yield",
    "getpid",
    "gettid",
    "tgkill",
    "exit",
    "exit_group",
];

/// The only ioctls: KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS (fault reports), and the
/// terminal requests of [`crate::tty::HOST_REQUESTS`] on the guest's console.
const IOCTLS: &[u64] = &[0xae80, 0x8090_ae81, 0x8138_ae83];

/// fcntl only for F_GETFL (the guest's fcntl F_GETFL).
const FCNTLS: &[u64] = &[3];

fn rules() -> Result<Vec<LinuxSyscall>, String> {
    let err = |e: oci_spec::OciSpecError| format!("VMM seccomp profile: {e}");
    let mut v = vec![LinuxSyscallBuilder::default()
        .names(ALLOWED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()
        .map_err(err)?];
    let with_arg1 = IOCTLS
        .iter()
        .chain(crate::tty::HOST_REQUESTS)
        .map(|&r| ("ioctl", r))
        .chain(FCNTLS.iter().map(|&c| ("fcntl", c)));
    for (name, req) in with_arg1 {
        let arg = LinuxSeccompArgBuilder::default()
            .index(1usize)
            .value(req)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .map_err(err)?;
        v.push(
            LinuxSyscallBuilder::default()
                .names(vec![name.to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![arg])
                .build()
                .map_err(err)?,
        );
    }
    Ok(v)
}

/// The VMM's profile: kill the process on anything not listed.
pub fn profile() -> Result<LinuxSeccomp, String> {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActKillProcess)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(rules()?)
        .build()
        .map_err(|e| format!("VMM seccomp profile: {e}"))
}

/// Makes the calling thread (the one that serves the guest) reach the rootfs as
/// process.user: fsuid/fsgid and the supplementary groups. Permission checks on guest
/// files are then the guest user's, and files the guest creates are owned by it; a
/// non-root fsuid also drops the VMM's file capabilities (CAP_DAC_OVERRIDE, ...).
/// Without root (rootless) there is nothing to change.
pub fn file_identity(uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
    use nix::unistd::{setfsgid, setfsuid, setgroups, Gid, Uid};
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(|e| format!("VMM setgroups: {e}"))?;
    setfsgid(Gid::from_raw(gid));
    setfsuid(Uid::from_raw(uid));
    // Both return the previous value: asking again tells whether the change held.
    let ok = setfsgid(Gid::from_raw(gid)) == Gid::from_raw(gid)
        && setfsuid(Uid::from_raw(uid)) == Uid::from_raw(uid);
    if ok {
        Ok(())
    } else {
        Err(format!("VMM: cannot take the file identity {uid}:{gid}"))
    }
}

/// Sets no_new_privs and loads the profile into the calling process.
pub fn apply(profile: &LinuxSeccomp) -> Result<(), String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    hyperjail_isolation::seccomp::build(profile)
        .and_then(|f| f.load("{}"))
        .map_err(|e| format!("VMM seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn profile_builds() {
        let p = super::profile().expect("profile");
        assert_eq!(
            p.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActKillProcess
        );
        hyperjail_isolation::seccomp::check_build(&p).expect("libseccomp accepts it");
    }
}
