//! Security settings seen from inside the container: capability sets, no_new_privs,
//! seccomp (actions, errno, allow-lists, argument conditions, bad profiles), user
//! namespaces, rootless operation, and LSM settings on a host without an LSM.

use hyperjail_tests::{
    cap_mask, hyperjail_bin, parse_cap_hex, require_root, skip_unless, status_field, Bundle,
    Hyperjail, MARK_VAR,
};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Runs the bundle's process with `run`, asserts exit 0, returns stdout.
fn run_ok(b: &Bundle) -> String {
    let hj = Hyperjail::new();
    let c = hj.container("sec");
    let out = c.run(b, &[]);
    out.assert_ok();
    out.stdout
}

fn cap_field(status: &str, key: &str) -> u64 {
    parse_cap_hex(&status_field(status, key).unwrap_or_else(|| panic!("no {key} in {status}")))
}

/// Lines of output with runs of whitespace collapsed to one space.
fn norm_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn seccomp(profile: Value) -> impl FnOnce(&mut Bundle) {
    move |b: &mut Bundle| {
        b.config_mut()["linux"]["seccomp"] = profile;
    }
}

// ---------------------------------------------------------------------------------------
// Capabilities and no_new_privs
// ---------------------------------------------------------------------------------------

#[test]
fn capabilities_five_sets_with_ambient_for_non_root() {
    require_root!();
    let bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"];
    let mut b = Bundle::new();
    b.config_mut()["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.config_mut()["process"]["capabilities"] = json!({
        "bounding": bounding,
        "effective": ["CAP_NET_RAW", "CAP_KILL"],
        "permitted": ["CAP_NET_RAW", "CAP_KILL"],
        "inheritable": ["CAP_NET_RAW"],
        "ambient": ["CAP_NET_RAW"],
    });
    b.args(&["cat", "/proc/self/status"]);
    let st = run_ok(&b);
    assert_eq!(
        status_field(&st, "Uid").as_deref(),
        Some("1000\t1000\t1000\t1000"),
        "{st}"
    );
    let raw = cap_mask(&["CAP_NET_RAW"]);
    assert_eq!(
        cap_field(&st, "CapBnd"),
        cap_mask(&bounding),
        "CapBnd: {st}"
    );
    assert_eq!(cap_field(&st, "CapInh"), raw, "CapInh: {st}");
    assert_eq!(cap_field(&st, "CapAmb"), raw, "CapAmb: {st}");
    // Across execve a non-root process keeps exactly its ambient set in P and E: CAP_KILL
    // (permitted but not ambient) is gone, CAP_NET_RAW stays.
    assert_eq!(cap_field(&st, "CapPrm"), raw, "CapPrm: {st}");
    assert_eq!(cap_field(&st, "CapEff"), raw, "CapEff: {st}");
}

#[test]
fn capabilities_of_root_are_limited_by_bounding_set() {
    require_root!();
    let bounding = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_NET_RAW"];
    let mut b = Bundle::new();
    b.config_mut()["process"]["capabilities"] = json!({
        "bounding": bounding, "effective": bounding, "permitted": bounding,
        "inheritable": [], "ambient": [],
    });
    // Without CAP_SYS_ADMIN, root cannot mount; without CAP_KILL it still can signal
    // itself; without CAP_FOWNER chmod of a file owned by someone else fails.
    b.sh("cat /proc/self/status; touch /tmp/f; chown 1234 /tmp/f; \
          if chmod 600 /tmp/f 2>/dev/null; then echo chmod-ok; else echo chmod-denied; fi; \
          mkdir -p /mnt; if mount -t tmpfs none /mnt 2>/dev/null; then echo mount-ok; else echo mount-denied; fi");
    let out = run_ok(&b);
    for key in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(cap_field(&out, key), cap_mask(&bounding), "{key}: {out}");
    }
    assert_eq!(cap_field(&out, "CapInh"), 0, "CapInh: {out}");
    assert_eq!(cap_field(&out, "CapAmb"), 0, "CapAmb: {out}");
    let lines = norm_lines(&out);
    assert!(lines.iter().any(|l| l == "chmod-denied"), "{out}");
    assert!(lines.iter().any(|l| l == "mount-denied"), "{out}");
}

#[test]
fn no_new_privs_zero_and_one() {
    require_root!();
    for (flag, want) in [(false, "0"), (true, "1")] {
        let mut b = Bundle::new();
        b.config_mut()["process"]["noNewPrivileges"] = json!(flag);
        b.args(&["cat", "/proc/self/status"]);
        let out = run_ok(&b);
        assert_eq!(
            status_field(&out, "NoNewPrivs").as_deref(),
            Some(want),
            "noNewPrivileges={flag}: {out}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Seccomp
// ---------------------------------------------------------------------------------------

#[test]
fn seccomp_mode_and_filter_count() {
    require_root!();
    // No profile: mode 0.
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/status"]);
    let out = run_ok(&b);
    assert_eq!(status_field(&out, "Seccomp").as_deref(), Some("0"), "{out}");

    // With a profile, with and without no_new_privs (without it the filter must be
    // loaded while the process still has CAP_SYS_ADMIN).
    for nnp in [true, false] {
        let mut b = Bundle::new();
        b.config_mut()["process"]["noNewPrivileges"] = json!(nnp);
        b.config_mut()["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["kexec_load"], "action": "SCMP_ACT_ERRNO"}]
        });
        b.args(&["cat", "/proc/self/status"]);
        let out = run_ok(&b);
        assert_eq!(
            status_field(&out, "Seccomp").as_deref(),
            Some("2"),
            "nnp={nnp}: {out}"
        );
        assert_eq!(
            status_field(&out, "Seccomp_filters").as_deref(),
            Some("1"),
            "nnp={nnp}: {out}"
        );
        assert_eq!(
            status_field(&out, "NoNewPrivs").as_deref(),
            Some(if nnp { "1" } else { "0" }),
            "nnp={nnp}: {out}"
        );
    }
}

#[test]
fn seccomp_errno_default_and_custom_errno_ret() {
    require_root!();
    // errnoRet absent: EPERM. errnoRet 38: ENOSYS, visible in busybox's error text.
    for (ret, text) in [
        (None, "Operation not permitted"),
        (Some(38), "Function not implemented"),
    ] {
        let mut rule = json!({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"});
        if let Some(r) = ret {
            rule["errnoRet"] = json!(r);
        }
        let mut b = Bundle::new();
        b.config_mut()["linux"]["seccomp"] =
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]});
        b.sh("mkdir /tmp/denied 2>&1; echo status=$?; touch /tmp/allowed && echo touch-ok");
        let out = run_ok(&b);
        assert!(
            out.contains(text),
            "errnoRet {ret:?}: mkdir should fail with {text:?}: {out}"
        );
        assert!(out.contains("status=1"), "errnoRet {ret:?}: {out}");
        assert!(out.contains("touch-ok"), "errnoRet {ret:?}: {out}");
        assert!(!b.rootfs().join("tmp/denied").exists());
        assert!(b.rootfs().join("tmp/allowed").exists());
    }
}

/// The syscalls busybox `true` makes (static glibc start-up, then exit).
const TRUE_SYSCALLS: &[&str] = &[
    "execve",
    "brk",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "readlink",
    "getuid",
    "prctl",
    "mprotect",
    "getrandom",
    "exit",
    "exit_group",
];

#[test]
fn seccomp_default_errno_with_allow_list() {
    require_root!();
    let profile = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": TRUE_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]
    });
    let hj = Hyperjail::new();

    // `true` needs nothing outside the list: exit 0.
    let mut b = Bundle::new();
    b.config_mut()["process"]["noNewPrivileges"] = json!(true);
    b.config_mut()["linux"]["seccomp"] = profile.clone();
    b.args(&["true"]);
    let out = hj.container("allow").run(&b, &[]);
    out.assert_ok();

    // `touch` needs openat/utimensat, which the default action refuses: it fails and
    // creates nothing (it cannot even write its error message).
    let mut b = Bundle::new();
    b.config_mut()["process"]["noNewPrivileges"] = json!(true);
    b.config_mut()["linux"]["seccomp"] = profile;
    b.args(&["touch", "/tmp/should-not-exist"]);
    let out = hj.container("allow2").run(&b, &[]);
    assert_eq!(out.code, Some(1), "touch should fail with 1: {out}");
    assert!(!b.rootfs().join("tmp/should-not-exist").exists(), "{out}");
}

#[test]
fn seccomp_kill_process_gives_sigsys() {
    require_root!();
    let hj = Hyperjail::new();
    for action in ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action}]
        });
        // The container process itself makes the call: run exits 128+SIGSYS.
        let mut b = Bundle::new();
        b.config_mut()["linux"]["seccomp"] = profile.clone();
        b.args(&["mkdir", "/tmp/d"]);
        let out = hj.container("kill").run(&b, &[]);
        assert_eq!(out.code, Some(159), "{action}: run should exit 159: {out}");
        assert!(!b.rootfs().join("tmp/d").exists(), "{action}");

        // A child of the shell makes it: the shell sees 159 and carries on.
        let mut b = Bundle::new();
        b.config_mut()["linux"]["seccomp"] = profile;
        b.sh("mkdir /tmp/d; echo status=$?");
        let out = hj.container("kill2").run(&b, &[]);
        out.assert_ok();
        assert_eq!(out.stdout.trim(), "status=159", "{action}: {out}");
    }
}

#[test]
fn seccomp_argument_condition() {
    require_root!();
    // personality(PER_LINUX32 = 8) is refused; personality(PER_LINUX = 0) is not.
    let mut b = Bundle::new();
    b.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]
        }]
    });
    b.sh("linux64 true; echo linux64=$?; linux32 true 2>&1; echo linux32=$?");
    let out = run_ok(&b);
    let lines = norm_lines(&out);
    assert!(lines.iter().any(|l| l == "linux64=0"), "{out}");
    assert!(lines.iter().any(|l| l == "linux32=1"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");

    // Masked-equal: (arg0 & 0xff) == 8 with a value that has high bits set is refused too.
    let mut b = Bundle::new();
    b.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]
        }]
    });
    b.sh("linux64 true; echo linux64=$?; linux32 true 2>/dev/null; echo linux32=$?");
    let out = run_ok(&b);
    assert_eq!(norm_lines(&out), ["linux64=0", "linux32=1"], "{out}");
}

#[test]
fn seccomp_unknown_syscall_name_is_ignored() {
    require_root!();
    let mut b = Bundle::new();
    b.config_mut()["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["hjtest_no_such_syscall", "mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["another_bogus_syscall"], "action": "SCMP_ACT_KILL"}
        ]
    });
    b.sh("grep Seccomp: /proc/self/status; mkdir /tmp/d 2>/dev/null || echo mkdir-denied");
    let out = run_ok(&b);
    assert_eq!(norm_lines(&out), ["Seccomp: 2", "mkdir-denied"], "{out}");
}

fn expect_create_error(tag: &str, edit: impl FnOnce(&mut Bundle), mentions: &[&str]) {
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    edit(&mut b);
    let c = hj.container(tag);
    c.create(&b, &[]).assert_error(mentions);
    c.assert_nothing_left(&b);
    assert!(
        hj.list_json().is_empty(),
        "a container is listed after a failed create"
    );
}

#[test]
fn seccomp_bad_profiles_are_rejected() {
    require_root!();
    expect_create_error(
        "scbadact",
        seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_EXPLODE"}]
        })),
        &["SCMP_ACT_EXPLODE"],
    );
    expect_create_error(
        "scbaddef",
        seccomp(json!({"defaultAction": "SCMP_ACT_NOPE"})),
        &["SCMP_ACT_NOPE"],
    );
    expect_create_error(
        "scbadarch",
        seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_BOGUS"]
        })),
        &["SCMP_ARCH_BOGUS"],
    );
    expect_create_error(
        "scbadidx",
        seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 7, "value": 8, "op": "SCMP_CMP_EQ"}]}]
        })),
        &["index", "argument", "arg"],
    );
    expect_create_error(
        "scbadop",
        seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_SOMETIMES"}]}]
        })),
        &["SCMP_CMP_SOMETIMES"],
    );
    expect_create_error(
        "scerrallow",
        seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5}]
        })),
        &["errnoRet"],
    );
    expect_create_error(
        "scnotify",
        seccomp(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })),
        &["listenerPath", "listener", "notify"],
    );
}

// ---------------------------------------------------------------------------------------
// User namespaces and rootless
// ---------------------------------------------------------------------------------------

#[test]
fn user_namespace_uid_and_gid_maps_inside() {
    require_root!();
    let mut b = Bundle::new();
    b.namespace("user", None);
    b.config_mut()["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": 410000, "size": 1000},
        {"containerID": 1000, "hostID": 420000, "size": 10}
    ]);
    b.config_mut()["linux"]["gidMappings"] =
        json!([{"containerID": 0, "hostID": 430000, "size": 65536}]);
    b.remove_mount("/sys/fs/cgroup");
    std::os::unix::fs::chown(b.rootfs().join("tmp"), Some(410000), Some(430000)).unwrap();
    b.sh(
        "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map; echo --; id -u; id -g; \
          grep CapEff /proc/self/status; touch /tmp/owned; stat -c %u:%g /tmp/owned",
    );
    let out = run_ok(&b);
    let lines = norm_lines(&out);
    let sep: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| *l == "--")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(sep.len(), 2, "{out}");
    assert_eq!(
        lines[..sep[0]],
        ["0 410000 1000", "1000 420000 10"],
        "uid_map: {out}"
    );
    assert_eq!(
        lines[sep[0] + 1..sep[1]],
        ["0 430000 65536"],
        "gid_map: {out}"
    );
    assert_eq!(lines[sep[1] + 1..sep[1] + 3], ["0", "0"], "{out}");
    assert_eq!(lines.last().map(String::as_str), Some("0:0"), "{out}");
    // On the host, the file belongs to the mapped ids.
    let meta = fs::metadata(b.rootfs().join("tmp/owned")).expect("file made in the container");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (410000, 430000));
}

const ROOTLESS_USER: &str = "hjtest";

/// The uid and gid of `user`, creating the user when missing.
fn ensure_user(user: &str) -> Option<(u32, u32)> {
    let lookup = || -> Option<(u32, u32)> {
        let u = Command::new("id").args(["-u", user]).output().ok()?;
        let g = Command::new("id").args(["-g", user]).output().ok()?;
        if !u.status.success() || !g.status.success() {
            return None;
        }
        Some((
            String::from_utf8_lossy(&u.stdout).trim().parse().ok()?,
            String::from_utf8_lossy(&g.stdout).trim().parse().ok()?,
        ))
    };
    if let Some(ids) = lookup() {
        return Some(ids);
    }
    let st = Command::new("useradd")
        .args(["-m", "-s", "/bin/sh", user])
        .status()
        .ok()?;
    if !st.success() {
        return None;
    }
    lookup()
}

/// Runs `script` with /bin/sh as `user` (through su), returning (exit code, stdout, stderr).
fn as_user(user: &str, script: &str) -> (Option<i32>, String, String) {
    let out = Command::new("su")
        .args([user, "-s", "/bin/sh", "-c", script])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("su");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown")
        .arg("-hR")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(st.success(), "chown -R {}", path.display());
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn rootless_run_as_unprivileged_user() {
    require_root!();
    skip_unless!(
        Path::new("/usr/bin/su").exists() || Path::new("/bin/su").exists(),
        "no su"
    );
    let max_userns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1);
    skip_unless!(max_userns > 0, "user namespaces are disabled");
    let Some((uid, gid)) = ensure_user(ROOTLESS_USER) else {
        println!("SKIP rootless_run_as_unprivileged_user: cannot create user {ROOTLESS_USER}");
        return;
    };

    // The user needs a binary it can execute: a copy in a directory it can read.
    let work = tempfile::Builder::new()
        .prefix("hj-rootless-")
        .tempdir()
        .unwrap();
    let bin = work.path().join("hyperjail");
    fs::copy(hyperjail_bin(), &bin).expect("copy hyperjail");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let state_root = work.path().join("state");

    let mut b = Bundle::new();
    let marker = b.marker().to_string();
    fs::remove_file(b.path().join("config.json")).ok();
    chown_r(work.path(), uid, gid);
    chown_r(b.path(), uid, gid);

    let (code, out, err) = as_user(
        ROOTLESS_USER,
        &format!(
            "{} spec --rootless -b {}",
            sh_quote(bin.to_str().unwrap()),
            sh_quote(b.path().to_str().unwrap())
        ),
    );
    assert_eq!(code, Some(0), "spec --rootless failed: {out}{err}");
    let text = fs::read_to_string(b.path().join("config.json")).expect("spec wrote config.json");
    let mut config: Value = serde_json::from_str(&text).expect("config is JSON");
    let types: Vec<&str> = config["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    assert!(
        types.contains(&"user"),
        "spec --rootless has no user namespace: {config}"
    );
    let umap = &config["linux"]["uidMappings"][0];
    assert_eq!(
        umap["hostID"].as_u64(),
        Some(uid as u64),
        "spec --rootless must map the caller's uid: {config}"
    );
    config["process"]["terminal"] = json!(false);
    config["root"]["readonly"] = json!(false);
    config["process"]["args"] = json!([
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; cat /proc/self/gid_map; touch /tmp/mine"
    ]);
    config["process"]["env"]
        .as_array_mut()
        .expect("env")
        .push(json!(format!("{MARK_VAR}={marker}")));
    *b.config_mut() = config;
    b.save();
    chown_r(b.path(), uid, gid);

    let id = hyperjail_tests::unique_id("rootless");
    let (code, out, err) = as_user(
        ROOTLESS_USER,
        &format!(
            "{MARK_VAR}={marker} {} --root {} run --bundle {} {id}",
            sh_quote(bin.to_str().unwrap()),
            sh_quote(state_root.to_str().unwrap()),
            sh_quote(b.path().to_str().unwrap())
        ),
    );
    // Clean up whatever happened.
    let _ = as_user(
        ROOTLESS_USER,
        &format!(
            "{} --root {} delete --force {id}",
            sh_quote(bin.to_str().unwrap()),
            sh_quote(state_root.to_str().unwrap())
        ),
    );
    assert_eq!(code, Some(0), "rootless run failed:\n{out}\n{err}");
    let lines = norm_lines(&out);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("0"),
        "id -u inside: {out}"
    );
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some(format!("0 {uid} 1").as_str()),
        "uid_map: {out}"
    );
    assert!(
        lines.get(2).is_some_and(|l| l.starts_with("0 ")),
        "gid_map: {out}"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(b.rootfs().join("tmp/mine")).expect("file made in the container");
    assert_eq!(
        meta.uid(),
        uid,
        "root in the container is the user on the host"
    );
    assert!(
        !state_root.join(&id).exists(),
        "state of {id} left after run"
    );
}

// ---------------------------------------------------------------------------------------
// LSMs (this host has none)
// ---------------------------------------------------------------------------------------

fn host_has_apparmor() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

fn host_has_selinux() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

#[test]
fn apparmor_profile_without_apparmor_fails() {
    require_root!();
    skip_unless!(!host_has_apparmor(), "the host has AppArmor");
    expect_create_error(
        "apparmor",
        |b| {
            b.config_mut()["process"]["apparmorProfile"] = json!("hjtest-profile");
        },
        &["apparmor"],
    );
}

#[test]
fn selinux_label_without_selinux_fails() {
    require_root!();
    skip_unless!(!host_has_selinux(), "the host has SELinux");
    expect_create_error(
        "selinux",
        |b| {
            b.config_mut()["process"]["selinuxLabel"] =
                json!("system_u:system_r:container_t:s0:c1,c2");
        },
        &["selinux"],
    );
}
