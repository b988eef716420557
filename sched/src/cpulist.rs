//! CPU lists in the kernel's format: "0-3,6".

use crate::Error;

/// Most CPUs a list may name (the kernel's NR_CPUS upper bound).
const MAX_CPU: u32 = 8191;

/// Parses a CPU list ("0-3,6") into sorted, distinct CPU numbers.
pub fn parse_cpus(s: &str) -> Result<Vec<u32>, Error> {
    let bad = |why: &str| Err(Error::Pool(format!("CPU list {s:?}: {why}")));
    let mut out = Vec::new();
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) else {
            return bad("expected numbers and ranges like 0-3,6");
        };
        if a > b {
            return bad("a range runs backwards");
        }
        if b > MAX_CPU {
            return bad("CPU number too large");
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Formats CPU numbers as a kernel CPU list, with ranges ("0-3,6").
pub fn format_cpus(cpus: &[u32]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        while i + 1 < v.len() && v[i + 1] == v[i] + 1 {
            i += 1;
        }
        parts.push(if start == v[i] {
            start.to_string()
        } else {
            format!("{start}-{}", v[i])
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse_cpus("0-3,6").expect("list"), [0, 1, 2, 3, 6]);
        assert_eq!(parse_cpus("1").expect("one"), [1]);
        assert_eq!(parse_cpus("3,1,1").expect("dups"), [1, 3]);
        assert_eq!(format_cpus(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(format_cpus(&[5]), "5");
        assert_eq!(format_cpus(&[]), "");
        for bad in ["", "a", "3-1", "1,,2", "-1", "99999"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }
}
