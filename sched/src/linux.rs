//! What a domain's scheduling parameters mean for Linux.

use crate::{DomainSched, Pool, CAP_PERIOD_US};

/// sched_attr flag: children of the task start with the default policy.
pub const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;
/// sched_attr flag: a deadline task may reclaim bandwidth others leave unused (GRUB).
pub const SCHED_FLAG_RECLAIM: u64 = 0x02;

/// SCHED_DEADLINE attributes, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    /// Runtime per period (the RTDS budget).
    pub runtime_ns: u64,
    /// Relative deadline (the RTDS period).
    pub deadline_ns: u64,
    /// Period.
    pub period_ns: u64,
    /// `SCHED_FLAG_*` bits.
    pub flags: u64,
}

/// The Linux CPU controls that realise a domain's parameters in its pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxCpu {
    /// cgroup v1 `cpu.shares` (v2 `cpu.weight` via [`crate::shares_to_weight_v2`]).
    pub shares: u64,
    /// CFS bandwidth (quota µs, period µs); quota None = unlimited.
    pub cfs: (Option<u64>, u64),
    /// The cpuset (`cpuset.cpus`) in kernel list format.
    pub cpus: String,
    /// SCHED_DEADLINE for the domain's tasks (RTDS only).
    pub deadline: Option<Deadline>,
    /// Real-time group bandwidth for the whole domain (RTDS without extratime).
    pub rt_group: Option<RtGroup>,
}

/// A hard budget for a whole domain with RT group scheduling (cgroup v1
/// `cpu.rt_period_us` / `cpu.rt_runtime_us`): its tasks run SCHED_RR at `priority`,
/// ahead of every best-effort task, and the group is throttled once it has used
/// `runtime_us` in a `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtGroup {
    /// Period in µs.
    pub period_us: u64,
    /// Runtime per period in µs (the RTDS budget).
    pub runtime_us: u64,
    /// SCHED_RR priority: rate-monotonic, a shorter period gets a higher priority.
    pub priority: u32,
}

/// Rate-monotonic SCHED_RR priority for a period: 100 µs ↦ 72, 10 ms ↦ 45, 1 s ↦ 19.
pub fn rate_monotonic_priority(period_us: u64) -> u32 {
    let l = (period_us.max(1) as f64).log2() * 4.0;
    (98.0 - l.floor()).clamp(1.0, 98.0) as u32
}

/// cpu.shares of an RTDS domain: the budget must win against best-effort tasks
/// (1024 each) when they compete, so the share is the utilisation of the whole scale.
fn rtds_shares(util: f64) -> u64 {
    ((util * 262_144.0) as u64).clamp(2, 262_144)
}

impl LinuxCpu {
    /// The controls for a domain with `sched` in `pool`.
    pub fn of(sched: &DomainSched, pool: &Pool) -> LinuxCpu {
        let cpus = crate::format_cpus(&pool.cpus);
        match sched {
            DomainSched::Credit(c) | DomainSched::Credit2(c) => LinuxCpu {
                shares: c.cpu_shares(),
                cfs: match c.cfs_bandwidth() {
                    Some((q, p)) => (Some(q), p),
                    None => (None, CAP_PERIOD_US),
                },
                cpus,
                deadline: None,
                rt_group: None,
            },
            DomainSched::Rtds(r) => {
                // CFS accepts quotas from 1 ms: scale short budgets and their period.
                let k = 1000u64.div_ceil(r.budget_us).max(1);
                let cfs = if r.extratime {
                    (None, r.period_us * k)
                } else {
                    (Some(r.budget_us * k), r.period_us * k)
                };
                let mut flags = SCHED_FLAG_RESET_ON_FORK;
                if r.extratime {
                    flags |= SCHED_FLAG_RECLAIM;
                }
                LinuxCpu {
                    shares: rtds_shares(r.utilisation()),
                    cfs,
                    cpus,
                    deadline: Some(Deadline {
                        runtime_ns: r.budget_us * 1000,
                        deadline_ns: r.period_us * 1000,
                        period_ns: r.period_us * 1000,
                        flags,
                    }),
                    rt_group: (!r.extratime).then(|| RtGroup {
                        period_us: r.period_us,
                        runtime_us: r.budget_us,
                        priority: rate_monotonic_priority(r.period_us),
                    }),
                }
            }
            // Thawed only in its slots, and there with the largest weight, so that a
            // best-effort task on the pool's CPUs gets 1024/263168 (0.4%) of a slot.
            // Not real-time: the kernel caps all RT groups together at 95% of a CPU
            // (sched_rt_runtime_us), which would cut every slot by 5%.
            DomainSched::Arinc653 => LinuxCpu {
                shares: 262_144,
                cfs: (None, CAP_PERIOD_US),
                cpus,
                deadline: None,
                rt_group: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credit, Rtds, Scheduler};

    fn pool(cpus: &[u32]) -> Pool {
        Pool {
            name: "p".into(),
            cpus: cpus.to_vec(),
            scheduler: Scheduler::Credit,
            arinc653: None,
        }
    }

    #[test]
    fn credit() {
        let l = LinuxCpu::of(
            &DomainSched::Credit(Credit::new(512, 20, 2).expect("c")),
            &pool(&[0, 1]),
        );
        assert_eq!(l.shares, 2048);
        assert_eq!(l.cfs, (Some(20_000), 100_000));
        assert_eq!(l.cpus, "0-1");
        assert_eq!(l.deadline, None);
    }

    #[test]
    fn rtds() {
        let r = Rtds::new(10_000, 2_000, false).expect("r");
        let l = LinuxCpu::of(&DomainSched::Rtds(r), &pool(&[1]));
        assert_eq!(l.cfs, (Some(2_000), 10_000));
        assert_eq!(l.shares, 52_428);
        let d = l.deadline.expect("deadline");
        assert_eq!((d.runtime_ns, d.period_ns), (2_000_000, 10_000_000));
        assert_eq!(d.flags, SCHED_FLAG_RESET_ON_FORK);
        let g = l.rt_group.expect("hard budget: an RT group");
        assert_eq!((g.runtime_us, g.period_us, g.priority), (2_000, 10_000, 45));
        assert!(rate_monotonic_priority(20_000) < 45);
        assert_eq!(rate_monotonic_priority(100), 72);
        assert_eq!(rate_monotonic_priority(1_000_000), 19);
        // Short budget: CFS quota scaled to 1 ms, same ratio.
        let r = Rtds::new(1_000, 250, false).expect("short");
        assert_eq!(
            LinuxCpu::of(&DomainSched::Rtds(r), &pool(&[1])).cfs,
            (Some(1_000), 4_000)
        );
        // Extratime: no hard cap, reclaim flag.
        let r = Rtds::new(10_000, 4_000, true).expect("extra");
        let l = LinuxCpu::of(&DomainSched::Rtds(r), &pool(&[1]));
        assert_eq!(l.cfs.0, None);
        assert_ne!(l.deadline.expect("dl").flags & SCHED_FLAG_RECLAIM, 0);
        assert_eq!(l.rt_group, None);
    }

    #[test]
    fn arinc653_slots_outweigh_best_effort() {
        let mut p = pool(&[1]);
        p.scheduler = Scheduler::Arinc653;
        let l = LinuxCpu::of(&DomainSched::Arinc653, &p);
        assert_eq!((l.shares, l.rt_group, l.cfs.0), (262_144, None, None));
    }
}
