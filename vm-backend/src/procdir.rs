//! The guest's /proc as paths: what the stat family, readlink, chdir and opening a
//! directory see under /proc. The files' contents are the guest kernel's (its
//! procfs makes them when a process opens them); the VMM lists the directories
//! and answers for the names:
//!
//! - `/proc`: `self` and `thread-self` (links to the caller's pid), the guest
//!   kernel's `cpuinfo`, `loadavg`, `meminfo`, `uptime`, and a directory per live
//!   guest process (from the process blocks the guest kernel keeps, PI_PID);
//! - `/proc/PID`: `cmdline`, `comm`, `maps`, `stat`, `status`, the `exe` link
//!   (PI_EXE) and the `fd` directory;
//! - `/proc/PID/fd`: a link per open guest fd of the process (its fd table here).
//!
//! Anything else under /proc does not exist (ENOENT): the rootfs's own /proc
//! directory is never looked at. An opened directory is a memfd of
//! `linux_dirent64` records ([`Kind::Listing`](crate::files::Kind)), made when it is
//! opened, as Linux's /proc directories list what is there when they are read.

use crate::abi::{MAX_PROCS, PI_EXE, PI_EXE_LEN, PROC_INFO_GPA, PROC_INFO_SIZE};
use crate::files::Host;
use crate::mem::GuestMem;
use nix::errno::Errno;
use std::os::fd::{AsFd, OwnedFd};

const DT_DIR: u8 = 4;
const DT_REG: u8 = 8;
const DT_LNK: u8 = 10;

/// The files the guest kernel makes at the top of /proc.
const TOP_FILES: &[&[u8]] = &[b"cpuinfo", b"loadavg", b"meminfo", b"uptime"];
/// The files the guest kernel makes for each process.
const PROC_FILES: &[&[u8]] = &[b"cmdline", b"comm", b"maps", b"stat", b"status"];

/// What a /proc path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory and its entries (name, DT_* type), without `.` and `..`.
    Dir(Vec<(Vec<u8>, u8)>),
    /// A file the guest kernel makes when it is opened by its absolute path.
    File,
    /// A symbolic link: what readlink gives, and the absolute path it leads to:
    /// a process's directory under /proc (`self`, `thread-self`; `proc`), else a
    /// path in the rootfs (`exe`), which is never looked up under /proc again.
    Link {
        text: Vec<u8>,
        target: Vec<u8>,
        proc: bool,
    },
    /// `/proc/PID/fd/N`: a link to open fd `fd` of process slot `slot`.
    Fd { slot: usize, fd: u64 },
}

/// The pid of the process in slot `p`, if the slot holds a live one.
fn pid_of(mem: &GuestMem, p: usize) -> Option<u64> {
    mem.guest_pid(p as u64)
}

/// The process slot `who` (a /proc entry name) names: `self`, `thread-self` or a
/// live guest pid.
fn slot_of(h: &Host, mem: &GuestMem, who: &[u8]) -> Option<usize> {
    if who == b"self" || who == b"thread-self" {
        return Some(h.current());
    }
    if who.is_empty() || who.len() > 10 || !who.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pid: u64 = std::str::from_utf8(who).ok()?.parse().ok()?;
    (0..MAX_PROCS as usize).find(|&p| pid_of(mem, p) == Some(pid))
}

/// What the normalised absolute guest path `abs` names under /proc: None when it
/// is not under /proc, Err(ENOENT) for a name that is not there.
pub fn lookup(h: &Host, mem: &GuestMem, abs: &[u8]) -> Option<Result<Node, Errno>> {
    let rest = abs.strip_prefix(b"/proc")?;
    if rest.is_empty() {
        return Some(Ok(top(h, mem)));
    }
    let rest = rest.strip_prefix(b"/")?;
    let parts: Vec<&[u8]> = rest.split(|&c| c == b'/').collect();
    Some(node(h, mem, &parts).ok_or(Errno::ENOENT))
}

/// `/proc` itself.
fn top(h: &Host, mem: &GuestMem) -> Node {
    let mut e: Vec<(Vec<u8>, u8)> = Vec::new();
    for p in 0..MAX_PROCS as usize {
        if let Some(pid) = pid_of(mem, p) {
            e.push((pid.to_string().into_bytes(), DT_DIR));
        }
    }
    e.sort_by_key(|(n, _)| {
        std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    });
    e.extend(TOP_FILES.iter().map(|f| (f.to_vec(), DT_REG)));
    if pid_of(mem, h.current()).is_some() {
        e.push((b"self".to_vec(), DT_LNK));
        e.push((b"thread-self".to_vec(), DT_LNK));
    }
    Node::Dir(e)
}

/// A path below /proc, as its components.
fn node(h: &Host, mem: &GuestMem, parts: &[&[u8]]) -> Option<Node> {
    if let [name] = parts {
        if TOP_FILES.contains(name) {
            return Some(Node::File);
        }
        if *name == b"self" || *name == b"thread-self" {
            let pid = pid_of(mem, h.current())?.to_string().into_bytes();
            let target = [&b"/proc/"[..], &pid].concat();
            return Some(Node::Link {
                text: pid,
                target,
                proc: true,
            });
        }
    }
    let (who, within) = parts.split_first()?;
    let slot = slot_of(h, mem, who)?;
    pid_of(mem, slot)?;
    match within {
        [] => {
            let mut e: Vec<(Vec<u8>, u8)> =
                PROC_FILES.iter().map(|f| (f.to_vec(), DT_REG)).collect();
            e.push((b"exe".to_vec(), DT_LNK));
            e.push((b"fd".to_vec(), DT_DIR));
            e.sort();
            Some(Node::Dir(e))
        }
        [f] if PROC_FILES.contains(f) => Some(Node::File),
        [b"exe"] => {
            let w = mem.whole();
            let at = PROC_INFO_GPA + slot as u64 * PROC_INFO_SIZE + PI_EXE;
            let s = w.slice(at, PI_EXE_LEN)?;
            let text = s[..s.iter().position(|&c| c == 0)?].to_vec();
            Some(Node::Link {
                target: text.clone(),
                text,
                proc: false,
            })
        }
        [b"fd"] => Some(Node::Dir(
            h.open_fds(slot)
                .into_iter()
                .map(|fd| (fd.to_string().into_bytes(), DT_LNK))
                .collect(),
        )),
        [b"fd", n] => {
            if n.is_empty() || n.len() > 9 || !n.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let fd: u64 = std::str::from_utf8(n).ok()?.parse().ok()?;
            h.file_in(slot, fd).ok()?;
            Some(Node::Fd { slot, fd })
        }
        _ => None,
    }
}

/// The stat of a /proc node made from the rootfs's top directory: a directory
/// (r-x), a file (r--) or, with `nofollow`, a link. Links are followed otherwise:
/// `self` to its directory, `exe` to the program in the rootfs, `fd/N` to the file.
pub fn stat(
    h: &Host,
    mem: &GuestMem,
    abs: &[u8],
    node: Node,
    nofollow: bool,
) -> Result<libc::stat, Errno> {
    let mut st = h.root_stat()?;
    let (mode, nlink) = match node {
        Node::Dir(_) => (libc::S_IFDIR | 0o555, 2),
        Node::File => (libc::S_IFREG | 0o444, 1),
        Node::Link { .. } | Node::Fd { .. } if nofollow => (libc::S_IFLNK | 0o777, 1),
        Node::Link {
            target, proc: true, ..
        } => {
            return match lookup(h, mem, &target) {
                Some(Ok(n @ Node::Dir(_))) => stat(h, mem, &target, n, false),
                _ => Err(Errno::ENOENT),
            };
        }
        Node::Link { target, .. } => {
            let f = h.resolve(&target, nix::fcntl::OFlag::O_PATH, 0)?;
            return nix::sys::stat::fstat(f.as_fd());
        }
        Node::Fd { slot, fd } => return nix::sys::stat::fstat(h.file_in(slot, fd)?.as_fd()),
    };
    st.st_mode = mode;
    st.st_nlink = nlink;
    st.st_size = 0;
    st.st_blocks = 0;
    // An inode number per path (FNV-1a of the path with the caller's pid for
    // `self`), so that tools that compare them see distinct entries.
    st.st_ino = canonical(h, mem, abs)
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    Ok(st)
}

/// `abs` with a leading `/proc/self/` or `/proc/thread-self/` written with the
/// caller's pid, as Linux resolves it: what a working directory or an opened
/// directory keeps (a child that inherits it names its parent's, not its own).
pub fn canonical(h: &Host, mem: &GuestMem, abs: &[u8]) -> Vec<u8> {
    for who in [&b"/proc/self/"[..], b"/proc/thread-self/"] {
        if let (Some(rest), Some(pid)) = (abs.strip_prefix(who), pid_of(mem, h.current())) {
            return [format!("/proc/{pid}/").as_bytes(), rest].concat();
        }
    }
    abs.to_vec()
}

/// Opens a /proc node: a directory as a listing (see the module docs), `self`
/// as its directory, `exe` as the program in the rootfs (read-only). The files the
/// guest kernel makes are opened by it, by their absolute path; opened any other
/// way they are ENOENT here.
pub fn open(
    h: &mut Host,
    mem: &GuestMem,
    abs: &[u8],
    node: Node,
    write: bool,
    cloexec: bool,
) -> Result<i64, Errno> {
    match node {
        Node::Dir(_) if !write => {
            let abs = canonical(h, mem, abs);
            // The fd is taken first, so that a process listing its own fds sees
            // the one it reads them through, as on Linux.
            let fd = h.install_listing(sealed_memfd(&[])?, cloexec, &abs)?;
            let made = match lookup(h, mem, &abs) {
                Some(Ok(Node::Dir(entries))) => listing(&entries),
                _ => Err(Errno::ENOENT),
            };
            match made {
                Ok(f) => h.set_listing(fd as u64, f).map(|()| fd),
                Err(e) => {
                    let _ = h.close(fd as u64);
                    Err(e)
                }
            }
        }
        Node::Dir(_) => Err(Errno::EISDIR),
        Node::Link {
            target, proc: true, ..
        } => match lookup(h, mem, &target) {
            Some(Ok(n @ Node::Dir(_))) => open(h, mem, &target, n, write, cloexec),
            _ => Err(Errno::ENOENT),
        },
        Node::Link { .. } if write => Err(Errno::EACCES),
        Node::Link { target, .. } => {
            use nix::fcntl::OFlag;
            let f = h.resolve(
                &target,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
                0,
            )?;
            if nix::sys::stat::fstat(f.as_fd())?.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(Errno::EACCES);
            }
            h.install(f, cloexec, false, &target)
        }
        Node::File => Err(Errno::ENOENT),
        Node::Fd { .. } => Err(Errno::EACCES),
    }
}

/// A memfd of `linux_dirent64` records: `.`, `..`, then `entries`; each record's
/// d_off is the offset of the next, so lseek and getdents64 agree.
fn listing(entries: &[(Vec<u8>, u8)]) -> Result<OwnedFd, Errno> {
    let mut b = Vec::new();
    let dots = [(b".".to_vec(), DT_DIR), (b"..".to_vec(), DT_DIR)];
    for (i, (name, t)) in dots.iter().chain(entries).enumerate() {
        let len = (19 + name.len() + 1).next_multiple_of(8);
        let next = (b.len() + len) as u64;
        b.extend((i as u64 + 1).to_le_bytes()); // d_ino
        b.extend(next.to_le_bytes()); // d_off
        b.extend((len as u16).to_le_bytes()); // d_reclen
        b.push(*t);
        b.extend_from_slice(name);
        b.resize(next as usize, 0);
    }
    sealed_memfd(&b)
}

/// A memfd holding `bytes`, sealed against change (a write to it fails with
/// EPERM), at offset 0: what the guest's /proc files and directories are.
pub fn sealed_memfd(bytes: &[u8]) -> Result<OwnedFd, Errno> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let f = memfd_create(
        c"hyperjail-proc",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut done = 0;
    while done < bytes.len() {
        done += nix::unistd::write(&f, &bytes[done..])?;
    }
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&f, FcntlArg::F_ADD_SEALS(seals))?;
    nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekSet)?;
    Ok(f)
}

/// getdents64 of a listing: the whole records from its offset that fit in
/// `len` bytes (EINVAL if not even one does), copied to the guest's `buf`.
pub fn getdents64(
    f: std::os::fd::BorrowedFd<'_>,
    mem: &mut GuestMem,
    buf: u64,
    len: u64,
) -> Result<i64, Errno> {
    use nix::unistd::{lseek, Whence};
    let pos = lseek(f, 0, Whence::SeekCur)?;
    let mut tmp = vec![0u8; len.min(1 << 16) as usize];
    let n = nix::sys::uio::pread(f, &mut tmp, pos)?;
    let mut k = 0;
    while k + 19 <= n {
        let rl = usize::from(u16::from_le_bytes([tmp[k + 16], tmp[k + 17]]));
        if rl == 0 || k + rl > n {
            break;
        }
        k += rl;
    }
    if k == 0 && n > 0 {
        return Err(Errno::EINVAL);
    }
    if !mem.write(buf, &tmp[..k]) {
        return Err(Errno::EFAULT);
    }
    lseek(f, pos + k as i64, Whence::SeekSet)?;
    Ok(k as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_records_are_whole_and_chained() {
        let f = listing(&[(b"12".to_vec(), DT_DIR), (b"self".to_vec(), DT_LNK)]).expect("memfd");
        let mut b = vec![0u8; 4096];
        let n = nix::sys::uio::pread(&f, &mut b, 0).expect("read");
        let mut names = Vec::new();
        let mut k = 0;
        while k < n {
            let off = u64::from_le_bytes(b[k + 8..k + 16].try_into().expect("8 bytes"));
            let rl = usize::from(u16::from_le_bytes([b[k + 16], b[k + 17]]));
            assert_eq!(rl % 8, 0);
            assert_eq!(off as usize, k + rl, "d_off is the next record");
            let name = &b[k + 19..k + rl];
            let end = name.iter().position(|&c| c == 0).expect("NUL");
            names.push((String::from_utf8_lossy(&name[..end]).to_string(), b[k + 18]));
            k += rl;
        }
        assert_eq!(
            names,
            [
                (".".into(), DT_DIR),
                ("..".into(), DT_DIR),
                ("12".into(), DT_DIR),
                ("self".into(), DT_LNK)
            ]
        );
    }
}
