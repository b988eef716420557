//! Signal names and numbers as `kill` accepts them.

use crate::{Error, Result};
use nix::sys::signal::Signal;
use std::str::FromStr;

/// Parses `KILL`, `SIGKILL`, `kill` or `9` into a signal number.
pub fn parse_signal(s: &str) -> Result<i32> {
    let bad = || Error::BadSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        let rt_max = libc::SIGRTMAX();
        if n > 0 && n <= rt_max && (Signal::try_from(n).is_ok() || n >= libc::SIGRTMIN()) {
            return Ok(n);
        }
        return Err(bad());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    if let Some(off) = name.strip_prefix("SIGRTMIN") {
        return rt_offset(libc::SIGRTMIN(), off, 1).ok_or_else(bad);
    }
    if let Some(off) = name.strip_prefix("SIGRTMAX") {
        return rt_offset(libc::SIGRTMAX(), off, -1).ok_or_else(bad);
    }
    Signal::from_str(&name).map(|s| s as i32).map_err(|_| bad())
}

fn rt_offset(base: i32, off: &str, dir: i32) -> Option<i32> {
    let n = if off.is_empty() {
        0
    } else {
        let (sign, num) = off.split_at(1);
        let v: i32 = num.parse().ok()?;
        match (sign, dir) {
            ("+", 1) | ("-", -1) => v * dir,
            _ => return None,
        }
    };
    let sig = base + n;
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&sig)
        .then_some(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("KILL").ok(), Some(9));
        assert_eq!(parse_signal("SIGTERM").ok(), Some(15));
        assert_eq!(parse_signal("hup").ok(), Some(1));
        assert_eq!(parse_signal("9").ok(), Some(9));
        assert_eq!(parse_signal("RTMIN+1").ok(), Some(libc::SIGRTMIN() + 1));
    }

    #[test]
    fn bad_signals() {
        for s in ["", "0", "-1", "65", "NOPE", "SIGFOO", "RTMIN-1", "1x"] {
            assert!(parse_signal(s).is_err(), "{s}");
        }
    }
}
