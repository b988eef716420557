//! The typed channel between the runtime, stage 1 and init: one message per
//! SOCK_SEQPACKET datagram, each a step of the protocol.

use crate::Error;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};

/// A protocol step.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// Runtime → child: carry on (cgroup joined, id maps written, ...).
    Go,
    /// Stage 1 → runtime: I unshared a user namespace, write my id maps.
    MapIds,
    /// Stage 1 → runtime: init's host pid.
    Pid(i32),
    /// Init → runtime: mounts are done, run prestart/createRuntime hooks.
    RunHooks,
    /// Runtime → init: hooks done; the state JSON for the in-container hooks.
    HooksDone(String),
    /// Init → runtime: set up and waiting for `start`.
    Ready,
    /// Any child → runtime: setup failed with this message.
    Failed(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair (both close-on-exec).
    pub fn pair() -> Result<(Channel, Channel), Error> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|source| Error::Sys {
            op: "socketpair",
            source,
        })?;
        Ok((Channel(a), Channel(b)))
    }

    /// The socket's fd number (to keep it out of the fds a process inherits).
    pub fn raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// Sends one message.
    pub fn send(&self, m: &Msg) -> Result<(), Error> {
        let data = serde_json::to_vec(m).map_err(|e| Error::Channel(e.to_string()))?;
        send(self.0.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL)
            .map(drop)
            .map_err(|e| Error::Channel(format!("send: {e}")))
    }

    /// Receives one message; an error if the other end is gone.
    pub fn recv(&self) -> Result<Msg, Error> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Err(Error::Channel("exited during setup".into())),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n])
                        .map_err(|e| Error::Channel(format!("sent a bad message: {e}")))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::Channel(format!("recv: {e}"))),
            }
        }
    }

    /// Receives and checks that the message is `want`.
    pub fn expect(&self, want: Msg) -> Result<(), Error> {
        match self.recv()? {
            m if m == want => Ok(()),
            Msg::Failed(e) => Err(Error::Init(e)),
            m => Err(Error::Channel(format!(
                "protocol error: expected {want:?}, got {m:?}"
            ))),
        }
    }
}

/// Closes a child's copy of an fd the runtime holds (its state-directory lock), so the
/// lock cannot outlive a runtime killed while the child lives on.
pub fn close_inherited(fd: std::os::fd::RawFd) {
    // SAFETY: `fd` was inherited by fork from the runtime, which owns it; this child never
    // uses it, and never drops the owner either, since it leaves through process::exit.
    unsafe {
        libc::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let (a, b) = Channel::pair().expect("pair");
        a.send(&Msg::Pid(42)).expect("send");
        assert_eq!(b.recv().expect("recv"), Msg::Pid(42));
        b.send(&Msg::Failed("boom".into())).expect("send");
        assert!(matches!(a.expect(Msg::Go), Err(Error::Init(m)) if m == "boom"));
        drop(b);
        assert!(a.recv().is_err());
    }
}
