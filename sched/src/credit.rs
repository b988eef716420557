//! Xen's Credit and Credit2 parameters: a weight and a cap.

use crate::Error;
use serde::{Deserialize, Serialize};

/// Xen's Credit (and Credit2) scheduler parameters (`xl sched-credit`).
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
    /// Validated parameters: weight 1..=65535, cap 0..=100 × `cpus` (Xen refuses a cap
    /// above what the machine's CPUs can give).
    pub fn new(weight: u64, cap: u64, cpus: u32) -> Result<Credit, Error> {
        if !(1..=65535).contains(&weight) {
            return Err(Error::Weight(weight));
        }
        if cap > 100 * u64::from(cpus) {
            return Err(Error::Cap { cap, cpus });
        }
        Ok(Credit {
            weight: weight as u32,
            cap: cap as u32,
        })
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

/// cgroup v2 `cpu.weight` (1..=10000) for v1 `cpu.shares` (2..=262144), by the mapping
/// runc, crun and systemd use: `1 + ((shares - 2) * 9999) / 262142`.
pub fn shares_to_weight_v2(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_mapping() {
        assert_eq!(Credit::new(0, 0, 2), Err(Error::Weight(0)));
        assert_eq!(Credit::new(65536, 0, 2), Err(Error::Weight(65536)));
        assert_eq!(
            Credit::new(256, 201, 2),
            Err(Error::Cap { cap: 201, cpus: 2 })
        );
        let c = Credit::new(256, 0, 1).expect("default weight");
        assert_eq!(c.cpu_shares(), 1024);
        assert_eq!(c.cfs_bandwidth(), None);
        assert_eq!(
            Credit::new(512, 20, 1).expect("capped").cfs_bandwidth(),
            Some((20_000, 100_000))
        );
        assert_eq!(
            Credit::new(1, 150, 2).expect("two cpus").cfs_bandwidth(),
            Some((150_000, 100_000))
        );
        assert_eq!(Credit::new(65535, 0, 1).expect("max").cpu_shares(), 262_140);
    }

    #[test]
    fn v2_weight_like_runc() {
        assert_eq!(shares_to_weight_v2(2), 1);
        assert_eq!(shares_to_weight_v2(1024), 39);
        assert_eq!(shares_to_weight_v2(262_144), 10_000);
        assert_eq!(shares_to_weight_v2(0), 1);
    }
}
