//! Path resolution confined to a rootfs: symlinks are resolved as if the rootfs were
//! `/` (openat2 RESOLVE_IN_ROOT), so a mount destination can never land outside it
//! (CVE-2021-30465 class). Missing components are created on the way.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// What to create at the end of the path when it is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// An empty regular file (bind mount of a file, device node placeholder).
    File,
}

/// The normal components of `p`, with `.`, `..` and `/` dropped (`..` is resolved
/// by the kernel inside the root anyway, but destinations should not use it).
fn components(p: &Path) -> Vec<&std::ffi::OsStr> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Opens `path` inside `root` with O_PATH, resolving symlinks within the root.
pub fn open_in_root(root: &impl AsFd, path: &Path) -> nix::Result<OwnedFd> {
    let rel: PathBuf = components(path).iter().collect();
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    openat2(
        root.as_fd(),
        &rel,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

/// Resolves `path` inside `root`, creating missing directories (and, for
/// [`Kind::File`], the last component as an empty file). Returns an O_PATH fd of the
/// result, which can be used as a mount target through `/proc/self/fd/N`.
pub fn mkdir_all_in_root(root: &impl AsFd, path: &Path, kind: Kind) -> Result<OwnedFd> {
    let comps = components(path);
    let err = |op, e| Error::path(op, path, e);
    let mut cur = open_in_root(root, Path::new("/")).map_err(|e| err("open rootfs", e))?;
    for (i, c) in comps.iter().enumerate() {
        let prefix: PathBuf = comps[..=i].iter().collect();
        match open_in_root(root, &prefix) {
            Ok(fd) => {
                cur = fd;
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(err("resolve", e)),
        }
        let last = i + 1 == comps.len();
        let r = if last && kind == Kind::File {
            openat(
                cur.as_fd(),
                *c,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
        } else {
            mkdirat(cur.as_fd(), *c, Mode::from_bits_truncate(0o755))
        };
        match r {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(err("create", e)),
        }
        // A dangling symlink makes the create fail with EEXIST and this open fail with
        // ENOENT: the path cannot be made inside the root.
        cur = open_in_root(root, &prefix).map_err(|e| err("resolve", e))?;
    }
    Ok(cur)
}

/// `/proc/self/fd/N` of a fd: the path that mount(2) and friends follow to exactly the
/// object the fd refers to.
pub fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlink_escape_stays_inside() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).expect("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        // An absolute symlink to a host directory, and a relative one climbing out.
        symlink(&outside, root.join("abs")).expect("symlink");
        symlink("../../../..", root.join("up")).expect("symlink");
        let rfd = std::fs::File::open(&root).expect("open root");
        // The absolute symlink resolves inside the root, where its target is missing:
        // an error, and nothing made outside.
        assert!(mkdir_all_in_root(&rfd, Path::new("/abs/x"), Kind::Dir).is_err());
        assert!(
            !outside.join("x").exists(),
            "escaped through absolute symlink"
        );
        // Once the target exists inside the root, the path is made there.
        let inside = root.join(outside.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(&inside).expect("mkdir inside");
        mkdir_all_in_root(&rfd, Path::new("/abs/x"), Kind::Dir).expect("mkdir");
        assert!(
            !outside.join("x").exists(),
            "escaped through absolute symlink"
        );
        assert!(inside.join("x").is_dir());
        mkdir_all_in_root(&rfd, Path::new("/up/y"), Kind::File).expect("mkfile");
        assert!(
            root.join("y").is_file(),
            "relative climb resolved at the root"
        );
    }
}
