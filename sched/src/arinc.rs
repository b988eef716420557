//! ARINC 653: a major frame divided into fixed slots, one domain per slot.

use crate::Error;
use serde::{Deserialize, Serialize};

/// Most slots in one schedule (Xen's ARINC653_MAX_DOMAINS_PER_SCHEDULE).
pub const MAX_SLOTS: usize = 64;
/// Longest major frame, in µs (10 s).
pub const MAX_MAJOR_FRAME_US: u64 = 10_000_000;
/// Shortest slot, in µs: the switcher's own cost per boundary is tens of µs.
pub const MIN_SLOT_US: u64 = 500;

/// One slot: the domain that runs and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The domain's id.
    pub domain: String,
    /// Runtime of the slot in µs.
    pub runtime_us: u64,
}

/// An ARINC 653 schedule (`xl sched-arinc653` / Xen's `xen_sysctl_arinc653_schedule`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arinc653 {
    /// Length of the major frame in µs; it repeats forever.
    pub major_frame_us: u64,
    /// Slots in the order they run, from the start of each frame. Time after the last
    /// slot and before the end of the frame is idle: every domain is frozen.
    pub slots: Vec<Slot>,
}

impl Arinc653 {
    /// A validated schedule: 0 < major frame ≤ 10 s, 1..=64 slots of at least 500 µs,
    /// whose sum fits into the major frame.
    pub fn new(major_frame_us: u64, slots: Vec<Slot>) -> Result<Arinc653, Error> {
        let s = Arinc653 {
            major_frame_us,
            slots,
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks the rules of [`Arinc653::new`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.major_frame_us == 0 || self.major_frame_us > MAX_MAJOR_FRAME_US {
            return Err(Error::Arinc(format!(
                "major frame {} us must be in 1..={MAX_MAJOR_FRAME_US} us",
                self.major_frame_us
            )));
        }
        if self.slots.len() > MAX_SLOTS {
            return Err(Error::Arinc(format!(
                "{} slots; at most {MAX_SLOTS} are allowed",
                self.slots.len()
            )));
        }
        for s in &self.slots {
            if s.domain.is_empty() {
                return Err(Error::Arinc("a slot has no domain".into()));
            }
            if s.runtime_us < MIN_SLOT_US {
                return Err(Error::Arinc(format!(
                    "slot of {} is {} us; a slot must be at least {MIN_SLOT_US} us",
                    s.domain, s.runtime_us
                )));
            }
        }
        let sum: u64 = self.slots.iter().map(|s| s.runtime_us).sum();
        if sum > self.major_frame_us {
            return Err(Error::Arinc(format!(
                "the slots sum to {sum} us, more than the major frame of {} us",
                self.major_frame_us
            )));
        }
        Ok(())
    }

    /// Start offset (µs from the frame's start) and length of every slot, in order.
    pub fn offsets(&self) -> Vec<(u64, &Slot)> {
        let mut at = 0;
        self.slots
            .iter()
            .map(|s| {
                let o = at;
                at += s.runtime_us;
                (o, s)
            })
            .collect()
    }

    /// The schedule with `domain`'s slots removed.
    pub fn without(&self, domain: &str) -> Arinc653 {
        Arinc653 {
            major_frame_us: self.major_frame_us,
            slots: self
                .slots
                .iter()
                .filter(|s| s.domain != domain)
                .cloned()
                .collect(),
        }
    }
}

/// Parses a time in milliseconds with up to three decimals ("5", "0.5") into µs.
pub fn parse_ms_us(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 3 {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_us: u64 = format!("{frac:0<3}").parse().ok()?;
    int.checked_mul(1000)?.checked_add(frac_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(d: &str, us: u64) -> Slot {
        Slot {
            domain: d.into(),
            runtime_us: us,
        }
    }

    #[test]
    fn rules() {
        let ok = Arinc653::new(
            20_000,
            vec![slot("a", 5_000), slot("b", 10_000), slot("c", 5_000)],
        )
        .expect("5/10/5 in 20");
        let offs: Vec<u64> = ok.offsets().iter().map(|(o, _)| *o).collect();
        assert_eq!(offs, [0, 5_000, 15_000]);
        let e = Arinc653::new(20_000, vec![slot("a", 15_000), slot("b", 10_000)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "arinc653: the slots sum to 25000 us, more than the major frame of 20000 us"
        );
        assert!(Arinc653::new(0, vec![]).is_err());
        assert!(Arinc653::new(20_000, vec![slot("a", 100)]).is_err());
        assert!(Arinc653::new(20_000, vec![slot("", 1000)]).is_err());
        assert!(Arinc653::new(20_000_000, vec![]).is_err());
        assert_eq!(ok.without("b").slots.len(), 2);
    }

    #[test]
    fn milliseconds() {
        assert_eq!(parse_ms_us("5"), Some(5_000));
        assert_eq!(parse_ms_us("0.5"), Some(500));
        assert_eq!(parse_ms_us(".25"), Some(250));
        assert_eq!(parse_ms_us("1.2345"), None);
        assert_eq!(parse_ms_us("-1"), None);
        assert_eq!(parse_ms_us(""), None);
        assert_eq!(parse_ms_us("."), None);
        assert_eq!(parse_ms_us("99999999999999999999"), None);
    }
}
