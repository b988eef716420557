//! The verbs that manage a live container: exec, ps, pause/resume, update, events.

use hyperjail_tests::{
    cap_mask, cgroup_dir_v1, hyperjail_bin, parse_cap_hex, pid_alive, read_pty, receive_console,
    require_root, status_field, wait_until, Bundle, Container, Hyperjail, Output,
};
use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Creates and starts a container running `script` (with `sh -c`) from bundle `b`.
fn start_sh<'a>(hj: &'a Hyperjail, b: &mut Bundle, tag: &str, script: &str) -> Container<'a> {
    b.sh(script);
    let c = hj.container(tag);
    c.create(b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("running");
    c
}

/// A running container whose process sleeps.
fn sleeper<'a>(hj: &'a Hyperjail, b: &mut Bundle, tag: &str) -> Container<'a> {
    start_sh(hj, b, tag, "exec sleep 1000")
}

/// `exec [flags...] ID [cmd...]`.
fn exec(hj: &Hyperjail, c: &Container<'_>, flags: &[&str], cmd: &[&str]) -> Output {
    hj.call(["exec"])
        .args(flags.iter().copied())
        .arg(&c.id)
        .args(cmd.iter().copied())
        .output()
}

fn cgroup_path(c: &Container<'_>) -> String {
    format!("/hyperjail/{}", c.id)
}

fn read_cg(ctrl: &str, c: &Container<'_>, file: &str) -> String {
    let dir = cgroup_dir_v1(ctrl, &cgroup_path(c)).unwrap_or_else(|| panic!("no {ctrl} hierarchy"));
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn cap_eff(status: &str) -> u64 {
    parse_cap_hex(&status_field(status, "CapEff").unwrap_or_else(|| panic!("no CapEff: {status}")))
}

// ---------------------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------------------

#[test]
fn exec_output_and_exit_status() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "exec");
    let out = exec(
        &hj,
        &c,
        &[],
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7"],
    );
    assert_eq!(out.code, Some(7), "exit status must pass through: {out}");
    assert_eq!(out.stdout, "to-stdout\n", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    exec(&hj, &c, &[], &["true"]).assert_ok();
    // Killed by a signal: 128+N.
    let out = exec(&hj, &c, &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.code, Some(137), "{out}");
    // stdin reaches the process.
    let out = hj
        .call(["exec", &c.id, "tr", "a-z", "A-Z"])
        .stdin(b"hello\n")
        .output();
    out.assert_ok();
    assert_eq!(out.stdout, "HELLO\n", "{out}");
    // The container keeps running.
    assert_eq!(c.status().as_deref(), Some("running"));
}

#[test]
fn exec_env_cwd_and_user() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.env("FROM_CONFIG=yes");
    let c = sleeper(&hj, &mut b, "execenv");
    let out = exec(
        &hj,
        &c,
        &["--env", "FOO=bar baz", "-e", "SECOND=2", "--cwd", "/tmp"],
        &[
            "sh",
            "-c",
            "echo \"FOO=$FOO\"; echo \"SECOND=$SECOND\"; echo \"FROM_CONFIG=$FROM_CONFIG\"; pwd",
        ],
    );
    out.assert_ok();
    assert_eq!(
        out.lines(),
        ["FOO=bar baz", "SECOND=2", "FROM_CONFIG=yes", "/tmp"],
        "{out}"
    );

    let out = exec(
        &hj,
        &c,
        &["--user", "65534"],
        &["sh", "-c", "id -u; id -un"],
    );
    out.assert_ok();
    assert_eq!(out.lines(), ["65534", "nobody"], "{out}");
    let out = exec(
        &hj,
        &c,
        &["-u", "65534:65534", "--additional-gids", "4242"],
        &["sh", "-c", "id -u; id -g; id -G"],
    );
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(lines[..2], ["65534", "65534"], "{out}");
    assert!(
        lines[2].split_whitespace().any(|g| g == "4242"),
        "additional gid missing: {out}"
    );
}

#[test]
fn exec_cap_adds_capability() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "execcap");
    let admin = cap_mask(&["CAP_NET_ADMIN"]);
    let out = exec(&hj, &c, &[], &["cat", "/proc/self/status"]);
    out.assert_ok();
    assert_eq!(
        cap_eff(&out.stdout) & admin,
        0,
        "the default set has no CAP_NET_ADMIN: {out}"
    );
    let base = cap_eff(&out.stdout);
    let out = exec(
        &hj,
        &c,
        &["--cap", "CAP_NET_ADMIN"],
        &["cat", "/proc/self/status"],
    );
    out.assert_ok();
    assert_eq!(cap_eff(&out.stdout), base | admin, "CapEff: {out}");
    let bnd = parse_cap_hex(&status_field(&out.stdout, "CapBnd").unwrap());
    assert_ne!(bnd & admin, 0, "CapBnd: {out}");
    // And it works: only CAP_NET_ADMIN may set an interface up.
    let out = exec(
        &hj,
        &c,
        &["--cap", "CAP_NET_ADMIN"],
        &["ip", "link", "set", "lo", "up"],
    );
    out.assert_ok();
    let out = exec(&hj, &c, &[], &["ip", "link", "set", "lo", "down"]);
    assert_ne!(out.code, Some(0), "without the cap it must fail: {out}");
    // --no-new-privs.
    let out = exec(&hj, &c, &["--no-new-privs"], &["cat", "/proc/self/status"]);
    out.assert_ok();
    assert_eq!(
        status_field(&out.stdout, "NoNewPrivs").as_deref(),
        Some("1"),
        "{out}"
    );
}

#[test]
fn exec_detach_with_pid_file() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "execd");
    let pid_file = b.path().join("exec.pid");
    let out = hj
        .call(["exec", "--detach", "--pid-file"])
        .arg(&pid_file)
        .args([&c.id, "sleep", "777"])
        .timeout(Duration::from_secs(20))
        .output();
    out.assert_ok();
    let text = fs::read_to_string(&pid_file).expect("pid file written");
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file {text:?}"));
    assert!(pid_alive(pid), "the detached process {pid} is not running");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(
        cmdline, b"sleep\x00777\x00",
        "pid file names the wrong process"
    );
    assert_ne!(pid, c.pid());
    // ps lists it.
    let out = hj.run(["ps", "--format", "json", &c.id]);
    out.assert_ok();
    let pids: Vec<i64> = serde_json::from_str(&out.stdout).expect("ps json");
    assert!(pids.contains(&(pid as i64)), "{out}");
}

#[test]
fn exec_process_json_file_and_stdin() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "execp");
    let process = json!({
        "terminal": false,
        "user": {"uid": 65534, "gid": 65534},
        "args": ["sh", "-c", "echo \"$GREETING\"; id -u; pwd; grep NoNewPrivs /proc/self/status"],
        "env": ["PATH=/bin:/usr/bin", "GREETING=from process.json"],
        "cwd": "/etc",
        "noNewPrivileges": true,
        "capabilities": {"bounding": ["CAP_KILL"], "effective": [], "permitted": []}
    });
    let file = b.path().join("process.json");
    fs::write(&file, process.to_string()).unwrap();
    let out = hj
        .call(["exec", "--process"])
        .arg(&file)
        .arg(&c.id)
        .output();
    out.assert_ok();
    let lines: Vec<String> = out
        .lines()
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        ["from process.json", "65534", "/etc", "NoNewPrivs: 1"],
        "{out}"
    );
    // From stdin.
    let out = hj
        .call(["exec", "--process", "-", &c.id])
        .stdin(
            json!({"args": ["sh", "-c", "echo via-stdin; exit 3"], "cwd": "/", "env": ["PATH=/bin"],
                   "user": {"uid": 0, "gid": 0}})
            .to_string()
            .as_bytes(),
        )
        .output();
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(out.stdout, "via-stdin\n", "{out}");
}

#[test]
fn exec_with_tty_over_console_socket() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "exectty");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let running = hj
        .call(["exec", "--tty", "--console-socket"])
        .arg(&sock)
        .args([
            &c.id,
            "sh",
            "-c",
            "tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; exit 5",
        ])
        .spawn();
    let (payload, master) = receive_console(&listener, Duration::from_secs(20));
    let text = read_pty(fs::File::from(master), Duration::from_secs(20), |_| false);
    let out = running.wait();
    assert_eq!(out.code, Some(5), "{out}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "tty should print a pts path (payload {payload:?}): {text:?}"
    );
    assert!(lines.contains(&"stdin-tty"), "{text:?}");
    assert!(lines.contains(&"stdout-tty"), "{text:?}");
    // --tty without --console-socket is an error that leaves the container alone.
    let out = exec(&hj, &c, &["--tty"], &["true"]);
    out.assert_error(&["console"]);
    assert_eq!(c.status().as_deref(), Some("running"));
}

#[test]
fn exec_preserve_fds() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "execfds");
    let dir = tempfile::tempdir().unwrap();
    let f3 = fs::File::create(dir.path().join("fd3")).unwrap();
    let f4 = fs::File::create(dir.path().join("fd4")).unwrap();
    let out = hj
        .call(["exec", "--preserve-fds", "1", &c.id, "sh", "-c"])
        .arg("echo via-fd3 >&3; (echo via-fd4 >&4) 2>/dev/null && echo fd4-open || echo fd4-closed")
        .pass_fds(vec![
            std::os::fd::OwnedFd::from(f3),
            std::os::fd::OwnedFd::from(f4),
        ])
        .output();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "fd4-closed", "{out}");
    assert_eq!(
        fs::read_to_string(dir.path().join("fd3")).unwrap(),
        "via-fd3\n"
    );
    assert_eq!(fs::read_to_string(dir.path().join("fd4")).unwrap(), "");
}

fn ns_of(pid: i32, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
}

#[test]
fn exec_joins_namespaces_root_and_cgroup() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.config_mut()["hostname"] = json!("hj-exec-host");
    b.namespace("cgroup", None);
    let c = sleeper(&hj, &mut b, "execns");
    let init = c.pid();
    let pid_file = b.path().join("exec.pid");
    hj.call(["exec", "-d", "--pid-file"])
        .arg(&pid_file)
        .args([&c.id, "sleep", "999"])
        .output()
        .assert_ok();
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for ns in ["mnt", "uts", "ipc", "net", "pid", "cgroup", "user"] {
        assert_eq!(ns_of(pid, ns), ns_of(init, ns), "namespace {ns}");
    }
    assert_ne!(ns_of(pid, "mnt"), ns_of(std::process::id() as i32, "mnt"));
    let cg = |p: i32| fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cg(pid), cg(init), "the exec'd process is in another cgroup");
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        fs::read_link(format!("/proc/{init}/root")).unwrap()
    );
    let procs = hyperjail_tests::cgroup_procs(
        &cgroup_dir_v1("pids", &cgroup_path(&c)).expect("pids hierarchy"),
    );
    assert!(procs.contains(&pid), "cgroup.procs {procs:?} lacks {pid}");

    // From inside: same hostname; pid 1 is the init; the exec'd process sees a pid-ns pid.
    let out = exec(
        &hj,
        &c,
        &[],
        &[
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$; readlink /proc/1/ns/mnt; readlink /proc/self/ns/mnt",
        ],
    );
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(lines[0], "hj-exec-host", "{out}");
    assert_eq!(lines[1], "sleep 1000", "{out}");
    let inner: i32 = lines[2].parse().unwrap();
    assert!(
        inner > 1 && inner < 1000,
        "a pid in the container's pid namespace expected: {out}"
    );
    assert_eq!(lines[3], lines[4], "{out}");
}

#[test]
fn exec_into_stopped_or_unknown_container_fails() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = hj.container("execstop");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped");
    exec(&hj, &c, &[], &["true"]).assert_error(&["stopped", "not running", "running"]);
    assert_eq!(c.status().as_deref(), Some("stopped"));
    hj.run(["exec", "hj-no-such-container", "true"])
        .assert_error(&["does not exist", "not exist", "no such"]);
    // Executable missing in the container: an error, not a hang.
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "execmissing");
    let out = exec(&hj, &c, &[], &["/no/such/binary"]);
    assert_ne!(out.code, Some(0), "{out}");
    assert_eq!(c.status().as_deref(), Some("running"));
}

// ---------------------------------------------------------------------------------------
// ps
// ---------------------------------------------------------------------------------------

#[test]
fn ps_json_and_table() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "ps");
    let init = c.pid();
    let pid_file = b.path().join("exec.pid");
    hj.call(["exec", "-d", "--pid-file"])
        .arg(&pid_file)
        .args([&c.id, "sleep", "555"])
        .output()
        .assert_ok();
    let epid: i64 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let out = hj.run(["ps", "--format", "json", &c.id]);
    out.assert_ok();
    let mut pids: Vec<i64> = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("ps json is not an array of pids ({e}): {out}"));
    pids.sort();
    let mut want = vec![init as i64, epid];
    want.sort();
    assert_eq!(pids, want, "{out}");

    let out = hj.run(["ps", &c.id]);
    out.assert_ok();
    let lines = out.lines();
    assert!(
        lines[0].contains("PID") && lines[0].contains("CMD"),
        "header: {out}"
    );
    let listed: Vec<i64> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|p| p.parse().ok()))
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(
        listed_sorted, want,
        "the table must list exactly the container's processes: {out}"
    );
    assert!(
        out.stdout.contains("sleep 555"),
        "the exec'd process is missing: {out}"
    );

    // ps arguments are passed on.
    let out = hj.run(["ps", &c.id, "-o", "pid,comm"]);
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"],
        "{out}"
    );
    let mut got: Vec<(i64, String)> = lines[1..]
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace();
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap_or("").to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), 2, "{out}");
    assert!(got.iter().all(|(_, comm)| comm == "sleep"), "{out}");

    hj.run(["ps", "hj-no-such-container"])
        .assert_error(&["does not exist", "not exist"]);
}

// ---------------------------------------------------------------------------------------
// pause / resume
// ---------------------------------------------------------------------------------------

fn read_counter(b: &Bundle) -> u64 {
    fs::read_to_string(b.rootfs().join("tmp/counter"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn pause_freezes_and_resume_thaws() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = start_sh(
        &hj,
        &mut b,
        "pause",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done",
    );
    wait_until(Duration::from_secs(20), "the counter to start", || {
        read_counter(&b) > 2
    });
    hj.run(["pause", &c.id]).assert_ok();
    assert_eq!(c.status().as_deref(), Some("paused"));
    let st = c.state().unwrap();
    assert_eq!(st["status"], "paused", "{st}");
    if let Some(dir) = cgroup_dir_v1("freezer", &cgroup_path(&c)) {
        assert_eq!(
            fs::read_to_string(dir.join("freezer.state"))
                .unwrap()
                .trim(),
            "FROZEN"
        );
    }
    let frozen = read_counter(&b);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        read_counter(&b),
        frozen,
        "the counter advanced while paused"
    );
    let init = c.pid();
    // Pausing twice, and exec while paused, fail without changing anything.
    assert_ne!(hj.run(["pause", &c.id]).code, Some(0));
    assert_ne!(exec(&hj, &c, &[], &["true"]).code, Some(0));
    assert_eq!(c.status().as_deref(), Some("paused"));

    hj.run(["resume", &c.id]).assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    if let Some(dir) = cgroup_dir_v1("freezer", &cgroup_path(&c)) {
        assert_eq!(
            fs::read_to_string(dir.join("freezer.state"))
                .unwrap()
                .trim(),
            "THAWED"
        );
    }
    wait_until(
        Duration::from_secs(20),
        "the counter to advance after resume",
        || read_counter(&b) > frozen + 2,
    );
    assert_ne!(
        hj.run(["resume", &c.id]).code,
        Some(0),
        "resume of a running container"
    );
    // A paused container can be deleted with --force.
    hj.run(["pause", &c.id]).assert_ok();
    c.delete_force().assert_ok();
    assert!(c.state().is_none());
    assert!(!pid_alive(init));
}

// ---------------------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------------------

#[test]
fn update_changes_cgroup_files() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.config_mut()["linux"]["resources"] = json!({
        "memory": {"limit": 134217728},
        "pids": {"limit": 100},
        "cpu": {"shares": 1024}
    });
    let c = sleeper(&hj, &mut b, "update");
    assert_eq!(read_cg("memory", &c, "memory.limit_in_bytes"), "134217728");
    hj.run(["update", "--memory", "64m", "--pids-limit", "10", &c.id])
        .assert_ok();
    assert_eq!(read_cg("memory", &c, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read_cg("pids", &c, "pids.max"), "10");

    hj.run([
        "update",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "100000",
        "--cpu-share",
        "512",
        &c.id,
    ])
    .assert_ok();
    assert_eq!(read_cg("cpu", &c, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read_cg("cpu", &c, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cg("cpu", &c, "cpu.shares"), "512");
    // Earlier settings are untouched.
    assert_eq!(read_cg("memory", &c, "memory.limit_in_bytes"), "67108864");

    let cpus = read_cg("cpuset", &c, "cpuset.cpus");
    hj.run(["update", "--cpuset-cpus", "0", &c.id]).assert_ok();
    assert_eq!(read_cg("cpuset", &c, "cpuset.cpus"), "0");
    hj.run(["update", "--cpuset-cpus", &cpus, &c.id])
        .assert_ok();

    // --resources FILE and -.
    let file = b.path().join("res.json");
    fs::write(
        &file,
        json!({"pids": {"limit": 33}, "memory": {"limit": 50331648}}).to_string(),
    )
    .unwrap();
    hj.call(["update", "--resources"])
        .arg(&file)
        .arg(&c.id)
        .output()
        .assert_ok();
    assert_eq!(read_cg("pids", &c, "pids.max"), "33");
    assert_eq!(read_cg("memory", &c, "memory.limit_in_bytes"), "50331648");
    hj.call(["update", "-r", "-", &c.id])
        .stdin(json!({"pids": {"limit": 44}}).to_string().as_bytes())
        .output()
        .assert_ok();
    assert_eq!(read_cg("pids", &c, "pids.max"), "44");
    // No limit.
    hj.run(["update", "--pids-limit", "-1", &c.id]).assert_ok();
    assert_eq!(read_cg("pids", &c, "pids.max"), "max");

    // Bad input and unknown ids fail with one line.
    hj.run(["update", "--memory", "lots", &c.id])
        .assert_error(&["memory", "lots"]);
    hj.run(["update", "--pids-limit", "5", "hj-no-such-container"])
        .assert_error(&["does not exist", "not exist"]);
    hj.call(["update", "-r", "-", &c.id])
        .stdin(b"{not json")
        .output()
        .assert_error(&["json", "resources"]);
    assert_eq!(read_cg("pids", &c, "pids.max"), "max");
}

#[test]
fn update_pids_limit_is_enforced() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "updpids");
    hj.run(["update", "--pids-limit", "10", &c.id]).assert_ok();
    assert_eq!(read_cg("pids", &c, "pids.max"), "10");
    let out = exec(
        &hj,
        &c,
        &[],
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 5 & done; echo started-all",
        ],
    );
    let current: u32 = read_cg("pids", &c, "pids.current").parse().unwrap();
    assert!(current <= 10, "pids.current {current} exceeds 10");
    let events = read_cg("pids", &c, "pids.events");
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refused > 0,
        "no fork refused under pids.max 10: {events}; {out}"
    );
    assert!(
        out.stderr.to_lowercase().contains("fork") || !out.stdout.contains("started-all"),
        "the shell should have met a refused fork: {out}"
    );
}

// ---------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------

#[test]
fn events_stats_has_cpu_memory_pids() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = start_sh(
        &hj,
        &mut b,
        "stats",
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000",
    );
    let out = hj.run(["events", "--stats", &c.id]);
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "one JSON line expected: {out}");
    let v: Value = serde_json::from_str(lines[0]).expect("stats JSON");
    assert_eq!(v["type"], "stats", "{v}");
    assert_eq!(v["id"], c.id.as_str(), "{v}");
    let d = &v["data"];
    let total = d["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    assert!(total > 0, "data.cpu.usage.total: {v}");
    let mem = d["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    assert!(mem > 0, "data.memory.usage.usage: {v}");
    let pids = d["pids"]["current"].as_u64().unwrap_or(0);
    assert!(pids >= 1, "data.pids.current: {v}");
    hj.run(["events", "--stats", "hj-no-such-container"])
        .assert_error(&["does not exist", "not exist"]);
}

/// A background `events` call whose stdout lines arrive on a channel.
struct EventStream {
    child: std::process::Child,
    rx: mpsc::Receiver<String>,
}

impl EventStream {
    fn start(hj: &Hyperjail, args: &[&str]) -> Self {
        let mut child = Command::new(hyperjail_bin())
            .arg("--root")
            .arg(hj.root())
            .arg("events")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hyperjail events");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        EventStream { child, rx }
    }

    /// Collects lines until `pred` matches one (returned) or `timeout` passes (None).
    fn wait_for(
        &self,
        timeout: Duration,
        seen: &mut Vec<String>,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push(line.clone());
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("events line is not JSON ({e}): {line:?}"));
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the call to end by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_interval_streams_stats_and_ends_with_container() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let c = sleeper(&hj, &mut b, "evint");
    let mut ev = EventStream::start(&hj, &["--interval", "1s", &c.id]);
    let mut seen = Vec::new();
    for n in 0..2 {
        let v = ev.wait_for(Duration::from_secs(10), &mut seen, |v| v["type"] == "stats");
        let v = v.unwrap_or_else(|| panic!("stats line {n} did not come: {seen:?}"));
        assert_eq!(v["id"], c.id.as_str());
    }
    c.kill("KILL").assert_ok();
    let st = ev.wait_exit(Duration::from_secs(15));
    assert!(
        st.is_some(),
        "events did not end after the container stopped: {seen:?}"
    );
}

#[test]
fn events_reports_oom_kill() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let limit: u64 = 32 << 20;
    b.config_mut()["linux"]["resources"]["memory"] = json!({"limit": limit});
    let memsw = cgroup_dir_v1("memory", "/")
        .map(|d| d.join("memory.memsw.limit_in_bytes").exists())
        .unwrap_or(false);
    if memsw {
        b.config_mut()["linux"]["resources"]["memory"]["swap"] = json!(limit);
    }
    // The hog starts when /go appears, once `events` watches; the shell lives on after it.
    let c = start_sh(
        &hj,
        &mut b,
        "oom",
        "while [ ! -e /go ]; do sleep 0.1; done; tail /dev/zero; echo hog-status=$? > /tmp/hog; exec sleep 1000",
    );
    let mut ev = EventStream::start(&hj, &["--interval", "1s", &c.id]);
    let mut seen = Vec::new();
    let first = ev.wait_for(Duration::from_secs(10), &mut seen, |v| v["type"] == "stats");
    assert!(first.is_some(), "no stats line from events: {seen:?}");
    fs::write(b.rootfs().join("go"), "").unwrap();
    let oom = ev.wait_for(Duration::from_secs(60), &mut seen, |v| v["type"] == "oom");
    let hog = fs::read_to_string(b.rootfs().join("tmp/hog")).unwrap_or_default();
    let oom = oom.unwrap_or_else(|| panic!("no oom event (hog: {hog:?}); lines: {seen:?}"));
    assert_eq!(oom["id"], c.id.as_str(), "{oom}");
    wait_until(Duration::from_secs(20), "the hog's status", || {
        b.rootfs().join("tmp/hog").exists()
    });
    let hog = fs::read_to_string(b.rootfs().join("tmp/hog")).unwrap();
    assert_eq!(hog.trim(), "hog-status=137", "the hog was not SIGKILLed");
    let ctl = read_cg("memory", &c, "memory.oom_control");
    let kills: u64 = ctl
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills > 0, "memory.oom_control: {ctl}");
    assert_eq!(c.status().as_deref(), Some("running"));
    c.kill("KILL").assert_ok();
    assert!(
        ev.wait_exit(Duration::from_secs(15)).is_some(),
        "events did not end after the container stopped"
    );
}

#[test]
fn events_and_pause_need_a_live_container() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["true"]);
    let c = hj.container("evstop");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped");
    hj.run(["pause", &c.id])
        .assert_error(&["stopped", "running"]);
    hj.run(["resume", &c.id])
        .assert_error(&["stopped", "paused", "running"]);
    hj.run(["pause", "hj-no-such-container"])
        .assert_error(&["does not exist", "not exist"]);
}
