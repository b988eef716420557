//! hyperjail-isolation: the kernel primitives a jail is made of, each small and
//! testable on its own: namespaces, id maps, mounts and the rootfs, devices,
//! capabilities, rlimits, cgroups v1 and v2, the console pty, and path resolution that
//! cannot escape a rootfs.
//!
//! `unsafe` in the workspace lives here (and in the VM backend): each block is small and
//! states its invariant.

pub mod caps;
pub mod cgroups;
pub mod console;
pub mod cpu_sched;
pub mod devices_bpf;
mod error;
pub mod mounts;
pub mod ns;
pub mod process;
pub mod resources;
pub mod rootfs;
pub mod safepath;
pub mod seccomp;
pub mod stats;

pub use error::Error;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
