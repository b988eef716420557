//! The container's terminal: a pty made inside the container's devpts, whose master
//! goes to the engine over `--console-socket` (SCM_RIGHTS) and whose slave becomes the
//! process's controlling terminal and stdio.

use crate::{Error, Result};
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

nix::ioctl_write_int_bad!(tiocsctty, libc::TIOCSCTTY);
nix::ioctl_read_bad!(tiocgptn, libc::TIOCGPTN, libc::c_uint);
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Creates the pty, sends the master to `socket`, and makes the slave this process's
/// controlling terminal and stdio. `size` is (height, width).
pub fn setup(socket: &OwnedFd, size: Option<(u16, u16)>, bind_console: bool) -> Result<()> {
    let master = open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open", "/dev/ptmx", e))?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one c_uint into `n`, which lives across the call.
    unsafe { tiocgptn(master.as_raw_fd(), &mut n) }.map_err(|e| Error::sys("TIOCGPTN", e))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one c_int from a valid pointer.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) };
    if r != 0 {
        return Err(Error::sys("TIOCSPTLCK", nix::errno::Errno::last()));
    }
    let slave_path = format!("/dev/pts/{n}");
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open", &slave_path, e))?;
    if let Some((h, w)) = size {
        let ws = libc::winsize {
            ws_row: h,
            ws_col: w,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        unsafe { tiocswinsz(slave.as_raw_fd(), &ws) }.map_err(|e| Error::sys("TIOCSWINSZ", e))?;
    }
    let fds = [master.as_raw_fd()];
    let name = slave_path.as_bytes();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| Error::sys("send pty master over the console socket", e))?;
    drop(master);
    if bind_console {
        // /dev/console shows the same terminal (an empty file made by the rootfs code).
        let _ = mount(
            Some(slave_path.as_str()),
            "/dev/console",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory.
    unsafe { tiocsctty(slave.as_raw_fd(), 0) }.map_err(|e| Error::sys("TIOCSCTTY", e))?;
    for target in 0..=2 {
        // SAFETY: we own fds 0..2 of this process and replace them with the slave;
        // the OwnedFd is forgotten so it is not closed again.
        let mut t = unsafe { OwnedFd::from_raw_fd(target) };
        let r = nix::unistd::dup2(slave.as_fd(), &mut t);
        std::mem::forget(t);
        r.map_err(|e| Error::sys(format!("dup2 pty to fd {target}"), e))?;
    }
    Ok(())
}
