//! The VMM's half of system-call forwarding: decodes a request block written by the
//! guest and performs it on the VMM's own stdio. The guest is hostile: every address
//! and length is checked against guest RAM; a bad one is answered with -EFAULT.

use crate::abi::{RQ_ARGS, RQ_NR, RQ_RET, RQ_SIZE};
use crate::mem::GuestMem;
use nix::errno::Errno;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// Largest single transfer (as Linux's MAX_RW_COUNT).
const MAX_RW: u64 = 0x7fff_f000;
/// Most iovecs in one readv/writev (UIO_MAXIOV).
const MAX_IOV: u64 = 1024;

fn err(e: Errno) -> i64 {
    -(e as i64)
}

/// One of the VMM's stdio handles.
enum Stdio {
    In(std::io::Stdin),
    Out(std::io::Stdout),
    Err(std::io::Stderr),
}

impl AsFd for Stdio {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stdio::In(h) => h.as_fd(),
            Stdio::Out(h) => h.as_fd(),
            Stdio::Err(h) => h.as_fd(),
        }
    }
}

/// The VMM's fd for guest fd 0, 1 or 2 (the guest's console is the VMM's stdio).
fn stdio(fd: u64) -> Option<Stdio> {
    match fd {
        0 => Some(Stdio::In(std::io::stdin())),
        1 => Some(Stdio::Out(std::io::stdout())),
        2 => Some(Stdio::Err(std::io::stderr())),
        _ => None,
    }
}

/// Performs the request block at `blk`; nothing happens if the block itself is out
/// of bounds (there is nowhere to put an answer).
pub fn handle(mem: &mut GuestMem, blk: u64) {
    if blk % 8 != 0 || mem.slice(blk, RQ_SIZE).is_none() {
        return;
    }
    let nr = mem.read_u64(blk + RQ_NR).unwrap_or(u64::MAX);
    let mut a = [0u64; 6];
    for (i, v) in a.iter_mut().enumerate() {
        *v = mem.read_u64(blk + RQ_ARGS + 8 * i as u64).unwrap_or(0);
    }
    let ret = perform(mem, nr, a);
    mem.write_u64(blk + RQ_RET, ret as u64);
}

/// Runs one forwarded system call; returns its Linux return value.
pub fn perform(mem: &mut GuestMem, nr: u64, a: [u64; 6]) -> i64 {
    match nr {
        0 => read(mem, a[0], a[1], a[2]),
        1 => write(mem, a[0], a[1], a[2]),
        5 => fstat(mem, a[0], a[1]),
        19 => readv(mem, a[0], a[1], a[2]),
        20 => writev(mem, a[0], a[1], a[2]),
        35 => nanosleep(mem, a[0]),
        230 => clock_nanosleep(mem, a[0], a[1], a[2]),
        _ => err(Errno::ENOSYS),
    }
}

fn read(mem: &mut GuestMem, fd: u64, buf: u64, len: u64) -> i64 {
    let Some(fd) = stdio(fd) else {
        return err(Errno::EBADF);
    };
    let Some(s) = mem.slice_mut(buf, len.min(MAX_RW)) else {
        return err(Errno::EFAULT);
    };
    nix::unistd::read(fd, s).map_or_else(err, |n| n as i64)
}

fn write(mem: &GuestMem, fd: u64, buf: u64, len: u64) -> i64 {
    let Some(fd) = stdio(fd) else {
        return err(Errno::EBADF);
    };
    let Some(s) = mem.slice(buf, len.min(MAX_RW)) else {
        return err(Errno::EFAULT);
    };
    nix::unistd::write(fd, s).map_or_else(err, |n| n as i64)
}

/// The (base, len) pairs of a guest iovec array, or the errno to return.
fn iovecs(mem: &GuestMem, iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if cnt > MAX_IOV {
        return Err(Errno::EINVAL);
    }
    let mut v = Vec::with_capacity(cnt as usize);
    let mut total = 0u64;
    for i in 0..cnt {
        let at = iov.checked_add(16 * i).ok_or(Errno::EFAULT)?;
        let base = mem.read_u64(at).ok_or(Errno::EFAULT)?;
        let len = mem.read_u64(at + 8).ok_or(Errno::EFAULT)?;
        total = total.checked_add(len).ok_or(Errno::EINVAL)?;
        if len > 0 && mem.slice(base, len).is_none() {
            return Err(Errno::EFAULT);
        }
        v.push((base, len));
    }
    if total > MAX_RW {
        return Err(Errno::EINVAL);
    }
    Ok(v)
}

fn writev(mem: &GuestMem, fd: u64, iov: u64, cnt: u64) -> i64 {
    let Some(fd) = stdio(fd) else {
        return err(Errno::EBADF);
    };
    let list = match iovecs(mem, iov, cnt) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    let slices: Vec<IoSlice<'_>> = list
        .iter()
        .filter_map(|&(b, l)| mem.slice(b, l).map(IoSlice::new))
        .collect();
    nix::sys::uio::writev(fd, &slices).map_or_else(err, |n| n as i64)
}

fn readv(mem: &mut GuestMem, fd: u64, iov: u64, cnt: u64) -> i64 {
    let list = match iovecs(mem, iov, cnt) {
        Ok(l) => l,
        Err(e) => return err(e),
    };
    // One read per buffer, stopping at a short read: the buffers may overlap, so
    // they are never borrowed at the same time.
    let mut done = 0i64;
    for (b, l) in list {
        let n = read(mem, fd, b, l);
        if n < 0 {
            return if done > 0 { done } else { n };
        }
        done += n;
        if (n as u64) < l {
            break;
        }
    }
    done
}

fn fstat(mem: &mut GuestMem, fd: u64, buf: u64) -> i64 {
    let Some(fd) = stdio(fd) else {
        return err(Errno::EBADF);
    };
    let st = match nix::sys::stat::fstat(fd) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    // struct stat of x86-64 Linux, 144 bytes.
    let mut b = Vec::with_capacity(144);
    for v in [st.st_dev, st.st_ino, st.st_nlink] {
        b.extend(v.to_le_bytes());
    }
    for v in [st.st_mode, st.st_uid, st.st_gid, 0] {
        b.extend(v.to_le_bytes());
    }
    for v in [st.st_rdev as i64, st.st_size, st.st_blksize, st.st_blocks] {
        b.extend(v.to_le_bytes());
    }
    for v in [
        st.st_atime,
        st.st_atime_nsec,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
        0,
        0,
        0,
    ] {
        b.extend(v.to_le_bytes());
    }
    if mem.write(buf, &b) {
        0
    } else {
        err(Errno::EFAULT)
    }
}

/// Reads a struct timespec; None if out of bounds or not normalised.
fn timespec(mem: &GuestMem, at: u64) -> Option<Duration> {
    let (s, ns) = (mem.read_u64(at)?, mem.read_u64(at.checked_add(8)?)?);
    (ns < 1_000_000_000 && (s as i64) >= 0).then(|| Duration::new(s, ns as u32))
}

fn nanosleep(mem: &GuestMem, req: u64) -> i64 {
    match timespec(mem, req) {
        Some(d) => {
            std::thread::sleep(d);
            0
        }
        None => err(Errno::EINVAL),
    }
}

fn clock_nanosleep(mem: &GuestMem, clock: u64, flags: u64, req: u64) -> i64 {
    const TIMER_ABSTIME: u64 = 1;
    let Some(d) = timespec(mem, req) else {
        return err(Errno::EINVAL);
    };
    let d = if flags & TIMER_ABSTIME != 0 {
        let id = if clock == 0 {
            nix::time::ClockId::CLOCK_REALTIME
        } else {
            nix::time::ClockId::CLOCK_MONOTONIC
        };
        let now = nix::time::clock_gettime(id).map_or(Duration::ZERO, Duration::from);
        d.saturating_sub(now)
    } else {
        d
    };
    std::thread::sleep(d);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_requests_get_errors() {
        let mut m = GuestMem::new(0x4000).expect("mmap");
        assert_eq!(perform(&mut m, 1, [1, 0x3ff0, 0x100, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, 1, [1, u64::MAX - 4, 16, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, 1, [9, 0x100, 1, 0, 0, 0]), -9);
        assert_eq!(perform(&mut m, 0, [0, 0x3fff, 2, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, 20, [1, 0x100, 5000, 0, 0, 0]), -22);
        // iovec pointing outside guest memory
        assert!(m.write_u64(0x100, 0x10_0000) && m.write_u64(0x108, 4));
        assert_eq!(perform(&mut m, 20, [1, 0x100, 1, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, 20, [1, 0x3ff8, 1, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, 5, [1, 0x3f80, 0, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, 999, [0; 6]), -38);
        // a zero-length write to a valid place succeeds
        assert_eq!(perform(&mut m, 1, [2, 0x200, 0, 0, 0, 0]), 0);
        // the block itself out of bounds: ignored, no panic
        handle(&mut m, 0x3ff8);
        handle(&mut m, u64::MAX - 7);
    }
}
