//! Cgroups v1 and v2 (and the hybrid of both): one directory per mounted hierarchy,
//! holding every process of the container.
//!
//! Creating, joining and removing directories is a few file operations per hierarchy,
//! done here directly (cgroups-rs is used for resource limits, which need its
//! per-controller knowledge). The hierarchies come from /proc/self/mountinfo, so the
//! hybrid layout of our machines (v1 controllers plus a v2 mount holding hugetlb) is
//! handled like pure v1 and pure v2.

use crate::{Error, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted (e.g. /sys/fs/cgroup/memory).
    pub mount_point: PathBuf,
    /// The last component of the mount point (e.g. `memory`, `cpu,cpuacct`, `unified`).
    pub name: String,
    /// Its cgroup v1 controllers / name= option as mount data (`memory`, `name=systemd`).
    pub options: String,
    /// Whether it is a cgroup2 mount.
    pub v2: bool,
    /// The root of this mount inside the hierarchy (field 4 of mountinfo).
    pub root: PathBuf,
}

/// Every cgroup hierarchy mounted in this mount namespace (first mount of each).
pub fn hierarchies() -> Vec<Hierarchy> {
    // Read once per process: one CLI call plans, creates, fills and joins the cgroups,
    // and the mount table does not change meanwhile.
    static CACHE: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    CACHE
        .get_or_init(|| {
            let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            parse_mountinfo(&info)
        })
        .clone()
}

fn parse_mountinfo(info: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in info.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let v2 = match post[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let options = if v2 {
            String::new()
        } else {
            post[2]
                .split(',')
                .filter(|o| {
                    !matches!(
                        *o,
                        "rw" | "ro"
                            | "relatime"
                            | "nosuid"
                            | "nodev"
                            | "noexec"
                            | "clone_children"
                            | "noprefix"
                            | "xattr"
                    ) && !o.starts_with("release_agent")
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mount_point = PathBuf::from(unescape(pre[4]));
        if out.iter().any(|h| h.options == options && h.v2 == v2) {
            continue;
        }
        let name = mount_point
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Hierarchy {
            mount_point,
            name,
            options,
            v2,
            root: PathBuf::from(unescape(pre[3])),
        });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// This process's cgroup path in a hierarchy, from /proc/self/cgroup.
fn own_path(h: &Hierarchy, proc_cgroup: &str) -> PathBuf {
    for line in proc_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or("/"));
        let matches = if h.v2 {
            ctrls.is_empty()
        } else {
            let want: Vec<&str> = h.options.split(',').collect();
            let have: Vec<&str> = ctrls.split(',').collect();
            !ctrls.is_empty() && want.iter().all(|w| have.contains(w))
        };
        if matches {
            return PathBuf::from(path);
        }
    }
    PathBuf::from("/")
}

/// The cgroup directories of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cgroup {
    /// The container's directory in each hierarchy.
    pub dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates the cgroup at `path` in every hierarchy. An absolute `path` is taken
    /// from each hierarchy's root, a relative one from this process's own cgroup, as
    /// runc does. On error, whatever was created is removed.
    pub fn create(path: &Path) -> Result<Cgroup> {
        Self::create_in(path, false)
    }

    /// As [`Cgroup::create`]; with `best_effort` (rootless), hierarchies this user may
    /// not write to are skipped instead of failing, as runc does without resources.
    pub fn create_in(path: &Path, best_effort: bool) -> Result<Cgroup> {
        Self::plan(path).make(best_effort)
    }

    /// The directories `create` would make for `path`: the container's directory in
    /// every hierarchy, and the parents missing now. Nothing is created, so a caller can
    /// record them first and a crash in the middle of `make` leaves nothing unknown.
    pub fn plan(path: &Path) -> Cgroup {
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut dirs = Vec::new();
        let mut parents = Vec::new();
        for h in hierarchies() {
            let inner = if path.is_absolute() {
                path.to_path_buf()
            } else {
                own_path(&h, &proc_cgroup).join(path)
            };
            let rel = inner.strip_prefix(&h.root).unwrap_or(&inner);
            let rel = rel.strip_prefix("/").unwrap_or(rel);
            let dir = h.mount_point.join(rel);
            let mut cur = dir.parent();
            while let Some(p) = cur.filter(|p| p.starts_with(&h.mount_point) && *p != h.mount_point)
            {
                if p.exists() {
                    break;
                }
                parents.push(p.to_path_buf());
                cur = p.parent();
            }
            dirs.push(dir);
        }
        Cgroup {
            dirs: dedup_keep_order(dirs.into_iter().chain(parents).collect()),
        }
    }

    /// Creates the planned directories. With `best_effort` (rootless), hierarchies this
    /// user may not write to are skipped; the result lists what exists.
    pub fn make(&self, best_effort: bool) -> Result<Cgroup> {
        let hier = hierarchies();
        let mut made: Vec<PathBuf> = Vec::new();
        let mut kept: Vec<PathBuf> = Vec::new();
        for dir in self.leaves() {
            let Some(h) = hier
                .iter()
                .filter(|h| dir.starts_with(&h.mount_point))
                .max_by_key(|h| h.mount_point.components().count())
            else {
                continue;
            };
            if let Err(e) = mkdir_p(h, dir, &mut made) {
                let denied = matches!(&e, Error::Io { source, .. }
                    if matches!(source.kind(), ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem));
                if best_effort && denied {
                    continue;
                }
                for d in made.iter().rev() {
                    let _ = fs::remove_dir(d);
                }
                return Err(e);
            }
            kept.push(dir.clone());
        }
        // Exactly what belongs to this container, so delete removes no more.
        let parents = self
            .dirs
            .iter()
            .filter(|d| !self.leaves().contains(d) && made.contains(d))
            .cloned();
        Ok(Cgroup {
            dirs: dedup_keep_order(kept.into_iter().chain(parents).collect()),
        })
    }

    /// The directories this container owns: its own and the parents it created.
    pub fn from_dirs(dirs: Vec<PathBuf>) -> Cgroup {
        Cgroup { dirs }
    }

    /// The leaf directory in each hierarchy (parents created for it excluded).
    pub fn leaves(&self) -> Vec<&PathBuf> {
        // A directory below `d` has more components than `d`; comparing the counts
        // first spares most `Path::starts_with` calls, which dominated the user time of
        // `list` (this runs for every container's status).
        let depth: Vec<usize> = self.dirs.iter().map(|d| d.components().count()).collect();
        self.dirs
            .iter()
            .zip(&depth)
            .filter(|&(d, &dd)| {
                !self
                    .dirs
                    .iter()
                    .zip(&depth)
                    .any(|(o, &od)| od > dd && o.starts_with(d))
            })
            .map(|(d, _)| d)
            .collect()
    }

    /// Moves process `pid` into the container's cgroup on every hierarchy.
    pub fn add(&self, pid: i32) -> Result<()> {
        let s = pid.to_string();
        for d in self.leaves() {
            let f = d.join("cgroup.procs");
            fs::write(&f, &s).map_err(|e| Error::io("join cgroup", &f, e))?;
        }
        Ok(())
    }

    /// The container's directory in the v1 hierarchy holding `controller`, if mounted.
    pub fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        self.v1_dir(&hierarchies(), controller)
    }

    /// The container's directory in the v1 hierarchy holding `controller`.
    fn v1_dir(&self, hier: &[Hierarchy], controller: &str) -> Option<PathBuf> {
        let leaves = self.leaves();
        hier.iter()
            .filter(|h| !h.v2 && h.options.split(',').any(|o| o == controller))
            .find_map(|h| {
                leaves
                    .iter()
                    .find(|d| d.starts_with(&h.mount_point))
                    .map(|d| (*d).clone())
            })
    }

    /// The v2 hierarchy and the container's directory in it.
    fn v2_dir<'h>(&self, hier: &'h [Hierarchy]) -> Option<(&'h Hierarchy, PathBuf)> {
        let h = hier.iter().find(|h| h.v2)?;
        let dir = self
            .leaves()
            .into_iter()
            .find(|d| d.starts_with(&h.mount_point))?;
        Some((h, dir.clone()))
    }

    /// Writes resource settings (see [`crate::resources::plan`]) into the container's
    /// cgroup: each where its controller is mounted, v1 first, else v2 (enabling the
    /// controller in the parents' `cgroup.subtree_control`).
    pub fn apply(&self, settings: &[crate::resources::Setting]) -> Result<()> {
        let hier = hierarchies();
        let v1_devices = self.v1_dir(&hier, "devices").is_some();
        if !v1_devices {
            // cgroup v2 has no devices files: the rules become an eBPF program.
            let lines: Vec<(bool, String)> = settings
                .iter()
                .filter(|s| s.controller == "devices")
                .filter_map(|s| s.v1.as_ref())
                .map(|(f, v)| (f == "devices.allow", v.clone()))
                .collect();
            if !lines.is_empty() {
                let (_, dir) = self.v2_dir(&hier).ok_or_else(|| {
                    Error::Invalid(
                        "device rules need the v1 devices controller or cgroup v2".into(),
                    )
                })?;
                let rules = crate::devices_bpf::rules_from_lines(&lines)?;
                crate::devices_bpf::attach(&dir, &rules)?;
            }
        }
        for s in settings
            .iter()
            .filter(|s| v1_devices || s.controller != "devices")
        {
            if let (Some(dir), Some((file, value))) = (self.v1_dir(&hier, s.controller), &s.v1) {
                write_setting(&dir, file, value)?;
                continue;
            }
            let v2 = self.v2_dir(&hier);
            if let (Some((h, dir)), Some((file, value))) = (&v2, &s.v2) {
                let ctrl = match s.controller {
                    "blkio" => "io",
                    c => c,
                };
                if ctrl != "unified" {
                    enable_v2(&h.mount_point, dir, ctrl)?;
                }
                write_setting(dir, file, value)?;
                continue;
            }
            let (file, value) = s.v1.as_ref().or(s.v2.as_ref()).cloned().unwrap_or_default();
            return Err(Error::Invalid(format!(
                "cannot set {file}={value}: the {} controller is not available on this host",
                s.controller
            )));
        }
        Ok(())
    }

    /// Pids in the container's cgroup (from the first hierarchy that lists them).
    pub fn pids(&self) -> Vec<i32> {
        for d in self.leaves() {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                return s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
        }
        Vec::new()
    }

    /// Sends `sig` to every process in the cgroup.
    pub fn signal_all(&self, sig: Signal) {
        for p in self.pids() {
            let _ = kill(Pid::from_raw(p), sig);
        }
    }

    /// Whether the freezer holds the container frozen: v1 `freezer.state`, or v2
    /// `cgroup.freeze` when there is no v1 freezer (where `set_frozen` writes).
    ///
    /// One file per call: `list` asks this of every container, and trying both files in
    /// every hierarchy (22 opens per container on a hybrid host, 20 of them failing)
    /// made `list` with 200 containers take about twice as long.
    pub fn is_frozen(&self) -> bool {
        let hier = hierarchies();
        if let Some(dir) = self.v1_dir(&hier, "freezer") {
            return fs::read_to_string(dir.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN");
        }
        self.v2_dir(&hier).is_some_and(|(_, dir)| {
            fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
        })
    }

    /// Asks the freezer to freeze (`true`) or thaw the container and returns at once:
    /// v1 `freezer.state` or v2 `cgroup.freeze`. Thawing takes effect at once; a
    /// running task stops at its next return to user space.
    pub fn request_frozen(&self, frozen: bool) -> Result<()> {
        let hier = hierarchies();
        if let Some(dir) = self.v1_dir(&hier, "freezer") {
            let f = dir.join("freezer.state");
            return fs::write(&f, if frozen { "FROZEN" } else { "THAWED" })
                .map_err(|e| Error::io("write", &f, e));
        }
        let Some((_, dir)) = self.v2_dir(&hier) else {
            return Err(Error::Invalid("no freezer on this host".into()));
        };
        let f = dir.join("cgroup.freeze");
        fs::write(&f, if frozen { "1" } else { "0" }).map_err(|e| Error::io("write", &f, e))
    }

    /// Freezes (`true`) or thaws every process of the container and waits until the
    /// kernel reports the new state (v1 `freezer.state`, v2 `cgroup.freeze`).
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let hier = hierarchies();
        let v1 = self.v1_dir(&hier, "freezer");
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Some(dir) = v1 {
            let want = if frozen { "FROZEN" } else { "THAWED" };
            let f = dir.join("freezer.state");
            loop {
                fs::write(&f, want).map_err(|e| Error::io("write", &f, e))?;
                if fs::read_to_string(&f).is_ok_and(|s| s.trim() == want) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(Error::Invalid(format!(
                        "{} did not become {want}",
                        f.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let v2 = self
            .v2_dir(&hier)
            .map(|(_, d)| d)
            .filter(|d| d.join("cgroup.freeze").exists());
        let Some(dir) = v2 else {
            return Err(Error::Invalid(
                "no freezer: neither the v1 freezer controller nor cgroup v2 is available".into(),
            ));
        };
        let f = dir.join("cgroup.freeze");
        fs::write(&f, if frozen { "1" } else { "0" }).map_err(|e| Error::io("write", &f, e))?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        loop {
            if fs::read_to_string(dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == want))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "{} did not reach {want}",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills every process in the cgroup and removes its directories. Idempotent.
    pub fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            // A frozen task cannot die: thaw first.
            self.thaw();
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "processes in cgroup {} did not die",
                    self.dirs
                        .first()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let leaves = self.leaves();
        let mut dirs: Vec<&PathBuf> = self.dirs.iter().collect();
        // Deepest first.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            // The kernel frees a removed cgroup later (RCU): a real-time budget would
            // count against its siblings' until then, so it goes first.
            let rt = d.join("cpu.rt_runtime_us");
            if fs::read_to_string(&rt).is_ok_and(|v| v.trim() != "0") {
                let _ = fs::write(&rt, "0");
            }
            if leaves.contains(&d) {
                rmdir_retry(d, deadline)?;
            } else {
                // A parent we created may hold another container's cgroup by now
                // (cgroupfs then says EBUSY): it stays.
                let _ = fs::remove_dir(d);
            }
        }
        Ok(())
    }

    fn thaw(&self) {
        for d in self.leaves() {
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
        }
    }
}

fn write_setting(dir: &Path, file: &str, value: &str) -> Result<()> {
    // Kernels with BFQ but without CFQ have only the bfq weight files (as runc does).
    let file = match file {
        "blkio.weight" | "blkio.weight_device" if !dir.join(file).exists() => {
            file.replacen("blkio.", "blkio.bfq.", 1)
        }
        f => f.to_string(),
    };
    let file = file.as_str();
    let path = dir.join(file);
    fs::write(&path, value)
        .map_err(|e| Error::Invalid(format!("set {file}={value:?} in {}: {e}", dir.display())))
}

/// Enables a v2 controller on every level from the mount point down to `dir`'s parent.
fn enable_v2(mount_point: &Path, dir: &Path, ctrl: &str) -> Result<()> {
    let available = fs::read_to_string(mount_point.join("cgroup.controllers")).unwrap_or_default();
    if !available.split_whitespace().any(|c| c == ctrl) {
        return Err(Error::Invalid(format!(
            "the {ctrl} controller is not available on this host's cgroup v2 hierarchy"
        )));
    }
    let mut levels: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(mount_point))
        .collect();
    levels.reverse();
    for l in levels {
        let f = l.join("cgroup.subtree_control");
        let cur = fs::read_to_string(&f).unwrap_or_default();
        if !cur.split_whitespace().any(|c| c == ctrl) {
            fs::write(&f, format!("+{ctrl}")).map_err(|e| Error::io("enable controller", &f, e))?;
        }
    }
    Ok(())
}

fn dedup_keep_order(v: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::with_capacity(v.len());
    for p in v {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn rmdir_retry(d: &Path, deadline: Instant) -> Result<()> {
    loop {
        match fs::remove_dir(d) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // A parent shared with another container still has children: leave it.
            Err(e) if e.raw_os_error() == Some(Errno::ENOTEMPTY as i32) => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(Errno::EBUSY as i32) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(Error::io("remove cgroup", d, e)),
        }
    }
}

/// mkdir -p inside a hierarchy, recording the directories it made; a new cpuset
/// directory gets its parent's cpus and mems (v1 starts them empty).
fn mkdir_p(h: &Hierarchy, dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) if p.starts_with(&h.mount_point) => cur = p,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(&d) {
            Ok(()) => made.push(d.clone()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create cgroup", &d, e)),
        }
    }
    if !h.v2 && h.options.split(',').any(|o| o == "cpuset") {
        // v1 starts a cpuset empty, and no task can join it then. Fill every level, new
        // or left empty by an earlier runtime killed half-way, from its parent.
        let mut levels: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| *a != h.mount_point && a.starts_with(&h.mount_point))
            .collect();
        levels.reverse();
        for d in levels {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let own = fs::read_to_string(d.join(f)).unwrap_or_default();
                if own.trim().is_empty() {
                    if let Some(parent) = d.parent() {
                        let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                        fs::write(d.join(f), v.trim())
                            .map_err(|e| Error::io("init cpuset", d.join(f), e))?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
";

    #[test]
    fn parses_hybrid_layout() {
        let h = parse_mountinfo(HYBRID);
        assert_eq!(h.len(), 4);
        assert!(h[0].v2 && h[0].name == "unified");
        assert_eq!(h[1].options, "name=systemd");
        assert_eq!(h[2].options, "cpu");
        assert_eq!(h[3].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn own_path_matches_controllers() {
        let h = parse_mountinfo(HYBRID);
        let pc = "0::/user.slice\n4:memory:/mem/x\n3:cpu:/cpu/y\n1:name=systemd:/sd\n";
        assert_eq!(own_path(&h[0], pc), PathBuf::from("/user.slice"));
        assert_eq!(own_path(&h[1], pc), PathBuf::from("/sd"));
        assert_eq!(own_path(&h[3], pc), PathBuf::from("/mem/x"));
    }

    #[test]
    fn leaves_exclude_the_parents_made_for_them() {
        let cg = Cgroup::from_dirs(
            [
                "/sys/fs/cgroup/memory/hj/a",
                "/sys/fs/cgroup/cpu/hj/a",
                "/sys/fs/cgroup/memory/hj",
                "/sys/fs/cgroup/cpu/hj/",
                "/sys/fs/cgroup/memory/hj/a/",
            ]
            .map(PathBuf::from)
            .to_vec(),
        );
        let leaves: Vec<&str> = cg.leaves().iter().filter_map(|p| p.to_str()).collect();
        assert_eq!(
            leaves,
            [
                "/sys/fs/cgroup/memory/hj/a",
                "/sys/fs/cgroup/cpu/hj/a",
                "/sys/fs/cgroup/memory/hj/a/"
            ]
        );
    }
}
