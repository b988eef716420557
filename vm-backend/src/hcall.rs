//! The VMM's half of system-call forwarding: decodes a request block written by the
//! guest and performs it against the [`Host`] (the console fds and the rootfs). The
//! guest is hostile: every fd, address, length and path is checked; a bad one is
//! answered with an errno (-EBADF, -EFAULT, -ENAMETOOLONG, -EMFILE, ...).

use crate::abi::{RQ_ARGS, RQ_NR, RQ_RET, RQ_SIZE};
use crate::events;
use crate::files::{Host, AT_FDCWD};
use crate::fsops::{self, Ret};
use crate::mem::GuestMem;
use crate::wait::{self, BLOCKED, WOULD_WAIT};
use nix::errno::Errno;
use nix::poll::PollFlags;
use std::io::IoSlice;

/// Largest single transfer (as Linux's MAX_RW_COUNT).
const MAX_RW: u64 = 0x7fff_f000;
/// Most iovecs in one readv/writev (UIO_MAXIOV).
const MAX_IOV: u64 = 1024;
/// Largest chunk one sendfile moves.
const SENDFILE_CHUNK: u64 = 64 << 10;
/// Largest chunk one sendfile moves into a pipe (a write that is whole or nothing).
const PIPE_BUF: u64 = 4096;

/// Performs the request block at `blk`; nothing happens if the block itself is out
/// of bounds (there is nowhere to put an answer).
pub fn handle(mem: &mut GuestMem, host: &mut Host, blk: u64) {
    // The block is the guest kernel's (low memory); the call's pointers are the
    // program's, checked against `mem` (a user view in the VMM).
    let mut block = mem.whole();
    let Some((nr, a)) = decode(&block, blk) else {
        return;
    };
    let ret = perform(mem, host, nr, a);
    block.write_u64(blk + RQ_RET, ret as u64);
}

/// The system call number and arguments of the request block at `blk`; None if the
/// block is out of bounds or misaligned.
pub fn decode(mem: &GuestMem, blk: u64) -> Option<(u64, [u64; 6])> {
    if blk % 8 != 0 || mem.slice(blk, RQ_SIZE).is_none() {
        return None;
    }
    let nr = mem.read_u64(blk + RQ_NR).unwrap_or(u64::MAX);
    let mut a = [0u64; 6];
    for (i, v) in a.iter_mut().enumerate() {
        *v = mem.read_u64(blk + RQ_ARGS + 8 * i as u64).unwrap_or(0);
    }
    Some((nr, a))
}

/// Runs one forwarded system call; returns its Linux return value, or [`BLOCKED`]
/// when it would wait (see [`crate::wait`]).
pub fn perform(mem: &mut GuestMem, host: &mut Host, nr: u64, a: [u64; 6]) -> i64 {
    match dispatch(mem, host, nr, a) {
        Ok(v) => v,
        Err(WOULD_WAIT) => BLOCKED,
        Err(crate::tty::BACKGROUND) => crate::abi::RQ_TTIN as i64,
        Err(e) => -(e as i64),
    }
}

fn dispatch(mem: &mut GuestMem, h: &mut Host, nr: u64, a: [u64; 6]) -> Ret {
    let cwd = AT_FDCWD as u32 as u64;
    const NOFOLLOW: u64 = 0x100;
    const REMOVEDIR: u64 = 0x200;
    match nr {
        0 => read(mem, h, a[0], a[1], a[2], None),
        1 => write(mem, h, a[0], a[1], a[2], None),
        // recvfrom and sendto without an address: a read and a write (MSG_DONTWAIT
        // makes one that would wait fail with EAGAIN).
        45 if a[4] == 0 => dontwait(a[3], read(mem, h, a[0], a[1], a[2], None)),
        44 if a[4] == 0 => dontwait(a[3], write(mem, h, a[0], a[1], a[2], None)),
        48 => events::shutdown(h, a[0], a[1]),
        53 => events::socketpair(h, mem, a[0], a[1], a[2], a[3]),
        7 => events::poll(mem, h, a[0], a[1], i64::from(a[2] as i32)),
        22 => events::pipe2(h, mem, a[0], 0),
        213 => match a[0] as i32 {
            n if n <= 0 => Err(Errno::EINVAL),
            _ => events::epoll_create1(h, 0),
        },
        232 | 281 => events::epoll_wait(h, mem, a[0], a[1], a[2], a[3]),
        233 => events::epoll_ctl(h, mem, a[0], a[1], a[2], a[3]),
        271 => {
            let ms = events::timespec_ms(mem, a[2])?;
            events::poll(mem, h, a[0], a[1], ms)
        }
        284 => events::eventfd2(h, a[0], 0),
        290 => events::eventfd2(h, a[0], a[1]),
        291 => events::epoll_create1(h, a[0]),
        283 => events::timerfd_create(h, a[0], a[1]),
        23 => {
            let ms = events::timeval_ms(mem, a[4])?;
            events::select(mem, h, a[0], [a[1], a[2], a[3]], ms)
        }
        270 => {
            let ms = events::timespec_ms(mem, a[4])?;
            events::select(mem, h, a[0], [a[1], a[2], a[3]], ms)
        }
        286 => events::timerfd_settime(h, mem, a[0], a[1], a[2], a[3]),
        287 => events::timerfd_gettime(h, mem, a[0], a[1]),
        293 => events::pipe2(h, mem, a[0], a[1]),
        2 => fsops::openat(h, mem, cwd, a[0], a[1], a[2]),
        3 => h.close(a[0]),
        436 => h.close_range(a[0], a[1], a[2]),
        137 => fsops::statfs(h, mem, a[0], a[1]),
        138 => fsops::fstatfs(h, mem, a[0], a[1]),
        4 => fsops::newfstatat(h, mem, cwd, a[0], a[1], 0),
        5 => fsops::fstat(h, mem, a[0], a[1]),
        6 => fsops::newfstatat(h, mem, cwd, a[0], a[1], NOFOLLOW),
        8 => lseek(h, a[0], a[1], a[2]),
        // ioctl: FIONBIO, FIONCLEX and FIOCLEX act on the guest's fd flags; the
        // terminal requests go to the host terminal.
        16 if a[1] as u32 == 0x5421 => {
            let on = mem.slice(a[2], 4).ok_or(Errno::EFAULT)?;
            let on = i32::from_le_bytes([on[0], on[1], on[2], on[3]]) != 0;
            h.set_flags(a[0], Some(on), None)
        }
        16 if a[1] as u32 == 0x5450 => h.set_flags(a[0], None, Some(false)),
        16 if a[1] as u32 == 0x5451 => h.set_flags(a[0], None, Some(true)),
        16 => crate::tty::ioctl(mem, h, a[0], a[1], a[2]),
        51 | 52 => events::sockname(h, mem, nr == 52, a[0], a[1], a[2]),
        17 => read(mem, h, a[0], a[1], a[2], Some(a[3])),
        18 => write(mem, h, a[0], a[1], a[2], Some(a[3])),
        19 => readv(mem, h, a[0], a[1], a[2]),
        20 => writev(mem, h, a[0], a[1], a[2]),
        21 => fsops::faccessat(h, mem, cwd, a[0], a[1], 0),
        32 => h.dup(a[0], 0, false),
        33 => h.dup3(a[0], a[1], None),
        40 => sendfile(mem, h, a[0], a[1], a[2], a[3]),
        326 => copy_file_range(mem, h, a),
        72 => h.fcntl(a[0], a[1], a[2]),
        79 => fsops::getcwd(h, mem, a[0], a[1]),
        80 => fsops::chdir(h, mem, a[0]),
        81 => fsops::fchdir(h, mem, a[0]),
        82 => fsops::renameat2(h, mem, [cwd, a[0], cwd, a[1], 0, 0]),
        83 => fsops::mkdirat(h, mem, cwd, a[0], a[1]),
        84 => fsops::unlinkat(h, mem, cwd, a[0], REMOVEDIR),
        87 => fsops::unlinkat(h, mem, cwd, a[0], 0),
        88 => fsops::symlinkat(h, mem, a[0], cwd, a[1]),
        89 => fsops::readlinkat(h, mem, cwd, a[0], a[1], a[2]),
        217 => fsops::getdents64(h, mem, a[0], a[1], a[2]),
        257 => fsops::openat(h, mem, a[0], a[1], a[2], a[3]),
        258 => fsops::mkdirat(h, mem, a[0], a[1], a[2]),
        262 => fsops::newfstatat(h, mem, a[0], a[1], a[2], a[3]),
        263 => fsops::unlinkat(h, mem, a[0], a[1], a[2]),
        264 => fsops::renameat2(h, mem, [a[0], a[1], a[2], a[3], 0, 0]),
        266 => fsops::symlinkat(h, mem, a[0], a[1], a[2]),
        267 => fsops::readlinkat(h, mem, a[0], a[1], a[2], a[3]),
        269 => fsops::faccessat(h, mem, a[0], a[1], a[2], 0),
        292 => h.dup3(a[0], a[1], Some(a[2])),
        316 => fsops::renameat2(h, mem, a),
        332 => fsops::statx(h, mem, a),
        439 => fsops::faccessat(h, mem, a[0], a[1], a[2], a[3]),
        crate::abi::HJ_BUFFER_FILE => buffer_file(mem, h, a[0], a[1], a[2] != 0),
        _ => Err(Errno::ENOSYS),
    }
}

/// HJ_BUFFER_FILE: a memfd holding the guest kernel's bytes, as a new fd.
fn buffer_file(mem: &GuestMem, h: &mut Host, at: u64, len: u64, cloexec: bool) -> Ret {
    let kernel = mem.whole();
    let bytes = kernel.slice(at, len.min(1 << 20)).ok_or(Errno::EFAULT)?;
    let f = crate::procdir::sealed_memfd(bytes)?;
    h.install_file(f, cloexec)
}

/// A file offset argument: EINVAL when negative.
fn offset(off: u64) -> Result<i64, Errno> {
    i64::try_from(off).map_err(|_| Errno::EINVAL)
}

/// read(2), or pread64(2) with `at`.
/// A send or recv with MSG_DONTWAIT never waits.
fn dontwait(flags: u64, r: Ret) -> Ret {
    const MSG_DONTWAIT: u64 = 0x40;
    match r {
        Err(e) if e == crate::wait::WOULD_WAIT && flags & MSG_DONTWAIT != 0 => Err(Errno::EAGAIN),
        r => r,
    }
}

fn read(mem: &mut GuestMem, h: &Host, gfd: u64, buf: u64, len: u64, at: Option<u64>) -> Ret {
    let fd = h.fd(gfd)?;
    let kind = h.kind(gfd)?.0;
    if kind == crate::files::Kind::Listing {
        return Err(Errno::EISDIR);
    }
    // The console (a file the VMM was given): job control first.
    if at.is_none() && kind == crate::files::Kind::Polled {
        crate::tty::background_read(h, mem, fd)?;
    }
    let s = mem.slice_mut(buf, len.min(MAX_RW)).ok_or(Errno::EFAULT)?;
    if at.is_none() {
        wait::check(h, gfd, PollFlags::POLLIN)?;
    }
    let n = match at {
        None => nix::unistd::read(fd, s),
        Some(off) => nix::sys::uio::pread(fd, s, offset(off)?),
    };
    wait::after(h, gfd, n.map(|n| n as i64))
}

/// write(2), or pwrite64(2) with `at`.
fn write(mem: &GuestMem, h: &Host, gfd: u64, buf: u64, len: u64, at: Option<u64>) -> Ret {
    let fd = h.fd(gfd)?;
    let s = mem.slice(buf, len.min(MAX_RW)).ok_or(Errno::EFAULT)?;
    if at.is_none() {
        wait::check(h, gfd, PollFlags::POLLOUT)?;
    }
    let n = match at {
        None => nix::unistd::write(fd, s),
        Some(off) => nix::sys::uio::pwrite(fd, s, offset(off)?),
    };
    wait::after(h, gfd, n.map(|n| n as i64))
}

fn lseek(h: &Host, fd: u64, off: u64, whence: u64) -> Ret {
    use nix::unistd::Whence;
    let w = match whence {
        0 => Whence::SeekSet,
        1 => Whence::SeekCur,
        2 => Whence::SeekEnd,
        3 => Whence::SeekData,
        4 => Whence::SeekHole,
        _ => return Err(Errno::EINVAL),
    };
    nix::unistd::lseek(h.fd(fd)?, off as i64, w)
}

/// Largest copy_file_range per call.
const COPY_CHUNK: u64 = 4 << 20;

/// copy_file_range(2) between two regular files of the rootfs: the host's call on
/// their host fds, with the guest's offsets (each NULL, or a loff_t in guest
/// memory that is read first and written back after). Anything but two regular
/// files is EINVAL, as on Linux for pipes and devices.
fn copy_file_range(mem: &mut GuestMem, h: &Host, a: [u64; 6]) -> Ret {
    let (fin, offin, fout, offout, len, flags) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    if flags != 0 {
        return Err(Errno::EINVAL);
    }
    let (i, o) = (h.fd(fin)?, h.fd(fout)?);
    for f in [i, o] {
        if nix::sys::stat::fstat(f)?.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EINVAL);
        }
    }
    let read_off = |at: u64| -> Result<Option<i64>, Errno> {
        if at == 0 {
            return Ok(None);
        }
        let v = mem.read_u64(at).ok_or(Errno::EFAULT)? as i64;
        if v < 0 {
            return Err(Errno::EINVAL);
        }
        Ok(Some(v))
    };
    let (mut ri, mut ro) = (read_off(offin)?, read_off(offout)?);
    // At most COPY_CHUNK per call (a short count is legal: cp and glibc loop):
    // the ring is served by one thread, so one long copy would hold up every other
    // guest call.
    let n =
        nix::fcntl::copy_file_range(i, ri.as_mut(), o, ro.as_mut(), len.min(COPY_CHUNK) as usize)?;
    for (at, v) in [(offin, ri), (offout, ro)] {
        if let Some(v) = v {
            if !mem.write_u64(at, v as u64) {
                return Err(Errno::EFAULT);
            }
        }
    }
    Ok(n as i64)
}

/// sendfile(2) through a VMM buffer, at most [`SENDFILE_CHUNK`] bytes per call.
fn sendfile(mem: &mut GuestMem, h: &Host, out: u64, inp: u64, offp: u64, count: u64) -> Ret {
    let r = sendfile_once(mem, h, out, inp, offp, count);
    wait::after(h, out, wait::after(h, inp, r))
}

fn sendfile_once(mem: &mut GuestMem, h: &Host, out: u64, inp: u64, offp: u64, count: u64) -> Ret {
    let (o, i) = (h.fd(out)?, h.fd(inp)?);
    // Reading the console: job control first, as for read.
    if offp == 0 && h.kind(inp)?.0 == crate::files::Kind::Polled {
        crate::tty::background_read(h, mem, i)?;
    }
    // An output that can be full (a pipe, the console) must have room before
    // anything is read: bytes read and not written would be lost. A write of at
    // most PIPE_BUF into a pipe with room is whole.
    let (out_kind, out_nonblock) = h.kind(out)?;
    let cap = if out_kind == crate::files::Kind::File {
        SENDFILE_CHUNK
    } else {
        let mut p = [nix::poll::PollFd::new(o, PollFlags::POLLOUT)];
        if nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO)? == 0 {
            return Err(if out_nonblock {
                Errno::EAGAIN
            } else {
                WOULD_WAIT
            });
        }
        PIPE_BUF
    };
    if offp == 0 {
        wait::check(h, inp, PollFlags::POLLIN)?;
    }
    let at = match offp {
        0 => None,
        p => Some(offset(mem.read_u64(p).ok_or(Errno::EFAULT)?)?),
    };
    let mut buf = vec![0u8; count.min(cap) as usize];
    let n = match at {
        None => nix::unistd::read(i, &mut buf)?,
        Some(off) => nix::sys::uio::pread(i, &mut buf, off)?,
    };
    let mut done = 0;
    let mut failed = None;
    while done < n {
        match nix::unistd::write(o, &buf[done..n]) {
            Ok(0) => break,
            Ok(w) => done += w,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Bytes read and not written go back to a file that can seek (from a pipe they
    // cannot: the output's room was checked first, so that is a rare race).
    if done < n && at.is_none() {
        let _ = nix::unistd::lseek(i, done as i64 - n as i64, nix::unistd::Whence::SeekCur);
    }
    if let (0, Some(e)) = (done, failed) {
        return Err(e);
    }
    if let Some(off) = at {
        if !mem.write_u64(offp, off.saturating_add(done as i64) as u64) {
            return Err(Errno::EFAULT);
        }
    }
    Ok(done as i64)
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
        let len = mem
            .read_u64(at.checked_add(8).ok_or(Errno::EFAULT)?)
            .ok_or(Errno::EFAULT)?;
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

fn writev(mem: &GuestMem, h: &Host, gfd: u64, iov: u64, cnt: u64) -> Ret {
    let fd = h.fd(gfd)?;
    let list = iovecs(mem, iov, cnt)?;
    let slices: Vec<IoSlice<'_>> = list
        .iter()
        .filter_map(|&(b, l)| mem.slice(b, l).map(IoSlice::new))
        .collect();
    wait::check(h, gfd, PollFlags::POLLOUT)?;
    let n = nix::sys::uio::writev(fd, &slices).map(|n| n as i64);
    wait::after(h, gfd, n)
}

fn readv(mem: &mut GuestMem, h: &Host, fd: u64, iov: u64, cnt: u64) -> Ret {
    h.fd(fd)?;
    let list = iovecs(mem, iov, cnt)?;
    // One read per buffer, stopping at a short read: the buffers may overlap, so
    // they are never borrowed at the same time.
    let mut done = 0i64;
    for (b, l) in list {
        let n = match read(mem, h, fd, b, l, None) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += n;
        if (n as u64) < l {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::tests::{tempfile_dir, test_host};

    const PATH_AT: u64 = 0x1000;
    const BUF: u64 = 0x2000;

    fn path(m: &mut GuestMem, p: &str) -> u64 {
        let mut b = p.as_bytes().to_vec();
        b.push(0);
        assert!(m.write(PATH_AT, &b));
        PATH_AT
    }

    #[test]
    fn hostile_requests_get_errors() {
        let dir = tempfile_dir();
        let mut h = test_host(&dir);
        let h = &mut h;
        let mut m = GuestMem::new(0x4000).expect("mmap");
        assert_eq!(perform(&mut m, h, 1, [1, 0x3ff0, 0x100, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, h, 1, [1, u64::MAX - 4, 16, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, h, 1, [9, 0x100, 1, 0, 0, 0]), -9);
        assert_eq!(perform(&mut m, h, 0, [0, 0x3fff, 2, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, h, 20, [1, 0x100, 5000, 0, 0, 0]), -22);
        // iovec pointing outside guest memory
        assert!(m.write_u64(0x100, 0x10_0000) && m.write_u64(0x108, 4));
        assert_eq!(perform(&mut m, h, 20, [1, 0x100, 1, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, h, 20, [1, 0x3ff8, 1, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, h, 5, [1, 0x3f80, 0, 0, 0, 0]), -14);
        assert_eq!(perform(&mut m, h, 999, [0; 6]), -38);
        // a zero-length write to a valid place succeeds
        assert_eq!(perform(&mut m, h, 1, [2, 0x200, 0, 0, 0, 0]), 0);
        // paths: out of bounds, unterminated at the end of memory, too long
        assert_eq!(perform(&mut m, h, 2, [0x4000, 0, 0, 0, 0, 0]), -14);
        assert!(m.write(0x3ffe, b"ab"));
        assert_eq!(perform(&mut m, h, 2, [0x3ffe, 0, 0, 0, 0, 0]), -14);
        assert!(m.write(0x1000, &[b'a'; 0x1000]));
        assert_eq!(perform(&mut m, h, 2, [0x1000, 0, 0, 0, 0, 0]), -36);
        assert_eq!(perform(&mut m, h, 257, [77, 0x1000, 0, 0, 0, 0]), -36);
        let p = path(&mut m, "x");
        assert_eq!(perform(&mut m, h, 257, [77, p, 0, 0, 0, 0]), -9);
        assert_eq!(perform(&mut m, h, 257, [1, p, 0, 0, 0, 0]), -20);
        // the block itself out of bounds: ignored, no panic
        handle(&mut m, h, 0x3ff8);
        handle(&mut m, h, u64::MAX - 7);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_stay_in_the_root() {
        let dir = tempfile_dir();
        std::fs::create_dir(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join("etc/hostname"), "inside\n").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", dir.join("abs")).expect("symlink");
        std::os::unix::fs::symlink("../../../../../etc/shadow", dir.join("rel")).expect("ln");
        let mut h = test_host(&dir);
        let h = &mut h;
        let mut m = GuestMem::new(0x4000).expect("mmap");
        for p in ["/abs", "../../../../etc/hostname", "/../etc/hostname"] {
            let p = path(&mut m, p);
            assert_eq!(perform(&mut m, h, 2, [p, 0, 0, 0, 0, 0]), 3);
            assert_eq!(perform(&mut m, h, 0, [3, BUF, 100, 0, 0, 0]), 7);
            assert_eq!(m.slice(BUF, 7), Some(&b"inside\n"[..]));
            assert_eq!(perform(&mut m, h, 3, [3, 0, 0, 0, 0, 0]), 0);
        }
        let p = path(&mut m, "/rel");
        assert_eq!(perform(&mut m, h, 2, [p, 0, 0, 0, 0, 0]), -2);
        let p = path(&mut m, "../../../../etc/shadow");
        assert_eq!(perform(&mut m, h, 2, [p, 0, 0, 0, 0, 0]), -2);
        // readlink shows the link as stored, opening it stays inside
        let p = path(&mut m, "abs");
        assert_eq!(perform(&mut m, h, 89, [p, BUF, 64, 0, 0, 0]), 13);
        assert_eq!(m.slice(BUF, 13), Some(&b"/etc/hostname"[..]));
        // create, write, stat, rename, unlink, mkdir, rmdir, getcwd/chdir
        let p = path(&mut m, "/new");
        assert_eq!(perform(&mut m, h, 2, [p, 0o1101, 0o644, 0, 0, 0]), 3);
        assert!(m.write(BUF, b"data"));
        assert_eq!(perform(&mut m, h, 1, [3, BUF, 4, 0, 0, 0]), 4);
        assert_eq!(perform(&mut m, h, 5, [3, BUF, 0, 0, 0, 0]), 0);
        assert_eq!(m.read_u64(BUF + 48), Some(4));
        assert_eq!(std::fs::read(dir.join("new")).expect("new"), b"data");
        let p = path(&mut m, "/dir");
        assert_eq!(perform(&mut m, h, 83, [p, 0o755, 0, 0, 0, 0]), 0);
        assert_eq!(perform(&mut m, h, 80, [p, 0, 0, 0, 0, 0]), 0);
        assert_eq!(perform(&mut m, h, 79, [BUF, 100, 0, 0, 0, 0]), 5);
        assert_eq!(m.slice(BUF, 5), Some(&b"/dir\0"[..]));
        assert!(m.write(0x1800, b"../new\0moved\0"));
        assert_eq!(perform(&mut m, h, 82, [0x1800, 0x1807, 0, 0, 0, 0]), 0);
        assert!(dir.join("dir/moved").is_file());
        let p = path(&mut m, "moved");
        assert_eq!(perform(&mut m, h, 87, [p, 0, 0, 0, 0, 0]), 0);
        let p = path(&mut m, "/");
        assert_eq!(perform(&mut m, h, 80, [p, 0, 0, 0, 0, 0]), 0);
        assert_eq!(perform(&mut m, h, 84, [p, 0, 0, 0, 0, 0]), -16);
        let p = path(&mut m, "dir/..");
        assert_eq!(perform(&mut m, h, 84, [p, 0, 0, 0, 0, 0]), -16);
        let p = path(&mut m, "dir");
        assert_eq!(perform(&mut m, h, 84, [p, 0, 0, 0, 0, 0]), 0);
        assert!(!dir.join("dir").exists());
        // getdents64 of the root lists its entries
        let p = path(&mut m, "/");
        let fd = perform(
            &mut m,
            h,
            257,
            [AT_FDCWD as u32 as u64, p, 0x10000, 0, 0, 0],
        );
        assert_eq!(fd, 4);
        let n = perform(&mut m, h, 217, [4, BUF, 0x1000, 0, 0, 0]);
        assert!(n > 0);
        let names = m.slice(BUF, n as u64).expect("dents");
        assert!(names.windows(4).any(|w| w == b"etc\0"));
        assert_eq!(perform(&mut m, h, 217, [4, 0x3ff0, 0x1000, 0, 0, 0]), -14);
        // The VMM's O_NONBLOCK is not the guest's.
        assert_eq!(perform(&mut m, h, 72, [4, 3, 0, 0, 0, 0]) & 0o4000, 0);
        // A FIFO (or device) in the rootfs is refused, and opening it does not block.
        nix::unistd::mkfifo(
            &dir.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let p = path(&mut m, "/fifo");
        assert_eq!(perform(&mut m, h, 2, [p, 0, 0, 0, 0, 0]), -13);
        assert_eq!(perform(&mut m, h, 2, [p, 2, 0, 0, 0, 0]), -13);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn readonly_root_refuses_changes() {
        let dir = tempfile_dir();
        let null = || std::fs::File::open("/dev/null").expect("null").into();
        let root = std::fs::File::open(&dir).expect("root").into();
        let mut h = Host::new([null(), null(), null()], root, "/", true);
        let h = &mut h;
        let mut m = GuestMem::new(0x4000).expect("mmap");
        let p = path(&mut m, "/f");
        assert_eq!(perform(&mut m, h, 2, [p, 0o101, 0o644, 0, 0, 0]), -30);
        assert_eq!(perform(&mut m, h, 2, [p, 0o100, 0o644, 0, 0, 0]), -30);
        assert_eq!(perform(&mut m, h, 83, [p, 0o755, 0, 0, 0, 0]), -30);
        assert!(!dir.join("f").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
