//! Xen-style scheduling: cpupools, Credit, RTDS and ARINC 653 realised in the cgroup
//! files of the guests, the partition switcher freezing and thawing in order, and bad
//! parameters changing nothing.

use hyperjail_tests::{cgroup_dir_v1, require_root, skip_unless, wait_until, Bundle, Hyperjail};
use serde_json::{json, Value};
use std::fs;
use std::time::{Duration, Instant};

fn cg(ctrl: &str, id: &str, file: &str) -> String {
    let dir = cgroup_dir_v1(ctrl, &format!("/hyperjail/{id}"))
        .unwrap_or_else(|| panic!("no {ctrl} hierarchy"));
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn has_v1(ctrl: &str) -> bool {
    cgroup_dir_v1(ctrl, "/").is_some()
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// A busy-looping guest with the given annotations.
fn spinner(ann: Value) -> Bundle {
    let mut b = Bundle::new();
    b.sh("while :; do :; done");
    b.config_mut()["annotations"] = ann;
    b
}

fn json_out(hj: &Hyperjail, args: &[&str]) -> Value {
    let o = hj.run(args);
    o.assert_ok();
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", o.stdout))
}

/// The host pid of the pool's switcher, if one runs for this state root.
fn switcher_pid(hj: &Hyperjail, pool: &str) -> Option<i32> {
    let root = hj.root().to_string_lossy().to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        (!zombie
            && args.iter().any(|a| a == "arinc653-switcher")
            && args.iter().any(|a| a == pool)
            && args.contains(&root))
        .then_some(pid)
    })
}

#[test]
fn credit_parameters_reach_the_cgroup_and_change_at_once() {
    require_root!();
    skip_unless!(two_cpus(), "needs 2 CPUs for a pool of its own");
    skip_unless!(
        has_v1("cpu") && has_v1("cpuset"),
        "needs the v1 cpu and cpuset controllers"
    );
    let hj = Hyperjail::new();
    hj.run([
        "cpupool", "create", "one", "--cpus", "1", "--sched", "credit",
    ])
    .assert_ok();
    let b = spinner(json!({
        "org.hyperjail.pool": "one",
        "org.hyperjail.sched.credit.weight": "512",
        "org.hyperjail.sched.credit.cap": "20",
    }));
    let c = hj.container("credit");
    c.run(&b, &["--detach"]).assert_ok();
    assert_eq!(cg("cpu", &c.id, "cpu.shares"), "2048");
    assert_eq!(cg("cpu", &c.id, "cpu.cfs_quota_us"), "20000");
    assert_eq!(cg("cpu", &c.id, "cpu.cfs_period_us"), "100000");
    assert_eq!(cg("cpuset", &c.id, "cpuset.cpus"), "1");
    // The guest itself sees the pool's CPU only.
    let o = hj.run([
        "exec",
        &c.id,
        "grep",
        "Cpus_allowed_list",
        "/proc/self/status",
    ]);
    o.assert_ok();
    assert!(o.stdout.trim().ends_with("\t1"), "{}", o.stdout);
    // A change takes effect at once.
    hj.run(["sched", "credit", "-d", &c.id, "-w", "1024", "-c", "50"])
        .assert_ok();
    assert_eq!(cg("cpu", &c.id, "cpu.shares"), "4096");
    assert_eq!(cg("cpu", &c.id, "cpu.cfs_quota_us"), "50000");
    let v = json_out(&hj, &["sched", "credit", "--format", "json"]);
    assert_eq!(v[0]["name"], json!(c.id));
    assert_eq!(
        (v[0]["weight"].clone(), v[0]["cap"].clone()),
        (json!(1024), json!(50))
    );
    // Bad parameters: one line naming the rule, nothing changed.
    for (args, want) in [
        (vec!["-w", "0"], "weight 0 is outside 1..65535"),
        (vec!["-w", "70000"], "weight 70000 is outside 1..65535"),
        (vec!["-c", "-1"], "cap -1 is negative"),
        (
            vec!["-c", "150"],
            "cap 150% is above 100% per CPU of the 1 CPUs",
        ),
    ] {
        let mut a = vec!["sched", "credit", "-d", c.id.as_str()];
        a.extend(args);
        hj.run(&a).assert_error(&[want]);
    }
    hj.run(["sched", "rtds", "-d", &c.id, "-b", "100"])
        .assert_error(&["which runs credit, not rtds"]);
    hj.run(["sched", "credit", "-d", "no-such-domain", "-w", "5"])
        .assert_error(&["no-such-domain does not exist"]);
    assert_eq!(cg("cpu", &c.id, "cpu.shares"), "4096");
    assert_eq!(cg("cpu", &c.id, "cpu.cfs_quota_us"), "50000");
    let l = json_out(&hj, &["list", "--long", "--format", "json"]);
    assert_eq!(l[0]["pool"], json!("one"));
    assert_eq!(l[0]["backend"], json!("jail"));
    // A non-empty pool cannot go; after the domain, it can.
    hj.run(["cpupool", "destroy", "one"])
        .assert_error(&["not empty"]);
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
    hj.run(["cpupool", "destroy", "one"]).assert_ok();
}

#[test]
fn pool_zero_domains_leave_the_cpus_of_a_new_pool() {
    require_root!();
    skip_unless!(two_cpus(), "needs 2 CPUs for a pool of its own");
    skip_unless!(
        has_v1("cpu") && has_v1("cpuset"),
        "needs the v1 cpu and cpuset controllers"
    );
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    // The config's own CPU limits, which the pools must leave alone.
    b.config_mut()["linux"]["resources"]["cpu"] =
        json!({"shares": 512, "quota": 50000, "period": 100000});
    let c = hj.container("pool0");
    c.run(&b, &["--detach"]).assert_ok();
    let all = cg("cpuset", &c.id, "cpuset.cpus");
    hj.run(["cpupool", "create", "rt", "--cpus", "1", "--sched", "rtds"])
        .assert_ok();
    assert_eq!(cg("cpuset", &c.id, "cpuset.cpus"), "0", "was {all}");
    // A container created while the pool exists runs on Pool-0's CPUs too.
    let c2 = hj.container("pool0b");
    c2.run(&b, &["--detach"]).assert_ok();
    for id in [&c.id, &c2.id] {
        assert_eq!(cg("cpuset", id, "cpuset.cpus"), "0");
        assert_eq!(cg("cpu", id, "cpu.shares"), "512");
        assert_eq!(cg("cpu", id, "cpu.cfs_quota_us"), "50000");
    }
    c2.delete_force().assert_ok();
    let pools = json_out(&hj, &["cpupool", "list", "--format", "json"]);
    assert_eq!(pools[0]["cpus"], json!("0"));
    assert_eq!(
        pools[1],
        json!({"name": "rt", "cpus": "1", "sched": "rtds", "domains": 0})
    );
    // Bad pools change nothing.
    hj.run(["cpupool", "create", "x", "--cpus", "1"])
        .assert_error(&["CPU 1 belongs to rt"]);
    hj.run(["cpupool", "create", "x", "--cpus", "0"])
        .assert_error(&["Pool-0 must keep at least one CPU"]);
    hj.run(["cpupool", "create", "x", "--cpus", "0", "--sched", "sedf"])
        .assert_error(&["unknown scheduler"]);
    hj.run(["cpupool", "create", "x", "--cpus", "5-2"])
        .assert_error(&["runs backwards"]);
    hj.run(["cpupool", "destroy", "Pool-0"])
        .assert_error(&["cannot be destroyed"]);
    hj.run(["cpupool", "migrate", &c.id, "nope"])
        .assert_error(&["does not exist"]);
    // Migrating into the RTDS pool applies its defaults (4 ms every 10 ms).
    hj.run(["cpupool", "migrate", &c.id, "rt"]).assert_ok();
    assert_eq!(cg("cpuset", &c.id, "cpuset.cpus"), "1");
    hj.run(["cpupool", "destroy", "rt"])
        .assert_error(&["not empty"]);
    hj.run(["cpupool", "migrate", &c.id, "Pool-0"]).assert_ok();
    hj.run(["cpupool", "destroy", "rt"]).assert_ok();
    assert_eq!(cg("cpuset", &c.id, "cpuset.cpus"), "0-1");
}

#[test]
fn rtds_admission_control_and_bandwidth() {
    require_root!();
    skip_unless!(two_cpus(), "needs 2 CPUs for a pool of its own");
    skip_unless!(has_v1("cpu"), "needs the v1 cpu controller");
    let hj = Hyperjail::new();
    hj.run(["cpupool", "create", "rt", "--cpus", "1", "--sched", "rtds"])
        .assert_ok();
    let rt = |p: &str, b: &str| {
        spinner(json!({
            "org.hyperjail.pool": "rt",
            "org.hyperjail.sched.rtds.period": p,
            "org.hyperjail.sched.rtds.budget": b,
            "org.hyperjail.sched.rtds.extratime": "0",
        }))
    };
    let bundles = [
        rt("10000", "2000"),
        rt("20000", "5000"),
        rt("30000", "3000"),
    ];
    let cs: Vec<_> = (0..3).map(|_| hj.container("rtds")).collect();
    for (c, b) in cs.iter().zip(&bundles) {
        c.run(b, &["--detach"]).assert_ok();
    }
    assert_eq!(cg("cpu", &cs[0].id, "cpu.cfs_quota_us"), "2000");
    assert_eq!(cg("cpu", &cs[0].id, "cpu.cfs_period_us"), "10000");
    assert_eq!(cg("cpu", &cs[1].id, "cpu.cfs_quota_us"), "5000");
    assert_eq!(cg("cpu", &cs[1].id, "cpu.cfs_period_us"), "20000");
    // A fourth domain would need 1.15 CPUs of the pool's 1: refused, nothing left.
    let b4 = rt("10000", "6000");
    let c4 = hj.container("rtds4");
    c4.run(&b4, &["--detach"]).assert_error(&[
        "rtds admission: utilisation 1.150",
        "exceed the pool's 1 CPUs",
    ]);
    c4.assert_nothing_left(&b4);
    // So is a change that would overflow; the old values stay.
    hj.run(["sched", "rtds", "-d", &cs[0].id, "-b", "9000"])
        .assert_error(&["rtds admission"]);
    hj.run(["sched", "rtds", "-d", &cs[0].id, "-b", "20000"])
        .assert_error(&["budget 20000 us exceeds period 10000 us"]);
    hj.run(["sched", "rtds", "-d", &cs[0].id, "-e", "2"])
        .assert_error(&["extratime 2 must be 0 or 1"]);
    assert_eq!(cg("cpu", &cs[0].id, "cpu.cfs_quota_us"), "2000");
    // A change that fits applies at once; extratime lifts the hard cap.
    hj.run(["sched", "rtds", "-d", &cs[0].id, "-b", "3000"])
        .assert_ok();
    assert_eq!(cg("cpu", &cs[0].id, "cpu.cfs_quota_us"), "3000");
    hj.run(["sched", "rtds", "-d", &cs[0].id, "-e", "1"])
        .assert_ok();
    assert_eq!(cg("cpu", &cs[0].id, "cpu.cfs_quota_us"), "-1");
    // With extratime off the budget is hard: RT group bandwidth on the domain's cpu
    // cgroup and SCHED_RR (policy 2, /proc/<pid>/stat field 41) at a rate-monotonic
    // priority, shorter periods higher. Where the kernel has no RT group scheduling the
    // listing says what enforces the budget instead.
    let v = json_out(&hj, &["sched", "rtds", "--format", "json"]);
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v[1]["budget_us"], json!(5000));
    let field = |pid: i32, n: usize| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.split(' ').nth(n - 2).unwrap_or("").to_string())
            })
            .unwrap_or_default()
    };
    let rt_group = has_v1("cpu")
        && cgroup_dir_v1("cpu", "/").is_some_and(|d| d.join("cpu.rt_runtime_us").exists());
    if rt_group {
        assert_eq!(v[1]["note"], Value::Null, "{v}");
        assert_eq!(cg("cpu", &cs[1].id, "cpu.rt_runtime_us"), "5000");
        assert_eq!(cg("cpu", &cs[1].id, "cpu.rt_period_us"), "20000");
        assert_eq!(field(cs[1].pid(), 41), "2", "SCHED_RR");
        let prio = |c: &hyperjail_tests::Container| field(c.pid(), 40).parse::<i32>().unwrap_or(0);
        // /proc's prio field is -1 - rt_priority for RT tasks: a higher priority is lower.
        assert!(
            prio(&cs[0]) < prio(&cs[1]),
            "10 ms period ranks above 20 ms"
        );
        // extratime on: the hard budget goes, the task is best-effort again.
        hj.run(["sched", "rtds", "-d", &cs[1].id, "-e", "1"])
            .assert_ok();
        assert_eq!(cg("cpu", &cs[1].id, "cpu.rt_runtime_us"), "0");
        assert_ne!(field(cs[1].pid(), 41), "2");
    } else {
        let note = v[1]["note"].as_str().unwrap_or("");
        assert!(note.contains("CFS bandwidth enforces the budget"), "{note}");
    }
}

#[test]
fn arinc653_switcher_runs_one_domain_at_a_time() {
    require_root!();
    skip_unless!(two_cpus(), "needs 2 CPUs for a pool of its own");
    skip_unless!(has_v1("freezer"), "needs the v1 freezer controller");
    let hj = Hyperjail::new();
    hj.run([
        "cpupool", "create", "part", "--cpus", "1", "--sched", "arinc653",
    ])
    .assert_ok();
    let a =
        spinner(json!({"org.hyperjail.pool": "part", "org.hyperjail.sched.arinc653.slot": "5"}));
    let b =
        spinner(json!({"org.hyperjail.pool": "part", "org.hyperjail.sched.arinc653.slot": "10"}));
    let ca = hj.container("part-a");
    let cb = hj.container("part-b");
    ca.run(&a, &["--detach"]).assert_ok();
    cb.run(&b, &["--detach"]).assert_ok();
    let sw = switcher_pid(&hj, "part").expect("the pool's switcher runs");
    // It runs SCHED_FIFO (policy 1).
    let stat = fs::read_to_string(format!("/proc/{sw}/stat")).expect("switcher stat");
    let policy = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split(' ').nth(39).unwrap_or(""));
    assert_eq!(policy, Some("1"), "{stat}");
    let sched = json_out(
        &hj,
        &["sched", "arinc653", "--pool", "part", "--format", "json"],
    );
    assert_eq!(sched["major_frame_us"], json!(15000));
    // Sample the freezer for a while: never both thawed, each thawed sometimes.
    let state = |id: &str| cg("freezer", id, "freezer.state");
    let (mut a_ran, mut b_ran) = (0, 0);
    let end = Instant::now() + Duration::from_millis(600);
    while Instant::now() < end {
        // a, b, a again: a thawed both before and after b was read thawed means both
        // were thawed at once (a slot lasts milliseconds, the reads microseconds).
        let (sa, sb, sa2) = (state(&ca.id), state(&cb.id), state(&ca.id));
        assert!(
            !(sa == "THAWED" && sb == "THAWED" && sa2 == "THAWED"),
            "both thawed at once"
        );
        a_ran += (sa == "THAWED") as u32;
        b_ran += (sb == "THAWED") as u32;
        std::thread::sleep(Duration::from_micros(300));
    }
    assert!(
        a_ran > 0 && b_ran > 0,
        "a thawed {a_ran}, b thawed {b_ran} times"
    );
    // Neither reads as paused; `pause` does, and the switcher then leaves it frozen.
    assert_eq!(ca.status().as_deref(), Some("running"));
    hj.run(["pause", &ca.id]).assert_ok();
    assert_eq!(ca.status().as_deref(), Some("paused"));
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..50 {
        assert_eq!(state(&ca.id), "FROZEN");
        std::thread::sleep(Duration::from_millis(1));
    }
    hj.run(["resume", &ca.id]).assert_ok();
    assert_eq!(ca.status().as_deref(), Some("running"));
    wait_until(Duration::from_secs(2), "a to run again", || {
        state(&ca.id) == "THAWED"
    });
    // Bad schedules change nothing.
    hj.run([
        "sched",
        "arinc653",
        "--pool",
        "part",
        "--major-frame",
        "10",
        "--slot",
        &format!("{}:6", ca.id),
        "--slot",
        &format!("{}:6", cb.id),
    ])
    .assert_error(&["the slots sum to 12000 us, more than the major frame of 10000 us"]);
    hj.run([
        "sched",
        "arinc653",
        "--pool",
        "part",
        "--major-frame",
        "20",
        "--slot",
        "ghost:5",
    ])
    .assert_error(&["ghost is not a live domain of pool part"]);
    hj.run([
        "sched",
        "arinc653",
        "--pool",
        "Pool-0",
        "--major-frame",
        "20",
    ])
    .assert_error(&["runs credit, not arinc653"]);
    let same = json_out(
        &hj,
        &["sched", "arinc653", "--pool", "part", "--format", "json"],
    );
    assert_eq!(same, sched);
    // A new schedule applies; with the last domain gone the switcher ends.
    hj.run([
        "sched",
        "arinc653",
        "--pool",
        "part",
        "--major-frame",
        "20",
        "--slot",
        &format!("{}:10", cb.id),
    ])
    .assert_ok();
    ca.delete_force().assert_ok();
    cb.delete_force().assert_ok();
    ca.assert_nothing_left(&a);
    cb.assert_nothing_left(&b);
    wait_until(Duration::from_secs(3), "the switcher to exit", || {
        switcher_pid(&hj, "part").is_none()
    });
    hj.run(["cpupool", "destroy", "part"]).assert_ok();
}

#[test]
fn bad_scheduling_annotations_leave_nothing() {
    require_root!();
    let hj = Hyperjail::new();
    for (ann, want) in [
        (
            json!({"org.hyperjail.pool": "nope"}),
            "cpupool \"nope\" does not exist",
        ),
        (
            json!({"org.hyperjail.sched.credit.weight": "0"}),
            "weight 0 is outside 1..65535",
        ),
        (
            json!({"org.hyperjail.sched.credit.wieght": "5"}),
            "unknown parameter of the credit scheduler",
        ),
        (
            json!({"org.hyperjail.sched.rtds.budget": "5000"}),
            "pool Pool-0 runs the credit scheduler, not rtds",
        ),
        (
            json!({"org.hyperjail.sched.arinc653.slot": "5"}),
            "not arinc653",
        ),
    ] {
        let b = spinner(ann.clone());
        let c = hj.container("badsched");
        c.create(&b, &[]).assert_error(&[want]);
        c.assert_nothing_left(&b);
    }
    assert!(hj.list_json().is_empty());
}

/// A VM domain takes the same controls as a jail: they are the VMM's cgroup's, so
/// every vCPU thread (one per guest thread, each a host thread of the VMM) is
/// confined to the pool's CPUs and, for RTDS with a hard budget, runs SCHED_RR in
/// the domain's RT group bandwidth.
#[test]
fn vm_domain_vcpu_threads_get_the_scheduling_controls() {
    hyperjail_tests::require_kvm!();
    skip_unless!(two_cpus(), "needs 2 CPUs for a pool of its own");
    skip_unless!(
        has_v1("cpu") && has_v1("cpuset"),
        "needs the v1 cpu and cpuset controllers"
    );
    let hj = Hyperjail::new();
    hj.run([
        "cpupool", "create", "vmrt", "--cpus", "1", "--sched", "rtds",
    ])
    .assert_ok();
    let mut b = hyperjail_tests::vm::vm_bundle();
    // Three guest processes, each on a vCPU thread of its own.
    b.sh("while :; do :; done & while :; do :; done & while :; do :; done");
    b.config_mut()["annotations"] = json!({
        "org.hyperjail.backend": "vm",
        "org.hyperjail.pool": "vmrt",
        "org.hyperjail.sched.rtds.period": "10000",
        "org.hyperjail.sched.rtds.budget": "3000",
        "org.hyperjail.sched.rtds.extratime": "0",
    });
    let c = hj.container("vmrtds");
    c.run(&b, &["--detach"]).assert_ok();
    let pid = c.pid();
    let tasks = || -> Vec<i32> {
        fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The first vCPU, the ring, signal, control and OOM threads, and two more vCPUs.
    wait_until(Duration::from_secs(20), "the guest's vCPU threads", || {
        tasks().len() >= 6
    });
    assert_eq!(cg("cpuset", &c.id, "cpuset.cpus"), "1");
    assert_eq!(cg("cpu", &c.id, "cpu.cfs_quota_us"), "3000");
    let stat_field = |t: i32, n: usize| {
        fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.split(' ').nth(n - 2).unwrap_or("").to_string())
            })
            .unwrap_or_default()
    };
    let rt_group = cgroup_dir_v1("cpu", "/").is_some_and(|d| d.join("cpu.rt_runtime_us").exists());
    for t in tasks() {
        let status = fs::read_to_string(format!("/proc/{pid}/task/{t}/status")).unwrap_or_default();
        if status.is_empty() {
            continue; // The thread ended meanwhile.
        }
        assert!(
            status.lines().any(|l| l == "Cpus_allowed_list:\t1"),
            "thread {t} may run off the pool's CPU: {status}"
        );
        if rt_group {
            assert_eq!(stat_field(t, 41), "2", "thread {t} is not SCHED_RR");
        }
    }
    if rt_group {
        assert_eq!(cg("cpu", &c.id, "cpu.rt_runtime_us"), "3000");
        assert_eq!(cg("cpu", &c.id, "cpu.rt_period_us"), "10000");
    }
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
    hj.run(["cpupool", "destroy", "vmrt"]).assert_ok();
}
