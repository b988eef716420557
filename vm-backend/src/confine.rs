//! Confines the VMM once the VM is built: no_new_privs and a seccomp allow-list of
//! only what serving the guest needs. Anything else kills the VMM (SIGSYS), so a
//! guest that found a bug in the VMM still cannot open files, exec or use the network.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// System calls the VMM makes after setup (stdio forwarding, `start`, memory for small
/// allocations, sleeping, exiting).
const ALLOWED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "close",
    "fstat",
    "newfstatat",
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

/// The only ioctls: KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS (fault reports).
const IOCTLS: &[u64] = &[0xae80, 0x8090_ae81, 0x8138_ae83];

fn rules() -> Result<Vec<LinuxSyscall>, String> {
    let err = |e: oci_spec::OciSpecError| format!("VMM seccomp profile: {e}");
    let mut v = vec![LinuxSyscallBuilder::default()
        .names(ALLOWED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()
        .map_err(err)?];
    for &req in IOCTLS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(1usize)
            .value(req)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .map_err(err)?;
        v.push(
            LinuxSyscallBuilder::default()
                .names(vec!["ioctl".to_string()])
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
