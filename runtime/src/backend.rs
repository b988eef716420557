//! The trait every backend implements, and what `create` hands to it.

use crate::{DomainDir, DomainId, DomainRecord, Result};
use hyperjail_oci::Bundle;
use std::path::PathBuf;

/// Which backend runs a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Namespaces, cgroups, seccomp: the host kernel is shared.
    Jail,
    /// A KVM microVM with its own guest kernel.
    Vm,
}

impl BackendKind {
    /// Name used in state and annotations.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Jail => "jail",
            BackendKind::Vm => "vm",
        }
    }
}

/// Options of `create` / `run` that runc accepts.
#[derive(Clone, Debug, Default)]
pub struct CreateOpts {
    /// Write the container pid here.
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (SCM_RIGHTS).
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Do not create a session keyring.
    pub no_new_keyring: bool,
    /// Pass fds 3 .. 3+N to the container process.
    pub preserve_fds: u32,
    /// `run` without `--detach`: the caller waits for the container.
    pub foreground: bool,
    /// The runtime's `--log` file: a backend's own warnings after `create` returns
    /// (the VMM's unsupported system calls) go there.
    pub log: Option<PathBuf>,
    /// `--log-format json`.
    pub log_json: bool,
}

/// Everything a backend needs to build a domain.
#[derive(Debug)]
pub struct CreateRequest<'a> {
    /// The domain id.
    pub id: &'a DomainId,
    /// The loaded bundle.
    pub bundle: &'a Bundle,
    /// The locked state directory.
    pub dir: &'a DomainDir,
    /// CLI options.
    pub opts: &'a CreateOpts,
}

/// What a successful `create` leaves behind.
#[derive(Debug)]
pub struct Created {
    /// Host pid of the container process.
    pub pid: i32,
}

/// A new process to run inside an existing domain (`exec`).
#[derive(Clone, Debug)]
pub struct ExecRequest {
    /// The process, complete (args, env, cwd, user, capabilities, terminal, ...).
    pub process: oci_spec::runtime::Process,
    /// Unix socket that receives the pty master when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// Write the new process's pid here.
    pub pid_file: Option<PathBuf>,
    /// Pass fds 3 .. 3+N.
    pub preserve_fds: u32,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    /// Set by the runtime: its lock on the domain, held while the process starts. A
    /// helper the backend forks must close its copy.
    pub lock_fd: Option<std::os::fd::RawFd>,
}

/// A process of a domain with a kernel of its own (`ps` of a VM domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestProcess {
    /// Its pid in the guest.
    pub pid: i32,
    /// Its parent's pid in the guest (0: started from the host).
    pub ppid: i32,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Waits for OOM kills in a domain (an eventfd on v1, memory.events on v2).
pub trait OomWatch {
    /// Waits up to `timeout`; true if at least one OOM kill happened since last time.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool>;
}

/// A way of running a domain. The jail and the VM implement it; the runtime drives it
/// and cannot tell them apart.
pub trait Backend {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Builds the domain and returns once its process exists and waits for `start`.
    /// It fills `rec.pid`, `rec.pid_start` and `rec.cgroups`, saves `rec` (status
    /// `creating`) before running createRuntime hooks, and runs the create-time hooks.
    /// On error the runtime calls [`Backend::destroy`] with whatever `rec` holds.
    fn create(&self, req: &CreateRequest<'_>, rec: &mut DomainRecord) -> Result<()>;

    /// Lets the waiting container process run the user program.
    fn start(&self, rec: &DomainRecord, dir: &DomainDir) -> Result<()>;

    /// Sends `signal` to the container process, or to every process of the domain.
    fn kill(&self, rec: &DomainRecord, signal: i32, all: bool) -> Result<()>;

    /// Whether the domain is frozen.
    fn is_paused(&self, rec: &DomainRecord) -> bool;

    /// Freezes every process of the domain.
    fn pause(&self, rec: &DomainRecord) -> Result<()>;

    /// Thaws a frozen domain.
    fn resume(&self, rec: &DomainRecord) -> Result<()>;

    /// Host pids of every process of the domain.
    fn pids(&self, rec: &DomainRecord) -> Result<Vec<i32>>;

    /// Changes the resource limits of a live domain.
    fn update(
        &self,
        rec: &DomainRecord,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()>;

    /// Starts a new process inside the domain (config is the domain's config.json);
    /// returns its host pid once it runs the program.
    fn exec(
        &self,
        rec: &DomainRecord,
        config: &oci_spec::runtime::Spec,
        req: &ExecRequest,
    ) -> Result<i32>;

    /// runc's `events --stats` data object.
    fn stats(&self, rec: &DomainRecord) -> Result<serde_json::Value>;

    /// A watcher for the domain's OOM kills.
    fn oom_watcher(&self, rec: &DomainRecord) -> Result<Box<dyn OomWatch>>;

    /// Applies Xen-style scheduling controls to a live domain (cgroup CPU weight,
    /// bandwidth and cpuset; SCHED_DEADLINE on its tasks). Returns a one-line note on
    /// what the kernel refused and what enforces the parameters instead ("" if all).
    fn set_sched(&self, rec: &DomainRecord, cpu: &hyperjail_sched::LinuxCpu) -> Result<String>;

    /// Freezes or thaws the domain without waiting for the kernel to finish (the
    /// ARINC 653 partition switcher, at every slot boundary).
    fn hold(&self, rec: &DomainRecord, frozen: bool) -> Result<()>;

    /// The domain's processes as its own kernel lists them, when they are not host
    /// processes (a VM's guest); `None` (the default): they are host processes, and
    /// [`Backend::pids`] names them.
    fn guest_processes(&self, _rec: &DomainRecord) -> Result<Option<Vec<GuestProcess>>> {
        Ok(None)
    }

    /// Kills every process of the domain and releases its resources (cgroups, VM
    /// memory). Idempotent: it is also the crash clean-up.
    fn destroy(&self, rec: &DomainRecord) -> Result<()>;

    /// The existing cgroup directories of domain `id` created from `config`, worked out
    /// without its record: `delete --force` of a domain whose state.json is unreadable
    /// uses them to kill its processes and remove them. By default none.
    fn cgroups_of(&self, _id: &DomainId, _config: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
        Vec::new()
    }
}
