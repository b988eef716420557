//! hyperjail-jail: the jail backend. A domain is a process tree in its own namespaces,
//! rooted at the bundle's rootfs by pivot_root, held in a cgroup, with the
//! configured identity, capabilities and limits.
//!
//! Process structure (as runc's nsexec, in Rust): the runtime forks *stage 1*, which
//! joins or creates the namespaces (user namespace first, its id maps written by the
//! runtime), then forks *init* (pid 1 of a new pid namespace) and exits. Init builds
//! the rootfs, runs the in-container hooks, drops privileges and waits on the start
//! socket; `start` connects to it and init execs the user program. The three talk over
//! a typed channel ([`sync::Msg`]); an error in stage 1 or init reaches the CLI as one
//! line.

mod backend;
mod create;
mod error;
mod exec;
mod init;
mod proc_setup;
mod sched;
mod sync;

pub use backend::JailBackend;
pub use create::connect_console;
pub use error::Error;
