//! What a container leaves on the host while it lives and after `delete`: cgroups in every
//! hierarchy (default and custom `cgroupsPath`), mounts, state.

use hyperjail_tests::{
    cgroup_dir_v1, cgroup_dirs, cgroup_mounts, cgroup_procs, mounts_under, pid_alive, require_root,
    Bundle, Container, Hyperjail,
};
use serde_json::json;
use std::fs;
use std::path::PathBuf;

/// The controllers whose hierarchy must hold the container's process.
const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];

/// Starts `sleep 1000`, checks that its pid is in `cgroups_path` of every controller in
/// [`CONTROLLERS`], deletes it, and checks that nothing is left. Returns the directories
/// that held the process.
fn live_then_deleted(c: &Container<'_>, b: &mut Bundle, cgroups_path: &str) -> Vec<PathBuf> {
    b.args(&["sleep", "1000"]);
    c.create(b, &[]).assert_ok();
    c.start().assert_ok();
    let pid = c.pid();
    let mut held = Vec::new();
    for ctrl in CONTROLLERS {
        let dir =
            cgroup_dir_v1(ctrl, cgroups_path).unwrap_or_else(|| panic!("no {ctrl} hierarchy"));
        let procs = cgroup_procs(&dir);
        assert!(
            procs.contains(&pid),
            "pid {pid} not in {}/cgroup.procs: {procs:?}",
            dir.display()
        );
        held.push(dir);
    }
    // The process's own view agrees (host side, /proc/<pid>/cgroup).
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want_suffix = if cgroups_path.starts_with('/') {
        cgroups_path.to_string()
    } else {
        format!("/{cgroups_path}")
    };
    for ctrl in CONTROLLERS {
        let line = own
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|x| x == ctrl))
            })
            .unwrap_or_else(|| panic!("no {ctrl} line in {own}"));
        assert!(
            line.ends_with(&want_suffix),
            "{ctrl}: {line} should end with {want_suffix}"
        );
    }
    c.delete_force().assert_ok();
    assert!(!pid_alive(pid), "process {pid} survives delete");
    for dir in &held {
        assert!(!dir.exists(), "{} left after delete", dir.display());
    }
    c.assert_nothing_left(b);
    held
}

#[test]
fn delete_removes_every_trace() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let host = tempfile::tempdir().unwrap();
    b.mount(json!({"destination": "/mnt/host", "type": "bind", "source": host.path(), "options": ["rbind"]}));
    let c = hj.container("clean");
    let path = format!("/hyperjail/{}", c.id);
    live_then_deleted(&c, &mut b, &path);
    // Every hierarchy, v1 and the unified one.
    for dir in cgroup_dirs(&path) {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    assert!(
        cgroup_mounts().len() >= CONTROLLERS.len(),
        "cgroup hierarchies not found"
    );
    let rootfs = fs::canonicalize(b.rootfs()).unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(rootfs.to_str().unwrap()),
        "the host's mountinfo references the rootfs:\n{info}"
    );
    assert!(mounts_under(host.path()).is_empty());
    assert!(!c.state_dir().exists());
    assert!(
        hj.root_entries()
            .iter()
            .all(|e| e == "next-domid" || e.starts_with('.')),
        "{:?}",
        hj.root_entries()
    );
}

#[test]
fn stopped_container_delete_removes_every_trace() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh("exit 0");
    let c = hj.container("cleanstop");
    c.create(&b, &[]).assert_ok();
    let cg = cgroup_dir_v1("memory", &format!("/hyperjail/{}", c.id)).unwrap();
    assert!(
        cg.is_dir(),
        "no memory cgroup {} while created",
        cg.display()
    );
    c.start().assert_ok();
    c.wait_status("stopped");
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn absolute_cgroups_path_is_honoured() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = hj.container("cgabs");
    let path = format!("/hjtest/{}", c.id);
    b.config_mut()["linux"]["cgroupsPath"] = json!(path);
    live_then_deleted(&c, &mut b, &path);
    // The default place was not used.
    for dir in cgroup_dirs(&format!("/hyperjail/{}", c.id)) {
        assert!(!dir.exists(), "{} made despite cgroupsPath", dir.display());
    }
    for dir in cgroup_dirs("/hjtest") {
        let _ = fs::remove_dir(dir);
    }
}

#[test]
fn relative_cgroups_path_is_honoured() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = hj.container("cgrel");
    let path = format!("hjrel/{}", c.id);
    b.config_mut()["linux"]["cgroupsPath"] = json!(path);
    live_then_deleted(&c, &mut b, &path);
    for dir in cgroup_dirs("hjrel") {
        let _ = fs::remove_dir(dir);
    }
}

#[test]
fn run_cleans_up_when_the_process_exits() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh("exit 9");
    let c = hj.container("runclean");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(9), "{out}");
    // `run` deletes the container when it ends, as runc does.
    assert!(c.state().is_none(), "state still answers after run ended");
    c.assert_nothing_left(&b);
}

#[test]
fn delete_force_cleans_up_after_runtime_killed_mid_create() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let flag = b.path().join("hook-started");
    let hook_mark = format!("{}-hook", b.marker());
    b.config_mut()["hooks"] = json!({"createRuntime": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", "touch \"$1\"; exec sleep 60", "sh", flag],
        "env": [format!("{}={hook_mark}", hyperjail_tests::MARK_VAR)]
    }]});
    let c = hj.container("crash");
    let running = c.create_call(&b, &[]).spawn();
    hyperjail_tests::wait_until(
        std::time::Duration::from_secs(20),
        "the createRuntime hook",
        || flag.exists(),
    );
    // The runtime dies while the container is half made (as if the machine's OOM killer
    // or an engine's timeout struck).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = running.wait();
    assert_eq!(out.signal, Some(9));
    for p in hyperjail_tests::marked_processes(&hook_mark) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn delete_kills_processes_left_without_pid_namespace() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.remove_namespace("pid");
    // The main process exits at once and leaves a daemon behind in the cgroup.
    b.sh("sleep 1000 & echo $! > /daemon.pid; exit 0");
    let c = hj.container("daemon");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped");
    let daemon: i32 = fs::read_to_string(b.rootfs().join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        pid_alive(daemon),
        "the daemon should outlive the main process"
    );
    c.delete().assert_ok();
    assert!(
        !pid_alive(daemon),
        "delete left the daemon {daemon} running"
    );
    c.assert_nothing_left(&b);
}
