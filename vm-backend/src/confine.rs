//! Confines the VMM once the VM is built, like Firecracker's jailer: a mount
//! namespace rooted at the bundle's rootfs, no capabilities beyond the guest's file
//! access, the guest user's file identity, no_new_privs and a seccomp allow-list of
//! only what serving the guest needs. Anything else kills the VMM (SIGSYS), so a
//! guest that found a bug in the VMM still cannot open files, exec or use the network.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
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
    // The guest's copy_file_range between two rootfs files (hcall.rs).
    "copy_file_range",
    "lseek",
    "close",
    "fstat",
    "fstatfs",
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
    "shutdown",
    "socketpair",
    "getsockname",
    "getpeername",
    "recvfrom",
    "recvmsg",
    "munmap",
    "mremap",
    "madvise",
    "brk",
    "futex",
    // The guest's pipes, eventfds, poll and epoll (events.rs), and the waits of
    // calls that would block (wait.rs).
    "pipe2",
    "eventfd2",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "poll",
    "ppoll",
    // Processes (process.rs): AT_RANDOM for a new image.
    "getrandom",
    // The guest's /proc files (hcall.rs, HJ_BUFFER_FILE).
    "memfd_create",
    "rt_sigreturn",
    // The signal thread's sigwait (vmm::Vm::forward_signals).
    "rt_sigtimedwait",
    "rt_sigprocmask",
    "sigaltstack",
    "clock_gettime",
    "restart_syscall",
    "sched_yield",
    "getpid",
    "gettid",
    "tgkill",
    "exit",
    "exit_group",
    // Starting a vCPU thread for a guest thread (glibc's pthread_create; clone
    // itself is allowed only with exactly its flags, below).
    "set_robust_list",
    "rseq",
    // glibc's malloc sizes its arenas by the CPU count on a new thread's first use.
    "sched_getaffinity",
    // sched_getcpu's fallback (ring.rs steers the ring thread by it).
    "getcpu",
];

/// clone's flags for a thread (glibc's pthread_create): the only clone allowed, so
/// the VMM can start vCPU threads but never a process or a namespace.
const THREAD_CLONE: u64 = 0x3d0f00;

/// The only ioctls: KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS (fault reports);
/// KVM_CREATE_VCPU, KVM_SET_REGS, KVM_SET_SREGS, KVM_SET_MSRS and KVM_SET_CPUID2
/// (a vCPU for a new guest thread); PAGEMAP_SCAN; and the terminal requests of
/// [`crate::tty::HOST_REQUESTS`] on the guest's console.
const IOCTLS: &[u64] = &[
    0x4020_ae46, // KVM_SET_USER_MEMORY_REGION: a forked process's window
    0xae80,
    0x8090_ae81,
    0x8138_ae83,
    0xae41,
    0x4090_ae82,
    0x4138_ae84,
    0x4008_ae89,
    0x4008_ae90,
    0xc060_6610, // PAGEMAP_SCAN on the VMM's own pagemap (crate::window)
];

/// fcntl only for F_GETFL (the guest's fcntl F_GETFL), F_SETPIPE_SZ (a guest
/// pipe's buffer, events.rs) and F_ADD_SEALS (the guest's /proc, procdir.rs).
const FCNTLS: &[u64] = &[3, 1031, 1033];

fn rules() -> Result<Vec<LinuxSyscall>, String> {
    let err = |e: oci_spec::OciSpecError| format!("VMM seccomp profile: {e}");
    let mut v = vec![LinuxSyscallBuilder::default()
        .names(ALLOWED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()
        .map_err(err)?];
    // (syscall, argument index, mask, value): allowed when arg & mask == value.
    let with_arg = IOCTLS
        .iter()
        .chain(crate::tty::HOST_REQUESTS)
        .map(|&r| ("ioctl", 1, u64::MAX, r))
        .chain(FCNTLS.iter().map(|&c| ("fcntl", 1, u64::MAX, c)))
        .chain([
            ("clone", 0, u64::MAX, THREAD_CLONE),
            // Memory for the VMM itself, thread stacks and guard pages: never
            // executable.
            ("mmap", 2, libc::PROT_EXEC as u64, 0),
            ("mprotect", 2, libc::PROT_EXEC as u64, 0),
        ]);
    for (name, index, mask, value) in with_arg {
        v.push(allow_with_arg(name, index, mask, value)?);
    }
    // glibc tries clone3 first and takes clone when it is not there.
    v.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()
            .map_err(err)?,
    );
    // glibc's malloc opens /proc/sys/vm/overcommit_memory when it trims a thread's
    // heap, and copes when it cannot: a refusal, not a kill (nothing is opened).
    v.push(
        LinuxSyscallBuilder::default()
            .names(vec!["open".to_string(), "openat".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EACCES as u32)
            .build()
            .map_err(err)?,
    );
    Ok(v)
}

/// A rule that allows `name` when its argument `index` & `mask` == `value`.
fn allow_with_arg(name: &str, index: u64, mask: u64, value: u64) -> Result<LinuxSyscall, String> {
    let err = |e: oci_spec::OciSpecError| format!("VMM seccomp profile: {e}");
    let arg = if mask == u64::MAX {
        LinuxSeccompArgBuilder::default()
            .index(index as usize)
            .value(value)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .build()
    } else {
        LinuxSeccompArgBuilder::default()
            .index(index as usize)
            .value(mask)
            .value_two(value)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
    }
    .map_err(err)?;
    LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(vec![arg])
        .build()
        .map_err(err)
}

/// `profile` with the one thread whose CPUs the VMM may set: `ring_tid`, the ring
/// thread, which the vCPU threads keep off their own CPU (ring.rs). Any other
/// target (another process, which a root VMM without CAP_SYS_NICE could still
/// re-pin) meets the default action.
pub fn with_ring(profile: &LinuxSeccomp, ring_tid: i32) -> Result<LinuxSeccomp, String> {
    let tid = u64::try_from(ring_tid)
        .ok()
        .filter(|&t| t != 0)
        .ok_or("VMM seccomp profile: the ring thread has no id")?;
    let rule = allow_with_arg("sched_setaffinity", 0, u64::MAX, tid)?;
    let mut p = profile.clone();
    let mut rules = p.syscalls().clone().unwrap_or_default();
    rules.push(rule);
    p.set_syscalls(Some(rules));
    Ok(p)
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

/// Puts the VMM in a mount namespace of its own, rooted at the bundle's rootfs
/// (chroot): after `build` it reaches files only through the fds it holds (the
/// rootfs fd, the console, /dev/kvm, its reports), and a path it might be tricked
/// into opening names something inside the rootfs. Needs root (CAP_SYS_ADMIN,
/// CAP_SYS_CHROOT); without it (rootless) there is nothing to do. Must run while the
/// VMM is single-threaded (unshare(CLONE_NEWNS) refuses otherwise).
pub fn enter_rootfs(rootfs: &std::path::Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("VMM mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("VMM mount namespace: make / private: {e}"))?;
    nix::unistd::chroot(rootfs).map_err(|e| format!("VMM: chroot {}: {e}", rootfs.display()))?;
    nix::unistd::chdir("/").map_err(|e| format!("VMM: chdir /: {e}"))
}

/// The capabilities that decide file access, which the VMM keeps when the guest's
/// process has them (a root guest may read another user's file, as in a jail).
const FILE_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
];

/// Drops every capability of the calling thread (bounding set included) but the
/// file-access ones the guest process has in `process.capabilities.effective`.
/// Threads started later inherit the result.
pub fn drop_caps(process: Option<&LinuxCapabilities>) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let keep: Capabilities = process
        .and_then(|c| c.effective().as_ref())
        .map(|e| {
            FILE_CAPS
                .iter()
                .filter(|c| e.contains(c))
                .copied()
                .collect()
        })
        .unwrap_or_default();
    let err = |e: oci_spec::OciSpecError| format!("VMM capabilities: {e}");
    let set = LinuxCapabilitiesBuilder::default()
        .bounding(keep.clone())
        .effective(keep.clone())
        .permitted(keep)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(err)?;
    hyperjail_isolation::caps::drop_bounding(&set)
        .and_then(|()| hyperjail_isolation::caps::apply(&set))
        .map_err(|e| format!("VMM capabilities: {e}"))
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
    /// Runs this test binary again for test `test` alone, with `env` set (the
    /// test then takes its child's part); the signal that ended it and its stdout.
    fn run_child(test: &str, env: &str) -> (Option<i32>, String) {
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args(["--exact", &format!("confine::tests::{test}"), "--nocapture"])
            .args(["--test-threads", "1"])
            .env(env, "1")
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.signal(), stdout)
    }

    /// Set in the child process of `forbidden_syscall_kills`.
    const CHILD: &str = "HJ_VMM_SECCOMP_CHILD";

    /// The VMM's real filter, loaded in a child process (this test binary run again
    /// for this one test): an allowed call works, then socket(2), which the VMM
    /// never needs, kills the process with SIGSYS.
    #[test]
    fn forbidden_syscall_kills() {
        if std::env::var_os(CHILD).is_some() {
            super::apply(&super::profile().expect("profile")).expect("load the filter");
            let _ = nix::unistd::getpid();
            println!("allowed call made");
            use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
            let _ = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::empty(),
                None,
            );
            println!("socket(2) was allowed");
            return;
        }
        let (signal, stdout) = run_child("forbidden_syscall_kills", CHILD);
        assert_eq!(signal, Some(libc::SIGSYS), "{stdout}");
        assert!(stdout.contains("allowed call made"), "{stdout}");
        assert!(!stdout.contains("socket(2) was allowed"), "{stdout}");
    }

    /// Set in the child process of `affinity_only_of_the_ring_thread`.
    const AFFINITY_CHILD: &str = "HJ_VMM_AFFINITY_CHILD";

    /// With the filter for a ring thread, the VMM may set that thread's CPUs, and
    /// setting another process's (here its parent's, the test runner) kills it.
    #[test]
    fn affinity_only_of_the_ring_thread() {
        if std::env::var_os(AFFINITY_CHILD).is_some() {
            let (tx, rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                let _ = tx.send(nix::unistd::gettid());
                let _ = stop_rx.recv();
            });
            let ring = rx.recv().expect("the thread's id");
            let p = super::with_ring(&super::profile().expect("profile"), ring.as_raw())
                .expect("profile with the ring thread");
            super::apply(&p).expect("load the filter");
            let set = nix::sched::sched_getaffinity(ring).expect("its CPUs");
            nix::sched::sched_setaffinity(ring, &set).expect("set the ring thread's CPUs");
            println!("ring thread's CPUs set");
            let _ = nix::sched::sched_setaffinity(nix::unistd::getppid(), &set);
            println!("another process's CPUs set");
            let _ = stop_tx.send(());
            let _ = t.join();
            return;
        }
        let (signal, stdout) = run_child("affinity_only_of_the_ring_thread", AFFINITY_CHILD);
        assert_eq!(signal, Some(libc::SIGSYS), "{stdout}");
        assert!(stdout.contains("ring thread's CPUs set"), "{stdout}");
        assert!(!stdout.contains("another process's CPUs set"), "{stdout}");
    }

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
