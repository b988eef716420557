//! Xen-style scheduling controls on a jail: the cgroup side, then the real-time part:
//! RT group bandwidth for a hard RTDS budget, else SCHED_DEADLINE on the domain's task
//! where the kernel allows it, else CFS bandwidth alone (with a note saying so).

use hyperjail_isolation::cgroups::Cgroup;
use hyperjail_isolation::cpu_sched;
use hyperjail_runtime::{Error, Result};
use hyperjail_sched::LinuxCpu;
use nix::errno::Errno;

/// Applies `cpu` to the domain in `cg`; returns what the kernel refused ("" if nothing).
pub fn apply(cg: &Cgroup, cpu: &LinuxCpu) -> Result<String> {
    cpu_sched::apply_cgroup(cg, cpu).map_err(|e| Error::Backend(e.to_string()))?;
    let mut notes = Vec::new();
    if let Some(g) = cpu.rt_group {
        match cpu_sched::apply_rt_group(cg, &g) {
            Ok(()) => return Ok(String::new()),
            Err(e) => notes.push(format!("RT group bandwidth not applied ({e})")),
        }
    } else {
        cpu_sched::clear_rt_group(cg);
    }
    let tasks = cpu_sched::tasks_of(&cg.pids());
    let Some(dl) = cpu.deadline else {
        // Not (or no longer) RTDS: no task keeps SCHED_DEADLINE.
        for t in &tasks {
            if cpu_sched::get_attr(*t).is_ok_and(|a| a.sched_policy == 6) {
                let _ = cpu_sched::set_deadline(*t, None);
            }
        }
        if !notes.is_empty() {
            notes.push("the domain runs best-effort (CFS)".into());
        }
        return Ok(notes.join("; "));
    };
    if tasks.len() != 1 {
        notes.push(format!(
            "SCHED_DEADLINE not applied: it holds for single-task domains and this one has {} tasks",
            tasks.len()
        ));
    } else {
        match cpu_sched::set_deadline(tasks[0], Some(dl)) {
            Ok(()) => return Ok(String::new()),
            Err(hyperjail_isolation::Error::Sys { source, .. }) => {
                let why = match source {
                    Errno::EPERM => "the pool's cpuset does not span the kernel's root domain",
                    Errno::EBUSY => "the kernel's deadline admission control refused the bandwidth",
                    _ => "the kernel refused it",
                };
                notes.push(format!("SCHED_DEADLINE not applied ({source}): {why}"));
            }
            Err(e) => return Err(Error::Backend(e.to_string())),
        }
    }
    notes.push("CFS bandwidth enforces the budget".into());
    Ok(notes.join("; "))
}
