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

/// `base` moved by `off` (`""`, or `+N` for RTMIN and `-N` for RTMAX, as `dir` says).
/// Any other text, or an offset that leaves the real-time range, is `None`.
fn rt_offset(base: i32, off: &str, dir: i32) -> Option<i32> {
    let n = if off.is_empty() {
        0
    } else {
        // strip_prefix, not split_at(1): `off` may start with a multi-byte character.
        let num = match dir {
            1 => off.strip_prefix('+')?,
            _ => off.strip_prefix('-')?,
        };
        // Digits only: a second sign ("+-1", "--1") is not an offset.
        if !num.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        num.parse::<i32>().ok()?.checked_mul(dir)?
    };
    let sig = base.checked_add(n)?;
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

    /// Found by the `signal` fuzz target: a multi-byte character after RTMIN/RTMAX
    /// panicked (split at a byte that is not a char boundary), and huge offsets
    /// overflowed.
    #[test]
    fn odd_rt_offsets_are_errors_not_panics() {
        for s in [
            "RTMIN\u{e8}",
            "SIGRTMAX\u{e8}1",
            "RTMIN+2147483647",
            "RTMAX--2147483648",
            "RTMAX-2147483648",
            "RTMIN+-1",
            "RTMIN++1",
            "RTMAX+1",
        ] {
            assert!(parse_signal(s).is_err(), "{s:?}");
        }
        assert_eq!(parse_signal("RTMAX-1").ok(), Some(libc::SIGRTMAX() - 1));
        assert_eq!(parse_signal("rtmax").ok(), Some(libc::SIGRTMAX()));
    }
}
