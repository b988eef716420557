//! Namespaces: which to create, which to join by path, and uid/gid maps.

use crate::{Error, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType};
use std::fs::File;
use std::path::PathBuf;

/// The clone flag of a namespace type.
pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME shares its value with CSIGNAL bits in clone(2), not unshare(2).
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The namespaces of a jail: created afresh or joined.
#[derive(Debug)]
pub struct NsPlan {
    /// Namespaces to create.
    pub new: CloneFlags,
    /// Namespaces to join, opened while the host's paths are still visible; the user
    /// namespace first.
    pub join: Vec<(CloneFlags, PathBuf)>,
}

impl NsPlan {
    /// Builds the plan from `linux.namespaces`.
    pub fn new(list: &[LinuxNamespace]) -> NsPlan {
        let mut p = NsPlan {
            new: CloneFlags::empty(),
            join: Vec::new(),
        };
        for ns in list {
            let f = flag(ns.typ());
            match ns.path() {
                Some(path) => p.join.push((f, path.clone())),
                None => p.new |= f,
            }
        }
        // Join the user namespace first: the others are then owned by it.
        p.join
            .sort_by_key(|(f, _)| !f.contains(CloneFlags::CLONE_NEWUSER));
        p
    }

    /// Whether a namespace of this kind is created or joined (i.e. not the host's).
    pub fn has(&self, f: CloneFlags) -> bool {
        self.new.contains(f) || self.join.iter().any(|(j, _)| j.contains(f))
    }

    /// Opens the namespace files to join. Each is checked to be a namespace of the
    /// declared kind by setns itself.
    pub fn open_joins(&self) -> Result<Vec<(CloneFlags, File)>> {
        self.join
            .iter()
            .map(|(f, p)| {
                File::open(p)
                    .map(|fd| (*f, fd))
                    .map_err(|e| Error::io("open namespace", p, e))
            })
            .collect()
    }
}

/// Joins opened namespaces in order.
pub fn join(files: &[(CloneFlags, File)], only: impl Fn(CloneFlags) -> bool) -> Result<()> {
    for (f, fd) in files.iter().filter(|(f, _)| only(*f)) {
        nix::sched::setns(fd, *f).map_err(|e| Error::sys(format!("setns {f:?}"), e))?;
    }
    Ok(())
}

/// Creates namespaces of `flags` for this process (pid and time: for its children).
pub fn unshare(flags: CloneFlags) -> Result<()> {
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|e| Error::sys(format!("unshare {flags:?}"), e))
}

/// fork(2) into new namespaces in one step: clone3 with `flags` and no new stack, so
/// the child continues here like a forked child. Returns `None` in the child and the
/// child's pid in the parent.
///
/// # Safety
///
/// As for fork: the calling process must be single-threaded, and the child must not
/// rely on state the parent's other threads could hold (there are none).
pub unsafe fn clone_into(flags: CloneFlags) -> Result<Option<i32>> {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let args = CloneArgs {
        flags: flags.bits() as u32 as u64,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
    };
    // SAFETY: `args` is a valid clone_args (version 0, 64 bytes) that lives across the
    // call; no stack is given, so the child runs on a copy of ours, as with fork. The
    // caller guarantees the process is single-threaded.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok(None),
        p if p > 0 => Ok(Some(p as i32)),
        _ => Err(Error::sys(
            format!("clone3 {flags:?}"),
            nix::errno::Errno::last(),
        )),
    }
}

/// Text of a uid_map/gid_map file.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes uid and gid maps of process `pid` (from outside its user namespace).
pub fn write_id_maps(
    pid: i32,
    uid: &[LinuxIdMapping],
    gid: &[LinuxIdMapping],
    deny_setgroups: bool,
) -> Result<()> {
    if deny_setgroups {
        let p = format!("/proc/{pid}/setgroups");
        std::fs::write(&p, "deny").map_err(|e| Error::io("write", p, e))?;
    }
    for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
        if maps.is_empty() {
            continue;
        }
        let p = format!("/proc/{pid}/{file}");
        std::fs::write(&p, map_text(maps)).map_err(|e| Error::io("write", p, e))?;
    }
    Ok(())
}

/// Writes `linux.timeOffsets` for the time namespace this process just unshared.
pub fn write_time_offsets(offsets: &[(String, i64, u32)]) -> Result<()> {
    let text: String = offsets
        .iter()
        .map(|(clock, s, ns)| format!("{clock} {s} {ns}\n"))
        .collect();
    if text.is_empty() {
        return Ok(());
    }
    std::fs::write("/proc/self/timens_offsets", text)
        .map_err(|e| Error::io("write", "/proc/self/timens_offsets", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_orders_user_first() {
        let list: Vec<LinuxNamespace> = serde_json::from_str(
            r#"[{"type":"pid"},{"type":"network","path":"/proc/1/ns/net"},{"type":"user","path":"/proc/1/ns/user"}]"#,
        )
        .expect("json");
        let p = NsPlan::new(&list);
        assert_eq!(p.new, CloneFlags::CLONE_NEWPID);
        assert_eq!(p.join[0].0, CloneFlags::CLONE_NEWUSER);
        assert!(p.has(CloneFlags::CLONE_NEWNET));
        assert!(!p.has(CloneFlags::CLONE_NEWUTS));
    }

    #[test]
    fn map_format() {
        let m: Vec<LinuxIdMapping> =
            serde_json::from_str(r#"[{"containerID":0,"hostID":1000,"size":65536}]"#)
                .expect("json");
        assert_eq!(map_text(&m), "0 1000 65536\n");
    }
}
