//! Scheduling parameters from config.json annotations at create time.
//!
//! | annotation | value |
//! |---|---|
//! | `org.hyperjail.pool` | the CPU pool to join (default `Pool-0`) |
//! | `org.hyperjail.sched.credit.weight`, `.credit.cap` | Credit weight 1..65535, cap % |
//! | `org.hyperjail.sched.credit2.weight`, `.credit2.cap` | the same for Credit2 |
//! | `org.hyperjail.sched.rtds.period`, `.rtds.budget` | µs |
//! | `org.hyperjail.sched.rtds.extratime` | `1`/`0` (or `true`/`false`) |
//! | `org.hyperjail.sched.arinc653.slot` | the domain's slot in ms, appended to the pool's schedule |
//!
//! Parameters of one scheduler only, and that scheduler must be the pool's.

use crate::arinc::parse_ms_us;
use crate::{validate_pool_name, Credit, DomainSched, Error, Pool, Rtds, Scheduler};
use std::collections::BTreeMap;

/// The annotation naming the pool.
pub const POOL_ANNOTATION: &str = "org.hyperjail.pool";
/// Prefix of the scheduler parameter annotations.
pub const ANNOTATION_PREFIX: &str = "org.hyperjail.sched.";

/// What a domain's annotations ask for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedRequest {
    /// The pool, if named.
    pub pool: Option<String>,
    /// The scheduler whose parameters were given.
    pub scheduler: Option<Scheduler>,
    /// Credit/Credit2 weight.
    pub weight: Option<u64>,
    /// Credit/Credit2 cap.
    pub cap: Option<u64>,
    /// RTDS period µs.
    pub period_us: Option<u64>,
    /// RTDS budget µs.
    pub budget_us: Option<u64>,
    /// RTDS extratime.
    pub extratime: Option<bool>,
    /// ARINC 653 slot µs.
    pub slot_us: Option<u64>,
}

impl SchedRequest {
    /// Whether nothing was asked for (the domain runs as any container does).
    pub fn is_empty(&self) -> bool {
        *self == SchedRequest::default()
    }

    /// The domain's parameters in `pool` (defaults for what was not given), and its
    /// ARINC 653 slot length.
    pub fn resolve(&self, pool: &Pool) -> Result<(DomainSched, Option<u64>), Error> {
        if let Some(s) = self.scheduler {
            if s != pool.scheduler {
                return Err(Error::Annotation {
                    key: format!("{ANNOTATION_PREFIX}{s}.*"),
                    why: format!(
                        "pool {} runs the {} scheduler, not {s}",
                        pool.name, pool.scheduler
                    ),
                });
            }
        }
        let sched = match pool.scheduler {
            Scheduler::Credit | Scheduler::Credit2 => {
                let d = Credit::default();
                let c = Credit::new(
                    self.weight.unwrap_or(d.weight.into()),
                    self.cap.unwrap_or(0),
                    pool.ncpus(),
                )?;
                if pool.scheduler == Scheduler::Credit {
                    DomainSched::Credit(c)
                } else {
                    DomainSched::Credit2(c)
                }
            }
            Scheduler::Rtds => {
                let d = Rtds::default();
                DomainSched::Rtds(Rtds::new(
                    self.period_us.unwrap_or(d.period_us),
                    self.budget_us.unwrap_or(d.budget_us),
                    self.extratime.unwrap_or(d.extratime),
                )?)
            }
            Scheduler::Arinc653 => DomainSched::Arinc653,
        };
        Ok((sched, self.slot_us))
    }
}

fn number(key: &str, v: &str) -> Result<u64, Error> {
    v.trim().parse::<u64>().map_err(|_| Error::Annotation {
        key: key.into(),
        why: format!("{v:?} is not a non-negative integer"),
    })
}

fn boolean(key: &str, v: &str) -> Result<bool, Error> {
    match v.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(Error::Annotation {
            key: key.into(),
            why: format!("{v:?} is not 0, 1, true or false"),
        }),
    }
}

/// Reads the pool and scheduler annotations. Unknown `org.hyperjail.sched.*` keys and
/// parameters of two schedulers at once are errors (a typo must not pass silently).
pub fn parse_annotations(a: &BTreeMap<String, String>) -> Result<SchedRequest, Error> {
    let mut r = SchedRequest::default();
    if let Some(p) = a.get(POOL_ANNOTATION) {
        validate_pool_name(p).map_err(|e| Error::Annotation {
            key: POOL_ANNOTATION.into(),
            why: e.to_string(),
        })?;
        r.pool = Some(p.clone());
    }
    for (key, v) in a.range(ANNOTATION_PREFIX.to_string()..) {
        let Some(rest) = key.strip_prefix(ANNOTATION_PREFIX) else {
            break;
        };
        let (sched, param) = rest.split_once('.').unwrap_or((rest, ""));
        let s: Scheduler = sched.parse().map_err(|_| Error::Annotation {
            key: key.clone(),
            why: "unknown scheduler (credit, credit2, rtds or arinc653)".into(),
        })?;
        if r.scheduler.is_some_and(|prev| prev != s) {
            return Err(Error::Annotation {
                key: key.clone(),
                why: "parameters of two schedulers given; a domain has one".into(),
            });
        }
        r.scheduler = Some(s);
        match (s, param) {
            (Scheduler::Credit | Scheduler::Credit2, "weight") => r.weight = Some(number(key, v)?),
            (Scheduler::Credit | Scheduler::Credit2, "cap") => r.cap = Some(number(key, v)?),
            (Scheduler::Rtds, "period") => r.period_us = Some(number(key, v)?),
            (Scheduler::Rtds, "budget") => r.budget_us = Some(number(key, v)?),
            (Scheduler::Rtds, "extratime") => r.extratime = Some(boolean(key, v)?),
            (Scheduler::Arinc653, "slot") => {
                r.slot_us = Some(parse_ms_us(v.trim()).ok_or_else(|| Error::Annotation {
                    key: key.clone(),
                    why: format!("{v:?} is not a time in ms (like 5 or 2.5)"),
                })?)
            }
            _ => {
                return Err(Error::Annotation {
                    key: key.clone(),
                    why: format!("unknown parameter of the {s} scheduler"),
                })
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pool(s: Scheduler) -> Pool {
        Pool {
            name: "p".into(),
            cpus: vec![1],
            scheduler: s,
            arinc653: None,
        }
    }

    #[test]
    fn credit() {
        let r = parse_annotations(&ann(&[
            ("org.hyperjail.pool", "p"),
            ("org.hyperjail.sched.credit.weight", "512"),
            ("org.hyperjail.sched.credit.cap", "20"),
            ("org.opencontainers.image.title", "x"),
        ]))
        .expect("parse");
        assert_eq!(r.pool.as_deref(), Some("p"));
        let (s, slot) = r.resolve(&pool(Scheduler::Credit)).expect("resolve");
        assert_eq!(
            s,
            DomainSched::Credit(Credit {
                weight: 512,
                cap: 20
            })
        );
        assert_eq!(slot, None);
        // Wrong pool scheduler.
        let e = r.resolve(&pool(Scheduler::Rtds)).unwrap_err().to_string();
        assert!(
            e.contains("pool p runs the rtds scheduler, not credit"),
            "{e}"
        );
        // Cap above the pool's one CPU.
        let r = parse_annotations(&ann(&[("org.hyperjail.sched.credit.cap", "150")])).expect("p");
        assert!(r.resolve(&pool(Scheduler::Credit)).is_err());
    }

    #[test]
    fn defaults_and_empty() {
        let r = parse_annotations(&ann(&[("a.b", "c")])).expect("parse");
        assert!(r.is_empty());
        let (s, _) = r.resolve(&pool(Scheduler::Rtds)).expect("rtds defaults");
        assert_eq!(s, DomainSched::Rtds(Rtds::default()));
    }

    #[test]
    fn errors() {
        for (k, v, want) in [
            (
                "org.hyperjail.sched.credit.weight",
                "0",
                "weight 0 is outside 1..65535",
            ),
            (
                "org.hyperjail.sched.credit.weight",
                "-5",
                "not a non-negative integer",
            ),
            (
                "org.hyperjail.sched.credit.wieght",
                "5",
                "unknown parameter",
            ),
            ("org.hyperjail.sched.sedf.weight", "5", "unknown scheduler"),
            ("org.hyperjail.sched.rtds.extratime", "yes", "not 0, 1"),
            ("org.hyperjail.sched.arinc653.slot", "x", "not a time in ms"),
            ("org.hyperjail.pool", "a/b", "invalid pool name"),
        ] {
            let e = parse_annotations(&ann(&[(k, v)]))
                .and_then(|r| r.resolve(&pool(Scheduler::Credit)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let e = parse_annotations(&ann(&[
            ("org.hyperjail.sched.credit.weight", "5"),
            ("org.hyperjail.sched.rtds.budget", "5"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("two schedulers"), "{e}");
        let r = parse_annotations(&ann(&[
            ("org.hyperjail.sched.rtds.period", "10000"),
            ("org.hyperjail.sched.rtds.budget", "20000"),
        ]))
        .expect("parse");
        let e = r.resolve(&pool(Scheduler::Rtds)).unwrap_err().to_string();
        assert_eq!(e, "rtds: budget 20000 us exceeds period 10000 us");
    }
}
