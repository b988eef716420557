//! Forwarded file-system calls that take guest paths: openat, the stat family,
//! readlinkat, faccessat, getdents64, mkdirat, unlinkat, renameat2, symlinkat,
//! getcwd, chdir.
//! Paths are read from guest memory with [`read_path`] and resolved inside the rootfs
//! by [`Host`]; results are copied back with bounds checks.

use crate::files::{normalize, read_path, Host, Kind, AT_FDCWD, PATH_MAX};
use crate::mem::GuestMem;
use crate::procdir::{self, Node};
use crate::stat;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Linux system-call results inside the VMM: a value, or the errno to return.
pub type Ret = Result<i64, Errno>;

const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EACCESS: u64 = 0x200;
const AT_NO_AUTOMOUNT: u64 = 0x800;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_STATX_SYNC_TYPE: u64 = 0x6000;

/// A guest path argument: the path, or EFAULT/ENAMETOOLONG; empty is ENOENT.
fn path_arg(mem: &GuestMem, at: u64) -> Result<Vec<u8>, Errno> {
    let p = read_path(mem, at)?;
    if p.is_empty() {
        return Err(Errno::ENOENT);
    }
    Ok(p)
}

/// The absolute guest path of the `path` argument relative to `dirfd`.
fn abs_arg(h: &Host, mem: &GuestMem, dirfd: u64, at: u64) -> Result<Vec<u8>, Errno> {
    let p = path_arg(mem, at)?;
    h.absolute(dirfd, &p)
}

/// openat(2) with O_RDONLY/O_WRONLY/O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND,
/// O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_CLOEXEC; other flags are ignored (O_PATH
/// and O_TMPFILE are refused).
pub fn openat(h: &mut Host, mem: &GuestMem, dirfd: u64, path: u64, flags: u64, mode: u64) -> Ret {
    let flags = OFlag::from_bits_retain(flags as u32 as i32);
    // O_TMPFILE includes O_DIRECTORY: test its own bit.
    const TMPFILE_BIT: i32 = 0o2000_0000;
    if flags.contains(OFlag::O_PATH) || flags.bits() & TMPFILE_BIT != 0 {
        return Err(Errno::EINVAL);
    }
    let acc = flags & OFlag::O_ACCMODE;
    if acc == OFlag::O_ACCMODE {
        return Err(Errno::EINVAL);
    }
    let abs = abs_arg(h, mem, dirfd, path)?;
    let norm = normalize(&abs);
    if let Some(r) = h.open_device(&norm, flags.contains(OFlag::O_CLOEXEC)) {
        return r;
    }
    if let Some(node) = procdir::lookup(h, mem, &norm) {
        let write = acc != OFlag::O_RDONLY || flags.contains(OFlag::O_CREAT);
        return procdir::open(
            h,
            mem,
            &norm,
            node?,
            write,
            flags.contains(OFlag::O_CLOEXEC),
        );
    }
    let mut keep = acc
        | (flags
            & (OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_TRUNC
                | OFlag::O_APPEND
                | OFlag::O_DIRECTORY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY));
    if h.readonly() {
        if acc != OFlag::O_RDONLY || keep.contains(OFlag::O_TRUNC) {
            return Err(Errno::EROFS);
        }
        keep.remove(OFlag::O_CREAT | OFlag::O_EXCL);
    }
    let mode = if keep.contains(OFlag::O_CREAT) {
        mode as u32 & 0o7777
    } else {
        0
    };
    // O_NONBLOCK so that opening a FIFO cannot block the VMM, O_NOCTTY so that a
    // terminal never becomes the VMM's: both are then refused below.
    let host = keep | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let f = match h.resolve(&abs, host, mode) {
        Err(Errno::ENOENT) if h.readonly() && flags.contains(OFlag::O_CREAT) => {
            return Err(Errno::EROFS)
        }
        r => r?,
    };
    // Only regular files and directories: device nodes, FIFOs and sockets in the
    // rootfs are refused as on a nodev mount, since the VMM would open them with
    // its own (host) privileges.
    let kind = nix::sys::stat::fstat(&f)?.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFDIR {
        return Err(Errno::EACCES);
    }
    let nonblock = keep.contains(OFlag::O_NONBLOCK);
    h.install(f, flags.contains(OFlag::O_CLOEXEC), nonblock, &abs)
}

/// The path argument of a stat-like call, read once: empty for a NULL `path` with
/// AT_EMPTY_PATH.
fn stat_path(mem: &GuestMem, path: u64, flags: u64) -> Result<Vec<u8>, Errno> {
    if path == 0 && flags & AT_EMPTY_PATH != 0 {
        Ok(Vec::new())
    } else {
        read_path(mem, path)
    }
}

/// The host fd a stat-like call looks at: guest fd `dirfd` itself for AT_EMPTY_PATH
/// with an empty path `p` ([`stat_path`]), else the path opened O_PATH inside the
/// rootfs.
fn stat_target(h: &Host, dirfd: u64, p: &[u8], flags: u64) -> Result<Arc<OwnedFd>, Errno> {
    if p.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::ENOENT);
        }
        return h.file(dirfd);
    }
    let abs = h.absolute(dirfd, p)?;
    let mut o = OFlag::O_PATH;
    if flags & AT_SYMLINK_NOFOLLOW != 0 {
        o |= OFlag::O_NOFOLLOW;
    }
    h.resolve(&abs, o, 0).map(Arc::new)
}

/// What a stat-like call looks at, when it is not a host file: a /proc node (its
/// normalised path and what it is), or a guest fd that is a /proc listing; `p` is
/// the path argument ([`stat_path`]).
fn proc_target(
    h: &Host,
    mem: &GuestMem,
    dirfd: u64,
    p: &[u8],
    flags: u64,
) -> Result<Option<(Vec<u8>, Node)>, Errno> {
    if p.is_empty() {
        if flags & AT_EMPTY_PATH != 0 && h.kind(dirfd).is_ok_and(|(k, _)| k == Kind::Listing) {
            return Ok(Some((h.fd_path(dirfd)?.to_vec(), Node::Dir(Vec::new()))));
        }
        return Ok(None);
    }
    let abs = normalize(&h.absolute(dirfd, p)?);
    match procdir::lookup(h, mem, &abs) {
        Some(node) => Ok(Some((abs, node?))),
        None => Ok(None),
    }
}

/// The stat of what a stat-like call names (see [`proc_target`], [`stat_target`]).
fn stat_of(
    h: &Host,
    mem: &GuestMem,
    dirfd: u64,
    path: u64,
    flags: u64,
) -> Result<libc::stat, Errno> {
    let p = stat_path(mem, path, flags)?;
    if let Some((abs, node)) = proc_target(h, mem, dirfd, &p, flags)? {
        return procdir::stat(h, mem, &abs, node, flags & AT_SYMLINK_NOFOLLOW != 0);
    }
    let f = stat_target(h, dirfd, &p, flags)?;
    nix::sys::stat::fstat(f.as_fd())
}

/// newfstatat(2); stat(2) and lstat(2) come here with AT_FDCWD.
pub fn newfstatat(
    h: &Host,
    mem: &mut GuestMem,
    dirfd: u64,
    path: u64,
    buf: u64,
    flags: u64,
) -> Ret {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT) != 0 {
        return Err(Errno::EINVAL);
    }
    let st = stat_of(h, mem, dirfd, path, flags)?;
    put(mem, buf, &stat::encode_stat(&st))
}

/// The host's statfs of `fd`.
fn host_statfs(fd: BorrowedFd<'_>) -> Result<libc::statfs, Errno> {
    // SAFETY: an all-zero statfs is a valid value (integers only).
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs into `st`, which lives across the call.
    Errno::result(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// statfs(2) of a guest path.
pub fn statfs(h: &Host, mem: &mut GuestMem, path: u64, buf: u64) -> Ret {
    let f = stat_target(h, AT_FDCWD as u32 as u64, &stat_path(mem, path, 0)?, 0)?;
    let st = host_statfs(f.as_fd())?;
    put(mem, buf, &stat::encode_statfs(&st, h.readonly()))
}

/// fstatfs(2).
pub fn fstatfs(h: &Host, mem: &mut GuestMem, fd: u64, buf: u64) -> Ret {
    let st = host_statfs(h.fd(fd)?)?;
    put(mem, buf, &stat::encode_statfs(&st, h.readonly()))
}

/// fstat(2).
pub fn fstat(h: &Host, mem: &mut GuestMem, fd: u64, buf: u64) -> Ret {
    let st = stat_of(h, mem, fd, 0, AT_EMPTY_PATH)?;
    put(mem, buf, &stat::encode_stat(&st))
}

/// statx(2), from fstat: the basic statistics only.
pub fn statx(h: &Host, mem: &mut GuestMem, a: [u64; 6]) -> Ret {
    let (dirfd, path, flags, buf) = (a[0], a[1], a[2], a[4]);
    let known = AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE;
    if flags & !known != 0 || flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE {
        return Err(Errno::EINVAL);
    }
    let st = stat_of(h, mem, dirfd, path, flags)?;
    put(mem, buf, &stat::encode_statx(&st))
}

fn put(mem: &mut GuestMem, at: u64, data: &[u8]) -> Ret {
    if mem.write(at, data) {
        Ok(0)
    } else {
        Err(Errno::EFAULT)
    }
}

/// readlinkat(2); readlink(2) comes here with AT_FDCWD.
pub fn readlinkat(h: &Host, mem: &mut GuestMem, dirfd: u64, path: u64, buf: u64, size: u64) -> Ret {
    if size as u32 as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    // NULL is EFAULT here (read without AT_EMPTY_PATH); "" is the fd itself below.
    let p = stat_path(mem, path, 0)?;
    // /proc's links: self, exe, and fd/N (what the process's fd N is).
    if let Some((_, node)) = proc_target(h, mem, dirfd, &p, 0)? {
        let link = match node {
            Node::Link { text, .. } => text,
            Node::Fd { slot, fd } => h.fd_link(slot, fd).map_err(|_| Errno::ENOENT)?,
            Node::Dir(_) | Node::File => return Err(Errno::EINVAL),
        };
        let n = link.len().min(size as u32 as usize);
        put(mem, buf, &link[..n])?;
        return Ok(n as i64);
    }
    let f = stat_target(h, dirfd, &p, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)?;
    let st = nix::sys::stat::fstat(f.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        return Err(Errno::EINVAL);
    }
    let mut tmp = [0u8; PATH_MAX];
    // SAFETY: readlinkat writes at most tmp.len() bytes into tmp, a live local buffer;
    // the path is a NUL-terminated literal.
    let n = unsafe {
        libc::readlinkat(
            f.as_raw_fd(),
            c"".as_ptr(),
            tmp.as_mut_ptr().cast(),
            tmp.len(),
        )
    };
    let n = usize::try_from(Errno::result(n)?).map_err(|_| Errno::EINVAL)?;
    let n = n.min(size as u32 as usize).min(tmp.len());
    put(mem, buf, &tmp[..n])?;
    Ok(n as i64)
}

/// faccessat2(2); access(2) and faccessat(2) come here.
pub fn faccessat(h: &Host, mem: &GuestMem, dirfd: u64, path: u64, mode: u64, flags: u64) -> Ret {
    const W_OK: u64 = 2;
    if mode & !7 != 0 || flags & !(AT_SYMLINK_NOFOLLOW | AT_EACCESS | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let p = stat_path(mem, path, flags)?;
    // /proc: directories r-x, files r--; links are taken as their targets allow.
    if let Some((_, node)) = proc_target(h, mem, dirfd, &p, flags)? {
        const X_OK: u64 = 1;
        let refused = match node {
            Node::Dir(_) => mode & W_OK != 0,
            Node::File => mode & (W_OK | X_OK) != 0,
            Node::Link { .. } | Node::Fd { .. } => false,
        };
        return if refused { Err(Errno::EACCES) } else { Ok(0) };
    }
    let f = stat_target(h, dirfd, &p, flags)?;
    if mode == 0 {
        return Ok(0);
    }
    if mode & W_OK != 0 && h.readonly() {
        return Err(Errno::EROFS);
    }
    let how = libc::AT_EMPTY_PATH | (flags & AT_EACCESS) as libc::c_int;
    // SAFETY: faccessat2 reads the NUL-terminated literal path and nothing else.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            f.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_int,
            how,
        )
    };
    Errno::result(r).map(|_| 0)
}

/// getdents64(2), straight into the guest's buffer (the host's record format is
/// the guest's).
pub fn getdents64(h: &Host, mem: &mut GuestMem, fd: u64, buf: u64, len: u64) -> Ret {
    if h.kind(fd)?.0 == Kind::Listing {
        return procdir::getdents64(h.fd(fd)?, mem, buf, len);
    }
    let fd = h.fd(fd)?.as_raw_fd();
    let len = len.min(1 << 20);
    let s = mem.slice_mut(buf, len).ok_or(Errno::EFAULT)?;
    // SAFETY: the kernel writes at most s.len() bytes into s, a bounds-checked slice
    // of guest memory borrowed mutably for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_getdents64, fd, s.as_mut_ptr(), s.len()) };
    Errno::result(r)
}

/// mkdirat(2); mkdir(2) comes here with AT_FDCWD.
pub fn mkdirat(h: &Host, mem: &GuestMem, dirfd: u64, path: u64, mode: u64) -> Ret {
    let abs = abs_arg(h, mem, dirfd, path)?;
    if h.readonly() {
        return Err(Errno::EROFS);
    }
    let (dir, name) = h.parent(&abs, Errno::EEXIST)?;
    let mode = nix::sys::stat::Mode::from_bits_truncate(mode as u32 & 0o7777);
    nix::sys::stat::mkdirat(&dir, name.as_c_str(), mode).map(|()| 0)
}

/// unlinkat(2); unlink(2) and rmdir(2) come here.
pub fn unlinkat(h: &Host, mem: &GuestMem, dirfd: u64, path: u64, flags: u64) -> Ret {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let abs = abs_arg(h, mem, dirfd, path)?;
    if h.readonly() {
        return Err(Errno::EROFS);
    }
    let rmdir = flags & AT_REMOVEDIR != 0;
    let (dir, name) = h.parent(&abs, if rmdir { Errno::EBUSY } else { Errno::EISDIR })?;
    let how = if rmdir {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    nix::unistd::unlinkat(&dir, name.as_c_str(), how).map(|()| 0)
}

/// symlinkat(2); symlink(2) comes here with AT_FDCWD. The target is stored as given:
/// it is only ever followed by resolutions inside the rootfs.
pub fn symlinkat(h: &Host, mem: &GuestMem, target: u64, dirfd: u64, path: u64) -> Ret {
    let t = path_arg(mem, target)?;
    let abs = abs_arg(h, mem, dirfd, path)?;
    if h.readonly() {
        return Err(Errno::EROFS);
    }
    let (dir, name) = h.parent(&abs, Errno::EEXIST)?;
    let t = std::ffi::CString::new(t).map_err(|_| Errno::EINVAL)?;
    nix::unistd::symlinkat(t.as_c_str(), &dir, name.as_c_str()).map(|()| 0)
}

/// renameat2(2) with RENAME_NOREPLACE and RENAME_EXCHANGE; rename(2) and renameat(2)
/// come here.
pub fn renameat2(h: &Host, mem: &GuestMem, a: [u64; 6]) -> Ret {
    let flags = a[4] as u32;
    if flags & !3 != 0 || flags == 3 {
        return Err(Errno::EINVAL);
    }
    let old = abs_arg(h, mem, a[0], a[1])?;
    let new = abs_arg(h, mem, a[2], a[3])?;
    if h.readonly() {
        return Err(Errno::EROFS);
    }
    let (od, on) = h.parent(&old, Errno::EBUSY)?;
    let (nd, nn) = h.parent(&new, Errno::EBUSY)?;
    // SAFETY: renameat2 reads two NUL-terminated names that live until it returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            od.as_fd().as_raw_fd(),
            on.as_ptr(),
            nd.as_fd().as_raw_fd(),
            nn.as_ptr(),
            flags,
        )
    };
    Errno::result(r).map(|_| 0)
}

/// getcwd(2): the length with the NUL, or ERANGE.
pub fn getcwd(h: &Host, mem: &mut GuestMem, buf: u64, size: u64) -> Ret {
    let mut c = h.cwd().to_vec();
    c.push(0);
    if size < c.len() as u64 {
        return Err(Errno::ERANGE);
    }
    put(mem, buf, &c)?;
    Ok(c.len() as i64)
}

/// chdir(2).
pub fn chdir(h: &mut Host, mem: &GuestMem, path: u64) -> Ret {
    let abs = abs_arg(h, mem, AT_FDCWD as u32 as u64, path)?;
    enter(h, mem, &abs)
}

/// fchdir(2): to the path the directory was opened by.
pub fn fchdir(h: &mut Host, mem: &GuestMem, fd: u64) -> Ret {
    let p = h.fd_path(fd)?;
    enter(h, mem, &p)
}

/// Makes `abs` the working directory: a directory in the rootfs, or one of /proc's
/// (/proc/self leads to the caller's own, by its pid).
fn enter(h: &mut Host, mem: &GuestMem, abs: &[u8]) -> Ret {
    let norm = normalize(abs);
    match procdir::lookup(h, mem, &norm) {
        None => h.chdir(abs),
        Some(node) => match node? {
            Node::Dir(_) => {
                let cwd = procdir::canonical(h, mem, &norm);
                h.set_cwd(&cwd);
                Ok(0)
            }
            // `self`: its target is a process's directory (no link again).
            Node::Link {
                target, proc: true, ..
            } => {
                h.set_cwd(&target);
                Ok(0)
            }
            Node::Link { .. } | Node::File | Node::Fd { .. } => Err(Errno::ENOTDIR),
        },
    }
}
