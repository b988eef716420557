//! Namespaces: each kind made new (compared with the host's), joined by path, user
//! namespace id maps, time namespace offsets.

use hyperjail_tests::{ns_link, require_root, skip_unless, Bundle, Hyperjail};
use serde_json::json;
use std::fs;
use std::path::Path;

/// Runs the bundle's process with `run`, asserts exit 0, returns stdout.
fn run_ok(b: &Bundle) -> String {
    let hj = Hyperjail::new();
    let c = hj.container("ns");
    let out = c.run(b, &[]);
    out.assert_ok();
    out.stdout
}

/// The container's /proc/self/ns/<file> link, with namespace `ty` in the config or not.
fn inside_link(ty: &str, file: &str, with: bool) -> String {
    let mut b = Bundle::new();
    if with {
        b.namespace(ty, None);
    } else {
        b.remove_namespace(ty);
        if ty == "uts" {
            // The spec's default hostname needs a uts namespace.
            if let Some(o) = b.config_mut().as_object_mut() {
                o.remove("hostname");
            }
        }
    }
    b.args(&["readlink", &format!("/proc/self/ns/{file}")]);
    run_ok(&b).trim().to_string()
}

/// Asserts that namespace `ty` is new when configured and the host's when not.
fn check_ns(ty: &str, file: &str) {
    let host = ns_link("self", file);
    let new = inside_link(ty, file, true);
    assert!(
        new.starts_with(&format!("{file}:[")),
        "readlink printed {new:?}"
    );
    assert_ne!(new, host, "{ty}: the container shares the host's namespace");
    let shared = inside_link(ty, file, false);
    assert_eq!(
        shared, host,
        "{ty}: without {ty} in the config the host's namespace is expected"
    );
}

#[test]
fn pid_namespace() {
    require_root!();
    let mut b = Bundle::new();
    b.sh("echo $$; ps -o pid | tail -n +2 | wc -l");
    let out = run_ok(&b);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "1", "the process is not pid 1: {out}");
    // The shell, ps, tail and wc: nothing of the host.
    assert!(
        lines[1].parse::<u32>().unwrap() <= 4,
        "host processes visible: {out}"
    );
    check_ns("pid", "pid");
}

#[test]
fn uts_namespace() {
    require_root!();
    let host_name = nix::unistd::gethostname().unwrap();
    let mut b = Bundle::new();
    b.config_mut()["hostname"] = json!("hj-test-host");
    b.config_mut()["domainname"] = json!("hj.example");
    b.sh("hostname; cat /proc/sys/kernel/domainname");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hj-test-host", "hj.example"],
        "{out}"
    );
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_name,
        "the host's hostname changed"
    );
    check_ns("uts", "uts");
}

#[test]
fn hostname_without_uts_namespace_is_rejected() {
    require_root!();
    let host_name = nix::unistd::gethostname().unwrap();
    let mut b = Bundle::new();
    b.remove_namespace("uts");
    b.config_mut()["hostname"] = json!("must-not-be-set");
    let hj = Hyperjail::new();
    let c = hj.container("nouts");
    let out = c.run(&b, &[]);
    let now = nix::unistd::gethostname().unwrap();
    if now != host_name {
        let _ = nix::unistd::sethostname(&host_name);
    }
    assert_eq!(
        now, host_name,
        "the container set the host's hostname: {out}"
    );
    out.assert_error(&["hostname", "uts"]);
    c.assert_nothing_left(&b);
}

#[test]
fn ipc_namespace() {
    require_root!();
    check_ns("ipc", "ipc");
}

#[test]
fn network_namespace() {
    require_root!();
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/net/dev"]);
    let out = run_ok(&b);
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{out}");
    check_ns("network", "net");
}

#[test]
fn mount_namespace() {
    require_root!();
    let host = ns_link("self", "mnt");
    let mut b = Bundle::new();
    b.args(&["readlink", "/proc/self/ns/mnt"]);
    let inside = run_ok(&b);
    assert!(inside.trim().starts_with("mnt:["), "{inside}");
    assert_ne!(
        inside.trim(),
        host,
        "the container shares the host's mount namespace"
    );
}

#[test]
fn cgroup_namespace() {
    require_root!();
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/cgroup"]);
    let out = run_ok(&b);
    assert!(!out.trim().is_empty());
    for line in out.lines() {
        assert!(
            line.ends_with(":/"),
            "cgroup path not / inside a cgroup namespace: {line}\n{out}"
        );
    }
    check_ns("cgroup", "cgroup");
}

#[test]
fn user_namespace_with_id_maps() {
    require_root!();
    let mut b = Bundle::new();
    b.namespace("user", None);
    b.config_mut()["linux"]["uidMappings"] =
        json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    b.config_mut()["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    // cgroupfs cannot be mounted from a user namespace that does not own the cgroup ns's
    // hierarchy setup here; runc's rootless spec drops it too.
    b.remove_mount("/sys/fs/cgroup");
    b.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user");
    let out = run_ok(&b);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "200000", "65536"], "uid_map: {out}");
    assert_eq!(lines[1], ["0", "300000", "65536"], "gid_map: {out}");
    assert_eq!(lines[2], ["0"], "{out}");
    assert_ne!(
        lines[3].concat(),
        ns_link("self", "user"),
        "the container shares the host's user namespace"
    );
}

#[test]
fn time_namespace_offsets() {
    require_root!();
    skip_unless!(
        Path::new("/proc/self/ns/time").exists(),
        "the kernel has no time namespaces"
    );
    let offset: f64 = 10.0 * 86400.0;
    let uptime = || -> f64 {
        fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut b = Bundle::new();
    b.namespace("time", None);
    b.config_mut()["linux"]["timeOffsets"] =
        json!({"boottime": {"secs": offset as i64, "nanosecs": 0}});
    b.sh("cat /proc/uptime; readlink /proc/self/ns/time");
    let before = uptime();
    let out = run_ok(&b);
    let after = uptime();
    let inside: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        inside >= before + offset - 0.5 && inside <= after + offset + 0.5,
        "uptime inside {inside} should be the host's ({before}..{after}) plus {offset}: {out}"
    );
    let link = out.lines().nth(1).unwrap_or_default();
    assert_ne!(
        link,
        ns_link("self", "time"),
        "the container shares the host's time namespace"
    );
}

#[test]
fn join_namespace_by_path() {
    require_root!();
    let hj = Hyperjail::new();
    let mut a = Bundle::new();
    a.args(&["sleep", "1000"]);
    let ca = hj.container("nsa");
    ca.create(&a, &[]).assert_ok();
    ca.start().assert_ok();
    let apid = ca.pid();
    let a_net = ns_link(&apid.to_string(), "net");
    let a_ipc = ns_link(&apid.to_string(), "ipc");
    assert_ne!(a_net, ns_link("self", "net"));

    let mut b = Bundle::new();
    b.namespace("network", Some(&format!("/proc/{apid}/ns/net")));
    b.namespace("ipc", Some(&format!("/proc/{apid}/ns/ipc")));
    b.sh("for n in net ipc uts; do readlink /proc/self/ns/$n; done");
    let cb = hj.container("nsb");
    let out = cb.run(&b, &[]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], a_net,
        "B did not join A's network namespace: {out}"
    );
    assert_eq!(lines[1], a_ipc, "B did not join A's ipc namespace: {out}");
    assert_ne!(
        lines[2],
        ns_link(&apid.to_string(), "uts"),
        "B should have a uts namespace of its own: {out}"
    );
    assert_eq!(ca.status().as_deref(), Some("running"), "A was harmed");
}

#[test]
fn join_namespace_bad_path_fails() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.namespace("network", Some("/proc/self/ns/does-not-exist"));
    let c = hj.container("nsbad");
    c.create(&b, &[])
        .assert_error(&["/proc/self/ns/does-not-exist", "namespace"]);
    c.assert_nothing_left(&b);
}
