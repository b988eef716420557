//! hyperjail-sched: Xen's scheduler parameters for domains and their Linux meaning.
//!
//! Pure models, no system calls: parameters are validated with Xen's ranges and
//! translated into Linux CPU controls (cgroup `cpu.shares`/`cpu.weight`, CFS
//! quota/period, SCHED_DEADLINE attributes) that the isolation layer applies. This
//! crate starts with Credit and RTDS; Credit2, ARINC 653 and CPU pools follow with the
//! scheduling issue.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// A parameter outside Xen's rules.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// Credit weight outside 1..=65535.
    #[error("credit weight {0} is outside 1..65535")]
    Weight(u32),
    /// RTDS budget or period invalid.
    #[error("rtds: {0}")]
    Rtds(String),
    /// Admission control refused a domain.
    #[error("rtds admission: utilisation {total:.3} would exceed the pool's {cpus} CPUs (this domain adds {added:.3})")]
    Admission {
        /// Sum of budget/period with the new domain.
        total: f64,
        /// What the new domain adds.
        added: f64,
        /// CPUs of the pool.
        cpus: u32,
    },
}

/// Xen's Credit scheduler parameters (`xl sched-credit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// Relative weight, 1..=65535 (Xen's default 256).
    pub weight: u32,
    /// Cap in percent of one CPU; 0 means none, above 100 spans several CPUs.
    pub cap: u32,
}

impl Default for Credit {
    fn default() -> Self {
        Credit {
            weight: 256,
            cap: 0,
        }
    }
}

/// CFS period used for caps, in µs (Xen accounts credit every 10 ms; 100 ms gives
/// the kernel's bandwidth control a finer grain for small caps).
pub const CAP_PERIOD_US: u64 = 100_000;

impl Credit {
    /// Validated parameters.
    pub fn new(weight: u32, cap: u32) -> Result<Credit, Error> {
        if !(1..=65535).contains(&weight) {
            return Err(Error::Weight(weight));
        }
        Ok(Credit { weight, cap })
    }

    /// cgroup v1 `cpu.shares` (weight 256 ↦ 1024, the kernel's default share).
    pub fn cpu_shares(&self) -> u64 {
        u64::from(self.weight) * 4
    }

    /// CFS (quota, period) in µs for the cap, or None when uncapped.
    pub fn cfs_bandwidth(&self) -> Option<(u64, u64)> {
        (self.cap > 0).then(|| (CAP_PERIOD_US * u64::from(self.cap) / 100, CAP_PERIOD_US))
    }
}

/// Xen's RTDS parameters (`xl sched-rtds`), per vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtds {
    /// Period in µs (Xen's default 10000).
    pub period_us: u64,
    /// Budget in µs per period (Xen's default 4000).
    pub budget_us: u64,
    /// May run beyond the budget when the CPU is otherwise idle.
    pub extratime: bool,
}

impl Default for Rtds {
    fn default() -> Self {
        Rtds {
            period_us: 10_000,
            budget_us: 4_000,
            extratime: true,
        }
    }
}

impl Rtds {
    /// Validated parameters: 0 < budget ≤ period.
    pub fn new(period_us: u64, budget_us: u64, extratime: bool) -> Result<Rtds, Error> {
        if period_us == 0 || budget_us == 0 {
            return Err(Error::Rtds("period and budget must be positive".into()));
        }
        if budget_us > period_us {
            return Err(Error::Rtds(format!(
                "budget {budget_us} µs exceeds period {period_us} µs"
            )));
        }
        Ok(Rtds {
            period_us,
            budget_us,
            extratime,
        })
    }

    /// Share of one CPU.
    pub fn utilisation(&self) -> f64 {
        self.budget_us as f64 / self.period_us as f64
    }
}

/// RTDS admission control: the sum of budget/period over a pool's domains must not
/// exceed its CPU count.
pub fn admit(existing: &[Rtds], new: &Rtds, cpus: u32) -> Result<(), Error> {
    let added = new.utilisation();
    let total = existing.iter().map(Rtds::utilisation).sum::<f64>() + added;
    if total > f64::from(cpus) + 1e-9 {
        return Err(Error::Admission { total, added, cpus });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_ranges_and_mapping() {
        assert_eq!(Credit::new(0, 0), Err(Error::Weight(0)));
        assert_eq!(Credit::new(65536, 0), Err(Error::Weight(65536)));
        let c = Credit::new(256, 0).expect("default weight");
        assert_eq!(c.cpu_shares(), 1024);
        assert_eq!(c.cfs_bandwidth(), None);
        assert_eq!(
            Credit::new(512, 20).expect("capped").cfs_bandwidth(),
            Some((20_000, 100_000))
        );
        assert_eq!(
            Credit::new(1, 150).expect("two cpus").cfs_bandwidth(),
            Some((150_000, 100_000))
        );
    }

    #[test]
    fn rtds_rules() {
        assert!(Rtds::new(10_000, 20_000, false).is_err());
        assert!(Rtds::new(0, 0, false).is_err());
        assert_eq!(Rtds::default().utilisation(), 0.4);
    }

    #[test]
    fn admission() {
        let a = Rtds::new(10_000, 2_000, false).expect("a");
        let b = Rtds::new(20_000, 5_000, false).expect("b");
        let c = Rtds::new(30_000, 3_000, false).expect("c");
        assert!(admit(&[a, b], &c, 1).is_ok());
        let d = Rtds::new(10_000, 6_000, false).expect("d");
        let e = admit(&[a, b, c], &d, 1).unwrap_err();
        assert!(e.to_string().contains("exceed the pool's 1 CPUs"), "{e}");
    }
}
