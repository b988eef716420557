//! Bounded load: many containers at once under one `--root` (tracker issue 9). Thirty
//! `sleep` containers from one shared bundle run side by side; `list`, `state` and `ps`
//! must show each of them with its own process and cgroup, and `delete --force` of all
//! must leave nothing. `scripts/bench-scale.sh` (`make bench-scale`) measures the same
//! with 200 containers.

use hyperjail_tests::{pid_alive, require_root, Bundle, Container, Hyperjail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Instant;

/// How many containers run at once.
const CONTAINERS: usize = 30;

/// The command line of `pid` as its arguments.
fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The cgroup of `pid` in the v1 memory hierarchy (from /proc/<pid>/cgroup).
fn memory_cgroup(pid: i32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })
}

#[test]
fn thirty_containers_listed_with_their_own_processes_then_all_deleted() {
    require_root!();
    let t0 = Instant::now();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    // One bundle for all: without linux.cgroupsPath each container gets a cgroup of its
    // own, named after its id.
    assert!(b.cgroups_path().is_none(), "the bundle sets cgroupsPath");
    let cs: Vec<Container<'_>> = (0..CONTAINERS)
        .map(|i| hj.container(&format!("scale{i}")))
        .collect();
    for c in &cs {
        c.create(&b, &[]).assert_ok();
        c.start().assert_ok();
    }
    let started = t0.elapsed();

    // list --format json: every container, running, with a pid.
    let listed: BTreeMap<String, Value> = hj
        .list_json()
        .into_iter()
        .map(|s| (s["id"].as_str().unwrap_or_default().to_string(), s))
        .collect();
    let want: BTreeSet<String> = cs.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        listed.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "list --format json shows other ids than the {CONTAINERS} created"
    );
    let bundle = b.path().canonicalize().expect("canonical bundle path");
    let mut pids = BTreeSet::new();
    for c in &cs {
        let l = &listed[&c.id];
        assert_eq!(l["status"], "running", "list entry of {}: {l}", c.id);
        let pid = l["pid"].as_i64().unwrap_or(0) as i32;
        assert!(pid > 0, "list entry of {} has no pid: {l}", c.id);
        assert!(pids.insert(pid), "pid {pid} is listed for two containers");
        // state agrees with list.
        let st = c.state().unwrap_or_else(|| panic!("state {} failed", c.id));
        assert_eq!(st["id"], c.id.as_str(), "{st}");
        assert_eq!(st["status"], "running", "{st}");
        assert_eq!(
            st["pid"].as_i64(),
            Some(i64::from(pid)),
            "state vs list: {st}"
        );
        assert_eq!(
            st["bundle"].as_str().map(|p| fs::canonicalize(p).ok()),
            Some(Some(bundle.clone())),
            "{st}"
        );
        // The pid is the container's sleep, alive, in the container's own cgroup.
        assert!(pid_alive(pid), "pid {pid} of {} is not alive", c.id);
        assert_eq!(
            cmdline(pid),
            ["sleep", "1000"],
            "pid {pid} of {} runs something else",
            c.id
        );
        let cg = memory_cgroup(pid).unwrap_or_default();
        assert!(
            cg.ends_with(&format!("/hyperjail/{}", c.id)),
            "pid {pid} of {} is in memory cgroup {cg:?}",
            c.id
        );
        // ps lists exactly that process (the sleep is alone in its cgroup).
        let ps = hj.run(["ps", "--format", "json", &c.id]);
        ps.assert_ok();
        let ps: Vec<i32> = serde_json::from_str(ps.stdout.trim())
            .unwrap_or_else(|e| panic!("ps --format json of {} is not a pid list: {e}", c.id));
        assert_eq!(ps, [pid], "ps of {}", c.id);
    }
    // The table has a header and one line per container.
    let table = hj.run(["list"]);
    table.assert_ok();
    let lines = table.lines();
    assert_eq!(lines.len(), CONTAINERS + 1, "{table}");
    for c in &cs {
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().next() == Some(&c.id)),
            "{} is missing from the list table: {table}",
            c.id
        );
    }
    let checked = t0.elapsed();

    for c in &cs {
        c.delete_force().assert_ok();
    }
    for pid in &pids {
        assert!(!pid_alive(*pid), "pid {pid} survives delete --force");
    }
    for c in &cs {
        c.assert_nothing_left(&b);
    }
    assert!(hj.list_json().is_empty(), "list is not empty after delete");
    let left: Vec<String> = hj
        .root_entries()
        .into_iter()
        .filter(|e| e != "next-domid")
        .collect();
    assert!(left.is_empty(), "--root still holds {left:?}");
    println!(
        "{CONTAINERS} containers: created and started in {:.2} s, checked by {:.2} s, deleted by {:.2} s",
        started.as_secs_f64(),
        checked.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
