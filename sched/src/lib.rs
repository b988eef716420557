//! hyperjail-sched: Xen's schedulers for domains and their Linux meaning.
//!
//! Pure models, no system calls: parameters are validated with Xen's ranges
//! ([`Credit`], [`Rtds`], [`Arinc653`]), CPU pools are named CPU sets with one
//! [`Scheduler`] each ([`Pool`]), RTDS admission control is arithmetic ([`admit`]), and
//! [`LinuxCpu`] is what a domain's parameters mean for Linux: cgroup `cpu.shares` /
//! `cpu.weight`, CFS quota/period, the cpuset, and SCHED_DEADLINE attributes. The
//! isolation layer writes those values; the runtime keeps pools and records.

#![forbid(unsafe_code)]

mod annotations;
mod arinc;
mod cpulist;
mod credit;
mod linux;
mod pool;
mod rtds;

pub use annotations::{parse_annotations, SchedRequest, ANNOTATION_PREFIX, POOL_ANNOTATION};
pub use arinc::{parse_ms_us, Arinc653, Slot};
pub use cpulist::{format_cpus, parse_cpus};
pub use credit::{shares_to_weight_v2, Credit, CAP_PERIOD_US};
pub use linux::{
    rate_monotonic_priority, Deadline, LinuxCpu, RtGroup, SCHED_FLAG_RECLAIM,
    SCHED_FLAG_RESET_ON_FORK,
};
pub use pool::{validate_pool_name, DomainSched, Pool, Scheduler, DEFAULT_POOL};
pub use rtds::{admit, Rtds};

/// A parameter outside Xen's rules. Every message names the rule that was broken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// Credit weight outside 1..=65535.
    #[error("weight {0} is outside 1..65535")]
    Weight(u64),
    /// Credit cap above what the CPUs can give.
    #[error("cap {cap}% is above 100% per CPU of the {cpus} CPUs")]
    Cap {
        /// The cap asked for.
        cap: u64,
        /// CPUs there are.
        cpus: u32,
    },
    /// RTDS budget or period invalid.
    #[error("rtds: {0}")]
    Rtds(String),
    /// Admission control refused a domain.
    #[error("rtds admission: utilisation {total:.3} (sum of budget/period) would exceed the pool's {cpus} CPUs (this domain adds {added:.3})")]
    Admission {
        /// Sum of budget/period with the new domain.
        total: f64,
        /// What the new domain adds.
        added: f64,
        /// CPUs of the pool.
        cpus: u32,
    },
    /// An ARINC 653 schedule breaks a rule.
    #[error("arinc653: {0}")]
    Arinc(String),
    /// A CPU list or pool definition is wrong.
    #[error("cpupool: {0}")]
    Pool(String),
    /// An annotation value is wrong.
    #[error("annotation {key}: {why}")]
    Annotation {
        /// The annotation key.
        key: String,
        /// What is wrong with its value.
        why: String,
    },
}
