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

    /// Kills every process of the domain and releases its resources (cgroups, VM
    /// memory). Idempotent: it is also the crash clean-up.
    fn destroy(&self, rec: &DomainRecord) -> Result<()>;
}
