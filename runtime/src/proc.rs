//! Reading /proc/<pid>/stat so a recorded pid is never trusted blindly.

/// The fields of /proc/<pid>/stat this runtime needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Process state letter (R, S, D, Z, T, ...).
    pub state: char,
    /// Start time in clock ticks after boot (field 22).
    pub start_time: u64,
    /// Whether the process is exiting (PF_EXITING in field 9): a pid 1 tearing down its
    /// pid namespace stays in state S for a while.
    pub exiting: bool,
}

/// Reads /proc/<pid>/stat; `None` if the process does not exist.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<ProcStat> {
    // The command name may contain spaces and parentheses: fields restart after the
    // last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_ascii_whitespace();
    let state = it.next()?.chars().next()?;
    // After the state (field 3) come fields 4..: flags is field 9, start time field 22.
    const PF_EXITING: u64 = 0x4;
    let flags: u64 = it.nth(5)?.parse().ok()?;
    let start_time = it.nth(12)?.parse().ok()?;
    Some(ProcStat {
        state,
        start_time,
        exiting: flags & PF_EXITING != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_comm() {
        let s = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(
            parse_stat(s),
            Some(ProcStat {
                state: 'S',
                start_time: 123456,
                exiting: false,
            })
        );
    }

    #[test]
    fn self_is_alive() {
        // The test runs on a worker thread: the process's main thread may be sleeping.
        let st = proc_stat(std::process::id() as i32).expect("own stat");
        assert!(matches!(st.state, 'R' | 'S'), "{st:?}");
        assert!(st.start_time > 0);
        assert!(proc_stat(0).is_none());
    }
}
