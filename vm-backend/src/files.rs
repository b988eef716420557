//! The VMM's side of the guest's files: the per-VM fd table and guest paths.
//!
//! [`Host`] is everything forwarded calls may touch on the host: the console fds
//! (guest fds 0-2 at start), a directory fd of the bundle's rootfs opened before the
//! seccomp filter is installed, the guest's working directory and its fd table. The
//! fuzz target builds one on /dev/null and a temporary directory, so the decoder runs
//! without touching the real stdio or rootfs.
//!
//! Every guest path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! from the rootfs fd: `..`, absolute paths and absolute symlinks stay inside the
//! rootfs. Calls that name a directory entry (mkdir, unlink, rename) resolve the
//! parent that way and then act on one plain name relative to its fd.

use crate::mem::GuestMem;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Most open guest fds (RLIMIT_NOFILE as the guest reports it).
pub const MAX_FDS: usize = 1024;
/// Longest guest path, with its NUL (PATH_MAX).
pub const PATH_MAX: usize = 4096;
/// Longest file name (NAME_MAX).
const NAME_MAX: usize = 255;
/// `AT_FDCWD` as the guest passes it (an int).
pub const AT_FDCWD: i32 = -100;

/// One guest fd: a host fd (shared by dup'd guest fds, as they share an open file
/// description), the guest's close-on-exec flag and, for opened files, the guest
/// path it was opened by (the base for `*at` calls relative to it).
#[derive(Debug, Clone)]
struct Slot {
    file: Arc<OwnedFd>,
    cloexec: bool,
    path: Option<Arc<[u8]>>,
    /// O_NONBLOCK as the guest asked for it (the VMM opens every file O_NONBLOCK).
    nonblock: bool,
    /// Whether a read or write on it may wait, and how the VMM avoids waiting.
    kind: Kind,
}

impl Slot {
    /// A guest fd for a file the VMM was given (the console, `exec`'s stdio):
    /// its O_NONBLOCK is left as it is.
    fn given(f: OwnedFd) -> Slot {
        Slot::shared(Arc::new(f), false)
    }

    /// A guest fd for `file`, a file the VMM was given, shared with others.
    fn shared(file: Arc<OwnedFd>, cloexec: bool) -> Slot {
        let kind = match nix::sys::stat::fstat(&file).map(|st| st.st_mode & libc::S_IFMT) {
            Ok(libc::S_IFREG | libc::S_IFDIR) => Kind::File,
            _ => Kind::Polled,
        };
        Slot::new(file, cloexec, false, None, kind)
    }

    /// A guest fd for `file`, opened by the guest path `path` (None: made by the
    /// VMM), with the guest's O_NONBLOCK `nonblock`.
    fn new(
        file: Arc<OwnedFd>,
        cloexec: bool,
        nonblock: bool,
        path: Option<&[u8]>,
        kind: Kind,
    ) -> Slot {
        Slot {
            file,
            cloexec,
            path: path.map(Into::into),
            nonblock,
            kind,
        }
    }
}

/// How a guest fd's host file can block, which decides who performs its I/O (see
/// [`crate::wait`]): never the ring thread, when the call would wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file or directory: I/O never waits.
    File,
    /// A file the VMM did not make (the console: a tty, a pipe from the engine),
    /// whose O_NONBLOCK it must not change: polled before each read or write.
    Polled,
    /// A file the VMM made O_NONBLOCK (pipes, eventfds, epoll fds): an EAGAIN means
    /// the call would wait.
    Own,
    /// A /proc directory the VMM made ([`crate::procdir`]): a memfd of
    /// `linux_dirent64` records; never waits.
    Listing,
}

/// One guest process's files: its working directory, fd table and controlling
/// terminal (what /dev/tty opens: the terminal its first process or `exec` was
/// given as stdin, if a terminal).
#[derive(Debug, Clone, Default)]
struct Files {
    cwd: Vec<u8>,
    fds: Vec<Option<Slot>>,
    ctty: Option<Arc<OwnedFd>>,
}

/// The file on guest fd 0 of `fds` if it is a terminal.
fn ctty_of(fds: &[Option<Slot>]) -> Option<Arc<OwnedFd>> {
    let f = fds.first()?.as_ref()?.file.clone();
    nix::unistd::isatty(&f).unwrap_or(false).then_some(f)
}

/// What forwarded system calls act on: see the module docs. Each guest process
/// has its own [`Files`]; calls act on the current one ([`Host::set_current`]).
#[derive(Debug)]
pub struct Host {
    root: OwnedFd,
    readonly: bool,
    procs: Vec<Files>,
    cur: usize,
    /// The device nodes the guest gets whatever its rootfs holds (see [`DEVICES`]),
    /// opened on the host before the VMM is confined.
    devices: Vec<(&'static [u8], Arc<OwnedFd>)>,
    /// What /dev/console opens: the first process's stdout as the VMM got it.
    console: Option<Arc<OwnedFd>>,
    /// The console terminal's foreground process group (a guest pgid; the first
    /// process's, 1, until a process sets another with TIOCSPGRP); shared with
    /// the VMM's signal thread, which gives the terminal's signals to that group.
    console_fg: Arc<AtomicU64>,
    /// The foreground groups of the other terminals (an `exec --tty`'s), by
    /// device number, as the guest set them with TIOCSPGRP; the most recent
    /// [`TTY_FGS`].
    tty_fgs: Vec<(u64, u64)>,
}

/// Terminals whose foreground group is kept (see `Host::tty_fgs`).
const TTY_FGS: usize = 32;

/// The guest's device nodes: its path and the host device behind it. Device nodes
/// in the rootfs itself are refused (see fsops::openat).
pub const DEVICES: &[(&[u8], &str)] = &[
    (b"/dev/null", "/dev/null"),
    (b"/dev/zero", "/dev/zero"),
    (b"/dev/full", "/dev/full"),
    (b"/dev/random", "/dev/urandom"),
    (b"/dev/urandom", "/dev/urandom"),
];

impl Host {
    /// A host whose guest fds 0-2 are `console`, whose files live under the directory
    /// `root` (an fd, O_PATH is enough), with working directory `cwd` (a guest path).
    /// With `readonly`, calls that would change the rootfs fail with EROFS.
    pub fn new(console: [OwnedFd; 3], root: OwnedFd, cwd: &str, readonly: bool) -> Host {
        let fds: Vec<Option<Slot>> = console.into_iter().map(|f| Some(Slot::given(f))).collect();
        let console = fds[1].as_ref().map(|s| s.file.clone());
        let mut procs = vec![Files::default(); crate::abi::MAX_PROCS as usize];
        procs[0] = Files {
            cwd: normalize(&absolute_cwd(cwd)),
            ctty: ctty_of(&fds),
            fds,
        };
        Host {
            root,
            readonly,
            procs,
            cur: 0,
            devices: Vec::new(),
            console,
            console_fg: Arc::new(AtomicU64::new(1)),
            tty_fgs: Vec::new(),
        }
    }

    /// Gives the guest the host devices of [`DEVICES`] (opened now: the VMM can
    /// open nothing once confined).
    pub fn open_devices(&mut self) -> Result<(), String> {
        for (guest, host) in DEVICES {
            let f = nix::fcntl::open(*host, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| format!("open {host} for the guest: {e}"))?;
            self.devices.push((guest, Arc::new(f)));
        }
        Ok(())
    }

    /// Opens the guest device at `abs` (a normalised path), if it is one: /dev/null
    /// and the others of [`DEVICES`], and /dev/stdin, /dev/stdout, /dev/stderr (the
    /// caller's fds 0-2, as their /proc/self/fd links reopen them).
    pub fn open_device(&mut self, abs: &[u8], cloexec: bool) -> Option<Result<i64, Errno>> {
        let std = [&b"/dev/stdin"[..], b"/dev/stdout", b"/dev/stderr"];
        if let Some(fd) = std.iter().position(|p| *p == abs) {
            return Some(self.dup(fd as u64, 0, cloexec).map_err(|_| Errno::ENXIO));
        }
        // /proc/self/fd/N opens the same file again (as a dup: its offset is
        // shared, where Linux reopens regular files with an offset of their own).
        if let Some(fd) = Host::proc_fd(abs) {
            return Some(self.dup(fd, 0, cloexec).map_err(|_| Errno::ENOENT));
        }
        // The controlling terminal (ENXIO without one, as Linux), and the console.
        let terminal = match abs {
            b"/dev/tty" => Some(self.files().ctty.clone().ok_or(Errno::ENXIO)),
            b"/dev/console" => Some(self.console.clone().ok_or(Errno::ENXIO)),
            _ => None,
        };
        if let Some(t) = terminal {
            return Some(t.and_then(|f| self.add(Slot::shared(f, cloexec))));
        }
        let file = self.devices.iter().find(|(p, _)| *p == abs)?.1.clone();
        Some(self.install_shared(file, cloexec))
    }

    /// The guest fd a /proc/self/fd/N (or /proc/thread-self/fd/N) path names, for
    /// `abs` a normalised absolute path; None for another path.
    pub fn proc_fd(abs: &[u8]) -> Option<u64> {
        let n = abs
            .strip_prefix(b"/proc/self/fd/")
            .or_else(|| abs.strip_prefix(b"/proc/thread-self/fd/"))?;
        if n.is_empty() || n.len() > 9 || !n.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(n).ok()?.parse().ok()
    }

    /// What readlink of /proc/PID/fd/`fd` gives for process slot `p`: the guest
    /// path the file was opened by, the device's path, or Linux's `pipe:[inode]`,
    /// `socket:[inode]` and `anon_inode:[...]` for what has none.
    pub fn fd_link(&self, p: usize, fd: u64) -> Result<Vec<u8>, Errno> {
        let slot = self.slot_in(p, fd)?;
        if let Some(p) = &slot.path {
            return Ok(p.to_vec());
        }
        if let Some((p, _)) = self
            .devices
            .iter()
            .find(|(_, f)| Arc::ptr_eq(f, &slot.file))
        {
            return Ok(p.to_vec());
        }
        let st = nix::sys::stat::fstat(&slot.file)?;
        Ok(match st.st_mode & libc::S_IFMT {
            libc::S_IFIFO => format!("pipe:[{}]", st.st_ino).into_bytes(),
            libc::S_IFSOCK => format!("socket:[{}]", st.st_ino).into_bytes(),
            libc::S_IFCHR if nix::unistd::isatty(&slot.file).unwrap_or(false) => {
                b"/dev/tty".to_vec()
            }
            libc::S_IFCHR => b"/dev/console".to_vec(),
            libc::S_IFREG | libc::S_IFDIR => b"/".to_vec(),
            _ => b"anon_inode:[eventfd]".to_vec(),
        })
    }

    /// Makes process slot `p`'s files the ones calls act on (slot 0 for a bad `p`).
    pub fn set_current(&mut self, p: u64) {
        self.cur = if p < self.procs.len() as u64 {
            p as usize
        } else {
            0
        };
    }

    /// fork: process slot `child` gets a copy of `parent`'s working directory and fd
    /// table (the copies share their open files, as a forked process's do).
    pub fn fork_files(&mut self, parent: u64, child: u64) {
        let (p, c) = (parent as usize, child as usize);
        if p < self.procs.len() && c < self.procs.len() && p != c {
            self.procs[c] = self.procs[p].clone();
        }
    }

    /// `exec`: process slot `p` starts with working directory `cwd` (an absolute
    /// guest path) and `fds` as its guest fds 0, 1, 2, ... (its stdio, then the
    /// preserved fds).
    pub fn spawn_files(&mut self, p: u64, cwd: &str, fds: Vec<OwnedFd>) {
        if let Some(f) = self.procs.get_mut(p as usize) {
            let fds: Vec<Option<Slot>> = fds.into_iter().map(|f| Some(Slot::given(f))).collect();
            *f = Files {
                cwd: normalize(&absolute_cwd(cwd)),
                ctty: ctty_of(&fds),
                fds,
            };
        }
    }

    /// A process ended: its fds are closed (a host file closes with its last one).
    pub fn drop_files(&mut self, p: u64) {
        if let Some(f) = self.procs.get_mut(p as usize) {
            *f = Files::default();
        }
    }

    /// execve: the process's close-on-exec fds are closed.
    pub fn exec_files(&mut self, p: u64) {
        if let Some(f) = self.procs.get_mut(p as usize) {
            for s in f.fds.iter_mut() {
                if s.as_ref().is_some_and(|s| s.cloexec) {
                    *s = None;
                }
            }
        }
    }

    fn files(&self) -> &Files {
        &self.procs[self.cur]
    }

    fn files_mut(&mut self) -> &mut Files {
        &mut self.procs[self.cur]
    }

    /// The real thing: the VMM's stdio (duplicated) and the rootfs at `rootfs`.
    pub fn open(rootfs: &Path, cwd: &str, readonly: bool) -> Result<Host, String> {
        // A closed stdio fd reads and writes as /dev/null for the guest.
        let dup = |f: BorrowedFd<'_>| {
            nix::unistd::dup(f)
                .or_else(|_| {
                    nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
                })
                .map_err(|e| format!("console for the guest: {e}"))
        };
        let console = [
            dup(std::io::stdin().as_fd())?,
            dup(std::io::stdout().as_fd())?,
            dup(std::io::stderr().as_fd())?,
        ];
        let root = nix::fcntl::open(
            rootfs,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open rootfs {}: {e}", rootfs.display()))?;
        let mut h = Host::new(console, root, cwd, readonly);
        h.open_devices()?;
        Ok(h)
    }

    /// The console terminal's foreground process group (see the field).
    pub fn console_fg(&self) -> &Arc<AtomicU64> {
        &self.console_fg
    }

    /// The foreground group the guest set on terminal `rdev` (not the console).
    pub fn tty_fg(&self, rdev: u64) -> Option<u64> {
        self.tty_fgs
            .iter()
            .find(|(r, _)| *r == rdev)
            .map(|&(_, g)| g)
    }

    /// Sets terminal `rdev`'s foreground group (not the console's).
    pub fn set_tty_fg(&mut self, rdev: u64, pgid: u64) {
        self.tty_fgs.retain(|(r, _)| *r != rdev);
        if self.tty_fgs.len() == TTY_FGS {
            self.tty_fgs.remove(0);
        }
        self.tty_fgs.push((rdev, pgid));
    }

    /// The device number of process slot `p`'s controlling terminal (what an
    /// `exec --tty` process was given as stdin), if it has one.
    pub fn ctty_rdev(&self, p: usize) -> Option<u64> {
        let f = self.procs.get(p)?.ctty.clone()?;
        nix::sys::stat::fstat(&f).ok().map(|s| s.st_rdev)
    }

    /// Forgets terminal `rdev`'s foreground group (a new `exec --tty` session
    /// starts on it: the host reuses its ptys).
    pub fn clear_tty_fg(&mut self, rdev: u64) {
        self.tty_fgs.retain(|(r, _)| *r != rdev);
    }

    /// Whether `f` is the terminal the console is (the same device).
    pub fn is_console(&self, f: BorrowedFd<'_>) -> bool {
        let rdev = |f: BorrowedFd<'_>| nix::sys::stat::fstat(f).ok().map(|s| s.st_rdev);
        match (&self.console, rdev(f)) {
            (Some(c), Some(r)) => r != 0 && rdev(c.as_fd()) == Some(r),
            _ => false,
        }
    }

    /// Whether the rootfs is read-only for the guest.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    fn slot(&self, fd: u64) -> Result<&Slot, Errno> {
        self.slot_in(self.cur, fd)
    }

    /// Guest fd `fd` of process slot `p`.
    fn slot_in(&self, p: usize, fd: u64) -> Result<&Slot, Errno> {
        self.procs
            .get(p)
            .ok_or(Errno::EBADF)?
            .fds
            .get(guest_fd(fd).ok_or(Errno::EBADF)?)
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)
    }

    /// The process slot calls act on ([`Host::set_current`]).
    pub fn current(&self) -> usize {
        self.cur
    }

    /// The open guest fds of process slot `p`, lowest first.
    pub fn open_fds(&self, p: usize) -> Vec<u64> {
        self.procs.get(p).map_or_else(Vec::new, |f| {
            (0..f.fds.len() as u64)
                .filter(|&i| f.fds[i as usize].is_some())
                .collect()
        })
    }

    /// The host file behind guest fd `fd` of process slot `p`.
    pub fn file_in(&self, p: usize, fd: u64) -> Result<Arc<OwnedFd>, Errno> {
        self.slot_in(p, fd).map(|s| s.file.clone())
    }

    /// fstat of the rootfs's top directory (what the guest's /proc entries are
    /// made from: their owner, device and times).
    pub fn root_stat(&self) -> Result<libc::stat, Errno> {
        nix::sys::stat::fstat(&self.root)
    }

    /// The host fd behind guest fd `fd`.
    pub fn fd(&self, fd: u64) -> Result<BorrowedFd<'_>, Errno> {
        self.slot(fd).map(|s| s.file.as_fd())
    }

    /// The host file behind guest fd `fd`, shared.
    pub fn file(&self, fd: u64) -> Result<Arc<OwnedFd>, Errno> {
        self.slot(fd).map(|s| s.file.clone())
    }

    /// Lowest free guest fd at or above `min`.
    fn free_slot(&self, min: usize) -> Result<usize, Errno> {
        (min..MAX_FDS)
            .find(|&i| self.files().fds.get(i).is_none_or(Option::is_none))
            .ok_or(Errno::EMFILE)
    }

    fn put(&mut self, at: usize, slot: Slot) {
        let fds = &mut self.files_mut().fds;
        if fds.len() <= at {
            fds.resize(at + 1, None);
        }
        fds[at] = Some(slot);
    }

    /// Puts `slot` at the lowest free guest fd.
    fn add(&mut self, slot: Slot) -> Result<i64, Errno> {
        let at = self.free_slot(0)?;
        self.put(at, slot);
        Ok(at as i64)
    }

    /// Installs a freshly opened host fd (opened O_NONBLOCK; `nonblock` says whether
    /// the guest asked for it) at the lowest free guest fd.
    pub fn install(
        &mut self,
        file: OwnedFd,
        cloexec: bool,
        nonblock: bool,
        path: &[u8],
    ) -> Result<i64, Errno> {
        self.add(Slot::new(
            Arc::new(file),
            cloexec,
            nonblock,
            Some(path),
            Kind::File,
        ))
    }

    /// Installs a file the VMM made O_NONBLOCK (a pipe end, an eventfd, an epoll fd)
    /// at the lowest free guest fd.
    pub fn install_own(
        &mut self,
        file: OwnedFd,
        cloexec: bool,
        nonblock: bool,
    ) -> Result<i64, Errno> {
        self.add(Slot::new(
            Arc::new(file),
            cloexec,
            nonblock,
            None,
            Kind::Own,
        ))
    }

    /// Installs a file the VMM made (never waits: a memfd) at the lowest free fd.
    pub fn install_file(&mut self, file: OwnedFd, cloexec: bool) -> Result<i64, Errno> {
        self.install_shared(Arc::new(file), cloexec)
    }

    /// Installs a /proc directory listing (a memfd of dirent records, see
    /// [`crate::procdir`]) opened by the guest path `path`, at the lowest free fd.
    pub fn install_listing(
        &mut self,
        file: OwnedFd,
        cloexec: bool,
        path: &[u8],
    ) -> Result<i64, Errno> {
        self.add(Slot::new(
            Arc::new(file),
            cloexec,
            false,
            Some(path),
            Kind::Listing,
        ))
    }

    /// Puts the records of listing `fd` (installed by [`Host::install_listing`])
    /// in place.
    pub fn set_listing(&mut self, fd: u64, file: OwnedFd) -> Result<(), Errno> {
        let i = guest_fd(fd).ok_or(Errno::EBADF)?;
        match self.files_mut().fds.get_mut(i).and_then(Option::as_mut) {
            Some(s) if s.kind == Kind::Listing => {
                s.file = Arc::new(file);
                Ok(())
            }
            _ => Err(Errno::EBADF),
        }
    }

    /// Installs a file that never waits and that other fds may share (a device).
    fn install_shared(&mut self, file: Arc<OwnedFd>, cloexec: bool) -> Result<i64, Errno> {
        self.add(Slot::new(file, cloexec, false, None, Kind::File))
    }

    /// How guest fd `fd` may block, and whether the guest set O_NONBLOCK on it.
    pub fn kind(&self, fd: u64) -> Result<(Kind, bool), Errno> {
        self.slot(fd).map(|s| (s.kind, s.nonblock))
    }

    /// close(2).
    pub fn close(&mut self, fd: u64) -> Result<i64, Errno> {
        let i = guest_fd(fd).ok_or(Errno::EBADF)?;
        match self.files_mut().fds.get_mut(i).and_then(Option::take) {
            Some(_) => Ok(0),
            None => Err(Errno::EBADF),
        }
    }

    /// close_range(2): CLOSE_RANGE_CLOEXEC marks instead of closing;
    /// CLOSE_RANGE_UNSHARE changes nothing (each process has its own table).
    pub fn close_range(&mut self, first: u64, last: u64, flags: u64) -> Result<i64, Errno> {
        const UNSHARE: u64 = 2;
        const CLOEXEC: u64 = 4;
        let (first, last, flags) = (
            first as u32 as usize,
            last as u32 as usize,
            flags as u32 as u64,
        );
        if flags & !(UNSHARE | CLOEXEC) != 0 || first > last {
            return Err(Errno::EINVAL);
        }
        let fds = &mut self.files_mut().fds;
        let end = last.saturating_add(1).min(fds.len());
        for s in fds.iter_mut().take(end).skip(first) {
            if flags & CLOEXEC != 0 {
                if let Some(s) = s.as_mut() {
                    s.cloexec = true;
                }
            } else {
                *s = None;
            }
        }
        Ok(0)
    }

    /// dup(2), and fcntl F_DUPFD/F_DUPFD_CLOEXEC with `min`.
    pub fn dup(&mut self, fd: u64, min: u64, cloexec: bool) -> Result<i64, Errno> {
        let mut s = self.slot(fd)?.clone();
        let min = usize::try_from(min).map_err(|_| Errno::EINVAL)?;
        if min >= MAX_FDS {
            return Err(Errno::EINVAL);
        }
        let at = self.free_slot(min)?;
        s.cloexec = cloexec;
        self.put(at, s);
        Ok(at as i64)
    }

    /// dup2(2) (`flags` None) and dup3(2).
    pub fn dup3(&mut self, old: u64, new: u64, flags: Option<u64>) -> Result<i64, Errno> {
        let o_cloexec = OFlag::O_CLOEXEC.bits() as u64;
        let mut s = self.slot(old)?.clone();
        let to = guest_fd(new).filter(|&n| n < MAX_FDS).ok_or(Errno::EBADF)?;
        match flags {
            None if guest_fd(old) == Some(to) => return Ok(to as i64),
            Some(_) if guest_fd(old) == Some(to) => return Err(Errno::EINVAL),
            Some(f) if f & !o_cloexec != 0 => return Err(Errno::EINVAL),
            _ => {}
        }
        s.cloexec = flags.is_some_and(|f| f & o_cloexec != 0);
        self.put(to, s);
        Ok(to as i64)
    }

    /// fcntl(2): F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL (only
    /// O_NONBLOCK is applied).
    pub fn fcntl(&mut self, fd: u64, cmd: u64, arg: u64) -> Result<i64, Errno> {
        const FD_CLOEXEC: u64 = 1;
        match cmd as u32 {
            0 => self.dup(fd, arg, false),
            1030 => self.dup(fd, arg, true),
            1 => Ok(i64::from(self.slot(fd)?.cloexec)),
            2 => {
                let i = guest_fd(fd).ok_or(Errno::EBADF)?;
                match self.files_mut().fds.get_mut(i).and_then(Option::as_mut) {
                    Some(s) => {
                        s.cloexec = arg & FD_CLOEXEC != 0;
                        Ok(0)
                    }
                    None => Err(Errno::EBADF),
                }
            }
            3 => {
                let s = self.slot(fd)?;
                let fl = nix::fcntl::fcntl(s.file.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
                // The VMM's own O_NONBLOCK (files, pipes) or the console's is not
                // the guest's: it sees the flag it set.
                let nb = OFlag::O_NONBLOCK.bits();
                Ok(i64::from((fl & !nb) | if s.nonblock { nb } else { 0 }))
            }
            4 => {
                // F_SETFL: O_NONBLOCK is kept as the guest's view (the VMM never
                // waits, see crate::wait); the other flags are not applied.
                self.set_flags(fd, Some(arg & OFlag::O_NONBLOCK.bits() as u64 != 0), None)
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// Sets the guest's O_NONBLOCK and close-on-exec flags of guest fd `fd` (None
    /// leaves one as it is): F_SETFL, and ioctl FIONBIO, FIOCLEX and FIONCLEX.
    pub fn set_flags(
        &mut self,
        fd: u64,
        nonblock: Option<bool>,
        cloexec: Option<bool>,
    ) -> Result<i64, Errno> {
        let i = guest_fd(fd).ok_or(Errno::EBADF)?;
        let s = self
            .files_mut()
            .fds
            .get_mut(i)
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)?;
        if let Some(nb) = nonblock {
            s.nonblock = nb;
        }
        if let Some(ce) = cloexec {
            s.cloexec = ce;
        }
        Ok(0)
    }

    /// getcwd(2): the path with its NUL; its length is the return value.
    pub fn cwd(&self) -> &[u8] {
        &self.files().cwd
    }

    /// Sets the working directory to the (absolute, normalised) guest path `abs`,
    /// which must name a directory in the rootfs.
    pub fn chdir(&mut self, abs: &[u8]) -> Result<i64, Errno> {
        self.resolve(abs, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
        self.set_cwd(abs);
        Ok(0)
    }

    /// Sets the working directory to `abs` without looking it up (a directory the
    /// VMM makes, under /proc).
    pub fn set_cwd(&mut self, abs: &[u8]) {
        self.files_mut().cwd = normalize(abs);
    }

    /// The guest path guest fd `fd` was opened by (for fchdir and `*at` calls).
    pub fn fd_path(&self, fd: u64) -> Result<Arc<[u8]>, Errno> {
        self.slot(fd)?.path.clone().ok_or(Errno::ENOTDIR)
    }

    /// The absolute guest path of `path` relative to guest fd `dirfd` (or the working
    /// directory for AT_FDCWD).
    pub fn absolute(&self, dirfd: u64, path: &[u8]) -> Result<Vec<u8>, Errno> {
        if path.first() == Some(&b'/') {
            return Ok(path.to_vec());
        }
        let mut p = if dirfd as u32 as i32 == AT_FDCWD {
            self.files().cwd.clone()
        } else {
            self.fd_path(dirfd)?.to_vec()
        };
        if !p.ends_with(b"/") {
            p.push(b'/');
        }
        p.extend_from_slice(path);
        if p.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(p)
    }

    /// Opens the absolute guest path `abs` inside the rootfs.
    pub fn resolve(&self, abs: &[u8], flags: OFlag, mode: u32) -> Result<OwnedFd, Errno> {
        let c = CString::new(abs).map_err(|_| Errno::EINVAL)?;
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode & 0o7777))
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        // RESOLVE_IN_ROOT answers EAGAIN when a concurrent rename races with `..`.
        let mut tries = 0;
        loop {
            match openat2(&self.root, c.as_c_str(), how) {
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                r => return r,
            }
        }
    }

    /// The directory holding the last component of `abs` and that component, for
    /// calls that act on a directory entry. `.`, `..` and `/` have no entry to act
    /// on: `dots` is returned for them.
    pub fn parent(&self, abs: &[u8], dots: Errno) -> Result<(OwnedFd, CString), Errno> {
        let end = abs.iter().rposition(|&b| b != b'/').ok_or(dots)? + 1;
        let trimmed = &abs[..end];
        let cut = trimmed.iter().rposition(|&b| b == b'/').ok_or(dots)?;
        let name = &trimmed[cut + 1..];
        if name == b"." || name == b".." {
            return Err(dots);
        }
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let dir = self.resolve(&trimmed[..=cut], OFlag::O_PATH | OFlag::O_DIRECTORY, 0)?;
        let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
        Ok((dir, name))
    }
}

/// A guest fd number as Linux reads it (an int); None if negative.
fn guest_fd(fd: u64) -> Option<usize> {
    usize::try_from(fd as u32 as i32).ok()
}

fn absolute_cwd(cwd: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(cwd.len() + 1);
    if !cwd.starts_with('/') {
        v.push(b'/');
    }
    v.extend_from_slice(cwd.as_bytes());
    v.truncate(PATH_MAX - 1);
    v
}

/// Removes `.`, `..` and repeated slashes from an absolute path (lexically).
pub fn normalize(abs: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in abs.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(abs.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// Reads the NUL-terminated guest path at `at`: EFAULT if it leaves guest memory,
/// ENAMETOOLONG if it has no NUL within PATH_MAX bytes.
pub fn read_path(mem: &GuestMem, at: u64) -> Result<Vec<u8>, Errno> {
    let avail = mem.size().checked_sub(at).ok_or(Errno::EFAULT)?;
    let n = avail.min(PATH_MAX as u64);
    let s = mem.slice(at, n).ok_or(Errno::EFAULT)?;
    match s.iter().position(|&b| b == 0) {
        Some(end) => Ok(s[..end].to_vec()),
        None if n == PATH_MAX as u64 => Err(Errno::ENAMETOOLONG),
        None => Err(Errno::EFAULT),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A host on /dev/null and a temporary rootfs.
    pub fn test_host(root: &Path) -> Host {
        let null = || {
            nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
                .expect("/dev/null")
        };
        let r = nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
            .expect("root");
        Host::new([null(), null(), null()], r, "/", false)
    }

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize(b"/a/./b/../c//"), b"/a/c");
        assert_eq!(normalize(b"/../.."), b"/");
        assert_eq!(normalize(b"/"), b"/");
    }

    #[test]
    fn fd_table() {
        let dir = tempfile_dir();
        let mut h = test_host(&dir);
        assert_eq!(h.dup(1, 0, false), Ok(3));
        assert_eq!(h.dup3(3, 3, None), Ok(3));
        assert_eq!(h.dup3(3, 3, Some(0)), Err(Errno::EINVAL));
        assert_eq!(h.dup3(3, 9, Some(0x80000)), Ok(9));
        assert_eq!(h.fcntl(9, 1, 0), Ok(1));
        assert_eq!(h.dup3(3, 1024, None), Err(Errno::EBADF));
        assert_eq!(h.dup3(3, u64::MAX, None), Err(Errno::EBADF));
        assert_eq!(h.dup(3, 5000, false), Err(Errno::EINVAL));
        assert_eq!(h.close(9), Ok(0));
        assert_eq!(h.close(9), Err(Errno::EBADF));
        assert_eq!(h.close(u64::MAX), Err(Errno::EBADF));
        assert_eq!(h.fcntl(77, 3, 0), Err(Errno::EBADF));
        for _ in 4..MAX_FDS {
            assert!(h.dup(0, 0, false).is_ok());
        }
        assert_eq!(h.dup(0, 0, false), Err(Errno::EMFILE));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parents_never_leave_the_root() {
        let dir = tempfile_dir();
        let h = test_host(&dir);
        assert_eq!(h.parent(b"/", Errno::EBUSY).err(), Some(Errno::EBUSY));
        assert_eq!(h.parent(b"/a/..", Errno::EBUSY).err(), Some(Errno::EBUSY));
        assert_eq!(h.parent(b"//", Errno::EBUSY).err(), Some(Errno::EBUSY));
        let (_, name) = h.parent(b"/../../x//", Errno::EBUSY).expect("x");
        assert_eq!(name.as_bytes(), b"x");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fresh directory under the system's temporary directory.
    pub fn tempfile_dir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "hj-vm-files-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).expect("mkdir temp");
        d
    }
}
