//! Waiting for a foreground container: subreaper, signal forwarding, exit status.

use crate::{Error, Result};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// While alive, this process is a child subreaper with every signal blocked, so that
/// `wait_for` can reap the container process and forward signals to it. Children
/// inherit the blocked mask: backends must clear it before running user code.
#[derive(Debug)]
pub struct Foreground {
    set: SigSet,
}

impl Foreground {
    /// Becomes a subreaper and blocks signals.
    pub fn enter() -> Result<Foreground> {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| Error::Sys {
            op: "prctl(PR_SET_CHILD_SUBREAPER)",
            source: e,
        })?;
        let set = SigSet::all();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(
            |e| Error::Sys {
                op: "block signals",
                source: e,
            },
        )?;
        Ok(Foreground { set })
    }

    /// Waits until `pid` exits, forwarding every signal but SIGCHLD to it, and returns
    /// its exit code (128+n when killed by signal n, as a shell reports it).
    pub fn wait_for(&self, pid: i32) -> i32 {
        loop {
            if let Some(code) = reap(pid) {
                return code;
            }
            match self.set.wait() {
                Ok(Signal::SIGCHLD) => {}
                Ok(sig) => {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
                Err(_) => {}
            }
        }
    }
}

/// Reaps every exited child; returns the exit code of `pid` if it was among them.
fn reap(pid: i32) -> Option<i32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => return Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => return Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            // No children left: the container process is gone and was reaped elsewhere.
            Err(nix::errno::Errno::ECHILD) => return Some(255),
            Err(_) => return None,
        }
    }
}
