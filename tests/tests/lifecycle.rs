//! The OCI lifecycle: create, start, state, kill, delete, run, list.

use hyperjail_tests::{pid_alive, require_root, wait_until, Bundle, Hyperjail};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::time::Duration;

#[test]
fn create_start_kill_delete() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    // The user process leaves a trace in the rootfs: it must not run before `start`.
    b.sh("echo started > /started; exec sleep 1000");
    let c = hj.container("life");
    let pidfile = b.path().join("pidfile");
    c.create(&b, &["--pid-file", pidfile.to_str().unwrap()])
        .assert_ok();

    let st = c.state().expect("state after create");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], c.id.as_str(), "{st}");
    assert!(
        st["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{st}"
    );
    let bundle = fs::canonicalize(b.path()).unwrap();
    assert_eq!(
        Path::new(st["bundle"].as_str().expect("bundle")),
        bundle,
        "{st}"
    );
    assert!(
        st["created"].as_str().is_some_and(|s| !s.is_empty()),
        "{st}"
    );
    let pid = st["pid"].as_i64().expect("pid") as i32;
    assert!(pid > 1, "{st}");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "/proc/{pid} missing after create"
    );
    assert!(
        pid_alive(pid),
        "container process {pid} is not alive after create"
    );
    // The harness finds the container's processes by a marker in their environment (here
    // still the runtime's, passed down before exec): check that it can see this one.
    assert!(
        hyperjail_tests::marked_processes(b.marker()).contains(&pid),
        "the harness cannot find the created container's process by its marker"
    );
    let from_file = fs::read_to_string(&pidfile).expect("pid file written");
    assert_eq!(
        from_file.trim(),
        pid.to_string(),
        "pid file disagrees with state"
    );
    assert!(
        !b.rootfs().join("started").exists(),
        "user process ran before start"
    );

    c.start().assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    wait_until(Duration::from_secs(10), "the user process to run", || {
        b.rootfs().join("started").exists()
    });
    assert_eq!(c.pid(), pid, "pid changed across start");

    c.kill("KILL").assert_ok();
    c.wait_status("stopped");
    assert!(!pid_alive(pid), "process {pid} survives SIGKILL");

    c.delete().assert_ok();
    assert!(
        !c.state_dir().exists(),
        "state dir {} left after delete",
        c.state_dir().display()
    );
    let out = hj.run(["state", &c.id]);
    out.assert_error(&[&c.id, "not exist", "no such", "unknown"]);
    c.assert_nothing_left(&b);
}

#[test]
fn run_passes_exit_code_through() {
    require_root!();
    let hj = Hyperjail::new();
    for code in [3, 0, 42] {
        let mut b = Bundle::new();
        b.sh(&format!("exit {code}"));
        let c = hj.container("exit");
        let out = c.run(&b, &[]);
        assert_eq!(out.code, Some(code), "run of `exit {code}`: {out}");
        c.delete_force();
        c.assert_nothing_left(&b);
    }
}

#[test]
fn run_killed_by_sigkill_exits_137() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("k137");
    let running = c.run_call(&b, &[]).spawn();
    wait_until(Duration::from_secs(20), "the container to run", || {
        c.status().as_deref() == Some("running")
    });
    c.kill("KILL").assert_ok();
    let out = running.wait();
    assert_eq!(out.code, Some(137), "run of a SIGKILLed container: {out}");
}

#[test]
fn start_twice_fails_and_container_keeps_running() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("twice");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    let pid = c.pid();
    let out = c.start();
    out.assert_error(&["running", "state", "created"]);
    assert_eq!(c.status().as_deref(), Some("running"));
    assert!(pid_alive(pid), "second start harmed the container");
}

#[test]
fn delete_running_without_force_fails() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("nodel");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    let pid = c.pid();
    let out = c.delete();
    out.assert_error(&["running", "force", "stop"]);
    assert_eq!(
        c.status().as_deref(),
        Some("running"),
        "delete without --force changed the state"
    );
    assert!(
        pid_alive(pid),
        "delete without --force killed the container"
    );
    assert!(c.state_dir().exists());
}

#[test]
fn delete_force_removes_running_container() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("force");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    let pid = c.pid();
    c.delete_force().assert_ok();
    assert!(!pid_alive(pid), "process {pid} survives delete --force");
    assert!(
        c.state().is_none(),
        "state still answers after delete --force"
    );
    c.assert_nothing_left(&b);
}

#[test]
fn delete_force_removes_created_container() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("forcecr");
    c.create(&b, &[]).assert_ok();
    let pid = c.pid();
    c.delete_force().assert_ok();
    assert!(!pid_alive(pid), "process {pid} survives delete --force");
    c.assert_nothing_left(&b);
}

/// Lines of the signal log the container's trap handlers write.
fn sig_log(b: &Bundle) -> Vec<String> {
    fs::read_to_string(b.rootfs().join("sig.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn kill_accepts_names_and_numbers_and_rejects_bad_signals() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh(
        "trap 'echo TERM >> /sig.log' TERM; trap 'echo USR1 >> /sig.log' USR1; \
          trap 'echo HUP >> /sig.log' HUP; echo ready > /ready; \
          while true; do sleep 0.05; done",
    );
    let c = hj.container("sig");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    wait_until(Duration::from_secs(10), "the traps to be set", || {
        b.rootfs().join("ready").exists()
    });
    let pid = c.pid();

    let mut expected = Vec::new();
    for (sig, name) in [
        ("SIGTERM", "TERM"),
        ("15", "TERM"),
        ("TERM", "TERM"),
        ("USR1", "USR1"),
        ("10", "USR1"),
        ("SIGHUP", "HUP"),
        ("1", "HUP"),
    ] {
        c.kill(sig).assert_ok();
        expected.push(name.to_string());
        wait_until(
            Duration::from_secs(10),
            &format!("the container to log signal {sig}"),
            || sig_log(&b).len() >= expected.len(),
        );
        assert_eq!(sig_log(&b), expected, "after kill {sig}");
    }

    for bad in ["SIGNOPE", "NOPE", "99", "1.5", ""] {
        let out = c.kill(bad);
        out.assert_error(&["signal"]);
        assert!(pid_alive(pid), "`kill {bad:?}` harmed the container");
    }
    assert_eq!(sig_log(&b), expected, "a bad signal reached the container");
    assert_eq!(c.status().as_deref(), Some("running"));

    c.kill("KILL").assert_ok();
    c.wait_status("stopped");
    assert!(!pid_alive(pid));
}

#[test]
fn kill_all_signals_every_process() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    // pid 1 (sh, no TERM trap) ignores SIGTERM; its background children do not.
    b.sh("sleep 1000 & sleep 1000 & echo ready > /ready; while true; do sleep 1; done");
    let c = hj.container("all");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    wait_until(Duration::from_secs(10), "the children to start", || {
        b.rootfs().join("ready").exists()
    });
    let pid = c.pid();
    let procs_dir = hyperjail_tests::cgroup_dir_v1("pids", &format!("/hyperjail/{}", c.id))
        .expect("pids hierarchy");
    let sleepers = |procs: &[i32]| -> Vec<i32> {
        procs
            .iter()
            .copied()
            .filter(|p| *p != pid && pid_alive(*p))
            .filter(|p| {
                fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .unwrap_or_default()
                    .starts_with("sleep\u{0}1000")
            })
            .collect()
    };
    wait_until(
        Duration::from_secs(10),
        "two background sleeps in the cgroup",
        || sleepers(&hyperjail_tests::cgroup_procs(&procs_dir)).len() == 2,
    );
    let children = sleepers(&hyperjail_tests::cgroup_procs(&procs_dir));

    hj.run(["kill", "--all", &c.id, "TERM"]).assert_ok();
    wait_until(
        Duration::from_secs(10),
        "kill --all TERM to reach the children",
        || children.iter().all(|p| !pid_alive(*p)),
    );

    hj.run(["kill", "--all", &c.id, "KILL"]).assert_ok();
    c.wait_status("stopped");
    assert!(!pid_alive(pid));
}

#[test]
fn list_shows_containers_in_every_format() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b1 = Bundle::new();
    b1.args(&["sleep", "1000"]);
    let b2 = Bundle::new();
    let c1 = hj.container("lista");
    let c2 = hj.container("listb");
    c1.create(&b1, &[]).assert_ok();
    c1.start().assert_ok();
    c2.create(&b2, &[]).assert_ok();
    let (p1, p2) = (c1.pid(), c2.pid());

    let quiet = hj.run(["list", "-q"]);
    quiet.assert_ok();
    let mut ids: Vec<&str> = quiet
        .lines()
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    ids.sort();
    let mut want = vec![c1.id.as_str(), c2.id.as_str()];
    want.sort();
    assert_eq!(ids, want, "list -q: {quiet}");

    let json = hj.list_json();
    assert_eq!(json.len(), 2, "{json:?}");
    let find = |id: &str| -> &Value {
        json.iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {json:?}"))
    };
    assert_eq!(find(&c1.id)["status"], "running");
    assert_eq!(find(&c2.id)["status"], "created");
    assert_eq!(find(&c1.id)["pid"].as_i64(), Some(p1 as i64));
    assert_eq!(find(&c2.id)["pid"].as_i64(), Some(p2 as i64));
    let bundle1 = fs::canonicalize(b1.path()).unwrap();
    assert_eq!(
        find(&c1.id)["bundle"].as_str().map(Path::new),
        Some(bundle1.as_path())
    );

    let table = hj.run(["list"]);
    table.assert_ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|h| h.starts_with("ID") && h.contains("PID") && h.contains("STATUS")),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "header and two rows expected: {table}");
    for (id, pid, status) in [(&c1.id, p1, "running"), (&c2.id, p2, "created")] {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no row for {id}: {table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert!(
            cols.contains(&pid.to_string().as_str()),
            "row lacks pid {pid}: {row}"
        );
        assert!(cols.contains(&status), "row lacks status {status}: {row}");
    }

    let fmt_json = hj.run(["list", "--format", "json"]);
    fmt_json.assert_ok();
    drop((c1, c2));
    let left = hj.list_json();
    assert!(left.is_empty(), "containers listed after delete: {left:?}");
    let q = hj.run(["list", "-q"]);
    q.assert_ok();
    assert!(q.stdout.trim().is_empty(), "{q}");
}

#[test]
fn run_detach_returns_while_container_runs() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh("echo up > /up; exec sleep 1000");
    let c = hj.container("detach");
    let out = c.run(&b, &["--detach"]);
    out.assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    let pid = c.pid();
    assert!(pid_alive(pid));
    wait_until(
        Duration::from_secs(10),
        "the detached process to run",
        || b.rootfs().join("up").exists(),
    );
    c.kill("KILL").assert_ok();
    c.wait_status("stopped");
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn kill_of_created_container_stops_it() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh("echo started > /started; exec sleep 1000");
    let c = hj.container("killcr");
    c.create(&b, &[]).assert_ok();
    let pid = c.pid();
    c.kill("KILL").assert_ok();
    c.wait_status("stopped");
    assert!(
        !pid_alive(pid),
        "process {pid} survives kill of a created container"
    );
    assert!(
        !b.rootfs().join("started").exists(),
        "the user process ran although never started"
    );
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn delete_of_created_container_without_force() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("delcr");
    c.create(&b, &[]).assert_ok();
    let pid = c.pid();
    // runc deletes a created container without --force (it never ran user code).
    c.delete().assert_ok();
    assert!(
        !pid_alive(pid),
        "process {pid} survives delete of a created container"
    );
    c.assert_nothing_left(&b);
}

#[test]
fn kill_of_stopped_container_fails() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh("exit 0");
    let c = hj.container("killst");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped");
    c.kill("KILL").assert_error(&["not running", "stopped"]);
    assert_eq!(c.status().as_deref(), Some("stopped"));
}

#[test]
fn run_exit_status_of_sigterm_is_143() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    // Without a pid namespace the process is not an init: SIGTERM's default action kills it.
    b.remove_namespace("pid");
    b.args(&["sleep", "1000"]);
    let c = hj.container("k143");
    let running = c.run_call(&b, &[]).spawn();
    wait_until(Duration::from_secs(20), "the container to run", || {
        c.status().as_deref() == Some("running")
    });
    c.kill("TERM").assert_ok();
    let out = running.wait();
    assert_eq!(out.code, Some(143), "run of a SIGTERMed container: {out}");
}

#[test]
fn state_of_stopped_container() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.sh("exit 0");
    let c = hj.container("stopped");
    c.create(&b, &[]).assert_ok();
    let st = c.state().unwrap();
    let rootfs = fs::canonicalize(b.rootfs()).unwrap();
    assert_eq!(
        st["rootfs"].as_str().map(Path::new),
        Some(rootfs.as_path()),
        "{st}"
    );
    c.start().assert_ok();
    c.wait_status("stopped");
    let st = c.state().unwrap();
    assert_eq!(
        st["pid"].as_i64(),
        Some(0),
        "a stopped container has pid 0 (as runc prints it): {st}"
    );
    let listed = hj.list_json();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "stopped", "{listed:?}");
}

#[test]
fn relative_bundle_and_pid_file_paths() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.save();
    let parent = b.path().parent().unwrap().to_path_buf();
    let name = b.path().file_name().unwrap().to_string_lossy().into_owned();
    let c = hj.container("relpath");
    hj.call(["create", "--bundle", &name, "--pid-file", "rel.pid", &c.id])
        .current_dir(b.path().parent().unwrap())
        .env(hyperjail_tests::MARK_VAR, b.marker())
        .output()
        .assert_ok();
    let st = c.state().unwrap();
    let bundle = fs::canonicalize(b.path()).unwrap();
    assert_eq!(
        st["bundle"].as_str().map(Path::new),
        Some(bundle.as_path()),
        "bundle must be absolute: {st}"
    );
    let pid_file = parent.join("rel.pid");
    let text = fs::read_to_string(&pid_file).expect("pid file relative to the caller's cwd");
    let _ = fs::remove_file(&pid_file);
    assert_eq!(text.trim(), c.pid().to_string());
}

#[test]
fn terminal_with_create_and_start() {
    require_root!();
    let hj = Hyperjail::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let mut b = Bundle::new();
    b.config_mut()["process"]["terminal"] = serde_json::json!(true);
    b.sh("read line; echo \"got:$line\"");
    let c = hj.container("ttycs");
    let created = c
        .create_call(&b, &["--console-socket", sock.to_str().unwrap()])
        .spawn();
    let (_, master) = hyperjail_tests::receive_console(&listener, Duration::from_secs(20));
    let out = created.wait();
    out.assert_ok();
    let mut master = fs::File::from(master);
    c.start().assert_ok();
    std::io::Write::write_all(&mut master, b"typed\n").unwrap();
    let text =
        hyperjail_tests::read_pty(master, Duration::from_secs(20), |t| t.contains("got:typed"));
    assert!(text.contains("got:typed"), "{text:?}");
    c.wait_status("stopped");
}

#[test]
fn features_document() {
    require_root!();
    let hj = Hyperjail::new();
    let out = hj.run(["features"]);
    out.assert_ok();
    let f: Value = serde_json::from_str(&out.stdout).expect("features is JSON");
    assert_eq!(
        f["ociVersionMax"].as_str().map(|v| v.starts_with("1.")),
        Some(true),
        "{f}"
    );
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "hook {h} not in features: {hooks:?}");
    }
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for n in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.contains(&n), "namespace {n} not in features: {ns:?}");
    }
    let caps: Vec<&str> = f["linux"]["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        caps.contains(&"CAP_KILL") && caps.contains(&"CAP_SYS_ADMIN"),
        "{caps:?}"
    );
    let opts: Vec<&str> = f["mountOptions"]
        .as_array()
        .expect("mountOptions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for o in [
        "ro", "nosuid", "nodev", "noexec", "rbind", "bind", "rprivate",
    ] {
        assert!(
            opts.contains(&o),
            "mount option {o} not in features: {opts:?}"
        );
    }
}
