//! Xen-style scheduling of domains: admission at create, `sched` and `cpupool` verbs.
//! The ARINC 653 partition switcher is in [`crate::switcher`].

use crate::pools::{Pools, PoolsLock};
use crate::{DomainId, DomainRecord, Error, Result, Runtime, Status};
use hyperjail_sched::{
    admit, parse_annotations, Arinc653, Credit, DomainSched, LinuxCpu, Pool, Rtds, Scheduler, Slot,
    DEFAULT_POOL,
};

/// New values for `sched credit|credit2|rtds -d DOMAIN`; what is `None` stays.
#[derive(Clone, Debug, Default)]
pub struct SchedUpdate {
    /// Credit weight.
    pub weight: Option<u64>,
    /// Credit cap, percent of one CPU.
    pub cap: Option<u64>,
    /// RTDS period, µs.
    pub period_us: Option<u64>,
    /// RTDS budget, µs.
    pub budget_us: Option<u64>,
    /// RTDS extratime.
    pub extratime: Option<bool>,
}

/// One domain's line in `sched ...` and `list --long`.
#[derive(Clone, Debug)]
pub struct DomainSchedInfo {
    /// The record.
    pub rec: DomainRecord,
    /// Status now.
    pub status: Status,
    /// Its pool.
    pub pool: Pool,
    /// Its parameters (the pool's defaults when none were set).
    pub sched: DomainSched,
}

fn sched_err(e: hyperjail_sched::Error) -> Error {
    Error::Backend(e.to_string())
}

/// Confines a domain without scheduling parameters to its pool's CPUs, leaving its
/// other CPU controls (weight, quota) as its config set them.
fn confine_cpus(b: &dyn crate::Backend, rec: &DomainRecord, pool: &Pool) -> Result<()> {
    let cpu = oci_spec::runtime::LinuxCpuBuilder::default()
        .cpus(hyperjail_sched::format_cpus(&pool.cpus))
        .build()
        .map_err(|e| Error::Backend(e.to_string()))?;
    let r = oci_spec::runtime::LinuxResourcesBuilder::default()
        .cpu(cpu)
        .build()
        .map_err(|e| Error::Backend(e.to_string()))?;
    b.update(rec, &r)
}

/// The pool's schedule with `domain`'s slot (re)placed at the end. The major frame
/// grows to the sum of the slots if they no longer fit (a frame set by `sched
/// arinc653` is kept while they do).
fn with_slot(pool: &Pool, domain: &str, us: u64) -> Result<Arinc653> {
    let mut s = pool.arinc653.clone().unwrap_or_default().without(domain);
    s.slots.push(Slot {
        domain: domain.to_string(),
        runtime_us: us,
    });
    let sum: u64 = s.slots.iter().map(|s| s.runtime_us).sum();
    s.major_frame_us = s.major_frame_us.max(sum);
    s.validate().map_err(sched_err)?;
    Ok(s)
}

/// What a new domain was admitted with, until its record is saved.
pub(crate) struct Admitted {
    /// Held until the domain's record names its pool (so admissions serialise).
    _lock: PoolsLock,
    pool: Pool,
    /// `None`: nothing was asked for; the domain only leaves other pools' CPUs.
    sched: Option<DomainSched>,
    slot_us: Option<u64>,
}

impl Runtime {
    /// The CPU pools of this state root.
    pub fn pools(&self) -> Pools {
        Pools::new(self.store().root())
    }

    /// Live domains (not stopped) of a pool, with their records.
    pub(crate) fn members(&self, pool: &str) -> Result<Vec<DomainRecord>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(r, st)| r.pool == pool && *st != Status::Stopped)
            .map(|(r, _)| r)
            .collect())
    }

    /// `create`: the pool and parameters the annotations ask for, admitted (RTDS
    /// utilisation) against the pool's other domains. `None`: nothing asked and no
    /// pool other than Pool-0 exists, so nothing is applied (the cheap path).
    pub(crate) fn admit_new(&self, rec: &mut DomainRecord) -> Result<Option<Admitted>> {
        let req = parse_annotations(&rec.annotations).map_err(sched_err)?;
        let pools = self.pools();
        if req.is_empty() && !pools.dir().exists() {
            return Ok(None);
        }
        let lock = pools.lock()?;
        let all = pools.list()?;
        if req.is_empty() && all.len() == 1 {
            return Ok(None);
        }
        if req.is_empty() {
            // Other pools hold CPUs: the domain runs in Pool-0's. Its own CPU limits
            // (linux.resources.cpu) stay as the config set them.
            let pool = all
                .into_iter()
                .next()
                .ok_or_else(|| Error::Backend("cpupool: Pool-0 is missing".into()))?;
            return Ok(Some(Admitted {
                _lock: lock,
                pool,
                sched: None,
                slot_us: None,
            }));
        }
        let name = req.pool.clone().unwrap_or_else(|| DEFAULT_POOL.into());
        let pool = pools.get(&name)?;
        let (sched, slot_us) = req.resolve(&pool).map_err(sched_err)?;
        if let DomainSched::Rtds(r) = &sched {
            self.admit_rtds(&pool, r, &rec.id)?;
        }
        if slot_us.is_some() && pool.scheduler != Scheduler::Arinc653 {
            return Err(Error::Backend(format!(
                "annotation org.hyperjail.sched.arinc653.slot: pool {} runs {}, not arinc653",
                pool.name, pool.scheduler
            )));
        }
        if let Some(us) = slot_us {
            with_slot(&pool, &rec.id, us)?;
        }
        rec.pool = pool.name.clone();
        rec.sched = Some(sched.clone());
        Ok(Some(Admitted {
            _lock: lock,
            pool,
            sched: Some(sched),
            slot_us,
        }))
    }

    /// After the backend built the domain: apply its controls, and for ARINC 653 put
    /// its slot into the pool's schedule and make sure the pool's switcher runs.
    pub(crate) fn apply_new(&self, rec: &mut DomainRecord, a: Admitted) -> Result<()> {
        let b = self.backend_of(rec)?;
        let mut pool = a.pool.clone();
        if let Some(us) = a.slot_us {
            pool.arinc653 = Some(with_slot(&a.pool, &rec.id, us)?);
        }
        if pool.scheduler == Scheduler::Arinc653 {
            // The switcher first: if it cannot run, the schedule stays as it was.
            crate::switcher::ensure(self.store().root(), &pool.name)?;
            if a.slot_us.is_some() {
                self.pools().save(&a._lock, &pool)?;
                // The frame may have grown: the others' real-time periods follow.
                self.reapply_pool(&pool.name)?;
            }
        }
        match &a.sched {
            Some(sched) => rec.sched_note = b.set_sched(rec, &LinuxCpu::of(sched, &pool))?,
            None => confine_cpus(b, rec, &pool)?,
        }
        Ok(())
    }

    fn admit_rtds(&self, pool: &Pool, new: &Rtds, except: &str) -> Result<()> {
        let others: Vec<Rtds> = self
            .members(&pool.name)?
            .into_iter()
            .filter(|r| r.id != except)
            .filter_map(|r| match r.sched {
                Some(DomainSched::Rtds(x)) => Some(x),
                _ => None,
            })
            .collect();
        admit(&others, new, pool.ncpus()).map_err(sched_err)
    }

    /// Every live domain with its pool and parameters (`list --long`, `sched ...`).
    pub fn sched_info(&self) -> Result<Vec<DomainSchedInfo>> {
        let pools = self.pools().list()?;
        let mut out = Vec::new();
        for (rec, status) in self.list()? {
            let Some(pool) = pools.iter().find(|p| p.name == rec.pool).cloned() else {
                continue;
            };
            let sched = rec
                .sched
                .clone()
                .unwrap_or_else(|| DomainSched::default_for(pool.scheduler));
            out.push(DomainSchedInfo {
                rec,
                status,
                pool,
                sched,
            });
        }
        Ok(out)
    }

    /// `sched credit|credit2|rtds -d DOMAIN ...`: new parameters, effective at once.
    pub fn sched_set(&self, id: &str, scheduler: Scheduler, u: &SchedUpdate) -> Result<()> {
        let (dir, mut rec) = self.locked_record(id)?;
        let status = self.status_of(&rec);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                verb: "set scheduling parameters of",
                id: rec.id,
                status,
            });
        }
        let lock = self.pools().lock()?;
        let pool = self.pools().get(&rec.pool)?;
        if pool.scheduler != scheduler {
            return Err(Error::Backend(format!(
                "domain {} is in pool {}, which runs {}, not {scheduler}",
                rec.id, pool.name, pool.scheduler
            )));
        }
        let cur = rec
            .sched
            .clone()
            .unwrap_or_else(|| DomainSched::default_for(pool.scheduler));
        let new = match (cur, scheduler) {
            (DomainSched::Credit(c) | DomainSched::Credit2(c), _) => {
                let c = Credit::new(
                    u.weight.unwrap_or(c.weight.into()),
                    u.cap.unwrap_or(c.cap.into()),
                    pool.ncpus(),
                )
                .map_err(sched_err)?;
                if scheduler == Scheduler::Credit {
                    DomainSched::Credit(c)
                } else {
                    DomainSched::Credit2(c)
                }
            }
            (DomainSched::Rtds(r), _) => {
                let r = Rtds::new(
                    u.period_us.unwrap_or(r.period_us),
                    u.budget_us.unwrap_or(r.budget_us),
                    u.extratime.unwrap_or(r.extratime),
                )
                .map_err(sched_err)?;
                self.admit_rtds(&pool, &r, &rec.id)?;
                DomainSched::Rtds(r)
            }
            (DomainSched::Arinc653, _) => {
                return Err(Error::Backend(
                    "arinc653 has no per-domain parameters; use `sched arinc653 --pool`".into(),
                ))
            }
        };
        rec.sched_note = self
            .backend_of(&rec)?
            .set_sched(&rec, &LinuxCpu::of(&new, &pool))?;
        rec.sched = Some(new);
        dir.save(&rec)?;
        drop(lock);
        Ok(())
    }

    /// `cpupool create NAME --cpus LIST --sched S`. The CPUs leave Pool-0, whose
    /// domains are confined to the CPUs it keeps.
    pub fn cpupool_create(&self, pool: &Pool) -> Result<()> {
        let pools = self.pools();
        let lock = pools.lock()?;
        pools.create(&lock, pool)?;
        if let Err(e) = self.reapply_pool(DEFAULT_POOL) {
            let _ = pools.remove(&lock, &pool.name);
            let _ = self.reapply_pool(DEFAULT_POOL);
            return Err(e);
        }
        Ok(())
    }

    /// `cpupool destroy NAME`: only an empty pool; its CPUs return to Pool-0.
    pub fn cpupool_destroy(&self, name: &str) -> Result<()> {
        if name == DEFAULT_POOL {
            return Err(Error::Backend(format!(
                "cpupool: {DEFAULT_POOL} cannot be destroyed"
            )));
        }
        let pools = self.pools();
        let lock = pools.lock()?;
        pools.get(name)?;
        let m = self.members(name)?;
        if !m.is_empty() {
            let ids: Vec<&str> = m.iter().map(|r| r.id.as_str()).collect();
            return Err(Error::Backend(format!(
                "cpupool {name} is not empty: {} (migrate or delete them first)",
                ids.join(", ")
            )));
        }
        pools.remove(&lock, name)?;
        self.reapply_pool(DEFAULT_POOL)
    }

    /// `cpupool migrate DOMAIN POOL`: the domain moves with the new pool's default
    /// parameters (as Xen's `xl cpupool-migrate`).
    pub fn cpupool_migrate(&self, id: &str, to: &str) -> Result<()> {
        let (dir, mut rec) = self.locked_record(id)?;
        let status = self.status_of(&rec);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                verb: "migrate",
                id: rec.id,
                status,
            });
        }
        let lock = self.pools().lock()?;
        let pool = self.pools().get(to)?;
        let sched = DomainSched::default_for(pool.scheduler);
        if let DomainSched::Rtds(r) = &sched {
            self.admit_rtds(&pool, r, &rec.id)?;
        }
        let was_arinc = matches!(rec.sched, Some(DomainSched::Arinc653));
        let b = self.backend_of(&rec)?;
        rec.sched_note = b.set_sched(&rec, &LinuxCpu::of(&sched, &pool))?;
        rec.pool = pool.name.clone();
        rec.sched = Some(sched);
        dir.save(&rec)?;
        if was_arinc && !rec.user_paused {
            // Out of the switcher's hands: runnable again.
            let _ = b.hold(&rec, false);
        }
        if pool.scheduler == Scheduler::Arinc653 {
            crate::switcher::ensure(self.store().root(), &pool.name)?;
        }
        drop(lock);
        Ok(())
    }

    /// `sched arinc653 --pool P --major-frame MS --slot DOMAIN:MS ...`.
    pub fn arinc653_set(&self, name: &str, schedule: Arinc653) -> Result<()> {
        schedule.validate().map_err(sched_err)?;
        let pools = self.pools();
        let lock = pools.lock()?;
        let mut pool = pools.get(name)?;
        if pool.scheduler != Scheduler::Arinc653 {
            return Err(Error::Backend(format!(
                "cpupool {name} runs {}, not arinc653",
                pool.scheduler
            )));
        }
        let members = self.members(name)?;
        for s in &schedule.slots {
            DomainId::new(&s.domain)?;
            if !members.iter().any(|r| r.id == s.domain) {
                return Err(Error::Backend(format!(
                    "arinc653: domain {} is not a live domain of pool {name}",
                    s.domain
                )));
            }
        }
        pool.arinc653 = Some(schedule);
        pools.save(&lock, &pool)?;
        if !members.is_empty() {
            self.reapply_pool(name)?;
            crate::switcher::ensure(self.store().root(), name)?;
        }
        Ok(())
    }

    /// Re-applies the pool's controls to its live domains (after its CPUs or its
    /// ARINC 653 schedule changed). Called with the pools lock held, so it takes no
    /// domain lock (verbs take a domain's lock first, then the pools lock) and writes
    /// no record: only the kernel's controls change. Real-time budgets are cleared
    /// first and set again after, so that no domain's new budget is refused for
    /// another's old one. Every domain is tried; the first error is returned.
    fn reapply_pool(&self, name: &str) -> Result<()> {
        let pool = self.pools().get(name)?;
        let members = self.members(name)?;
        let mut first = None;
        for pass in [false, true] {
            for rec in &members {
                let Ok(b) = self.backend_of(rec) else {
                    continue;
                };
                let Some(sched) = &rec.sched else {
                    // Unmanaged (no parameters asked for): only its CPUs change.
                    if pass {
                        if let Err(e) = confine_cpus(b, rec, &pool) {
                            first.get_or_insert(e);
                        }
                    }
                    continue;
                };
                let mut cpu = LinuxCpu::of(sched, &pool);
                if !pass {
                    if cpu.rt_group.is_none() {
                        continue;
                    }
                    cpu.rt_group = None;
                    cpu.deadline = None;
                }
                if let Err(e) = b.set_sched(rec, &cpu) {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}
