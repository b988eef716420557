//! The container's filesystem: mounts, read-only root, masked and read-only paths,
//! devices, propagation, --no-pivot, sysctls.

use hyperjail_tests::{mounts_under, parse_mountinfo, require_root, Bundle, Hyperjail, MountInfo};
use serde_json::json;
use std::fs;
use std::os::unix::fs::symlink;

/// Runs the bundle's process with `run`, asserts exit 0, returns stdout.
fn run_ok(b: &Bundle) -> String {
    let hj = Hyperjail::new();
    let c = hj.container("mnt");
    let out = c.run(b, &[]);
    out.assert_ok();
    c.delete_force();
    c.assert_nothing_left(b);
    out.stdout
}

/// The mountinfo line for `point` in text printed by the container (the last one wins).
fn mount_at(text: &str, point: &str) -> MountInfo {
    parse_mountinfo(text)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == point)
        .unwrap_or_else(|| panic!("no mount at {point} in:\n{text}"))
}

#[test]
fn tmpfs_with_options() {
    require_root!();
    let mut b = Bundle::new();
    b.mount(
        json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=700"]}),
    );
    b.sh("cat /proc/self/mountinfo; echo ===; stat -c %a /mnt/t");
    let out = run_ok(&b);
    let (info, rest) = out.split_once("===").expect("separator");
    let m = mount_at(info, "/mnt/t");
    assert_eq!(m.fstype, "tmpfs", "{m:?}");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(m.options.iter().any(|x| x == o), "{o} missing: {m:?}");
    }
    assert!(
        m.super_options.iter().any(|x| x == "size=1024k"),
        "size=1m missing: {m:?}"
    );
    assert!(
        m.super_options.iter().any(|x| x == "mode=700"),
        "mode=700 missing: {m:?}"
    );
    assert_eq!(rest.trim(), "700");
}

#[test]
fn bind_mount_of_host_dir() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("hello"), "from the host\n").unwrap();
    let mut b = Bundle::new();
    b.mount(json!({"destination": "/mnt/host", "type": "bind", "source": host.path(), "options": ["rbind", "rw"]}));
    b.sh("cat /mnt/host/hello; echo from-container > /mnt/host/back");
    let out = run_ok(&b);
    assert_eq!(out, "from the host\n");
    assert_eq!(
        fs::read_to_string(host.path().join("back")).unwrap(),
        "from-container\n"
    );
}

#[test]
fn read_only_bind_mount() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("f"), "x").unwrap();
    let mut b = Bundle::new();
    b.mount(json!({"destination": "/mnt/ro", "type": "bind", "source": host.path(), "options": ["rbind", "ro"]}));
    b.sh("cat /mnt/ro/f; echo; if touch /mnt/ro/new 2>/dev/null; then echo write-ok; else echo write-failed; fi; \
          if echo y > /mnt/ro/f; then echo overwrite-ok; else echo overwrite-failed; fi");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["x", "write-failed", "overwrite-failed"],
        "{out}"
    );
    assert!(!host.path().join("new").exists());
    assert_eq!(fs::read_to_string(host.path().join("f")).unwrap(), "x");
}

#[test]
fn bind_mount_of_single_file() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("data.txt");
    fs::write(&file, "single file\n").unwrap();
    let mut b = Bundle::new();
    b.mount(json!({"destination": "/etc/deep/data.txt", "type": "bind", "source": file, "options": ["bind"]}));
    b.sh("cat /etc/deep/data.txt; test -f /etc/deep/data.txt && echo is-file");
    let out = run_ok(&b);
    assert_eq!(out, "single file\nis-file\n");
}

#[test]
fn mount_through_symlink_cannot_escape_rootfs() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("target");
    fs::create_dir(&host_dir).unwrap();
    let mut b = Bundle::new();
    // Absolute and relative symlinks in the rootfs that point outside it on the host.
    symlink(&host_dir, b.rootfs().join("evil")).unwrap();
    let depth = b.rootfs().components().count();
    let rel = format!(
        "{}{}",
        "../".repeat(depth + 2),
        host_dir.to_str().unwrap().trim_start_matches('/')
    );
    symlink(&rel, b.rootfs().join("evil2")).unwrap();
    b.mount(json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"}));
    b.mount(json!({"destination": "/evil2/y", "type": "tmpfs", "source": "tmpfs"}));
    b.sh("echo inside > /evil/x/file; echo inside > /evil2/y/file");
    let hj = Hyperjail::new();
    let c = hj.container("escape");
    let out = c.run(&b, &[]);
    // Succeeding (the mounts resolved inside the rootfs) and refusing are both fine;
    // touching the host is not.
    let entries: Vec<_> = fs::read_dir(&host_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "the mount escaped the rootfs into {}: {entries:?}; run: {out}",
        host_dir.display()
    );
    let m = mounts_under(host.path());
    assert!(m.is_empty(), "mounts on the host dir: {m:?}");
    c.delete_force();
    c.assert_nothing_left(&b);
}

#[test]
fn readonly_root() {
    require_root!();
    let mut b = Bundle::new();
    b.config_mut()["root"]["readonly"] = json!(true);
    b.mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    b.sh(
        "if touch /newfile 2>/dev/null; then echo root-writable; else echo root-ro; fi; \
          touch /tmp/ok && echo tmp-writable; cat /proc/self/mountinfo",
    );
    let out = run_ok(&b);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("root-ro"), "{out}");
    assert_eq!(lines.next(), Some("tmp-writable"), "{out}");
    let root = mount_at(&out, "/");
    assert!(
        root.options.iter().any(|o| o == "ro"),
        "/ not mounted ro: {root:?}"
    );
    assert!(!b.rootfs().join("newfile").exists());
}

#[test]
fn masked_paths() {
    require_root!();
    let mut b = Bundle::new();
    b.write_rootfs_file("/etc/secret-file", "secret\n");
    b.write_rootfs_file("/etc/secret-dir/inner", "secret too\n");
    b.config_mut()["linux"]["maskedPaths"] = json!([
        "/etc/secret-file",
        "/etc/secret-dir",
        "/proc/kcore",
        "/does/not/exist"
    ]);
    b.sh("echo \"file=[$(cat /etc/secret-file)]\"; echo \"dir=[$(ls -A /etc/secret-dir)]\"; \
          echo \"kcore=$(head -c 16 /proc/kcore | wc -c)\"; \
          if echo x > /etc/secret-dir/new 2>/dev/null; then echo dir-writable; else echo dir-ro; fi");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["file=[]", "dir=[]", "kcore=0", "dir-ro"],
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(b.rootfs().join("etc/secret-file")).unwrap(),
        "secret\n"
    );
}

#[test]
fn readonly_paths() {
    require_root!();
    let mut b = Bundle::new();
    b.write_rootfs_file("/data/f", "orig");
    b.config_mut()["linux"]["readonlyPaths"] = json!(["/data", "/proc/sys"]);
    b.sh("cat /data/f; echo; if touch /data/new 2>/dev/null; then echo data-writable; else echo data-ro; fi; \
          if echo 1 > /proc/sys/kernel/domainname 2>/dev/null; then echo sys-writable; else echo sys-ro; fi; \
          touch /other && echo other-writable");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["orig", "data-ro", "sys-ro", "other-writable"],
        "{out}"
    );
    assert!(!b.rootfs().join("data/new").exists());
}

#[test]
fn default_devices() {
    require_root!();
    let mut b = Bundle::new();
    b.sh(
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d; done; \
          for l in fd stdin stdout stderr; do echo \"/dev/$l -> $(readlink /dev/$l)\"; done; \
          test -c /dev/ptmx -o -L /dev/ptmx && echo ptmx-ok; \
          echo data > /dev/null && echo null-writable; \
          echo \"zero=$(head -c 4 /dev/zero | od -An -tx1 | tr -d ' ')\"; \
          echo \"urandom=$(head -c 8 /dev/urandom | wc -c)\"",
    );
    let out = run_ok(&b);
    let want = [
        "/dev/null character special file 1:3",
        "/dev/zero character special file 1:5",
        "/dev/full character special file 1:7",
        "/dev/random character special file 1:8",
        "/dev/urandom character special file 1:9",
        "/dev/tty character special file 5:0",
        "/dev/fd -> /proc/self/fd",
        "/dev/stdin -> /proc/self/fd/0",
        "/dev/stdout -> /proc/self/fd/1",
        "/dev/stderr -> /proc/self/fd/2",
        "ptmx-ok",
        "null-writable",
        "zero=00000000",
        "urandom=8",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
}

#[test]
fn configured_devices() {
    require_root!();
    let mut b = Bundle::new();
    b.config_mut()["linux"]["devices"] = json!([
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 1234, "gid": 4321},
        {"path": "/dev/sub/myzero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o640, "uid": 0, "gid": 4321}
    ]);
    // Run as the owner: root here has no CAP_DAC_OVERRIDE.
    b.config_mut()["process"]["user"] = json!({"uid": 1234, "gid": 4321});
    // The device cgroup must let the container use them.
    b.config_mut()["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"}
    ]);
    b.sh("stat -c '%F %t:%T %a %u %g' /dev/mynull /dev/sub/myzero; echo hi > /dev/mynull && echo write-ok; \
          head -c 2 /dev/sub/myzero | od -An -tx1 | tr -d ' '");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "character special file 1:3 600 1234 4321",
            "character special file 1:5 640 0 4321",
            "write-ok",
            "0000"
        ],
        "{out}"
    );
}

#[test]
fn device_cgroup_denies_unlisted_devices() {
    require_root!();
    let mut b = Bundle::new();
    // The process makes a node for /dev/kmsg (1:11) itself: the default rules allow mknod
    // ("c *:* m") but not opening it, and root may write to /dev/kmsg without any
    // capability, so only the device cgroup stands in the way.
    let caps = ["CAP_MKNOD", "CAP_KILL"];
    b.config_mut()["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    b.sh("mknod /mykmsg c 1 11 && echo node-made; \
          if echo hyperjail-test-device-cgroup > /mykmsg 2>/dev/null; then echo kmsg-writable; else echo kmsg-denied; fi");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["node-made", "kmsg-denied"],
        "{out}"
    );
}

#[test]
fn rootfs_propagation_modes() {
    require_root!();
    for mode in ["private", "rprivate", "slave", "rslave"] {
        let mut b = Bundle::new();
        b.config_mut()["linux"]["rootfsPropagation"] = json!(mode);
        b.args(&["cat", "/proc/self/mountinfo"]);
        let out = run_ok(&b);
        let root = mount_at(&out, "/");
        assert!(
            !root.optional.iter().any(|o| o.starts_with("shared:")),
            "{mode}: / is shared: {root:?}"
        );
    }
    let mut b = Bundle::new();
    b.config_mut()["linux"]["rootfsPropagation"] = json!("bogus");
    let hj = Hyperjail::new();
    let c = hj.container("prop");
    c.create(&b, &[]).assert_error(&["propagation", "bogus"]);
    c.assert_nothing_left(&b);
}

#[test]
fn no_pivot() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.write_rootfs_file("/only-in-rootfs", "yes\n");
    b.sh("cat /only-in-rootfs; test -e /work && echo host-visible || echo host-hidden; ls /proc/1/ >/dev/null && echo proc-ok");
    let c = hj.container("nopivot");
    let out = c.run(&b, &["--no-pivot"]);
    out.assert_ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["yes", "host-hidden", "proc-ok"],
        "{out}"
    );
    c.delete_force();
    c.assert_nothing_left(&b);
}

#[test]
fn sysctl_in_network_namespace() {
    require_root!();
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host_before.trim() == "1" { "0" } else { "1" };
    let mut b = Bundle::new();
    assert!(
        b.namespaces().iter().any(|n| n == "network"),
        "the default spec has a network namespace"
    );
    b.config_mut()["linux"]["sysctl"] =
        json!({"net.ipv4.ip_forward": want, "kernel.domainname": "sysctl.example"});
    b.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname");
    let out = run_ok(&b);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [want, "sysctl.example"],
        "{out}"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_before,
        "host sysctl changed"
    );
}

#[test]
fn sysctl_outside_namespace_is_rejected() {
    require_root!();
    let host_before = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host_before.trim() == "1" { "0" } else { "1" };
    let mut b = Bundle::new();
    b.remove_namespace("network");
    b.config_mut()["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": want});
    // Without a read-only /proc/sys only the runtime's own check stands between the
    // config and the host's sysctl (the test puts the host's value back if it falls).
    b.config_mut()["linux"]["readonlyPaths"] = json!([]);
    let hj = Hyperjail::new();
    let c = hj.container("sysctl");
    let out = c.run(&b, &[]);
    let host_after = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    if host_after != host_before {
        fs::write("/proc/sys/net/ipv4/ip_forward", &host_before).unwrap();
    }
    assert_eq!(
        host_after, host_before,
        "a container changed the host's sysctl: {out}"
    );
    // The refusal names the sysctl and the reason (as runc: "sysctl ... not allowed in
    // host network namespace").
    out.assert_error(&["namespace"]);
    assert!(out.stderr.contains("net.ipv4.ip_forward"), "{out}");
    c.assert_nothing_left(&b);
}

#[test]
fn cwd_through_symlink_cannot_escape_rootfs() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    let mut b = Bundle::new();
    symlink(host.path(), b.rootfs().join("evilcwd")).unwrap();
    b.config_mut()["process"]["cwd"] = json!("/evilcwd/sub");
    b.args(&["pwd"]);
    let hj = Hyperjail::new();
    let c = hj.container("cwdescape");
    let out = c.run(&b, &[]);
    let entries: Vec<_> = fs::read_dir(host.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "making the cwd escaped the rootfs: {entries:?}; run: {out}"
    );
    c.delete_force();
    c.assert_nothing_left(&b);
}

#[test]
fn mount_destination_symlink_resolves_inside_rootfs() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("f"), "through the link\n").unwrap();
    let mut b = Bundle::new();
    fs::create_dir(b.rootfs().join("real")).unwrap();
    // An absolute link, meant for the container: /link -> /real inside it.
    symlink("/real", b.rootfs().join("link")).unwrap();
    b.mount(json!({"destination": "/link", "type": "bind", "source": host.path(), "options": ["rbind"]}));
    b.sh("cat /real/f");
    let out = run_ok(&b);
    assert_eq!(out, "through the link\n");
}
