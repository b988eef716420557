//! Resource limits on a cgroup v2 hierarchy. Runs where v2 holds the pids and memory
//! controllers (pure v2, or a hybrid whose v2 mount has them); elsewhere it skips with
//! the reason, since a controller bound to a v1 hierarchy cannot be moved by a test.

use hyperjail_tests::{require_root, Bundle, Hyperjail};
use serde_json::json;
use std::fs;
use std::path::PathBuf;

/// The cgroup2 mount point and its available controllers.
fn v2_mount() -> Option<(PathBuf, Vec<String>)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mp = info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let point = pre.split(' ').nth(4)?;
        post.starts_with("cgroup2 ").then(|| PathBuf::from(point))
    })?;
    let ctrls = fs::read_to_string(mp.join("cgroup.controllers")).ok()?;
    Some((mp, ctrls.split_whitespace().map(String::from).collect()))
}

#[test]
fn pids_and_memory_limits_on_cgroup_v2() {
    require_root!();
    let Some((mp, ctrls)) = v2_mount() else {
        eprintln!("SKIP pids_and_memory_limits_on_cgroup_v2: no cgroup2 mount on this host");
        return;
    };
    if !(ctrls.iter().any(|c| c == "pids") && ctrls.iter().any(|c| c == "memory")) {
        eprintln!(
            "SKIP pids_and_memory_limits_on_cgroup_v2: the cgroup2 mount at {} holds only [{}]; pids and memory are bound to v1 here",
            mp.display(),
            ctrls.join(" ")
        );
        return;
    }
    let hj = Hyperjail::new();
    let c = hj.container("v2");
    let mut b = Bundle::new();
    b.config_mut()["linux"]["resources"] =
        json!({"pids": {"limit": 17}, "memory": {"limit": 67108864}});
    b.config_mut()["linux"]["cgroupsPath"] = json!(format!("/hjv2/{}", c.id));
    b.sh("cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max");
    let out = c.run(&b, &[]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["17", "67108864"], "{}", out.stdout);
    assert!(!mp.join("hjv2").join(&c.id).exists(), "cgroup left behind");
}
