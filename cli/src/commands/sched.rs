//! xl-style verbs: `sched credit|credit2|rtds|arinc653`, `cpupool ...`, `list --long`,
//! and the hidden `arinc653-switcher` that the runtime starts per ARINC 653 pool.

use crate::args::{ListFormat, PoolCmd, SchedCmd};
use anyhow::{anyhow, bail, Result};
use hyperjail_runtime::{DomainSchedInfo, Runtime, SchedUpdate, Status};
use hyperjail_sched::{parse_cpus, Arinc653, DomainSched, Pool, Scheduler, Slot};
use serde_json::json;
use std::io::Write;

/// A non-negative flag value; a negative one is an error naming the flag.
fn non_negative(v: Option<i64>, what: &str) -> Result<Option<u64>> {
    match v {
        Some(n) if n < 0 => bail!("{what} {n} is negative"),
        v => Ok(v.map(|n| n as u64)),
    }
}

fn ms(s: &str, what: &str) -> Result<u64> {
    let us = hyperjail_sched::parse_ms_us(s)
        .ok_or_else(|| anyhow!("{what} {s:?} is not a time in ms (like 20 or 2.5)"))?;
    Ok(us)
}

/// `sched ...`.
pub fn sched(rt: &Runtime, cmd: &SchedCmd) -> Result<()> {
    let (scheduler, domain, upd, format) = match cmd {
        SchedCmd::Credit(a) | SchedCmd::Credit2(a) => {
            let s = if matches!(cmd, SchedCmd::Credit(_)) {
                Scheduler::Credit
            } else {
                Scheduler::Credit2
            };
            let u = SchedUpdate {
                weight: non_negative(a.weight, "weight")?,
                cap: non_negative(a.cap, "cap")?,
                ..Default::default()
            };
            (s, &a.domain, u, a.format)
        }
        SchedCmd::Rtds(a) => {
            let extratime = match a.extratime {
                None => None,
                Some(0) => Some(false),
                Some(1) => Some(true),
                Some(n) => bail!("extratime {n} must be 0 or 1"),
            };
            let u = SchedUpdate {
                period_us: non_negative(a.period, "period")?,
                budget_us: non_negative(a.budget, "budget")?,
                extratime,
                ..Default::default()
            };
            (Scheduler::Rtds, &a.domain, u, a.format)
        }
        SchedCmd::Arinc653(a) => return arinc653(rt, a),
    };
    let changes = upd.weight.is_some()
        || upd.cap.is_some()
        || upd.period_us.is_some()
        || upd.budget_us.is_some()
        || upd.extratime.is_some();
    match domain {
        Some(d) if changes => Ok(rt.sched_set(d, scheduler, &upd)?),
        Some(_) | None if changes => bail!("give the domain to change with -d DOMAIN"),
        _ => print_sched(rt, scheduler, domain.as_deref(), format),
    }
}

fn print_sched(rt: &Runtime, s: Scheduler, domain: Option<&str>, f: ListFormat) -> Result<()> {
    let mut all: Vec<DomainSchedInfo> = rt
        .sched_info()?
        .into_iter()
        .filter(|i| i.pool.scheduler == s && i.status != Status::Stopped)
        .collect();
    if let Some(d) = domain {
        all.retain(|i| i.rec.id == d);
        if all.is_empty() {
            let (rec, _) = rt.record(d)?;
            bail!("domain {d} is in pool {}, which does not run {s}", rec.pool);
        }
    }
    let mut out = std::io::stdout().lock();
    if f == ListFormat::Json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|i| {
                let mut v = json!({"name": i.rec.id, "domid": i.rec.domid, "pool": i.pool.name});
                if let (Some(o), Ok(serde_json::Value::Object(p))) =
                    (v.as_object_mut(), serde_json::to_value(&i.sched))
                {
                    o.extend(p);
                }
                if !i.rec.sched_note.is_empty() {
                    v["note"] = json!(i.rec.sched_note);
                }
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    let mut pools: Vec<&Pool> = Vec::new();
    for i in &all {
        if !pools.iter().any(|p| p.name == i.pool.name) {
            pools.push(&i.pool);
        }
    }
    for p in pools {
        writeln!(
            out,
            "Cpupool {}: sched={} cpus={}",
            p.name,
            p.scheduler,
            hyperjail_sched::format_cpus(&p.cpus)
        )?;
        match s {
            Scheduler::Credit | Scheduler::Credit2 => writeln!(
                out,
                "{:<32} {:>5} {:>6} {:>4}",
                "Name", "ID", "Weight", "Cap"
            )?,
            _ => writeln!(
                out,
                "{:<32} {:>5} {:>9} {:>9} {:>9}",
                "Name", "ID", "Period", "Budget", "Extratime"
            )?,
        }
        for i in all.iter().filter(|i| i.pool.name == p.name) {
            match &i.sched {
                DomainSched::Credit(c) | DomainSched::Credit2(c) => writeln!(
                    out,
                    "{:<32} {:>5} {:>6} {:>4}",
                    i.rec.id, i.rec.domid, c.weight, c.cap
                )?,
                DomainSched::Rtds(r) => writeln!(
                    out,
                    "{:<32} {:>5} {:>9} {:>9} {:>9}",
                    i.rec.id, i.rec.domid, r.period_us, r.budget_us, r.extratime as u8
                )?,
                DomainSched::Arinc653 => {}
            }
            if !i.rec.sched_note.is_empty() {
                writeln!(out, "  note: {}", i.rec.sched_note)?;
            }
        }
    }
    Ok(())
}

fn arinc653(rt: &Runtime, a: &crate::args::ArincArgs) -> Result<()> {
    let Some(mf) = &a.major_frame else {
        if !a.slot.is_empty() {
            bail!("--slot needs --major-frame");
        }
        let pool = rt.pools().get(&a.pool)?;
        if pool.scheduler != Scheduler::Arinc653 {
            bail!(
                "cpupool {} runs {}, not arinc653",
                pool.name,
                pool.scheduler
            );
        }
        let s = pool.arinc653.unwrap_or_default();
        let mut out = std::io::stdout().lock();
        if a.format == ListFormat::Json {
            writeln!(out, "{}", serde_json::to_string(&s)?)?;
            return Ok(());
        }
        writeln!(
            out,
            "Cpupool {}: major frame {} ms",
            a.pool,
            s.major_frame_us as f64 / 1000.0
        )?;
        writeln!(
            out,
            "{:<32} {:>10} {:>10}",
            "Slot domain", "Start(ms)", "Length(ms)"
        )?;
        for (off, sl) in s.offsets() {
            writeln!(
                out,
                "{:<32} {:>10} {:>10}",
                sl.domain,
                off as f64 / 1000.0,
                sl.runtime_us as f64 / 1000.0
            )?;
        }
        return Ok(());
    };
    let major = ms(mf, "--major-frame")?;
    let mut slots = Vec::new();
    for s in &a.slot {
        let (d, t) = s
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("--slot {s:?} is not DOMAIN:MS"))?;
        slots.push(Slot {
            domain: d.to_string(),
            runtime_us: ms(t, "slot length")?,
        });
    }
    let sched = Arinc653::new(major, slots)?;
    Ok(rt.arinc653_set(&a.pool, sched)?)
}

/// `cpupool ...`.
pub fn cpupool(rt: &Runtime, cmd: &PoolCmd) -> Result<()> {
    match cmd {
        PoolCmd::Create { name, cpus, sched } => {
            let pool = Pool {
                name: name.clone(),
                cpus: parse_cpus(cpus)?,
                scheduler: sched.parse()?,
                arinc653: None,
            };
            Ok(rt.cpupool_create(&pool)?)
        }
        PoolCmd::Destroy { name } => Ok(rt.cpupool_destroy(name)?),
        PoolCmd::Migrate { domain, pool } => Ok(rt.cpupool_migrate(domain, pool)?),
        PoolCmd::List { format } => {
            let pools = rt.pools().list()?;
            let info = rt.sched_info()?;
            let count = |p: &Pool| {
                info.iter()
                    .filter(|i| i.pool.name == p.name && i.status != Status::Stopped)
                    .count()
            };
            let mut out = std::io::stdout().lock();
            if *format == ListFormat::Json {
                let v: Vec<_> = pools
                    .iter()
                    .map(|p| {
                        json!({"name": p.name, "cpus": hyperjail_sched::format_cpus(&p.cpus),
                               "sched": p.scheduler, "domains": count(p)})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string(&v)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<24} {:>5} {:<10} {:<9} Domains",
                "Name", "CPUs", "Sched", "Cpulist"
            )?;
            for p in &pools {
                writeln!(
                    out,
                    "{:<24} {:>5} {:<10} {:<9} {}",
                    p.name,
                    p.cpus.len(),
                    p.scheduler.name(),
                    hyperjail_sched::format_cpus(&p.cpus),
                    count(p)
                )?;
            }
            Ok(())
        }
    }
}

/// xl's state letters: r running, b blocked, p paused, s shutdown, c crashed, d dying.
fn letters(i: &DomainSchedInfo) -> &'static str {
    match i.status {
        Status::Paused => "--p---",
        Status::Stopped => "---s--",
        Status::Running => {
            let busy = hyperjail_runtime::proc_stat(i.rec.pid).is_some_and(|s| s.state == 'R');
            if busy {
                "r-----"
            } else {
                "-b----"
            }
        }
        _ => "------",
    }
}

/// `list --long`: xl's columns.
pub fn list_long(rt: &Runtime, format: ListFormat) -> Result<()> {
    let all = rt.sched_info()?;
    let rows: Vec<(&DomainSchedInfo, f64)> = all
        .iter()
        .map(|i| {
            let ns = if i.status == Status::Stopped {
                0.0
            } else {
                rt.stats(&i.rec.id)
                    .ok()
                    .and_then(|v| v["cpu"]["usage"]["total"].as_f64())
                    .unwrap_or(0.0)
            };
            (i, ns / 1e9)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if format == ListFormat::Json {
        let v: Vec<_> = rows
            .iter()
            .map(|(i, t)| {
                json!({"name": i.rec.id, "domid": i.rec.domid, "backend": i.rec.backend,
                       "pool": i.pool.name, "vcpus": i.pool.cpus.len(), "state": letters(i),
                       "status": i.status.as_str(), "cpu_time": t})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<32} {:>5} {:<7} {:<12} {:>5} {:<6} {:>9}",
        "Name", "ID", "Backend", "Pool", "VCPUs", "State", "Time(s)"
    )?;
    writeln!(
        out,
        "{:<32} {:>5} {:<7} {:<12} {:>5} {:<6} {:>9}",
        "Domain-0",
        0,
        "host",
        hyperjail_sched::DEFAULT_POOL,
        hyperjail_runtime::online_cpus().map_or(0, |c| c.len()),
        "r-----",
        "-"
    )?;
    for (i, t) in &rows {
        writeln!(
            out,
            "{:<32} {:>5} {:<7} {:<12} {:>5} {:<6} {:>9.1}",
            i.rec.id,
            i.rec.domid,
            i.rec.backend,
            i.pool.name,
            i.pool.cpus.len(),
            letters(i),
            t
        )?;
    }
    Ok(())
}

/// The hidden `arinc653-switcher POOL` verb: leaves the caller's cgroups for the root
/// ones (where a real-time priority is allowed), takes SCHED_FIFO on the pool's CPUs,
/// and runs the switcher until the pool is empty.
pub fn switcher(rt: &Runtime, pool: &str) -> Result<()> {
    let p = rt.pools().get(pool)?;
    if p.scheduler != Scheduler::Arinc653 {
        bail!("cpupool {pool} runs {}, not arinc653", p.scheduler);
    }
    hyperjail_isolation::cpu_sched::enter_root_cgroups();
    let cpus = p.cpus.clone();
    let pool_name = pool.to_string();
    let realtime = move || {
        let mut set = nix::sched::CpuSet::new();
        for c in &cpus {
            let _ = set.set(*c as usize);
        }
        if let Err(e) = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
            eprintln!("arinc653-switcher {pool_name}: cannot run on CPUs {cpus:?}: {e}");
        }
        if let Err(e) = hyperjail_isolation::cpu_sched::set_fifo(0, 50) {
            eprintln!("arinc653-switcher {pool_name}: running without real-time priority: {e}");
        }
    };
    Ok(hyperjail_runtime::run_switcher(rt, pool, &realtime)?)
}
