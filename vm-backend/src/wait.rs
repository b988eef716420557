//! Calls that may wait (a read from an empty pipe or terminal, a write to a full
//! one, `poll` and `epoll_wait` with a timeout) are never waited for by the thread
//! serving the rings, which would hold up every other vCPU's I/O.
//!
//! The ring side performs such a call only when it will not wait: a file the VMM
//! made O_NONBLOCK answers EAGAIN, a console fd is polled first, `poll` and
//! `epoll_wait` run with a zero timeout. When the call would wait and the guest did
//! not ask for O_NONBLOCK, the request completes with [`BLOCKED`]; the guest then
//! rings [`MMIO_BLOCK`](crate::abi::MMIO_BLOCK) and its own vCPU thread waits for
//! the fds ([`what`] names them) with no lock held, and performs the call again
//! ([`crate::ring::Kicker::block`]).

use crate::files::{Host, Kind};
use crate::mem::GuestMem;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The result that sends a request to its vCPU thread ([`crate::abi::RQ_BLOCKED`]).
pub const BLOCKED: i64 = crate::abi::RQ_BLOCKED as i64;
/// The errno the handlers return for [`BLOCKED`] (ERESTART is never a result of
/// the host calls made here; [`crate::hcall::perform`] turns it into BLOCKED).
pub const WOULD_WAIT: Errno = Errno::ERESTART;

/// Before a read (`POLLIN`) or write (`POLLOUT`) on guest fd `fd`: Err when it would
/// wait: EAGAIN if the guest set O_NONBLOCK, else [`WOULD_WAIT`].
pub fn check(h: &Host, fd: u64, ev: PollFlags) -> Result<(), Errno> {
    let (kind, nonblock) = h.kind(fd)?;
    if kind != Kind::Polled {
        return Ok(());
    }
    let mut p = [PollFd::new(h.fd(fd)?, ev)];
    match nix::poll::poll(&mut p, PollTimeout::ZERO) {
        Ok(0) if nonblock => Err(Errno::EAGAIN),
        Ok(0) => Err(WOULD_WAIT),
        _ => Ok(()),
    }
}

/// After a call on guest fd `fd`: an EAGAIN from a file the VMM made O_NONBLOCK is
/// [`WOULD_WAIT`] unless the guest asked for O_NONBLOCK itself.
pub fn after(h: &Host, fd: u64, r: Result<i64, Errno>) -> Result<i64, Errno> {
    match r {
        Err(Errno::EAGAIN) if h.kind(fd).is_ok_and(|(k, nb)| k == Kind::Own && !nb) => {
            Err(WOULD_WAIT)
        }
        r => r,
    }
}

/// What a blocked request waits for: its host files and events, and a timeout in
/// ms (negative: none).
pub struct Wait {
    /// The files and the events that let the call go on.
    pub fds: Vec<(Arc<OwnedFd>, PollFlags)>,
    /// Timeout in ms; negative waits for ever.
    pub timeout_ms: i64,
}

impl Wait {
    /// Waits (no lock is held) until a file is ready, `ms` (negative: no limit)
    /// pass, or `intr` (the thread's interrupt eventfd) is readable.
    pub fn poll(&self, ms: i64, intr: BorrowedFd<'_>) {
        let mut p: Vec<PollFd<'_>> = self
            .fds
            .iter()
            .map(|(f, ev)| PollFd::new(f.as_fd(), *ev))
            .chain([PollFd::new(intr, PollFlags::POLLIN)])
            .collect();
        let t = if ms < 0 {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(ms.min(i64::from(i32::MAX)) as i32).unwrap_or(PollTimeout::MAX)
        };
        let _ = nix::poll::poll(&mut p, t);
    }
}

/// What the request (system call `nr` with arguments `a`) that answered
/// [`BLOCKED`] waits for; None when it is not a call that waits (the guest is then
/// answered with the call's result).
pub fn what(mem: &GuestMem, h: &Host, nr: u64, a: [u64; 6]) -> Option<Wait> {
    let one = |fd: u64, ev: PollFlags, timeout_ms: i64| {
        Some(Wait {
            fds: vec![(h.file(fd).ok()?, ev)],
            timeout_ms,
        })
    };
    match nr {
        0 | 19 | 45 => one(a[0], PollFlags::POLLIN, -1),
        1 | 20 | 44 => one(a[0], PollFlags::POLLOUT, -1),
        40 => {
            // The side that held it up: the output when it has no room, else the
            // input.
            let out = h.file(a[0]).ok()?;
            let mut p = [PollFd::new(out.as_fd(), PollFlags::POLLOUT)];
            match nix::poll::poll(&mut p, PollTimeout::ZERO) {
                Ok(0) => one(a[0], PollFlags::POLLOUT, -1),
                _ => one(a[1], PollFlags::POLLIN, -1),
            }
        }
        232 | 281 => one(a[0], PollFlags::POLLIN, i64::from(a[3] as i32)),
        23 | 270 => {
            let timeout_ms = if nr == 23 {
                crate::events::timeval_ms(mem, a[4]).ok()?
            } else {
                crate::events::timespec_ms(mem, a[4]).ok()?
            };
            let fds = crate::events::select_fds(mem, h, a[0], [a[1], a[2], a[3]])
                .ok()?
                .into_iter()
                .map(|(_, f, ev)| (f, ev))
                .collect();
            Some(Wait { fds, timeout_ms })
        }
        7 | 271 => {
            let timeout_ms = if nr == 7 {
                i64::from(a[2] as i32)
            } else {
                crate::events::timespec_ms(mem, a[2]).ok()?
            };
            let fds = crate::events::pollfds(mem, h, a[0], a[1])
                .ok()?
                .into_iter()
                .filter_map(|(f, ev)| Some((f?, ev)))
                .collect();
            Some(Wait { fds, timeout_ms })
        }
        _ => None,
    }
}
