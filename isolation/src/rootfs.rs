//! The rootfs: propagation, the bind mount that makes it a mount point, /dev,
//! pivot_root (or MS_MOVE + chroot), masked and read-only paths.

use crate::mounts::{propagation, remount};
use crate::safepath::{fd_path, mkdir_all_in_root, open_in_root, Kind};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, makedev, mknodat, umask, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The propagation asked for by `rootfsPropagation` (default `rslave`, as runc).
pub fn wanted_propagation(rootfs_propagation: Option<&str>) -> MsFlags {
    rootfs_propagation
        .filter(|p| !p.is_empty())
        .and_then(propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC)
}

/// Makes the mount tree of the container's mount namespace private or slave (never
/// shared: pivot_root refuses shared mounts), turns the rootfs into a mount point and
/// returns an O_PATH fd of it. `shared` and `unbindable` are applied after the pivot
/// by [`finish_propagation`]. Without a mount namespace of its own (`own_ns` false) the
/// host's propagation is left alone.
pub fn prepare(rootfs: &Path, wanted: MsFlags, own_ns: bool) -> Result<OwnedFd> {
    if own_ns {
        let tree = if wanted.contains(MsFlags::MS_PRIVATE) {
            MsFlags::MS_PRIVATE | MsFlags::MS_REC
        } else {
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        };
        mount(None::<&str>, "/", None::<&str>, tree, None::<&str>)
            .map_err(|e| Error::path("set propagation", "/", e))?;
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::path("bind rootfs", rootfs, e))?;
    open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open rootfs", rootfs, e))
}

/// Applies `shared`/`unbindable` root propagation once the rootfs is `/`.
pub fn finish_propagation(wanted: MsFlags) -> Result<()> {
    if wanted.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE) {
        mount(None::<&str>, "/", None::<&str>, wanted, None::<&str>)
            .map_err(|e| Error::path("set root propagation", "/", e))?;
    }
    Ok(())
}

/// Lazily unmounts a rootfs bind mount left in the host's mount namespace (a jail
/// without a mount namespace of its own, or a crash). Does nothing when none is there.
pub fn unmount_host_rootfs(rootfs: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted = info
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*rootfs.to_string_lossy()));
    if mounted {
        let _ = umount2(rootfs, MntFlags::MNT_DETACH);
    }
}

/// The devices every container gets (runtime-spec config-linux.md, Default Devices).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// Creates the default devices, `linux.devices`, the /dev symlinks and (for a terminal)
/// the /dev/console placeholder. In a user namespace, where mknod is not allowed,
/// the host's device nodes are bind-mounted instead.
pub fn setup_dev(root: &OwnedFd, devices: &[LinuxDevice], console: bool) -> Result<()> {
    let old = umask(Mode::empty());
    let r = (|| {
        for (path, major, minor) in DEFAULT_DEVICES {
            if devices.iter().any(|d| d.path() == Path::new(path)) {
                continue;
            }
            make_device(
                root,
                Path::new(path),
                SFlag::S_IFCHR,
                *major,
                *minor,
                0o666,
                0,
                0,
            )?;
        }
        for d in devices {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
                LinuxDeviceType::B => SFlag::S_IFBLK,
                LinuxDeviceType::P => SFlag::S_IFIFO,
                LinuxDeviceType::A => {
                    return Err(Error::Invalid(format!(
                        "device {:?}: type \"a\" is only valid in cgroup rules",
                        d.path()
                    )))
                }
            };
            let (major, minor) = (d.major().max(0) as u64, d.minor().max(0) as u64);
            let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
            make_device(
                root,
                d.path(),
                kind,
                major,
                minor,
                mode,
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
            )?;
        }
        let dev = mkdir_all_in_root(root, Path::new("/dev"), Kind::Dir)?;
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("core", "/proc/kcore"),
        ] {
            match nix::unistd::symlinkat(target, dev.as_fd(), name) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::path("symlink", format!("/dev/{name}"), e)),
            }
        }
        if open_in_root(root, Path::new("/dev/pts/ptmx")).is_ok() {
            let _ =
                nix::unistd::unlinkat(dev.as_fd(), "ptmx", nix::unistd::UnlinkatFlags::NoRemoveDir);
            nix::unistd::symlinkat("pts/ptmx", dev.as_fd(), "ptmx")
                .map_err(|e| Error::path("symlink", "/dev/ptmx", e))?;
        }
        if console {
            mkdir_all_in_root(root, Path::new("/dev/console"), Kind::File)?;
        }
        Ok(())
    })();
    umask(old);
    r
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    root: &OwnedFd,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("device path {path:?} has no file name")))?;
    let dir = mkdir_all_in_root(root, parent, Kind::Dir)?;
    let _ = nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    let perm = Mode::from_bits_truncate(mode as libc::mode_t);
    match mknodat(dir.as_fd(), name, kind, perm, makedev(major, minor)) {
        Ok(()) => {}
        Err(Errno::EPERM) if kind != SFlag::S_IFIFO => {
            // User namespace: bind the host's node onto an empty file.
            let target = mkdir_all_in_root(root, path, Kind::File)?;
            let host = if path.starts_with("/dev") {
                path.to_path_buf()
            } else {
                Path::new("/dev").join(name)
            };
            mount(
                Some(&host),
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::path("bind device", path, e))?;
            return Ok(());
        }
        Err(e) => return Err(Error::path("mknod", path, e)),
    }
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::path("chown", path, e))
}

/// How the rootfs becomes `/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnterRoot {
    /// pivot_root and detach the old root (the default).
    Pivot,
    /// MS_MOVE onto / and chroot (`--no-pivot`).
    Move,
    /// chroot only: the jail shares the host's mount namespace.
    Chroot,
}

/// Makes `rootfs` the root of this process.
pub fn enter_root(rootfs: &Path, how: EnterRoot) -> Result<()> {
    let newroot = open(
        rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open rootfs", rootfs, e))?;
    nix::unistd::fchdir(&newroot).map_err(|e| Error::path("chdir", rootfs, e))?;
    match how {
        EnterRoot::Move => {
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(|e| Error::path("move rootfs to /", rootfs, e))?;
            nix::unistd::chroot(".").map_err(|e| Error::path("chroot", rootfs, e))?;
        }
        EnterRoot::Chroot => {
            nix::unistd::chroot(".").map_err(|e| Error::path("chroot", rootfs, e))?;
        }
        EnterRoot::Pivot => {
            nix::unistd::pivot_root(".", ".").map_err(|e| Error::path("pivot_root", rootfs, e))?;
            // The old root is now stacked on "."; keep its unmount from propagating out.
            mount(
                None::<&str>,
                ".",
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| Error::path("make old root slave", "/", e))?;
            umount2(".", MntFlags::MNT_DETACH)
                .map_err(|e| Error::path("unmount old root", "/", e))?;
        }
    }
    nix::unistd::chdir("/").map_err(|e| Error::path("chdir", "/", e))
}

/// Hides `maskedPaths`: /dev/null over files, an empty read-only tmpfs over
/// directories. The /dev/null used is checked to be the real device (CVE-2025-31133).
pub fn mask_paths(paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open", "/", e))?;
    let null = open_in_root(&root, Path::new("/dev/null"))
        .map_err(|e| Error::path("open", "/dev/null", e))?;
    let st = fstat(null.as_fd()).map_err(|e| Error::path("stat", "/dev/null", e))?;
    let is_null = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
        && st.st_rdev == makedev(1, 3);
    if !is_null {
        return Err(Error::Invalid(
            "/dev/null in the container is not the null device; refusing to mask paths with it"
                .into(),
        ));
    }
    for p in paths {
        let target = match open_in_root(&root, Path::new(p)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::path("open masked path", p, e)),
        };
        let st = fstat(target.as_fd()).map_err(|e| Error::path("stat", p, e))?;
        let r = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            mount(
                Some("tmpfs"),
                &fd_path(&target),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0k,mode=000"),
            )
        } else {
            mount(
                Some(&fd_path(&null)),
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        r.map_err(|e| Error::path("mask", p, e))?;
    }
    Ok(())
}

/// Makes each of `readonlyPaths` a read-only bind mount of itself.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open", "/", e))?;
    for p in paths {
        let target = match open_in_root(&root, Path::new(p)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::path("open read-only path", p, e)),
        };
        let tp = fd_path(&target);
        mount(
            Some(&tp),
            &tp,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::path("bind read-only path", p, e))?;
        drop(target);
        remount(
            &root,
            Path::new(p),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    Ok(())
}

/// Remounts / read-only (`root.readonly`).
pub fn readonly_root() -> Result<()> {
    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open", "/", e))?;
    remount(&root, Path::new("/"), MsFlags::MS_RDONLY)
}
