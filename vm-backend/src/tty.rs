//! Terminal ioctls for the guest. The only terminal a guest fd can lead to is the
//! VMM's own stdio: the pty whose master went to the engine over
//! `--console-socket` (device nodes in the rootfs are refused). The guest gets the
//! calls programs make to use a terminal: get and set its attributes (canonical
//! and raw modes), get and set its window size, and its foreground process group
//! (the guest's: see [`pgrp`]). Anything else is ENOTTY.

use crate::files::Host;
use crate::fsops::Ret;
use crate::mem::GuestMem;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Requests performed on the host pty; the VMM's seccomp profile allows exactly these.
pub const TCGETS: u64 = 0x5401;
/// Set attributes now.
pub const TCSETS: u64 = 0x5402;
/// Set attributes after output drains.
pub const TCSETSW: u64 = 0x5403;
/// Set attributes after output drains, discarding pending input.
pub const TCSETSF: u64 = 0x5404;
/// Get the window size.
pub const TIOCGWINSZ: u64 = 0x5413;
/// Set the window size.
pub const TIOCSWINSZ: u64 = 0x5414;
/// Answered by the guest kernel's view: the foreground group is the guest's own.
const TIOCGPGRP: u64 = 0x540f;
const TIOCSPGRP: u64 = 0x5410;

/// Every request the VMM itself issues on a host fd (for its seccomp profile).
pub const HOST_REQUESTS: &[u64] = &[TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ, TIOCSWINSZ];

/// Size of the kernel's `struct termios` (what TCGETS/TCSETS* transfer).
const TERMIOS: u64 = 36;
/// Size of `struct winsize`.
const WINSIZE: u64 = 8;

/// The device number of a terminal.
fn rdev(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    nix::sys::stat::fstat(fd).map(|s| s.st_rdev)
}

/// ioctl(2) on the host fd with a VMM buffer.
fn host_ioctl(fd: BorrowedFd<'_>, req: u64, buf: &mut [u8; 64]) -> Result<(), Errno> {
    // SAFETY: every request passed here (HOST_REQUESTS) reads or writes at most 36
    // bytes through the pointer, and `buf` is 64 bytes that live across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, buf.as_mut_ptr()) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// TIOCGPGRP and TIOCSPGRP. The console's foreground group is the guest's own
/// (see [`Host::console_fg`]): a shell's jobs take the terminal in turn, and the
/// VMM gives the terminal's signals to the group that has it. An `exec --tty`
/// terminal's is kept by its device number, and reads as the caller's group until
/// set; its `exec` proxy passes the terminal's signals on to that group.
fn pgrp(mem: &mut GuestMem, h: &mut Host, fd: BorrowedFd<'_>, req: u64, arg: u64) -> Ret {
    use crate::abi::{PI_PGID, PI_SID};
    use std::sync::atomic::Ordering;
    let console = h.is_console(fd);
    let me = h.current() as u64;
    // Whether a live guest process is in group `g`, and whether one in the
    // caller's session is.
    let members = |g: u64| {
        let mut ps = mem.group_slots(g);
        let any = ps.clone().next().is_some();
        (
            any,
            ps.any(|p| mem.proc_word(p, PI_SID) == mem.proc_word(me, PI_SID)),
        )
    };
    if req == TIOCSPGRP {
        let b = mem.slice(arg, 4).ok_or(Errno::EFAULT)?;
        let pgid = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if pgid < 0 {
            return Err(Errno::EINVAL);
        }
        // A group some live guest process is in (ESRCH otherwise), of the
        // caller's session (EPERM otherwise), as Linux.
        match members(pgid as u64) {
            (false, _) => return Err(Errno::ESRCH),
            (true, false) => return Err(Errno::EPERM),
            (true, true) => {}
        }
        if console {
            h.console_fg().store(pgid as u64, Ordering::SeqCst);
        } else {
            h.set_tty_fg(rdev(fd)?, pgid as u64);
        }
        return Ok(0);
    }
    let pgid = if console {
        h.console_fg().load(Ordering::SeqCst)
    } else {
        // A group that has no process left (the terminal's last session set
        // it) is not the foreground: the caller's is.
        h.tty_fg(rdev(fd)?)
            .filter(|&g| members(g).0)
            .unwrap_or_else(|| mem.proc_word(me, PI_PGID))
    };
    if !mem.write(arg, &(pgid as i32).to_le_bytes()) {
        return Err(Errno::EFAULT);
    }
    Ok(0)
}

/// The errno [`background_read`] answers with (never a result of the host calls
/// made here; [`crate::hcall::perform`] turns it into [`crate::abi::RQ_TTIN`]).
pub const BACKGROUND: Errno = Errno::EL2HLT;

/// Before a read of the console: a process of the console's session (the first
/// process's) outside its foreground group is answered [`BACKGROUND`], and the
/// guest kernel then stops its group with SIGTTIN (or answers EIO) as Linux's job
/// control does. Nothing for any other file or process.
pub fn background_read(h: &Host, mem: &GuestMem, fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use crate::abi::{PI_PGID, PI_SID};
    use std::sync::atomic::Ordering;
    let me = h.current() as u64;
    let (pgid, sid) = (mem.proc_word(me, PI_PGID), mem.proc_word(me, PI_SID));
    if sid != 1 || pgid == 0 || pgid == h.console_fg().load(Ordering::SeqCst) || !h.is_console(fd) {
        return Ok(());
    }
    Err(BACKGROUND)
}

/// ioctl(2) from the guest on its fd `fd`.
pub fn ioctl(mem: &mut GuestMem, h: &mut Host, fd: u64, req: u64, arg: u64) -> Ret {
    let file = h.file(fd)?;
    let fd = file.as_fd();
    let mut buf = [0u8; 64];
    let (size, out) = match req {
        TCGETS => (TERMIOS, true),
        TCSETS | TCSETSW | TCSETSF => (TERMIOS, false),
        TIOCGWINSZ => (WINSIZE, true),
        TIOCSWINSZ => (WINSIZE, false),
        TIOCGPGRP | TIOCSPGRP => {
            // Only on a terminal.
            host_ioctl(fd, TCGETS, &mut buf)?;
            return pgrp(mem, h, fd, req, arg);
        }
        _ => return Err(Errno::ENOTTY),
    };
    if out {
        host_ioctl(fd, req, &mut buf)?;
        if !mem.write(arg, &buf[..size as usize]) {
            return Err(Errno::EFAULT);
        }
    } else {
        let src = mem.slice(arg, size).ok_or(Errno::EFAULT)?;
        buf[..size as usize].copy_from_slice(src);
        host_ioctl(fd, req, &mut buf)?;
    }
    Ok(0)
}
