//! Pipes, eventfds, timerfds, `poll` and epoll for the guest: host objects the VMM makes
//! O_NONBLOCK and keeps in the guest's fd table; a call that would wait is handed
//! to the guest's vCPU thread ([`crate::wait`]), so here every call returns at once.

use crate::files::{Host, MAX_FDS};
use crate::fsops::Ret;
use crate::mem::GuestMem;
use crate::wait::WOULD_WAIT;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{AddressFamily, Shutdown, SockFlag, SockType};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

const O_CLOEXEC: u64 = 0o2000000;
const O_NONBLOCK: u64 = 0o4000;
const O_DIRECT: u64 = 0o40000;
const EFD_SEMAPHORE: u64 = 1;
/// Host buffer of a guest pipe (Linux's default pipe-max-size).
const PIPE_SIZE: i32 = 1 << 20;
/// Size of a guest `struct epoll_event` (packed on x86-64).
const EPOLL_EVENT: u64 = 12;
/// Most events one epoll_wait returns (a guest asking for more gets them in turns).
const MAX_EVENTS: u64 = 1024;

/// A host fd a libc call just returned (or its errno).
fn owned(fd: i32) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just returned by the kernel to this thread and is owned by
    // nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pipe2(2) (`pipe` with flags 0): a host pipe, both ends O_NONBLOCK on the host.
pub fn pipe2(h: &mut Host, mem: &mut GuestMem, fds: u64, flags: u64) -> Ret {
    if flags & !(O_CLOEXEC | O_NONBLOCK | O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    if mem.slice(fds, 8).is_none() {
        return Err(Errno::EFAULT);
    }
    let host =
        nix::fcntl::OFlag::from_bits_truncate((O_CLOEXEC | O_NONBLOCK | (flags & O_DIRECT)) as i32);
    let (r, w) = nix::unistd::pipe2(host)?;
    // A larger buffer than Linux's default 64 KiB: each time a side finds the pipe
    // full or empty it goes through its vCPU thread (crate::wait), which costs tens
    // of microseconds here; a failure leaves the default.
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    let (cloexec, nonblock) = (flags & O_CLOEXEC != 0, flags & O_NONBLOCK != 0);
    install_pair(h, mem, fds, [r, w], cloexec, nonblock)
}

/// Installs the two ends of a pipe or socket pair (made O_NONBLOCK by the VMM) as
/// guest fds and writes them as two ints at `at` (both or neither installed).
fn install_pair(
    h: &mut Host,
    mem: &mut GuestMem,
    at: u64,
    [a, b]: [OwnedFd; 2],
    cloexec: bool,
    nonblock: bool,
) -> Ret {
    let ga = h.install_own(a, cloexec, nonblock)?;
    let gb = match h.install_own(b, cloexec, nonblock) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = h.close(ga as u64);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(ga as i32).to_le_bytes());
    out[4..].copy_from_slice(&(gb as i32).to_le_bytes());
    mem.write(at, &out);
    Ok(0)
}

/// socketpair(2): a connected AF_UNIX pair (stream, datagram or seqpacket), host
/// sockets in the VMM's fd table like a pipe's ends (read, write, send and recv
/// without addresses, poll, shutdown).
pub fn socketpair(
    h: &mut Host,
    mem: &mut GuestMem,
    domain: u64,
    ty: u64,
    proto: u64,
    sv: u64,
) -> Ret {
    const AF_UNIX: u64 = 1;
    const SOCK_NONBLOCK: u64 = 0o4000;
    const SOCK_CLOEXEC: u64 = 0o2000000;
    let (ty, flags) = (ty as u32 as u64 & 0xf, ty as u32 as u64 & !0xf);
    match domain as u32 as u64 {
        AF_UNIX => {}
        // AF_INET, AF_INET6: Linux has no pairs of those.
        2 | 10 => return Err(Errno::EOPNOTSUPP),
        _ => return Err(Errno::EAFNOSUPPORT),
    }
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let kind = match ty {
        1 => SockType::Stream,
        2 => SockType::Datagram,
        5 => SockType::SeqPacket,
        _ => return Err(Errno::ESOCKTNOSUPPORT),
    };
    if proto != 0 {
        return Err(Errno::EPROTONOSUPPORT);
    }
    if mem.slice(sv, 8).is_none() {
        return Err(Errno::EFAULT);
    }
    let (a, b) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        kind,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )?;
    let (cloexec, nonblock) = (flags & SOCK_CLOEXEC != 0, flags & SOCK_NONBLOCK != 0);
    install_pair(h, mem, sv, [a, b], cloexec, nonblock)
}

/// getsockname(2), or getpeername(2) with `peer`: the address of a guest socket
/// (an unnamed AF_UNIX one: the family alone), cut at the guest's length as Linux
/// does, the full length written back.
pub fn sockname(h: &Host, mem: &mut GuestMem, peer: bool, fd: u64, addr: u64, len: u64) -> Ret {
    let file = h.file(fd)?;
    let st = nix::sys::stat::fstat(&*file)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Errno::ENOTSOCK);
    }
    let name: nix::sys::socket::UnixAddr = if peer {
        nix::sys::socket::getpeername(file.as_raw_fd())?
    } else {
        nix::sys::socket::getsockname(file.as_raw_fd())?
    };
    let raw = nix::sys::socket::SockaddrLike::len(&name) as usize;
    // SAFETY: `as_ptr` points at a sockaddr of `len` bytes owned by `name`.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            nix::sys::socket::SockaddrLike::as_ptr(&name).cast::<u8>(),
            raw,
        )
    };
    let lb = mem.slice(len, 4).ok_or(Errno::EFAULT)?;
    let want = u32::from_le_bytes([lb[0], lb[1], lb[2], lb[3]]) as usize;
    if want as i32 as i64 > i64::from(i32::MAX) || (want as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let n = want.min(raw);
    if n > 0 && !mem.write(addr, &bytes[..n]) {
        return Err(Errno::EFAULT);
    }
    if !mem.write(len, &(raw as u32).to_le_bytes()) {
        return Err(Errno::EFAULT);
    }
    Ok(0)
}

/// shutdown(2) of a guest socket.
pub fn shutdown(h: &Host, fd: u64, how: u64) -> Ret {
    let how = match how {
        0 => Shutdown::Read,
        1 => Shutdown::Write,
        2 => Shutdown::Both,
        _ => return Err(Errno::EINVAL),
    };
    nix::sys::socket::shutdown(h.fd(fd)?.as_raw_fd(), how)?;
    Ok(0)
}

/// eventfd2(2) (`eventfd` with flags 0).
pub fn eventfd2(h: &mut Host, init: u64, flags: u64) -> Ret {
    if flags & !(O_CLOEXEC | O_NONBLOCK | EFD_SEMAPHORE) != 0 {
        return Err(Errno::EINVAL);
    }
    let host = libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | (flags & EFD_SEMAPHORE) as i32;
    // SAFETY: eventfd takes plain integers and returns a new fd or -1.
    let f = owned(unsafe { libc::eventfd(init as u32, host) })?;
    h.install_own(f, flags & O_CLOEXEC != 0, flags & O_NONBLOCK != 0)
}

/// timerfd_create(2): a host timerfd (the guest's clocks are the host's).
pub fn timerfd_create(h: &mut Host, clock: u64, flags: u64) -> Ret {
    const CLOCKS: [u64; 4] = [0, 1, 7, 8]; // REALTIME, MONOTONIC, BOOTTIME, REALTIME_ALARM
    if !CLOCKS.contains(&clock) || flags & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Err(Errno::EINVAL);
    }
    let host = libc::TFD_CLOEXEC | libc::TFD_NONBLOCK;
    // SAFETY: timerfd_create takes plain integers and returns a new fd or -1.
    let f = owned(unsafe { libc::timerfd_create(clock as i32, host) })?;
    h.install_own(f, flags & O_CLOEXEC != 0, flags & O_NONBLOCK != 0)
}

/// An itimerspec of zeros (a disarmed timer).
fn no_time() -> libc::itimerspec {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    libc::itimerspec {
        it_interval: zero,
        it_value: zero,
    }
}

/// An itimerspec (4 u64s) from guest memory.
fn itimerspec(mem: &GuestMem, at: u64) -> Result<libc::itimerspec, Errno> {
    let w = |i: u64| mem.read_u64(at.wrapping_add(8 * i)).ok_or(Errno::EFAULT);
    let ts = |s: u64, ns: u64| libc::timespec {
        tv_sec: s as i64,
        tv_nsec: ns as i64,
    };
    Ok(libc::itimerspec {
        it_interval: ts(w(0)?, w(1)?),
        it_value: ts(w(2)?, w(3)?),
    })
}

fn put_itimerspec(mem: &mut GuestMem, at: u64, v: &libc::itimerspec) -> Result<(), Errno> {
    let words = [
        v.it_interval.tv_sec as u64,
        v.it_interval.tv_nsec as u64,
        v.it_value.tv_sec as u64,
        v.it_value.tv_nsec as u64,
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    if mem.write(at, &bytes) {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// timerfd_settime(2).
pub fn timerfd_settime(
    h: &Host,
    mem: &mut GuestMem,
    fd: u64,
    flags: u64,
    new: u64,
    old: u64,
) -> Ret {
    let f = h.file(fd)?;
    let v = itimerspec(mem, new)?;
    if old != 0 && mem.slice(old, 32).is_none() {
        return Err(Errno::EFAULT);
    }
    let mut prev = no_time();
    // SAFETY: the fd is held open by `f`; both structs live across the call.
    let r = unsafe { libc::timerfd_settime(f.as_raw_fd(), flags as i32, &v, &mut prev) };
    if r < 0 {
        return Err(Errno::last());
    }
    if old != 0 {
        put_itimerspec(mem, old, &prev)?;
    }
    Ok(0)
}

/// timerfd_gettime(2).
pub fn timerfd_gettime(h: &Host, mem: &mut GuestMem, fd: u64, cur: u64) -> Ret {
    let f = h.file(fd)?;
    let mut v = no_time();
    // SAFETY: the fd is held open by `f`; `v` lives across the call.
    let r = unsafe { libc::timerfd_gettime(f.as_raw_fd(), &mut v) };
    if r < 0 {
        return Err(Errno::last());
    }
    put_itimerspec(mem, cur, &v)?;
    Ok(0)
}

/// epoll_create1(2) (`epoll_create` with flags 0, its size ignored as Linux does).
pub fn epoll_create1(h: &mut Host, flags: u64) -> Ret {
    if flags & !O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
    let f = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    h.install_own(f, flags & O_CLOEXEC != 0, false)
}

/// epoll_ctl(2): the guest's event data is kept verbatim by the host epoll, which
/// hands it back in epoll_wait.
pub fn epoll_ctl(h: &Host, mem: &GuestMem, epfd: u64, op: u64, fd: u64, ev: u64) -> Ret {
    let (ep, target) = (h.file(epfd)?, h.file(fd)?);
    let mut e = libc::epoll_event { events: 0, u64: 0 };
    if op != libc::EPOLL_CTL_DEL as u64 {
        let b = mem.slice(ev, EPOLL_EVENT).ok_or(Errno::EFAULT)?;
        let mut data = [0u8; 8];
        data.copy_from_slice(&b[4..12]);
        e = libc::epoll_event {
            events: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u64: u64::from_le_bytes(data),
        };
    }
    // SAFETY: both fds are open (held by the Arcs) and `e` is a valid epoll_event
    // that outlives the call.
    let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op as i32, target.as_raw_fd(), &mut e) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(0)
}

/// epoll_wait(2) and epoll_pwait(2) (the guest kernel applies the signal mask),
/// with a zero timeout: [`WOULD_WAIT`] when nothing is
/// ready and the guest's timeout is not zero.
pub fn epoll_wait(
    h: &Host,
    mem: &mut GuestMem,
    epfd: u64,
    events: u64,
    max: u64,
    timeout: u64,
) -> Ret {
    let max = max as i32;
    if max <= 0 || max as u64 > i32::MAX as u64 / EPOLL_EVENT {
        return Err(Errno::EINVAL);
    }
    let n = (max as u64).min(MAX_EVENTS);
    let ep = h.file(epfd)?;
    let out = mem
        .slice_mut(events, n * EPOLL_EVENT)
        .ok_or(Errno::EFAULT)?;
    let mut buf = vec![libc::epoll_event { events: 0, u64: 0 }; n as usize];
    // SAFETY: `buf` has room for `n` events and the epoll fd is held open by `ep`.
    let got = unsafe { libc::epoll_wait(ep.as_raw_fd(), buf.as_mut_ptr(), n as i32, 0) };
    if got < 0 {
        return Err(Errno::last());
    }
    if got == 0 && timeout as i32 != 0 {
        return Err(WOULD_WAIT);
    }
    for (i, e) in buf.iter().take(got as usize).enumerate() {
        let (events, data) = (e.events, e.u64);
        let at = i * EPOLL_EVENT as usize;
        out[at..at + 4].copy_from_slice(&events.to_le_bytes());
        out[at + 4..at + 12].copy_from_slice(&data.to_le_bytes());
    }
    Ok(i64::from(got))
}

/// One guest pollfd: its host file (None: ignored or not open) and events.
pub type PollEntry = (Option<Arc<OwnedFd>>, PollFlags);

/// A guest pollfd array: each entry's host file (None for a negative fd, ignored,
/// or one that is not open: POLLNVAL) and events; EFAULT/EINVAL as poll(2).
pub fn pollfds(mem: &GuestMem, h: &Host, fds: u64, nfds: u64) -> Result<Vec<PollEntry>, Errno> {
    if nfds > MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    let b = mem.slice(fds, nfds * 8).ok_or(Errno::EFAULT)?;
    Ok(b.chunks(8)
        .map(|p| {
            let fd = i32::from_le_bytes([p[0], p[1], p[2], p[3]]);
            let ev = PollFlags::from_bits_truncate(i16::from_le_bytes([p[4], p[5]]));
            let file = if fd < 0 { None } else { h.file(fd as u64).ok() };
            (file, ev)
        })
        .collect())
}

/// poll(2) and ppoll(2) with a zero timeout (`timeout_ms` is the guest's):
/// [`WOULD_WAIT`] when nothing is ready and the guest's timeout is not zero.
pub fn poll(mem: &mut GuestMem, h: &Host, fds: u64, nfds: u64, timeout_ms: i64) -> Ret {
    let list = pollfds(mem, h, fds, nfds)?;
    let mut revents = vec![0i16; list.len()];
    {
        let open: Vec<(usize, PollFd<'_>)> = list
            .iter()
            .enumerate()
            .filter_map(|(i, (f, ev))| f.as_ref().map(|f| (i, PollFd::new(f.as_fd(), *ev))))
            .collect();
        let (idx, mut pfds): (Vec<usize>, Vec<PollFd<'_>>) = open.into_iter().unzip();
        nix::poll::poll(&mut pfds, PollTimeout::ZERO)?;
        for (i, p) in idx.into_iter().zip(&pfds) {
            revents[i] = p.revents().map_or(0, |r| r.bits());
        }
    }
    let b = mem.slice(fds, nfds * 8).ok_or(Errno::EFAULT)?.to_vec();
    let mut ready = 0;
    for (i, (file, _)) in list.iter().enumerate() {
        let fd = i32::from_le_bytes([b[8 * i], b[8 * i + 1], b[8 * i + 2], b[8 * i + 3]]);
        if file.is_none() && fd >= 0 {
            revents[i] = PollFlags::POLLNVAL.bits();
        }
        if revents[i] != 0 {
            ready += 1;
        }
        mem.write(fds + 8 * i as u64 + 6, &revents[i].to_le_bytes());
    }
    if ready == 0 && timeout_ms != 0 {
        return Err(WOULD_WAIT);
    }
    Ok(ready)
}

/// The fds of select's three sets (read, write, except) as poll entries; EBADF
/// for a set bit naming no open fd, EINVAL for a bad `nfds`.
pub fn select_fds(
    mem: &GuestMem,
    h: &Host,
    nfds: u64,
    sets: [u64; 3],
) -> Result<Vec<(u64, Arc<OwnedFd>, PollFlags)>, Errno> {
    if nfds > MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    let bytes = nfds.div_ceil(64) * 8;
    let flags = [PollFlags::POLLIN, PollFlags::POLLOUT, PollFlags::POLLPRI];
    let mut v: Vec<(u64, Arc<OwnedFd>, PollFlags)> = Vec::new();
    for (set, ev) in sets.iter().zip(flags) {
        if *set == 0 {
            continue;
        }
        let b = mem.slice(*set, bytes).ok_or(Errno::EFAULT)?;
        for fd in 0..nfds {
            if b[(fd / 8) as usize] & (1 << (fd % 8)) != 0 {
                match v.iter_mut().find(|(f, _, _)| *f == fd) {
                    Some(e) => e.2 |= ev,
                    None => v.push((fd, h.file(fd)?, ev)),
                }
            }
        }
    }
    Ok(v)
}

/// select(2) and pselect6(2) with a zero timeout (`timeout_ms` is the guest's):
/// the sets are rewritten with the ready fds; [`WOULD_WAIT`] when none is ready and
/// the timeout is not zero.
pub fn select(mem: &mut GuestMem, h: &Host, nfds: u64, sets: [u64; 3], timeout_ms: i64) -> Ret {
    let list = select_fds(mem, h, nfds, sets)?;
    let mut pfds: Vec<PollFd<'_>> = list
        .iter()
        .map(|(_, f, ev)| PollFd::new(f.as_fd(), *ev))
        .collect();
    nix::poll::poll(&mut pfds, PollTimeout::ZERO)?;
    let bytes = nfds.div_ceil(64) * 8;
    let mut out = [
        vec![0u8; bytes as usize],
        vec![0u8; bytes as usize],
        vec![0u8; bytes as usize],
    ];
    let mut ready = 0;
    for ((fd, _, ev), p) in list.iter().zip(&pfds) {
        let r = p.revents().unwrap_or(PollFlags::empty());
        let err = r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP);
        let hits = [
            ev.contains(PollFlags::POLLIN) && (r.contains(PollFlags::POLLIN) || err),
            ev.contains(PollFlags::POLLOUT) && (r.contains(PollFlags::POLLOUT) || err),
            ev.contains(PollFlags::POLLPRI) && r.contains(PollFlags::POLLPRI),
        ];
        for (k, hit) in hits.iter().enumerate() {
            if *hit {
                out[k][(fd / 8) as usize] |= 1 << (fd % 8);
                ready += 1;
            }
        }
    }
    if ready == 0 && timeout_ms != 0 {
        return Err(WOULD_WAIT);
    }
    for (set, bits) in sets.iter().zip(&out) {
        if *set != 0 && !mem.write(*set, bits) {
            return Err(Errno::EFAULT);
        }
    }
    Ok(ready)
}

/// A select timeout (struct timeval): ms (rounded up), -1 for NULL.
pub fn timeval_ms(mem: &GuestMem, at: u64) -> Result<i64, Errno> {
    if at == 0 {
        return Ok(-1);
    }
    let sec = mem.read_u64(at).ok_or(Errno::EFAULT)? as i64;
    let usec = mem.read_u64(at.wrapping_add(8)).ok_or(Errno::EFAULT)? as i64;
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(Errno::EINVAL);
    }
    Ok(sec.saturating_mul(1000).saturating_add((usec + 999) / 1000))
}

/// A ppoll timeout: ms (rounded up), -1 for NULL (no limit).
pub fn timespec_ms(mem: &GuestMem, at: u64) -> Result<i64, Errno> {
    if at == 0 {
        return Ok(-1);
    }
    let sec = mem.read_u64(at).ok_or(Errno::EFAULT)? as i64;
    let nsec = mem.read_u64(at + 8).ok_or(Errno::EFAULT)? as i64;
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL);
    }
    Ok(sec
        .saturating_mul(1000)
        .saturating_add((nsec + 999_999) / 1_000_000))
}

#[cfg(test)]
mod tests {
    use crate::files::tests::{tempfile_dir, test_host};
    use crate::hcall::perform;
    use crate::mem::GuestMem;
    use crate::wait::{self, BLOCKED};

    const FDS: u64 = 0x1000;
    const BUF: u64 = 0x2000;

    fn fds(m: &GuestMem) -> (u64, u64) {
        let b = m.slice(FDS, 8).expect("fds");
        let r = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let w = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        (r as u64, w as u64)
    }

    /// A call that would wait is answered BLOCKED (never waited for here), or
    /// EAGAIN once the guest asks for O_NONBLOCK; `what` names the fd to wait on.
    #[test]
    fn would_wait_is_blocked_not_waited() {
        let dir = tempfile_dir();
        let mut h = test_host(&dir);
        let mut m = GuestMem::new(0x10000).expect("mem");
        assert_eq!(perform(&mut m, &mut h, 293, [FDS, 0, 0, 0, 0, 0]), 0);
        let (r, w) = fds(&m);
        assert_eq!(perform(&mut m, &mut h, 0, [r, BUF, 16, 0, 0, 0]), BLOCKED);
        let wait = wait::what(&m, &h, 0, [r, BUF, 16, 0, 0, 0]).expect("waits");
        assert_eq!((wait.fds.len(), wait.timeout_ms), (1, -1));
        // poll: a zero timeout answers 0; any other is BLOCKED.
        let mut pfd = [0u8; 8];
        pfd[..4].copy_from_slice(&(r as i32).to_le_bytes());
        pfd[4..6].copy_from_slice(&1i16.to_le_bytes());
        assert!(m.write(BUF, &pfd));
        assert_eq!(perform(&mut m, &mut h, 7, [BUF, 1, 0, 0, 0, 0]), 0);
        assert_eq!(perform(&mut m, &mut h, 7, [BUF, 1, 50, 0, 0, 0]), BLOCKED);
        assert!(m.write(BUF + 8, b"hi"));
        assert_eq!(perform(&mut m, &mut h, 1, [w, BUF + 8, 2, 0, 0, 0]), 2);
        assert_eq!(perform(&mut m, &mut h, 7, [BUF, 1, 50, 0, 0, 0]), 1);
        assert_eq!(perform(&mut m, &mut h, 0, [r, BUF, 16, 0, 0, 0]), 2);
        // F_SETFL O_NONBLOCK: the guest's own EAGAIN.
        assert_eq!(perform(&mut m, &mut h, 72, [r, 4, 0o4000, 0, 0, 0]), 0);
        assert_eq!(perform(&mut m, &mut h, 0, [r, BUF, 16, 0, 0, 0]), -11);
        // Bad arguments.
        assert_eq!(perform(&mut m, &mut h, 293, [FDS, 1, 0, 0, 0, 0]), -22);
        assert_eq!(
            perform(&mut m, &mut h, 293, [u64::MAX - 3, 0, 0, 0, 0, 0]),
            -14
        );
        assert_eq!(perform(&mut m, &mut h, 7, [BUF, 5000, 0, 0, 0, 0]), -22);
        assert_eq!(perform(&mut m, &mut h, 290, [0, 0x4000, 0, 0, 0, 0]), -22);
        assert_eq!(perform(&mut m, &mut h, 232, [99, BUF, 1, 0, 0, 0]), -9);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
