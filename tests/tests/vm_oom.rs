//! Memory exhaustion inside a VM domain: the guest process that ate the memory is
//! killed with SIGKILL (its parent sees it in waitpid), `events` reports an `oom`
//! event, and the rest of the guest runs on: the kernel's OOM killer, which would
//! end the whole VMM, is never needed (the cgroup's oom_kill count stays 0).

use hyperjail_tests::vm::{compile_static, vm_bundle};
use hyperjail_tests::{cgroup_dir_v1, require_kvm, skip_unless, wait_until, Hyperjail};
use serde_json::json;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The tests here run one at a time: two guests touching memory at full speed on
/// this machine's CPUs at once can keep a VMM's OOM thread off the CPU for longer
/// than its margin lasts, and then the kernel's OOM killer ends that VMM (the race
/// this killer is there to win, and does when it gets the CPU).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const HOG: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
/* Touches `mib` MiB, a MiB at a time with a pause of 1 ms after each (a program
   that allocates; two loops touching memory at full speed on both CPUs can keep
   the VMM's OOM thread off the CPU for longer than its margin lasts, and then the
   kernel's OOM killer ends the VMM), then exits 0. */
static void eat(int mib) {
    for (int n = 0; n < mib; n++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("enomem after %d MiB\n", n);
            exit(3);
        }
        memset(p, 1, 1 << 20);
        usleep(1000);
    }
    exit(0);
}
int main(void) {
    /* The output goes to a file of the rootfs: the test reads it from the host. */
    if (!freopen("/out.txt", "w", stdout)) return 2;
    setvbuf(stdout, 0, _IONBF, 0);
    /* Two children of 40 MiB each do not fit in 64 MiB (the killer acts at 53 MiB
       of memory the kernel cannot reclaim): one is killed, the other then has
       room. */
    for (int i = 0; i < 2; i++)
        if (fork() == 0) eat(40);
    int killed = 0, exited = 0, st;
    for (int i = 0; i < 2; i++) {
        wait(&st);
        killed += WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
        exited += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    printf("killed=%d exited=%d\n", killed, exited);
    /* The parent still works: memory to spare again. */
    char *q = malloc(4 << 20);
    memset(q, 2, 4 << 20);
    printf("parent alive sum=%d\n", q[12345] + q[4 << 19]);
    return 0;
}
"#;

/// A VM bundle running the static program `name` built from `src`, with memory
/// limit `limit`; the calling test skips (returns) without KVM, the v1 memory
/// controller or `gcc -static`.
macro_rules! oom_bundle {
    ($name:expr, $src:expr, $limit:expr) => {{
        require_kvm!();
        skip_unless!(
            cgroup_dir_v1("memory", "/").is_some(),
            "the VMM's OOM killer needs the v1 memory controller (cgroup v2 leaves OOM to the kernel)"
        );
        let mut b = vm_bundle();
        skip_unless!(
            compile_static(&b, $name, $src, &["-static"]),
            "gcc -static does not work here (apt-get install gcc libc6-dev)"
        );
        b.args(&[&format!("/{}", $name)]);
        b.config_mut()["linux"]["resources"] = json!({"memory": {"limit": $limit}});
        b
    }};
}

#[test]
fn oom_in_the_guest_kills_the_process_and_reports_an_event() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let b = oom_bundle!("hog", HOG, 64 << 20);
    let hj = Hyperjail::new();
    let c = hj.container("vmoom");
    c.create(&b, &[]).assert_ok();
    // `events` (stats every 10 s, oom events as they come) from before the start.
    let mut events = Command::new(hyperjail_tests::hyperjail_bin())
        .args(["--root"])
        .arg(hj.root())
        .args(["events", "--interval", "10s", &c.id])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn events");
    let cg = cgroup_dir_v1("memory", &format!("/hyperjail/{}", c.id)).expect("memory cgroup");
    c.start().assert_ok();
    wait_until(Duration::from_secs(60), "the domain to stop", || {
        c.status().as_deref() == Some("stopped")
    });
    let oom_control = fs::read_to_string(cg.join("memory.oom_control")).unwrap_or_default();
    let log = fs::read_to_string(c.state_dir().join("oom.log")).unwrap_or_default();
    let out = fs::read_to_string(b.rootfs().join("out.txt")).unwrap_or_default();
    assert_eq!(
        out, "killed=1 exited=1\nparent alive sum=4\n",
        "one child is SIGKILLed, the other and the parent run on (oom.log {log:?})"
    );
    assert_eq!(
        c.state()
            .and_then(|s| s["status"].as_str().map(str::to_string))
            .as_deref(),
        Some("stopped")
    );
    let lines: Vec<String> = BufReader::new(events.stdout.take().expect("events stdout"))
        .lines()
        .map_while(Result::ok)
        .collect();
    let _ = events.wait();
    assert!(
        lines.iter().any(|l| l.contains("\"type\":\"oom\"")),
        "no oom event: {lines:?} (oom.log {log:?})"
    );
    assert_eq!(log.lines().count(), 1, "one process killed: {log:?}");
    assert!(
        log.contains("\"pid\":2") || log.contains("\"pid\":3"),
        "a child (pid 2 or 3) is the one killed: {log:?}"
    );
    assert!(
        oom_control.contains("oom_kill 0"),
        "the kernel's OOM killer had to act: {oom_control}"
    );
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

const PHASES: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
/* For each of two phases: waits for /goN (the host writes it after `update`),
   then a child touches memory a MiB at a time until it is killed (or runs out). */
int main(void) {
    if (!freopen("/out.txt", "w", stdout)) return 2;
    setvbuf(stdout, 0, _IONBF, 0);
    for (int phase = 1; phase <= 2; phase++) {
        char go[16];
        snprintf(go, sizeof go, "/go%d", phase);
        while (access(go, F_OK) != 0) usleep(10000);
        if (fork() == 0) {
            for (int n = 0; n < 1000; n++) {
                char *p = malloc(1 << 20);
                if (!p) exit(3);
                memset(p, 1, 1 << 20);
            }
            exit(0);
        }
        int st;
        wait(&st);
        printf("phase%d killed=%d\n", phase, WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    }
    return 0;
}
"#;

/// `update` of the memory limit of a running VM domain: the VMM's OOM killer acts
/// at the new limit, lowered (the child is killed well below the old one) and then
/// raised (it grows past the lowered one before it is killed); the kernel's
/// OOM killer is never needed.
#[test]
fn oom_follows_a_memory_limit_changed_by_update() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // Guest RAM is sized from the limit at create: 96 MiB.
    let b = oom_bundle!("phases", PHASES, 96 << 20);
    let hj = Hyperjail::new();
    let c = hj.container("vmoomup");
    c.run(&b, &["--detach"]).assert_ok();
    let cg = cgroup_dir_v1("memory", &format!("/hyperjail/{}", c.id)).expect("memory cgroup");
    let out = || fs::read_to_string(b.rootfs().join("out.txt")).unwrap_or_default();
    let log = || fs::read_to_string(c.state_dir().join("oom.log")).unwrap_or_default();
    let rss = |line: usize| -> u64 {
        let l = log();
        let v: serde_json::Value = l
            .lines()
            .nth(line)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        v["rss"].as_u64().unwrap_or(0)
    };
    // Lowered to 40 MiB: the killer acts below it (at 40 - 40/6 MiB).
    hj.run(["update", "--memory", &(40u64 << 20).to_string(), &c.id])
        .assert_ok();
    assert_eq!(
        fs::read_to_string(cg.join("memory.limit_in_bytes"))
            .unwrap_or_default()
            .trim(),
        (40u64 << 20).to_string()
    );
    fs::write(b.rootfs().join("go1"), "").expect("write go1");
    wait_until(Duration::from_secs(30), "phase 1 to end", || {
        out().contains("phase1")
    });
    assert!(
        out().contains("phase1 killed=1"),
        "{} (oom.log {:?})",
        out(),
        log()
    );
    assert!(
        rss(0) > 0 && rss(0) < 40 << 20,
        "killed at {} bytes (oom.log {:?})",
        rss(0),
        log()
    );
    // Raised to 64 MiB: the child now grows past 40 MiB before it is killed (at
    // 64 - 64/6 MiB, well inside the guest's 96 MiB of RAM).
    hj.run(["update", "--memory", &(64u64 << 20).to_string(), &c.id])
        .assert_ok();
    fs::write(b.rootfs().join("go2"), "").expect("write go2");
    wait_until(Duration::from_secs(30), "phase 2 to end", || {
        out().contains("phase2")
    });
    assert!(
        out().contains("phase2 killed=1"),
        "{} (oom.log {:?})",
        out(),
        log()
    );
    assert!(
        rss(1) > 48 << 20,
        "killed at {} bytes (oom.log {:?})",
        rss(1),
        log()
    );
    wait_until(Duration::from_secs(30), "the domain to stop", || {
        c.status().as_deref() == Some("stopped")
    });
    let oom_control = fs::read_to_string(cg.join("memory.oom_control")).unwrap_or_default();
    assert!(
        oom_control.contains("oom_kill 0"),
        "the kernel's OOM killer had to act: {oom_control}"
    );
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}
