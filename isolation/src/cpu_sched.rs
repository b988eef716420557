//! A domain's Xen-style scheduling parameters applied to Linux: cgroup CPU controls
//! and SCHED_DEADLINE (see hyperjail-sched's [`LinuxCpu`]).

use crate::cgroups::Cgroup;
use crate::resources::Setting;
use crate::{Error, Result};
use hyperjail_sched::{shares_to_weight_v2, Deadline, LinuxCpu, RtGroup};
use std::fs;
use std::path::Path;

/// The cgroup settings of `l`: weight, CFS bandwidth and cpuset, on v1 or v2.
pub fn settings(l: &LinuxCpu) -> Vec<Setting> {
    let (quota, period) = l.cfs;
    let s = |c: &'static str, v1: (&str, String), v2: Option<(&str, String)>| Setting {
        controller: c,
        v1: Some((v1.0.to_string(), v1.1)),
        v2: v2.map(|(f, v)| (f.to_string(), v)),
    };
    let mut out = vec![
        s(
            "cpu",
            ("cpu.shares", l.shares.to_string()),
            Some(("cpu.weight", shares_to_weight_v2(l.shares).to_string())),
        ),
        // v1 takes period and quota apart (quota first to -1 so any period is valid);
        // v2 takes both in cpu.max.
        s("cpu", ("cpu.cfs_quota_us", "-1".into()), None),
        s("cpu", ("cpu.cfs_period_us", period.to_string()), None),
        s(
            "cpu",
            (
                "cpu.cfs_quota_us",
                quota.map_or("-1".into(), |q| q.to_string()),
            ),
            Some((
                "cpu.max",
                format!("{} {period}", quota.map_or("max".into(), |q| q.to_string())),
            )),
        ),
    ];
    if !l.cpus.is_empty() {
        out.push(s(
            "cpuset",
            ("cpuset.cpus", l.cpus.clone()),
            Some(("cpuset.cpus", l.cpus.clone())),
        ));
    }
    out
}

/// Writes the cgroup side of `l` into the domain's cgroup.
pub fn apply_cgroup(cg: &Cgroup, l: &LinuxCpu) -> Result<()> {
    let all = settings(l);
    // v2 has no separate period/quota files: skip the v1-only entries there.
    let v1_cpu = cg.dirs.iter().any(|d| d.join("cpu.cfs_quota_us").exists());
    let list: Vec<Setting> = all
        .into_iter()
        .filter(|s| v1_cpu || s.v2.is_some())
        .collect();
    cg.apply(&list)
}

const SCHED_OTHER: u32 = 0;
const SCHED_DEADLINE: u32 = 6;

/// The kernel's `struct sched_attr` (include/uapi/linux/sched/types.h, first version,
/// 48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SchedAttr {
    /// sizeof(struct sched_attr).
    pub size: u32,
    /// SCHED_* policy.
    pub sched_policy: u32,
    /// SCHED_FLAG_* bits.
    pub sched_flags: u64,
    /// Nice value (SCHED_OTHER/BATCH).
    pub sched_nice: i32,
    /// Static priority (SCHED_FIFO/RR).
    pub sched_priority: u32,
    /// SCHED_DEADLINE runtime, ns.
    pub sched_runtime: u64,
    /// SCHED_DEADLINE deadline, ns.
    pub sched_deadline: u64,
    /// SCHED_DEADLINE period, ns.
    pub sched_period: u64,
}

/// Sets SCHED_DEADLINE (`Some`) or back to SCHED_OTHER (`None`) on one task.
pub fn set_deadline(tid: i32, d: Option<Deadline>) -> Result<()> {
    let attr = match d {
        Some(d) => SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: SCHED_DEADLINE,
            sched_flags: d.flags,
            sched_runtime: d.runtime_ns,
            sched_deadline: d.deadline_ns,
            sched_period: d.period_ns,
            ..Default::default()
        },
        None => SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: SCHED_OTHER,
            ..Default::default()
        },
    };
    set_attr(tid, &attr)
}

/// sched_setattr(2) of task `tid` (0: the caller).
fn set_attr(tid: i32, attr: &SchedAttr) -> Result<()> {
    // SAFETY: sched_setattr reads `attr.size` bytes from a valid, initialised
    // SchedAttr that lives across the call; no memory is written.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(Error::sys(
            format!("sched_setattr of task {tid}"),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Gives task `tid` (0: the caller) SCHED_FIFO at `priority` (1..99).
pub fn set_fifo(tid: i32, priority: u32) -> Result<()> {
    set_rt(tid, SCHED_FIFO, priority)
}

const SCHED_FIFO: u32 = 1;
const SCHED_RR: u32 = 2;

fn set_rt(tid: i32, policy: u32, priority: u32) -> Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy,
        sched_priority: priority,
        ..Default::default()
    };
    set_attr(tid, &attr)
}

/// Moves the calling process into the root cgroup of every hierarchy (best effort): a
/// real-time task needs the root's RT bandwidth on kernels with RT group scheduling.
pub fn enter_root_cgroups() {
    let me = std::process::id().to_string();
    for h in crate::cgroups::hierarchies() {
        let _ = std::fs::write(h.mount_point.join("cgroup.procs"), &me);
    }
}

/// A task's scheduling attributes (sched_getattr).
pub fn get_attr(tid: i32) -> Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` (the 4th argument, our struct's size)
    // bytes into `attr`, a valid exclusive borrow that lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if r != 0 {
        return Err(Error::sys(
            format!("sched_getattr of task {tid}"),
            nix::errno::Errno::last(),
        ));
    }
    Ok(attr)
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn write_file(p: &Path, v: &str) -> Result<()> {
    fs::write(p, v).map_err(|e| Error::io("write", p, e))
}

/// Gives the domain in `cg` a hard real-time budget: RT group bandwidth on its v1
/// `cpu` cgroup (ancestors that have none get their parent's), then SCHED_RR at the
/// group's priority for every task (children inherit it and stay inside the budget).
/// On error, [`clear_rt_group`] undoes what was done.
pub fn apply_rt_group(cg: &Cgroup, g: &RtGroup) -> Result<()> {
    let Some(dir) = cg.controller_dir("cpu") else {
        return Err(Error::Invalid("no v1 cpu controller".into()));
    };
    if !dir.join("cpu.rt_runtime_us").exists() {
        return Err(Error::Invalid(
            "the kernel has no RT group scheduling (cpu.rt_runtime_us)".into(),
        ));
    }
    // Ancestors top-down, below the hierarchy's root: each needs RT bandwidth to give.
    let mut chain: Vec<&Path> = dir.ancestors().skip(1).collect();
    chain.reverse();
    for a in chain.windows(2) {
        let (parent, child) = (a[0], a[1]);
        let f = child.join("cpu.rt_runtime_us");
        if !f.exists() || !parent.join("cpu.rt_runtime_us").exists() {
            continue;
        }
        if read_u64(&f) == Some(0) {
            let pr = read_u64(&parent.join("cpu.rt_runtime_us")).unwrap_or(0);
            let pp = read_u64(&parent.join("cpu.rt_period_us")).unwrap_or(1_000_000);
            write_file(&child.join("cpu.rt_period_us"), &pp.to_string())?;
            write_file(&f, &pr.to_string())?;
        }
    }
    let done = (|| {
        // Same period: the budget changes in place (the kernel refuses, EBUSY, one
        // that the ancestors cannot give). A new period: the tasks leave real time and
        // the budget goes to 0 first (a group with RT tasks cannot have none), so that
        // any period is accepted.
        if read_u64(&dir.join("cpu.rt_period_us")) != Some(g.period_us) {
            clear_rt_group(cg);
            write_file(&dir.join("cpu.rt_period_us"), &g.period_us.to_string())?;
        }
        write_file(&dir.join("cpu.rt_runtime_us"), &g.runtime_us.to_string())?;
        for t in tasks_of(&cg.pids()) {
            set_rt(t, SCHED_RR, g.priority)?;
        }
        Ok(())
    })();
    if done.is_err() {
        clear_rt_group(cg);
    }
    done
}

/// Returns the domain's real-time tasks to SCHED_OTHER and its RT group budget to 0.
pub fn clear_rt_group(cg: &Cgroup) {
    for t in tasks_of(&cg.pids()) {
        if get_attr(t).is_ok_and(|a| matches!(a.sched_policy, SCHED_FIFO | SCHED_RR)) {
            let _ = set_deadline(t, None);
        }
    }
    if let Some(dir) = cg.controller_dir("cpu") {
        let f = dir.join("cpu.rt_runtime_us");
        if read_u64(&f).is_some_and(|v| v > 0) {
            let _ = fs::write(f, "0");
        }
    }
}

/// Every task (thread) of the given processes.
pub fn tasks_of(pids: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    for p in pids {
        match std::fs::read_dir(format!("/proc/{p}/task")) {
            Ok(rd) => out.extend(
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())),
            ),
            Err(_) => out.push(*p),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyperjail_sched::{DomainSched, Pool, Rtds, Scheduler};

    #[test]
    fn attr_is_the_kernels_first_version() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 48);
    }

    #[test]
    fn settings_for_v1_and_v2() {
        let pool = Pool {
            name: "p".into(),
            cpus: vec![1],
            scheduler: Scheduler::Rtds,
            arinc653: None,
        };
        let r = Rtds::new(10_000, 2_000, false).expect("rtds");
        let s = settings(&LinuxCpu::of(&DomainSched::Rtds(r), &pool));
        let v1: Vec<String> = s
            .iter()
            .filter_map(|s| s.v1.as_ref().map(|(f, v)| format!("{f}={v}")))
            .collect();
        assert_eq!(
            v1,
            [
                "cpu.shares=52428",
                "cpu.cfs_quota_us=-1",
                "cpu.cfs_period_us=10000",
                "cpu.cfs_quota_us=2000",
                "cpuset.cpus=1"
            ]
        );
        let v2: Vec<String> = s
            .iter()
            .filter_map(|s| s.v2.as_ref().map(|(f, v)| format!("{f}={v}")))
            .collect();
        assert_eq!(
            v2,
            ["cpu.weight=2000", "cpu.max=2000 10000", "cpuset.cpus=1"]
        );
    }

    /// SCHED_DEADLINE on a real task reads back through sched_getattr (root only: it
    /// needs CAP_SYS_NICE, and a cpuset spanning the root domain, as the test's own).
    #[test]
    fn deadline_set_and_reset_on_a_task() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIP deadline_set_and_reset_on_a_task: needs root (CAP_SYS_NICE)");
            return;
        }
        let mut child = match std::process::Command::new("sleep").arg("10").spawn() {
            Ok(c) => c,
            Err(e) => {
                println!("SKIP deadline_set_and_reset_on_a_task: no sleep: {e}");
                return;
            }
        };
        let pid = child.id() as i32;
        let dl = Deadline {
            runtime_ns: 2_000_000,
            deadline_ns: 10_000_000,
            period_ns: 10_000_000,
            flags: hyperjail_sched::SCHED_FLAG_RESET_ON_FORK,
        };
        let set = set_deadline(pid, Some(dl));
        let read = get_attr(pid);
        let reset = set_deadline(pid, None);
        let after = get_attr(pid);
        let _ = child.kill();
        let _ = child.wait();
        match set {
            Err(e) if e.to_string().contains("EPERM") || e.to_string().contains("EBUSY") => {
                println!("SKIP deadline_set_and_reset_on_a_task: the kernel refused: {e}");
                return;
            }
            r => r.expect("sched_setattr SCHED_DEADLINE"),
        }
        let a = read.expect("sched_getattr");
        assert_eq!(a.sched_policy, SCHED_DEADLINE);
        assert_eq!((a.sched_runtime, a.sched_period), (2_000_000, 10_000_000));
        assert_ne!(a.sched_flags & hyperjail_sched::SCHED_FLAG_RESET_ON_FORK, 0);
        reset.expect("back to SCHED_OTHER");
        assert_eq!(after.expect("sched_getattr").sched_policy, SCHED_OTHER);
    }

    #[test]
    fn own_policy_reads_back() {
        let a = get_attr(0).expect("sched_getattr of self");
        assert_eq!(a.sched_policy, SCHED_OTHER);
    }
}
