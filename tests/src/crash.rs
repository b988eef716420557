//! What the crash tests (`crash.rs` for the jail, `vm_crash.rs` for the VM) share: a
//! seeded PRNG, timing helpers, the search for anything a domain left on the machine,
//! its removal between runs, and a `delete` that reports a hang instead of hanging.

use crate::{
    cgroup_dirs, cgroup_procs, marked_processes, mounts_under, pid_alive, proc_state, status_field,
    Bundle, Hyperjail, Output, Running, MARK_VAR,
};
use std::fs;
use std::time::{Duration, Instant};

/// How long `delete` may take before it counts as hung (and is killed).
pub const DELETE_LIMIT: Duration = Duration::from_secs(5);

/// The median (upper middle) of `v`, sorting it; zero when empty.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    if v.is_empty() {
        Duration::ZERO
    } else {
        v[v.len() / 2]
    }
}

/// `d` as milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Waits `d` from `since`: sleeps for most of it, spins for the last part (sub-ms delays).
pub fn wait_from(since: Instant, d: Duration) {
    let end = since + d;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        let left = end - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep(left - Duration::from_micros(200));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// SIGKILL to `pid`, errors ignored.
pub fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// The domain's cgroups path (the bundle's `cgroupsPath`, or hyperjail's default).
pub fn cg_path(b: &Bundle, id: &str) -> String {
    b.cgroups_path()
        .unwrap_or_else(|| format!("/hyperjail/{id}"))
}

/// Does `cg` (a path from /proc/<pid>/cgroup) lie in the domain's cgroup `path`?
fn in_cgroup(cg: &str, path: &str) -> bool {
    cg == path || cg.starts_with(&format!("{path}/"))
}

/// Whether `pid` holds a KVM VM fd (and so guest memory), and its resident set.
pub fn vm_note(pid: i32) -> String {
    let kvm = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .any(|t| t.to_string_lossy().contains("kvm-vm"));
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status_field(&status, "VmRSS").unwrap_or_else(|| "?".into());
    let fd = if kvm {
        "holds a KVM VM fd"
    } else {
        "no KVM VM fd"
    };
    format!("{fd}, VmRSS {rss}")
}

/// Everything of domain `id` (bundle `b`, state root `hj.root()`) left on the machine:
/// live processes in its cgroup, with cwd or root in the bundle, or carrying the
/// bundle's marker (zombies ignored: PID 1 here does not reap orphans); its cgroup
/// directories; mounts under the bundle or the state root; its state directory.
pub fn leftovers(hj: &Hyperjail, b: &Bundle, id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let cg = cg_path(b, id);
    let bundle_dir = b.path().canonicalize().unwrap_or_else(|_| b.path().into());
    let marked = marked_processes(b.marker());
    let me = std::process::id() as i32;
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let mut why = Vec::new();
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        for line in cgroup.lines() {
            if let Some(p) = line.splitn(3, ':').nth(2) {
                if in_cgroup(p, &cg) {
                    why.push(format!("cgroup {line}"));
                    break;
                }
            }
        }
        for link in ["cwd", "root"] {
            if let Ok(t) = fs::read_link(format!("/proc/{pid}/{link}")) {
                if t.starts_with(&bundle_dir) {
                    why.push(format!("{link} {}", t.display()));
                }
            }
        }
        if marked.contains(&pid) {
            why.push(format!("{MARK_VAR}={}", b.marker()));
        }
        if !why.is_empty() && pid_alive(pid) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|v| String::from_utf8_lossy(&v).replace('\0', " "))
                .unwrap_or_default();
            let state = proc_state(pid).unwrap_or('?');
            left.push(format!(
                "process {pid} ({} state {state}, cmd `{}`, {}): {}",
                comm.trim(),
                cmdline.trim(),
                vm_note(pid),
                why.join("; ")
            ));
        }
    }
    for dir in cgroup_dirs(&cg) {
        if dir.exists() {
            let procs = cgroup_procs(&dir);
            left.push(format!(
                "cgroup dir {} (cgroup.procs {procs:?})",
                dir.display()
            ));
        }
    }
    for m in mounts_under(b.path()) {
        left.push(format!("mount {} (under the bundle)", m.display()));
    }
    for m in mounts_under(hj.root()) {
        left.push(format!("mount {} (under the state root)", m.display()));
    }
    let sd = hj.root().join(id);
    if sd.exists() {
        let entries: Vec<String> = fs::read_dir(&sd)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        left.push(format!("state dir {} (entries {entries:?})", sd.display()));
    }
    left
}

/// Removes what [`leftovers`] found, so that one failure does not spill into later runs.
pub fn scrub(hj: &Hyperjail, b: &Bundle, id: &str) {
    let cg = cg_path(b, id);
    for dir in cgroup_dirs(&cg) {
        // A frozen task cannot die: thaw first.
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
        for pid in cgroup_procs(&dir) {
            sigkill(pid);
        }
    }
    for pid in marked_processes(b.marker()) {
        sigkill(pid);
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut ms = mounts_under(b.path());
    ms.extend(mounts_under(hj.root()));
    ms.reverse();
    for m in ms {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    for dir in cgroup_dirs(&cg) {
        let _ = fs::remove_dir(dir);
    }
    let _ = fs::remove_dir_all(hj.root().join(id));
}

/// Waits for `running` up to `limit`; on a hang, says what it is blocked on, kills it
/// and reaps it. Returns the output, the time taken and the hang note.
pub fn finish(
    mut running: Running,
    limit: Duration,
    what: &str,
) -> (Output, Duration, Option<String>) {
    let t = Instant::now();
    let mut hung = None;
    while !running.is_finished() {
        if t.elapsed() > limit && hung.is_none() {
            let pid = running.pid();
            let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            let stack = fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            let first = stack.lines().take(3).collect::<Vec<_>>().join(" | ");
            hung = Some(format!(
                "{what} hung for {limit:?} (wchan {wchan:?}, kernel stack {first:?})"
            ));
            sigkill(pid);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = running.wait();
    (out, t.elapsed(), hung)
}

/// One `delete [--force] ID`, timed, with hang detection ([`DELETE_LIMIT`]).
pub fn delete(hj: &Hyperjail, id: &str, force: bool) -> (Output, Duration, Option<String>) {
    let t = Instant::now();
    let call = if force {
        hj.call(["delete", "--force", id])
    } else {
        hj.call(["delete", id])
    };
    let running = call.timeout(DELETE_LIMIT * 3).spawn();
    let what = if force { "delete --force" } else { "delete" };
    let (out, _, hung) = finish(running, DELETE_LIMIT, what);
    (out, t.elapsed(), hung)
}
