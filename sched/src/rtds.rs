//! Xen's RTDS parameters and admission control.

use crate::Error;
use serde::{Deserialize, Serialize};

/// Longest RTDS period accepted, in µs (one second; Xen allows more, the kernel's
/// SCHED_DEADLINE and CFS bandwidth do not).
pub const MAX_PERIOD_US: u64 = 1_000_000;
/// Shortest budget, in µs (CFS bandwidth accepts quotas down to 1 ms; SCHED_DEADLINE
/// down to 1 µs; Xen's own floor is 10 µs). Budgets below 1 ms use a scaled CFS period.
pub const MIN_BUDGET_US: u64 = 100;

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
    /// Validated parameters: 100 µs ≤ budget ≤ period ≤ 1 s.
    pub fn new(period_us: u64, budget_us: u64, extratime: bool) -> Result<Rtds, Error> {
        if period_us == 0 || budget_us == 0 {
            return Err(Error::Rtds("period and budget must be positive".into()));
        }
        if budget_us > period_us {
            return Err(Error::Rtds(format!(
                "budget {budget_us} us exceeds period {period_us} us"
            )));
        }
        if period_us > MAX_PERIOD_US {
            return Err(Error::Rtds(format!(
                "period {period_us} us is above the limit of {MAX_PERIOD_US} us"
            )));
        }
        if budget_us < MIN_BUDGET_US {
            return Err(Error::Rtds(format!(
                "budget {budget_us} us is below the minimum of {MIN_BUDGET_US} us"
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
    fn rules() {
        assert!(Rtds::new(10_000, 20_000, false).is_err());
        assert!(Rtds::new(0, 0, false).is_err());
        assert!(Rtds::new(2_000_000, 1_000, false).is_err());
        assert!(Rtds::new(10_000, 50, false).is_err());
        assert_eq!(Rtds::default().utilisation(), 0.4);
        let e = Rtds::new(10_000, 20_000, false).unwrap_err().to_string();
        assert_eq!(e, "rtds: budget 20000 us exceeds period 10000 us");
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
        assert!(e.to_string().contains("1.150"), "{e}");
        // Exactly full is admitted.
        let full = Rtds::new(10_000, 10_000, false).expect("full");
        assert!(admit(&[], &full, 1).is_ok());
        assert!(admit(&[full], &full, 2).is_ok());
    }
}
