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

/// Bind-mounts the pty slave on /dev/console, through fds on both sides and never
/// through a symlink someone put at /dev/console (CVE-2025-52565): a symlink or any
/// other kind of file there is replaced by a fresh empty file first.
fn bind_dev_console(slave: &OwnedFd) -> Result<()> {
    use nix::sys::stat::{fstat, SFlag};
    let open_console = || {
        open(
            "/dev/console",
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let ok = |fd: &OwnedFd| {
        fstat(fd.as_fd())
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
    };
    let target = match open_console() {
        Ok(fd) if ok(&fd) => fd,
        _ => {
            let _ = nix::unistd::unlink("/dev/console");
            let f = open(
                "/dev/console",
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| Error::path("create", "/dev/console", e))?;
            drop(f);
            let fd = open_console().map_err(|e| Error::path("open", "/dev/console", e))?;
            if !ok(&fd) {
                return Err(Error::Invalid("/dev/console is not a regular file".into()));
            }
            fd
        }
    };
    let from = format!("/proc/self/fd/{}", slave.as_raw_fd());
    let to = format!("/proc/self/fd/{}", target.as_raw_fd());
    mount(
        Some(from.as_str()),
        to.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::path("bind the terminal on", "/dev/console", e))
}

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
    // The peer of this very master, not whatever /dev/pts/N resolves to.
    // SAFETY: TIOCGPTPEER takes open flags as its argument and returns a new fd,
    // which we own from here on.
    let fd = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::sys("TIOCGPTPEER", nix::errno::Errno::last()));
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(fd) };
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
        bind_dev_console(&slave)?;
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
