//! CPU pools and the per-domain parameters of each scheduler.

use crate::{Arinc653, Credit, Error, Rtds};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The pool every domain is in unless it asks for another (Xen's name).
pub const DEFAULT_POOL: &str = "Pool-0";

/// The scheduler of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Proportional shares with caps.
    Credit,
    /// Credit's successor: the same parameters, runqueues per pool.
    Credit2,
    /// Real-time deferrable server: budget per period.
    Rtds,
    /// Fixed time partitions in a major frame.
    Arinc653,
}

impl Scheduler {
    /// Xen's name of the scheduler.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Credit => "credit",
            Scheduler::Credit2 => "credit2",
            Scheduler::Rtds => "rtds",
            Scheduler::Arinc653 => "arinc653",
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Scheduler, Error> {
        match s {
            "credit" => Ok(Scheduler::Credit),
            "credit2" => Ok(Scheduler::Credit2),
            "rtds" => Ok(Scheduler::Rtds),
            "arinc653" => Ok(Scheduler::Arinc653),
            _ => Err(Error::Pool(format!(
                "unknown scheduler {s:?} (credit, credit2, rtds or arinc653)"
            ))),
        }
    }
}

/// A domain's scheduling parameters; the variant is its pool's scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheduler", rename_all = "lowercase")]
pub enum DomainSched {
    /// Credit weight and cap.
    Credit(Credit),
    /// Credit2 weight and cap.
    Credit2(Credit),
    /// RTDS period, budget and extratime.
    Rtds(Rtds),
    /// ARINC 653: the slot lives in the pool's schedule.
    Arinc653,
}

impl DomainSched {
    /// The default parameters of a scheduler (Xen's defaults).
    pub fn default_for(s: Scheduler) -> DomainSched {
        match s {
            Scheduler::Credit => DomainSched::Credit(Credit::default()),
            Scheduler::Credit2 => DomainSched::Credit2(Credit::default()),
            Scheduler::Rtds => DomainSched::Rtds(Rtds::default()),
            Scheduler::Arinc653 => DomainSched::Arinc653,
        }
    }

    /// The scheduler these parameters belong to.
    pub fn scheduler(&self) -> Scheduler {
        match self {
            DomainSched::Credit(_) => Scheduler::Credit,
            DomainSched::Credit2(_) => Scheduler::Credit2,
            DomainSched::Rtds(_) => Scheduler::Rtds,
            DomainSched::Arinc653 => Scheduler::Arinc653,
        }
    }
}

impl Default for DomainSched {
    fn default() -> Self {
        DomainSched::Credit(Credit::default())
    }
}

/// A CPU pool: a named set of CPUs with one scheduler (`xl cpupool-*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// Its CPUs; for [`DEFAULT_POOL`], every online CPU no other pool holds.
    pub cpus: Vec<u32>,
    /// Its scheduler.
    pub scheduler: Scheduler,
    /// The ARINC 653 schedule, for an `arinc653` pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arinc653: Option<Arinc653>,
}

impl Pool {
    /// Number of CPUs, at least 1 for arithmetic.
    pub fn ncpus(&self) -> u32 {
        (self.cpus.len() as u32).max(1)
    }
}

/// Checks a pool name: 1..=64 of `[A-Za-z0-9_.-]`, not starting with '.' or '-'.
pub fn validate_pool_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Pool(format!(
            "invalid pool name {name:?}: 1 to 64 letters, digits, '_', '.', '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_pool_name("Pool-0").is_ok());
        assert!(validate_pool_name("rt_1").is_ok());
        for bad in ["", ".x", "-x", "a/b", &"p".repeat(65)] {
            assert!(validate_pool_name(bad).is_err(), "{bad}");
        }
        assert_eq!("rtds".parse::<Scheduler>(), Ok(Scheduler::Rtds));
        assert!("sedf".parse::<Scheduler>().is_err());
    }

    #[test]
    fn record_json() {
        let d = DomainSched::Rtds(Rtds::default());
        let j = serde_json::to_string(&d).expect("json");
        assert_eq!(
            j,
            r#"{"scheduler":"rtds","period_us":10000,"budget_us":4000,"extratime":true}"#
        );
        assert_eq!(serde_json::from_str::<DomainSched>(&j).expect("back"), d);
        let a: DomainSched = serde_json::from_str(r#"{"scheduler":"arinc653"}"#).expect("a");
        assert_eq!(a, DomainSched::Arinc653);
    }
}
