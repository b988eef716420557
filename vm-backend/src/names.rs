//! Names of x86-64 system calls, for the "unsupported system call" log line, from
//! libseccomp's table (the one the seccomp profiles are resolved with).

use libseccomp::{ScmpArch, ScmpSyscall};

/// The name of system call `nr`, or "?" when libseccomp does not know it.
pub fn name(nr: u64) -> String {
    i32::try_from(nr)
        .ok()
        .and_then(|n| ScmpSyscall::from(n).get_name_by_arch(ScmpArch::X8664).ok())
        .unwrap_or_else(|| "?".to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::name(0), "read");
        assert_eq!(super::name(246), "kexec_load");
        assert_eq!(super::name(435), "clone3");
        assert_eq!(super::name(100_000), "?");
        assert_eq!(super::name(u64::MAX), "?");
    }
}
