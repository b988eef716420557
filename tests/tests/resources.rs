//! linux.resources realised as cgroup v1 files, and enforced.

use hyperjail_tests::{cgroup_dir_v1, require_root, wait_until, Bundle, Hyperjail};
use serde_json::json;
use std::fs;
use std::time::Duration;

fn read(ctrl: &str, path: &str, file: &str) -> String {
    let dir = cgroup_dir_v1(ctrl, path).unwrap_or_else(|| panic!("no {ctrl} hierarchy"));
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

#[test]
fn resource_limits_reach_cgroup_files() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.config_mut()["linux"]["resources"]["memory"] = json!({"limit": 67108864});
    b.config_mut()["linux"]["resources"]["pids"] = json!({"limit": 42});
    b.config_mut()["linux"]["resources"]["cpu"] =
        json!({"shares": 512, "quota": 50000, "period": 100000});
    let c = hj.container("res");
    c.create(&b, &[]).assert_ok();
    let path = format!("/hyperjail/{}", c.id);
    assert_eq!(read("memory", &path, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", &path, "pids.max"), "42");
    assert_eq!(read("cpu", &path, "cpu.shares"), "512");
    assert_eq!(read("cpu", &path, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", &path, "cpu.cfs_period_us"), "100000");
}

#[test]
fn pids_limit_is_enforced() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.config_mut()["linux"]["resources"]["pids"] = json!({"limit": 5});
    b.sh("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1000 & done; echo loop-done > /done; wait");
    let c = hj.container("pidslim");
    let created = c.create(&b, &[]);
    created.assert_ok();
    c.start().assert_ok();
    let path = format!("/hyperjail/{}", c.id);
    // Either the loop ends with some forks refused, or the shell gives up on a refused fork.
    wait_until(
        Duration::from_secs(20),
        "the fork loop to end or fail",
        || b.rootfs().join("done").exists() || c.status().as_deref() == Some("stopped"),
    );
    let events = read("pids", &path, "pids.events");
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no max line in pids.events: {events}"));
    assert!(
        refused > 0,
        "no fork was refused under a limit of 5: pids.events {events}"
    );
    let current: u32 = read("pids", &path, "pids.current").parse().unwrap();
    assert!(
        current <= 5,
        "pids.current {current} exceeds the limit of 5"
    );
    assert!(
        created.stderr_now().to_lowercase().contains("fork"),
        "the shell should report a refused fork: {}",
        created.stderr_now()
    );
}

#[test]
fn memory_limit_is_enforced() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.config_mut()["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
    // dd allocates its 128 MiB block in one go: the cgroup's OOM killer must stop it.
    b.sh("dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null && echo survived");
    let c = hj.container("memlim");
    let out = c.run(&b, &[]);
    assert!(
        !out.stdout.contains("survived"),
        "a 128 MiB allocation survived a 32 MiB limit: {out}"
    );
    assert_ne!(out.code, Some(0), "{out}");
}
