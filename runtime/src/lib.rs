//! hyperjail-runtime: the domain model shared by both backends.
//!
//! A *domain* is one OCI container, identified by its OCI id and a small numeric
//! `domid` (as in Xen, 0 is the host). This crate owns the on-disk state store under
//! `--root` (atomic writes, per-domain locks), the status rules of each verb, the
//! [`Backend`] trait that the jail and the VM implement, and the lifecycle verbs that
//! drive a backend. It never imports a backend: the CLI registers them.

#![forbid(unsafe_code)]

mod backend;
mod error;
mod id;
mod lifecycle;
mod pools;
mod proc;
mod sched;
mod signal;
mod store;
mod switcher;
mod wait;

pub use backend::{
    Backend, BackendKind, CreateOpts, CreateRequest, Created, ExecRequest, GuestProcess, OomWatch,
};
pub use error::Error;
pub use hyperjail_oci::{OciState, Status};
pub use id::DomainId;
pub use lifecycle::{log_line, now_rfc3339, RunOutcome, Runtime, CRASH_FILE};
pub use pools::{online_cpus, Pools, PoolsLock};
pub use proc::{proc_stat, ProcStat};
pub use sched::{DomainSchedInfo, SchedUpdate};
pub use signal::parse_signal;
pub use store::{parse_record, DomainDir, DomainRecord, Store};
pub use switcher::{run_switcher, SWITCHER_VERB};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
