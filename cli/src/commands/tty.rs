#![allow(unsafe_code)]
//! `run` with `process.terminal` and no `--console-socket`: like runc, hyperjail
//! receives the pty master itself and relays it to its own stdin/stdout.

use anyhow::{Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// A console socket in a private temporary directory.
#[derive(Debug)]
pub struct ConsoleSocket {
    dir: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Binds `<tmp>/hyperjail-console-<pid>/console.sock`.
    pub fn new() -> Result<ConsoleSocket> {
        let dir = std::env::temp_dir().join(format!("hyperjail-console-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let listener =
            UnixListener::bind(dir.join("console.sock")).context("bind console socket")?;
        Ok(ConsoleSocket { dir, listener })
    }

    /// The socket path to give to `create`.
    pub fn path(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// Accepts the container's connection and receives the pty master.
    pub fn receive(&self) -> Result<File> {
        let (conn, _) = self.listener.accept().context("accept on console socket")?;
        let mut buf = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .context("receive pty master")?;
        for c in msg.cmsgs().context("read control message")? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd for us via SCM_RIGHTS;
                    // nothing else owns it.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        anyhow::bail!("the container sent no pty master")
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Relays stdin to the pty and the pty to stdout; the host terminal is raw meanwhile.
#[derive(Debug)]
pub struct Relay {
    saved: Option<Termios>,
    out: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts relaying through `master`.
    pub fn start(master: File) -> Result<Relay> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        let mut input = master.try_clone().context("dup pty master")?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || input.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let mut output = master;
        let out = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdout = std::io::stdout();
            // The read fails with EIO once the last slave fd is closed.
            while let Ok(n) = output.read(&mut buf) {
                if n == 0
                    || stdout
                        .write_all(&buf[..n])
                        .and_then(|_| stdout.flush())
                        .is_err()
                {
                    break;
                }
            }
        });
        Ok(Relay {
            saved,
            out: Some(out),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(h) = self.out.take() {
            let _ = h.join();
        }
        if let Some(t) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}
