//! Interrupting a vCPU's wait: the guest kernel rings MMIO_INTERRUPT for a thread
//! that has a signal to take. Its futex wait or sleep ends with EINTR, a blocked
//! call (see [`crate::wait`]) too; a wait that starts after the doorbell, before the
//! thread took the signal, ends at once.

use crate::abi::MAX_VCPUS;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag and an eventfd per vCPU slot.
#[derive(Debug)]
pub struct Interrupts {
    flags: [AtomicBool; MAX_VCPUS as usize],
    fds: Vec<EventFd>,
}

impl Interrupts {
    /// The eventfds are made now (the VMM can still make them later, but this is
    /// set up with the VM).
    pub fn new() -> Result<Interrupts, String> {
        let fds = (0..MAX_VCPUS)
            .map(|_| {
                EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                    .map_err(|e| format!("eventfd: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Interrupts {
            flags: Default::default(),
            fds,
        })
    }

    /// Marks slot `slot` interrupted and wakes a poll on its eventfd.
    pub fn raise(&self, slot: u64) {
        let Some(f) = self.flags.get(slot as usize) else {
            return;
        };
        f.store(true, Ordering::SeqCst);
        let _ = self.fds[slot as usize].write(1);
    }

    /// Whether slot `slot` was interrupted (the mark is taken).
    pub fn take(&self, slot: u64) -> bool {
        let Some(f) = self.flags.get(slot as usize) else {
            return false;
        };
        let _ = self.fds[slot as usize].read();
        f.swap(false, Ordering::SeqCst)
    }

    /// The flag of slot `slot` (the futex wait checks it under its lock).
    pub fn flag(&self, slot: u64) -> &AtomicBool {
        &self.flags[(slot as usize).min(MAX_VCPUS as usize - 1)]
    }

    /// The eventfd a blocked call on slot `slot` polls with its files.
    pub fn fd(&self, slot: u64) -> BorrowedFd<'_> {
        self.fds[(slot as usize).min(MAX_VCPUS as usize - 1)].as_fd()
    }
}
