//! The runc verbs on a running VM domain: `exec` starts a process inside the guest
//! (stdio, exit status, `--tty`, `--detach`, `--preserve-fds`, signals passed on),
//! `ps` lists the guest kernel's processes, `kill --all` reaches every one of them.
//! Everything is read from inside the guest: /proc/self/status, getppid, the
//! processes' own output.

use hyperjail_tests::vm::vm_bundle;
use hyperjail_tests::{
    pid_alive, read_pty, receive_console, require_kvm, wait_until, Bundle, Container, Hyperjail,
    Output,
};
use std::fs;
use std::os::unix::net::UnixListener;
use std::time::Duration;

/// A started VM domain whose first process runs `script` with sh.
fn vm_running<'a>(hj: &'a Hyperjail, b: &mut Bundle, tag: &str, script: &str) -> Container<'a> {
    b.sh(script);
    let c = hj.container(tag);
    c.create(b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("running");
    c
}

/// `exec [flags...] ID [cmd...]`.
fn exec(hj: &Hyperjail, c: &Container<'_>, flags: &[&str], cmd: &[&str]) -> Output {
    hj.call(["exec"])
        .args(flags.iter().copied())
        .arg(&c.id)
        .args(cmd.iter().copied())
        .timeout(Duration::from_secs(30))
        .output()
}

/// `ps` (the table): the guest's processes, as (pid, ppid, command line).
fn guest_ps(hj: &Hyperjail, c: &Container<'_>) -> Vec<(i64, i64, String)> {
    let out = hj.run(["ps", &c.id]);
    out.assert_ok();
    let lines = out.lines();
    assert_eq!(
        lines
            .first()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["PID", "PPID", "CMD"]),
        "{out}"
    );
    lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(-1);
            (num(0), num(1), f.get(2..).unwrap_or_default().join(" "))
        })
        .collect()
}

/// The guest pids `ps` lists.
fn guest_pids(hj: &Hyperjail, c: &Container<'_>) -> Vec<i64> {
    guest_ps(hj, c).iter().map(|p| p.0).collect()
}

#[test]
fn exec_runs_a_new_guest_process() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.env("FROM_CONFIG=yes");
    let c = vm_running(&hj, &mut b, "vmexec", "exec sleep 1000");

    // Output, exit status, and what the guest kernel says about the process: a
    // pid of its own (not 1), no parent in the VM; its child's parent is it.
    let out = exec(
        &hj,
        &c,
        &[],
        &[
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; echo ppid=$PPID; echo pid=$$; grep -E '^(Name|PPid):' /proc/self/status; exit 7",
        ],
    );
    assert_eq!(out.code, Some(7), "exit status must pass through: {out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    let lines: Vec<String> = out
        .lines()
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let pid: i64 = lines
        .get(2)
        .and_then(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid line: {out}"));
    assert!(pid > 1, "an exec'd process is not the guest's init: {out}");
    assert_eq!(
        lines,
        [
            "to-stdout".to_string(),
            "ppid=0".into(),
            format!("pid={pid}"),
            "Name: grep".into(),
            format!("PPid: {pid}"),
        ],
        "{out}"
    );

    // Killed by a signal: 128+N, as runc reports it.
    let out = exec(&hj, &c, &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(out.code, Some(137), "{out}");
    // stdin reaches the guest process; its end reaches it too.
    let out = hj
        .call(["exec", &c.id, "tr", "a-z", "A-Z"])
        .stdin(b"hello\n")
        .timeout(Duration::from_secs(30))
        .output();
    out.assert_ok();
    assert_eq!(out.stdout, "HELLO\n", "{out}");
    // Environment (process.env and --env) and working directory.
    let out = exec(
        &hj,
        &c,
        &["--env", "FOO=bar baz", "--cwd", "/bin"],
        &[
            "sh",
            "-c",
            "echo \"FOO=$FOO\"; echo \"FROM_CONFIG=$FROM_CONFIG\"; pwd",
        ],
    );
    out.assert_ok();
    assert_eq!(
        out.lines(),
        ["FOO=bar baz", "FROM_CONFIG=yes", "/bin"],
        "{out}"
    );

    // Bad input: one line naming the problem, and the domain runs on.
    exec(&hj, &c, &[], &["/no/such/program"]).assert_error(&["/no/such/program", "not found"]);
    exec(&hj, &c, &["--user", "65534"], &["true"]).assert_error(&["user", "VM"]);
    exec(&hj, &c, &["--tty"], &["true"]).assert_error(&["console-socket"]);
    assert_eq!(c.status().as_deref(), Some("running"));
    // Only the first process is left: every exec'd one ended and was reaped.
    wait_until(Duration::from_secs(10), "only the first process", || {
        guest_pids(&hj, &c) == [1]
    });
    // ps --format json is the host's view (engines look the pids up on the host):
    // the VMM.
    let out = hj.run(["ps", "--format", "json", &c.id]);
    out.assert_ok();
    let host: Vec<i64> = serde_json::from_str(&out.stdout).expect("ps json");
    assert!(host.contains(&i64::from(c.pid())), "{out}");
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn exec_into_a_created_vm_is_refused() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["sleep", "1000"]);
    let c = hj.container("vmexeccreated");
    c.create(&b, &[]).assert_ok();
    exec(&hj, &c, &[], &["true"]).assert_error(&["not been started"]);
    assert_eq!(c.status().as_deref(), Some("created"));
    // ps of a guest that has not run lists nothing.
    assert!(guest_pids(&hj, &c).is_empty());
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn ps_lists_the_guest_processes() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let c = vm_running(&hj, &mut b, "vmps", "sleep 1000 & sleep 999 & wait");
    wait_until(Duration::from_secs(20), "the guest's two children", || {
        guest_pids(&hj, &c).len() == 3
    });
    let rows = guest_ps(&hj, &c);
    let find = |cmd: &str| {
        rows.iter()
            .find(|r| r.2 == cmd)
            .unwrap_or_else(|| panic!("no {cmd:?} in {rows:?}"))
            .clone()
    };
    assert_eq!(find("sh -c sleep 1000 & sleep 999 & wait").0, 1);
    assert_eq!(find("sh -c sleep 1000 & sleep 999 & wait").1, 0);
    assert_eq!(find("sleep 1000").1, 1, "{rows:?}");
    assert_eq!(find("sleep 999").1, 1, "{rows:?}");
    // The host's ps options cannot apply to guest processes.
    hj.run(["ps", &c.id, "-ef"]).assert_error(&["VM"]);
    // events --stats counts the guest's processes, not the VMM's threads.
    let out = hj.run(["events", "--stats", &c.id]);
    out.assert_ok();
    let ev: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("stats json");
    assert_eq!(ev["data"]["pids"]["current"], 3, "{out}");
    // A paused guest cannot answer: one line says so.
    hj.run(["pause", &c.id]).assert_ok();
    hj.run(["ps", &c.id]).assert_error(&["paused"]);
    hj.run(["resume", &c.id]).assert_ok();
    assert_eq!(guest_pids(&hj, &c).len(), 3);
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn kill_all_reaches_every_guest_process() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    // The first process waits for its child; each reports the TERM it gets.
    b.sh(
        "(trap 'echo child-term; exit 4' TERM; while :; do sleep 1; done) & \
         trap 'echo init-term' TERM; wait; wait $!; echo child=$?; exit 9",
    );
    let c = hj.container("vmkillall");
    let running = c.run_call(&b, &[]).timeout(Duration::from_secs(60)).spawn();
    wait_until(Duration::from_secs(20), "the child and its sleep", || {
        c.status().as_deref() == Some("running") && guest_pids(&hj, &c).len() >= 3
    });
    hj.run(["kill", "--all", &c.id, "TERM"]).assert_ok();
    let out = running.wait();
    assert_eq!(out.code, Some(9), "{out}");
    let mut lines = out.lines();
    lines.sort_unstable();
    assert_eq!(lines, ["child-term", "child=4", "init-term"], "{out}");
    c.assert_nothing_left(&b);
}

#[test]
fn exec_detached_with_pid_file_and_signals() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let c = vm_running(&hj, &mut b, "vmexecd", "exec sleep 1000");
    let pid_file = b.path().join("exec.pid");
    let out = hj
        .call(["exec", "--detach", "--pid-file"])
        .arg(&pid_file)
        .args([
            &c.id,
            "sh",
            "-c",
            "trap 'echo trapped > /trapped; exit 42' TERM; sleep 777 & wait",
        ])
        .timeout(Duration::from_secs(20))
        .output();
    out.assert_ok();
    let text = fs::read_to_string(&pid_file).expect("pid file written");
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid file {text:?}"));
    assert!(pid_alive(pid), "the exec proxy {pid} is not running");
    let sh = "sh -c trap 'echo trapped > /trapped; exit 42' TERM; sleep 777 & wait";
    wait_until(
        Duration::from_secs(20),
        "the exec'd sh and its sleep",
        || {
            let rows = guest_ps(&hj, &c);
            rows.iter().any(|r| r.2 == sh && r.1 == 0) && rows.iter().any(|r| r.2 == "sleep 777")
        },
    );
    // A signal to the host process named in the pid file reaches the guest process,
    // whose trap ends it: the proxy exits with its status.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM)
        .expect("kill the proxy");
    wait_until(Duration::from_secs(20), "the proxy to exit", || {
        !pid_alive(pid)
    });
    wait_until(Duration::from_secs(20), "the exec'd sh to be gone", || {
        !guest_ps(&hj, &c).iter().any(|r| r.2 == sh)
    });
    assert_eq!(
        fs::read_to_string(b.rootfs().join("trapped")).unwrap_or_default(),
        "trapped\n",
        "the TERM reached the guest sh's trap"
    );
    // Its sleep lives on, an orphan of the guest's init.
    assert!(
        guest_ps(&hj, &c)
            .iter()
            .any(|r| r.2 == "sleep 777" && r.1 == 1),
        "{:?}",
        guest_ps(&hj, &c)
    );

    // A proxy killed with SIGKILL cannot pass it on: its guest process goes with it
    // (it would otherwise run on unseen, holding one of the guest's process slots).
    hj.call(["exec", "--detach", "--pid-file"])
        .arg(&pid_file)
        .args([&c.id, "sleep", "888"])
        .timeout(Duration::from_secs(20))
        .output()
        .assert_ok();
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    wait_until(Duration::from_secs(20), "sleep 888 in the guest", || {
        guest_ps(&hj, &c).iter().any(|r| r.2 == "sleep 888")
    });
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
        .expect("kill the proxy");
    wait_until(Duration::from_secs(20), "sleep 888 to be gone", || {
        !guest_ps(&hj, &c).iter().any(|r| r.2 == "sleep 888")
    });
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}

#[test]
fn exec_with_tty_and_preserved_fds() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let c = vm_running(&hj, &mut b, "vmexectty", "exec sleep 1000");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).expect("bind console socket");
    let running = hj
        .call(["exec", "--tty", "--console-socket"])
        .arg(&sock)
        .args([
            &c.id,
            "sh",
            "-c",
            "test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; stty size; exit 5",
        ])
        .timeout(Duration::from_secs(30))
        .spawn();
    let (payload, master) = receive_console(&listener, Duration::from_secs(20));
    let text = read_pty(fs::File::from(master), Duration::from_secs(20), |_| false);
    let out = running.wait();
    assert_eq!(out.code, Some(5), "{out}\nterminal: {text:?}");
    assert!(payload.starts_with("/dev/pts/"), "{payload:?}");
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(lines.contains(&"stdin-tty"), "{text:?}");
    assert!(lines.contains(&"stdout-tty"), "{text:?}");

    // --preserve-fds 1: the caller's fd 3 is the guest process's fd 3; fd 4 is not
    // passed.
    let f3 = fs::File::create(dir.path().join("fd3")).expect("fd3");
    let f4 = fs::File::create(dir.path().join("fd4")).expect("fd4");
    let out = hj
        .call(["exec", "--preserve-fds", "1", &c.id, "sh", "-c"])
        .arg("echo via-fd3 >&3; (echo via-fd4 >&4) 2>/dev/null && echo fd4-open || echo fd4-closed")
        .pass_fds(vec![
            std::os::fd::OwnedFd::from(f3),
            std::os::fd::OwnedFd::from(f4),
        ])
        .timeout(Duration::from_secs(30))
        .output();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "fd4-closed", "{out}");
    assert_eq!(
        fs::read_to_string(dir.path().join("fd3")).expect("read fd3"),
        "via-fd3\n"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("fd4")).expect("read fd4"),
        ""
    );
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}

/// `kill --all STOP` stops the guest's processes (not its init, which takes only
/// the signals it handles) and `kill --all CONT` continues them: a signal from the
/// host reaches a stopped process.
#[test]
fn kill_all_stop_and_cont() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let c = vm_running(&hj, &mut b, "vmstopcont", "exec sleep 1000");
    hj.call(["exec", "--detach", &c.id, "sh", "-c"])
        .arg("while :; do echo t >> /ticks; sleep 0.1; done")
        .timeout(Duration::from_secs(20))
        .output()
        .assert_ok();
    let ticks = || fs::metadata(b.rootfs().join("ticks")).map_or(0, |m| m.len());
    wait_until(Duration::from_secs(20), "the first ticks", || ticks() >= 4);
    hj.run(["kill", "--all", &c.id, "STOP"]).assert_ok();
    // Settled: one tick may have been on its way.
    std::thread::sleep(Duration::from_millis(300));
    let stopped = ticks();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ticks(), stopped, "a stopped process made progress");
    assert_eq!(c.status().as_deref(), Some("running"), "init does not stop");
    hj.run(["kill", "--all", &c.id, "CONT"]).assert_ok();
    wait_until(Duration::from_secs(20), "ticks again", || ticks() > stopped);
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}

/// `pause` stops every vCPU of the domain (its state says paused and its guest
/// makes no progress, a process started by `exec` included); `resume` lets them
/// run again.
#[test]
fn pause_stops_the_guest_and_resume_restarts_it() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let c = vm_running(
        &hj,
        &mut b,
        "vmpausing",
        "while :; do echo t >> /init-ticks; sleep 0.1; done",
    );
    hj.call(["exec", "--detach", &c.id, "sh", "-c"])
        .arg("while :; do echo t >> /exec-ticks; sleep 0.1; done")
        .timeout(Duration::from_secs(20))
        .output()
        .assert_ok();
    let size = |f: &str| fs::metadata(b.rootfs().join(f)).map_or(0, |m| m.len());
    let both = || (size("init-ticks"), size("exec-ticks"));
    wait_until(Duration::from_secs(20), "ticks from both", || {
        let (a, e) = both();
        a >= 4 && e >= 4
    });
    hj.run(["pause", &c.id]).assert_ok();
    assert_eq!(c.status().as_deref(), Some("paused"));
    let paused = both();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(both(), paused, "a paused guest made progress");
    hj.run(["resume", &c.id]).assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    wait_until(Duration::from_secs(20), "ticks from both again", || {
        let (a, e) = both();
        a > paused.0 && e > paused.1
    });
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);
}
