//! Mount options as config.json spells them, and mounting one `mounts[]` entry inside
//! a rootfs.

use crate::safepath::{fd_path, mkdir_all_in_root, open_in_root, Kind};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Parsed `options` of a mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Flags an option explicitly cleared (`rw`, `suid`, ...), needed for remounts.
    pub cleared: MsFlags,
    /// Propagation changes, applied after the mount in order.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific data (`mode=755,size=65536k`).
    pub data: String,
    /// `tmpcopyup`: copy the covered directory's content into a new tmpfs.
    pub tmpcopyup: bool,
}

/// Parses mount options. Unknown options are passed to the filesystem as data, as
/// runc does; mount(2) then rejects what the filesystem does not know.
pub fn parse_options(opts: &[String]) -> Result<MountOptions> {
    let mut m = MountOptions {
        flags: MsFlags::empty(),
        cleared: MsFlags::empty(),
        propagation: Vec::new(),
        data: String::new(),
        tmpcopyup: false,
    };
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (set, clear) = match o.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
            "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
            "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
            "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
            "iversion" => (MsFlags::MS_I_VERSION, MsFlags::empty()),
            "noiversion" => (MsFlags::empty(), MsFlags::MS_I_VERSION),
            "tmpcopyup" => {
                m.tmpcopyup = true;
                continue;
            }
            p => {
                if let Some(f) = propagation(p) {
                    m.propagation.push(f);
                } else if p == "idmap" || p == "ridmap" {
                    return Err(Error::Invalid(format!(
                        "mount option {p:?} (id-mapped mounts) is not supported"
                    )));
                } else {
                    data.push(p);
                }
                continue;
            }
        };
        m.flags = (m.flags | set) & !clear;
        m.cleared = (m.cleared | clear) & !set;
    }
    m.data = data.join(",");
    Ok(m)
}

/// The propagation flag of a propagation option name.
pub fn propagation(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Flags that matter for a bind remount: the kernel keeps the others from the mount.
const REMOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// Files under /proc that may be mounted over (what lxcfs provides), as runc allows.
const PROC_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Refuses mounts over /proc (but /proc itself and the lxcfs files): the runtime
/// writes sysctls, oom_score_adj and LSM attributes there, and a mount could redirect
/// those writes to another host file (CVE-2025-52881).
fn check_proc_destination(dest: &Path, typ: &str) -> Result<()> {
    let clean: PathBuf = Path::new("/").join(
        dest.components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect::<PathBuf>(),
    );
    if clean == Path::new("/proc") {
        return if typ == "proc" || typ == "bind" || typ.is_empty() || typ == "none" {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "mount of {typ} on /proc is not allowed; /proc must be procfs"
            )))
        };
    }
    if clean.starts_with("/proc") && !PROC_ALLOWED.iter().any(|a| clean == Path::new(a)) {
        return Err(Error::Invalid(format!(
            "mount destination {} is under /proc: it would cover procfs files the runtime writes to; only {} may be mounted over",
            dest.display(),
            PROC_ALLOWED.join(", ")
        )));
    }
    Ok(())
}

/// Context for mounting config.json entries into one rootfs.
#[derive(Debug)]
pub struct MountCtx<'a> {
    /// O_PATH fd of the rootfs.
    pub root: &'a OwnedFd,
    /// Bundle directory, for relative bind sources.
    pub bundle: &'a Path,
    /// Whether the jail has its own network namespace (sysfs needs one).
    pub new_netns: bool,
    /// Whether the jail has its own ipc namespace (mqueue needs one).
    pub new_ipcns: bool,
    /// Whether the jail has its own cgroup namespace.
    pub new_cgroupns: bool,
    /// Container cgroup directories (for `cgroup` mounts without a cgroup namespace).
    pub cgroups: &'a [PathBuf],
}

/// Mounts one `mounts[]` entry at its destination inside the rootfs.
pub fn mount_entry(ctx: &MountCtx<'_>, m: &Mount) -> Result<()> {
    let dest = m.destination();
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let typ = m.typ().as_deref().unwrap_or("");
    check_proc_destination(dest, typ)?;
    let is_bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    if is_bind {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("bind mount {dest:?} has no source")))?;
        let src = if src.is_absolute() {
            src.clone()
        } else {
            ctx.bundle.join(src)
        };
        let meta = std::fs::metadata(&src).map_err(|e| Error::io("bind mount source", &src, e))?;
        let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
        return bind(ctx.root, &src, dest, kind, opts.flags, &opts);
    }
    if typ == "cgroup" {
        return mount_cgroup(ctx, dest, &opts);
    }
    let target = mkdir_all_in_root(ctx.root, dest, Kind::Dir)?;
    let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    let r = mount(Some(&src), &fd_path(&target), Some(typ), flags, data);
    match (r, typ) {
        (Ok(()), _) => {}
        // Without a network namespace of its own, sysfs cannot be mounted: runc binds
        // the host's /sys instead, read-only.
        (Err(Errno::EPERM), "sysfs") if !ctx.new_netns => {
            drop(target);
            let f = opts.flags | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY;
            return bind(ctx.root, Path::new("/sys"), dest, Kind::Dir, f, &opts);
        }
        (Err(Errno::EPERM), "mqueue") if !ctx.new_ipcns => {
            drop(target);
            let f = opts.flags | MsFlags::MS_BIND;
            return bind(
                ctx.root,
                Path::new("/dev/mqueue"),
                dest,
                Kind::Dir,
                f,
                &opts,
            );
        }
        (Err(e), _) => {
            return Err(Error::Invalid(format!(
                "mount {typ} on {}: {e}",
                dest.display()
            )))
        }
    }
    if opts.tmpcopyup && typ == "tmpfs" {
        copy_up(&target, ctx.root, dest)?;
    }
    apply_propagation(ctx.root, dest, &opts.propagation)
}

/// `tmpcopyup`: copies the directory the new tmpfs covers into it, in-process (the
/// covered directory is reachable only through the fd opened before the mount).
fn copy_up(covered: &OwnedFd, root: &OwnedFd, dest: &Path) -> Result<()> {
    let err = |e| Error::path("tmpcopyup", dest, e);
    let from = nix::fcntl::open(
        &fd_path(covered),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let to_path = open_in_root(root, dest).map_err(err)?;
    let to = nix::fcntl::open(
        &fd_path(&to_path),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let st = nix::sys::stat::fstat(&from).map_err(err)?;
    let _ = nix::sys::stat::fchmod(&to, Mode::from_bits_truncate(st.st_mode & 0o7777));
    let _ = nix::unistd::fchown(
        &to,
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
    );
    copy_tree(from, &to).map_err(err)
}

/// Copies the entries of directory `from` into directory `to` (files, directories,
/// symlinks; mode and owner kept; special files skipped).
fn copy_tree(from: OwnedFd, to: &OwnedFd) -> nix::Result<()> {
    use nix::sys::stat::{fchmodat, fstatat, FchmodatFlags, SFlag};
    use nix::unistd::{fchownat, Gid, Uid};
    let mut dir = nix::dir::Dir::from_fd(from)?;
    let from_fd = dir.as_raw_fd();
    // SAFETY: `from_fd` belongs to `dir`, which lives until the end of this function.
    let from_b = unsafe { std::os::fd::BorrowedFd::borrow_raw(from_fd) };
    let names: Vec<std::ffi::CString> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for name in names {
        let st = fstatat(
            from_b,
            name.as_c_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        if kind == SFlag::S_IFDIR {
            nix::sys::stat::mkdirat(to, name.as_c_str(), mode)?;
            let sub_from = nix::fcntl::openat(
                from_b,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let sub_to = nix::fcntl::openat(
                to,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            copy_tree(sub_from, &sub_to)?;
        } else if kind == SFlag::S_IFLNK {
            let target = nix::fcntl::readlinkat(from_b, name.as_c_str())?;
            nix::unistd::symlinkat(target.as_os_str(), to, name.as_c_str())?;
        } else if kind == SFlag::S_IFREG {
            let src = nix::fcntl::openat(
                from_b,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let dst = nix::fcntl::openat(
                to,
                name.as_c_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                mode,
            )?;
            let mut src = std::fs::File::from(src);
            let mut dst = std::fs::File::from(dst);
            std::io::copy(&mut src, &mut dst)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        } else {
            continue;
        }
        let _ = fchownat(
            to,
            name.as_c_str(),
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        if kind != SFlag::S_IFLNK {
            let _ = fchmodat(to, name.as_c_str(), mode, FchmodatFlags::NoFollowSymlink);
        }
    }
    Ok(())
}

/// Bind-mounts host path `src` at `dest` in the rootfs, then remounts with `flags`.
pub fn bind(
    root: &OwnedFd,
    src: &Path,
    dest: &Path,
    kind: Kind,
    flags: MsFlags,
    opts: &MountOptions,
) -> Result<()> {
    let target = mkdir_all_in_root(root, dest, kind)?;
    let rec = flags & MsFlags::MS_REC;
    mount(
        Some(src),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND | rec,
        None::<&str>,
    )
    .map_err(|e| {
        Error::Invalid(format!(
            "bind mount {} on {}: {e}",
            src.display(),
            dest.display()
        ))
    })?;
    drop(target);
    if !(flags & REMOUNT_FLAGS).is_empty() {
        remount(root, dest, flags & REMOUNT_FLAGS)?;
    }
    apply_propagation(root, dest, &opts.propagation)
}

/// Remounts the mount at `dest` (a bind mount) with `flags`, keeping the flags the
/// kernel locks in a user namespace.
pub fn remount(root: &OwnedFd, dest: &Path, flags: MsFlags) -> Result<()> {
    let fd = open_in_root(root, dest).map_err(|e| Error::path("resolve", dest, e))?;
    let path = fd_path(&fd);
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    match mount(
        None::<&str>,
        &path,
        None::<&str>,
        base | flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => {
            // Locked flags (user namespace): add the ones the mount already has.
            let cur = nix::sys::statvfs::fstatvfs(fd.as_fd())
                .map_err(|e| Error::path("statvfs", dest, e))?;
            let locked = statvfs_to_ms(cur.flags());
            mount(
                None::<&str>,
                &path,
                None::<&str>,
                base | flags | locked,
                None::<&str>,
            )
            .map_err(|e| Error::path("remount", dest, e))
        }
        Err(e) => Err(Error::path("remount", dest, e)),
    }
}

fn statvfs_to_ms(f: nix::sys::statvfs::FsFlags) -> MsFlags {
    use nix::sys::statvfs::FsFlags as F;
    let mut m = MsFlags::empty();
    for (a, b) in [
        (F::ST_RDONLY, MsFlags::MS_RDONLY),
        (F::ST_NOSUID, MsFlags::MS_NOSUID),
        (F::ST_NODEV, MsFlags::MS_NODEV),
        (F::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (F::ST_NOATIME, MsFlags::MS_NOATIME),
        (F::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (F::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(a) {
            m |= b;
        }
    }
    m
}

fn apply_propagation(root: &OwnedFd, dest: &Path, props: &[MsFlags]) -> Result<()> {
    if props.is_empty() {
        return Ok(());
    }
    let fd = open_in_root(root, dest).map_err(|e| Error::path("resolve", dest, e))?;
    for p in props {
        mount(None::<&str>, &fd_path(&fd), None::<&str>, *p, None::<&str>)
            .map_err(|e| Error::path("set propagation", dest, e))?;
    }
    Ok(())
}

/// A `cgroup` mount: a tmpfs with one directory per hierarchy. With a cgroup namespace
/// each hierarchy is mounted afresh (the container sees its cgroup as the root);
/// without one, the container's own cgroup directories are bind-mounted.
fn mount_cgroup(ctx: &MountCtx<'_>, dest: &Path, opts: &MountOptions) -> Result<()> {
    let target = mkdir_all_in_root(ctx.root, dest, Kind::Dir)?;
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let hier = crate::cgroups::hierarchies();
    if hier.iter().all(|h| h.v2) {
        // Pure v2: one cgroup2 mount.
        mount(
            Some("cgroup"),
            &fd_path(&target),
            Some("cgroup2"),
            opts.flags,
            None::<&str>,
        )
        .map_err(|e| Error::path("mount cgroup2", dest, e))?;
        return Ok(());
    }
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(|e| Error::path("mount cgroup tmpfs", dest, e))?;
    drop(target);
    for h in &hier {
        let sub = dest.join(&h.name);
        let t = mkdir_all_in_root(ctx.root, &sub, Kind::Dir)?;
        let flags = base | (opts.flags & MsFlags::MS_RDONLY);
        let r = if ctx.new_cgroupns {
            let (fstype, data) = if h.v2 {
                ("cgroup2", String::new())
            } else {
                ("cgroup", h.options.clone())
            };
            mount(
                Some("cgroup"),
                &fd_path(&t),
                Some(fstype),
                flags,
                Some(data.as_str()),
            )
        } else {
            let own = ctx.cgroups.iter().find(|d| d.starts_with(&h.mount_point));
            match own {
                Some(src) => mount(
                    Some(src),
                    &fd_path(&t),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ),
                None => Ok(()),
            }
        };
        r.map_err(|e| Error::path("mount cgroup", &sub, e))?;
        drop(t);
        if !ctx.new_cgroupns && flags.contains(MsFlags::MS_RDONLY) {
            remount(ctx.root, &sub, flags)?;
        }
    }
    // Co-mounted controllers are reachable under each name, as on the host.
    let dir = open_in_root(ctx.root, dest).map_err(|e| Error::path("resolve", dest, e))?;
    for h in &hier {
        for alias in h.name.split(',').filter(|a| *a != h.name) {
            let _ = nix::unistd::symlinkat(h.name.as_str(), dir.as_fd(), alias);
        }
    }
    drop(dir);
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        remount(ctx.root, dest, MsFlags::MS_RDONLY | base)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(v: &[&str]) -> MountOptions {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parse")
    }

    #[test]
    fn flags_and_data() {
        let m = o(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(m.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(m.data, "mode=755,size=65536k");
    }

    #[test]
    fn later_options_win() {
        assert_eq!(o(&["ro", "rw"]).flags, MsFlags::empty());
        assert!(o(&["ro", "rw"]).cleared.contains(MsFlags::MS_RDONLY));
        assert_eq!(o(&["rw", "ro"]).flags, MsFlags::MS_RDONLY);
    }

    #[test]
    fn propagation_and_rbind() {
        let m = o(&["rbind", "rprivate", "ro"]);
        assert!(m
            .flags
            .contains(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY));
        assert_eq!(m.propagation, vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }

    #[test]
    fn proc_destinations() {
        assert!(check_proc_destination(Path::new("/proc"), "proc").is_ok());
        assert!(check_proc_destination(Path::new("/proc/meminfo"), "bind").is_ok());
        assert!(check_proc_destination(Path::new("/proc/sys"), "tmpfs").is_err());
        assert!(check_proc_destination(Path::new("/proc/1/oom_score_adj"), "bind").is_err());
        assert!(check_proc_destination(Path::new("//proc/./sys/../sys/kernel"), "bind").is_err());
        assert!(check_proc_destination(Path::new("/proc"), "tmpfs").is_err());
        assert!(check_proc_destination(Path::new("/procfoo"), "tmpfs").is_ok());
    }

    #[test]
    fn idmap_is_refused() {
        assert!(parse_options(&["idmap".to_string()]).is_err());
    }
}
