//! Crash safety of VM domains (`org.hyperjail.backend=vm`): the runtime, or the VMM, is
//! SIGKILLed at a random moment of a verb, then one `delete --force ID` must leave
//! nothing of the domain on the machine, and a later `create` with the same id must work.
//! This is `crash.rs` for the VM backend.
//!
//! The container program is a static C program compiled here with `gcc -static`: it
//! sleeps 1 ms at a time in a loop (a forwarded `nanosleep` per iteration, so the kill
//! often lands while the vCPU is in a VM exit), or, given the argument `exit`, returns
//! at once (for a foreground `run`). Without a working `gcc -static` the bundle falls
//! back to busybox `sleep 1000` / `true`, which also run in the VM.
//!
//! For each case the test first measures the verb's duration (median of 5 undisturbed
//! runs), then SIGKILLs the target after a delay drawn uniformly in
//! `[0, 1.2 × duration]`. Two targets:
//!
//! - the hyperjail CLI process the test spawned (not the VMM it may have forked), as an
//!   engine's timeout would;
//! - the VMM: the recorded pid for a domain that exists before the verb, else the
//!   CLI's child (`create`, `run`), else any process carrying the bundle's marker other
//!   than the CLI (the VMM inherits the marker from the `create` or `run` call that
//!   forked it). For the verbs that fork the VMM the delays start at the measured fork
//!   time instead of 0. The CLI then has to finish by itself (within 10 s); if the
//!   domain is still there it must say `stopped` (or `paused`, for a VMM killed while
//!   frozen by `pause`), and a stopped one must go with a plain `delete` (no
//!   `--force`); otherwise `delete --force` removes it.
//!
//! After the delete the test looks for:
//!
//! - live processes (zombies ignored: PID 1 here does not reap orphans) whose
//!   `/proc/<pid>/cgroup` names the domain's cgroup, whose cwd or root lies in the
//!   bundle, or that carry the bundle's marker variable: a VMM left alive is also its
//!   VM memory left mapped (the message says whether it holds a KVM VM fd and its RSS);
//! - the domain's cgroup directory in every hierarchy (v1 and `/sys/fs/cgroup/unified`);
//! - mounts under the bundle or under the state root;
//! - the state directory.
//!
//! A third test kills the VMM of a created, a running and a foreground-`run` domain
//! directly: `state` must say `stopped`, and `delete` without `--force` (or `run`'s own
//! delete) must remove everything.
//!
//! Every test skips with a reason when /dev/kvm is missing or cannot create a VM. The
//! default is 10 runs per case; `HJ_VM_CRASH_RUNS=N` (or `HJ_CRASH_RUNS=N`, the knob
//! of `crash.rs`) runs N per case. The seed comes from the clock (or `HJ_VM_CRASH_SEED`,
//! else `HJ_CRASH_SEED`) and is printed, so a failing run can be replayed.

use hyperjail_tests::crash::{
    delete, finish, leftovers, median, ms, scrub, sigkill, vm_note, wait_from,
};
use hyperjail_tests::{
    marked_processes, pid_alive, require_kvm, wait_until, Bundle, Hyperjail, Output, Rng, Running,
    MARK_VAR,
};
use serde_json::json;
use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// Undisturbed runs per case to measure the verb's duration.
const MEASURE_RUNS: usize = 5;
/// Fault-injection runs per case by default.
const DEFAULT_RUNS: usize = 10;
/// How long the CLI may take to finish by itself once its VMM was killed.
const CLI_AFTER_VMM_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// KVM and the program
// ---------------------------------------------------------------------------------------

/// The container program: loops in 1 ms sleeps; with the argument `exit`, returns 0.
const LOOP_C: &str = r#"
#include <string.h>
#include <time.h>
int main(int argc, char **argv) {
    struct timespec ts = {0, 1000000};
    if (argc > 1 && strcmp(argv[1], "exit") == 0) return 0;
    for (;;) nanosleep(&ts, 0);
}
"#;

/// The program the VM bundles run: the static C loop, or busybox when `gcc -static`
/// does not work here.
struct Program {
    /// Holds the compiled binary (`None`: busybox fallback).
    dir: Option<TempDir>,
}

impl Program {
    /// Compiles [`LOOP_C`] once; prints a note and falls back to busybox on failure.
    fn build() -> Program {
        let dir = tempfile::Builder::new()
            .prefix("hj-vmcrash-prog-")
            .tempdir()
            .expect("tempdir for the program");
        let src = dir.path().join("loop.c");
        fs::write(&src, LOOP_C).expect("write loop.c");
        let out = Command::new("gcc")
            .args(["-static", "-O2", "-w", "-o"])
            .arg(dir.path().join("loop"))
            .arg(&src)
            .output();
        match out {
            Ok(o) if o.status.success() => Program { dir: Some(dir) },
            Ok(o) => {
                println!(
                    "vm_crash: NOTE: gcc -static failed ({}); using busybox sleep/true",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                Program { dir: None }
            }
            Err(e) => {
                println!("vm_crash: NOTE: no gcc ({e}); using busybox sleep/true");
                Program { dir: None }
            }
        }
    }

    /// What the bundles run.
    fn describe(&self) -> &'static str {
        if self.dir.is_some() {
            "static C loop (gcc -static)"
        } else {
            "busybox sleep"
        }
    }

    /// A fresh VM bundle whose process loops (`long`) or exits at once.
    fn bundle(&self, long: bool) -> Bundle {
        let mut b = Bundle::new();
        b.config_mut()["annotations"] = json!({"org.hyperjail.backend": "vm"});
        match &self.dir {
            Some(d) => {
                fs::copy(d.path().join("loop"), b.rootfs().join("loop"))
                    .expect("copy the program into the rootfs");
                if long {
                    b.args(&["/loop"]);
                } else {
                    b.args(&["/loop", "exit"]);
                }
            }
            None if long => {
                b.args(&["sleep", "1000"]);
            }
            None => {
                b.args(&["true"]);
            }
        }
        b.save();
        b
    }
}

// ---------------------------------------------------------------------------------------
// Verbs and targets
// ---------------------------------------------------------------------------------------

/// The verbs under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Create,
    Start,
    RunDetached,
    RunForeground,
    Exec,
    Pause,
    Delete,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Start => "start",
            Verb::RunDetached => "run -d",
            Verb::RunForeground => "run (foreground)",
            Verb::Exec => "exec",
            Verb::Pause => "pause",
            Verb::Delete => "delete --force",
        }
    }

    /// Does the container process live on (false: a foreground `run` of a program
    /// that exits at once, so `run`'s whole life, up to its own delete, is covered).
    fn long(self) -> bool {
        self != Verb::RunForeground
    }

    /// Brings the domain to the state the verb needs (panics when that fails).
    fn prepare(self, hj: &Hyperjail, b: &Bundle, id: &str) {
        let create = || {
            b.save();
            hj.call(["create", "--bundle"])
                .arg(b.path())
                .arg(id)
                .env(MARK_VAR, b.marker())
                .output()
                .assert_ok();
        };
        match self {
            Verb::Create | Verb::RunDetached | Verb::RunForeground => {}
            Verb::Start => create(),
            Verb::Exec | Verb::Pause | Verb::Delete => {
                create();
                hj.run(["start", id]).assert_ok();
            }
        }
    }

    /// The CLI call under test.
    fn spawn(self, hj: &Hyperjail, b: &Bundle, id: &str) -> Running {
        let call = match self {
            Verb::Create => hj.call(["create", "--bundle"]).arg(b.path()).arg(id),
            Verb::RunDetached => hj
                .call(["run", "--detach", "--bundle"])
                .arg(b.path())
                .arg(id),
            Verb::RunForeground => hj.call(["run", "--bundle"]).arg(b.path()).arg(id),
            Verb::Start => hj.call(["start", id]),
            Verb::Exec => hj.call(["exec", id, "/loop", "exit"]),
            Verb::Pause => hj.call(["pause", id]),
            Verb::Delete => hj.call(["delete", "--force", id]),
        };
        call.env(MARK_VAR, b.marker()).spawn()
    }
}

/// What the test SIGKILLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The hyperjail CLI process running the verb.
    Cli,
    /// The domain's VMM (the container process), while the CLI runs the verb.
    Vmm,
}

/// The runtime-kill cases: every verb.
const CLI_CASES: [Verb; 7] = [
    Verb::Create,
    Verb::Start,
    Verb::RunDetached,
    Verb::RunForeground,
    Verb::Exec,
    Verb::Pause,
    Verb::Delete,
];

/// The VMM-kill cases.
const VMM_CASES: [Verb; 7] = [
    Verb::Create,
    Verb::Start,
    Verb::RunDetached,
    Verb::RunForeground,
    Verb::Exec,
    Verb::Pause,
    Verb::Delete,
];

// ---------------------------------------------------------------------------------------
// Inspection and clean-up
// ---------------------------------------------------------------------------------------

/// The children of `pid` (`/proc/PID/task/PID/children`; empty when it is gone).
fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The `status` of `state ID`, or `None` when `state` fails (no such domain).
fn status(hj: &Hyperjail, id: &str) -> Option<String> {
    hj.state(id)
        .and_then(|s| s["status"].as_str().map(str::to_string))
}

// ---------------------------------------------------------------------------------------
// The fault-injection loop
// ---------------------------------------------------------------------------------------

/// The number of runs per case and the seed, from the environment.
fn settings() -> (usize, u64) {
    let var = |a: &str, b: &str| std::env::var(a).or_else(|_| std::env::var(b)).ok();
    let runs = var("HJ_VM_CRASH_RUNS", "HJ_CRASH_RUNS")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let seed = var("HJ_VM_CRASH_SEED", "HJ_CRASH_SEED")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    (runs, seed)
}

/// A fault-injection campaign: counters and findings over every case.
struct Campaign<'a> {
    hj: Hyperjail,
    prog: &'a Program,
    target: Target,
    rng: Rng,
    n: usize,
    total: usize,
    /// Runs whose target was not killed: the CLI had exited, or no VMM existed yet (or
    /// any more).
    missed: usize,
    delete_times: Vec<Duration>,
    failures: Vec<String>,
    summary: String,
}

impl Campaign<'_> {
    fn tag(&self) -> &'static str {
        match self.target {
            Target::Cli => "vm-crash",
            Target::Vmm => "vm-vmmkill",
        }
    }

    /// Measures the verb's undisturbed duration (median of [`MEASURE_RUNS`]) and, when
    /// the verb forks the VMM (create, run), how far into it the VMM appears (median).
    fn measure(&mut self, verb: Verb) -> (Duration, Option<Duration>) {
        let mut times = Vec::new();
        let mut forks = Vec::new();
        for _ in 0..MEASURE_RUNS {
            let b = self.prog.bundle(verb.long());
            self.n += 1;
            let id = format!("{}-m{}-{}", self.tag(), self.n, std::process::id());
            verb.prepare(&self.hj, &b, &id);
            let t = Instant::now();
            let mut running = verb.spawn(&self.hj, &b, &id);
            // Poll finely: `Running::wait` polls every 2 ms, much for a 5 ms verb.
            let mut forked = None;
            while !running.is_finished() {
                if forked.is_none() && !children(running.pid()).is_empty() {
                    forked = Some(t.elapsed());
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            times.push(t.elapsed());
            forks.extend(forked);
            let out = running.wait();
            out.assert_ok();
            let (_, _, hung) = delete(&self.hj, &id, true);
            assert!(hung.is_none(), "undisturbed {}: {hung:?}", verb.name());
            let left = leftovers(&self.hj, &b, &id);
            assert!(
                left.is_empty(),
                "undisturbed {} then delete --force left: {left:?}",
                verb.name()
            );
            scrub(&self.hj, &b, &id);
        }
        let fork = (!forks.is_empty()).then(|| median(&mut forks));
        (median(&mut times), fork)
    }

    /// Kills the target at `delay` into the verb; returns (target killed, CLI output,
    /// problems so far, a description of what happened).
    fn inject(
        &mut self,
        verb: Verb,
        b: &Bundle,
        id: &str,
        delay: Duration,
    ) -> (bool, Output, Vec<String>, String) {
        let mut problems = Vec::new();
        // A domain that exists before the verb has its VMM recorded already.
        let known_vmm = match (self.target, verb) {
            (Target::Vmm, Verb::Start | Verb::Pause | Verb::Delete | Verb::Exec) => self
                .hj
                .state(id)
                .and_then(|s| s["pid"].as_i64())
                .map(|p| p as i32),
            _ => None,
        };
        let t = Instant::now();
        let mut running = verb.spawn(&self.hj, b, id);
        wait_from(t, delay);
        match self.target {
            Target::Cli => {
                let done_before = running.is_finished();
                // Only the CLI process: the VMM it forked lives on, as after an
                // engine's timeout.
                sigkill(running.pid());
                let out = running.wait();
                let killed = !done_before && out.signal == Some(libc::SIGKILL);
                let what = if killed {
                    "CLI killed by SIGKILL".to_string()
                } else {
                    format!("CLI had already exited with {:?}", out.code)
                };
                (killed, out, problems, what)
            }
            Target::Vmm => {
                let cli = running.pid();
                // The VMM as soon as it exists: a child of the CLI (create, run), or the
                // recorded pid; else whatever carries the marker (the CLI excluded).
                let mut vmms = known_vmm.map(|p| vec![p]).unwrap_or_else(|| children(cli));
                if vmms.is_empty() {
                    vmms = marked_processes(b.marker())
                        .into_iter()
                        .filter(|p| *p != cli)
                        .collect();
                }
                for &p in &vmms {
                    sigkill(p);
                }
                let (out, _, hung) = finish(
                    running,
                    CLI_AFTER_VMM_LIMIT,
                    &format!("`{}` after its VMM was killed", verb.name()),
                );
                if let Some(h) = hung {
                    problems.push(h);
                }
                // A verb that fails because its VMM died still fails as the CLI
                // promises: exit 1 and one line.
                let err = out.stderr.trim_end_matches('\n');
                if out.code == Some(1)
                    && (err.lines().count() != 1 || !err.starts_with("hyperjail: "))
                {
                    problems.push(format!(
                        "the CLI failed without a one-line `hyperjail: ` error: {err:?}"
                    ));
                }
                let what = format!(
                    "VMM {vmms:?} killed; the CLI then exited with {:?} stderr {:?}",
                    out.code,
                    out.stderr.trim()
                );
                (!vmms.is_empty(), out, problems, what)
            }
        }
    }

    /// Runs one case: measure, then `runs` fault injections.
    fn case(&mut self, verb: Verb, runs: usize) {
        let (dur, fork) = self.measure(verb);
        let max = dur.mul_f64(1.2);
        // The VMM can only be killed once it exists: for the verbs that fork it, the
        // delays start at the (measured) fork.
        let min = match (self.target, fork) {
            (Target::Vmm, Some(f)) if f < max => f,
            _ => Duration::ZERO,
        };
        println!(
            "{}: {}: median duration {}{} → delays in [{}, {}]",
            self.tag(),
            verb.name(),
            ms(dur),
            fork.map(|f| format!(", VMM forked at {}", ms(f)))
                .unwrap_or_default(),
            ms(min),
            ms(max)
        );
        let mut case_failures = 0;
        let mut case_missed = 0;
        for _ in 0..runs {
            let b = self.prog.bundle(verb.long());
            self.n += 1;
            self.total += 1;
            let id = format!("{}-{}-{}", self.tag(), self.n, std::process::id());
            verb.prepare(&self.hj, &b, &id);
            let delay = min + (max - min).mul_f64(self.rng.unit());
            let (killed, _out, mut problems, what) = self.inject(verb, &b, &id, delay);
            if !killed {
                case_missed += 1;
            }
            let pre = leftovers(&self.hj, &b, &id);

            // After a VMM kill, a domain that is still there and says stopped is
            // removed by a plain delete; anything else takes delete --force.
            let mut force = true;
            let mut st = status(&self.hj, &id);
            if self.target == Target::Vmm && killed && st.is_some() {
                // SIGKILL is asynchronous: give the VMM a moment to be gone.
                let end = Instant::now() + Duration::from_secs(2);
                while st.as_deref() != Some("stopped") && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                    st = status(&self.hj, &id);
                }
                match st.as_deref() {
                    None | Some("stopped") => {}
                    // A frozen VMM cannot die until thawed (the v1 freezer).
                    Some("paused") if verb == Verb::Pause => {}
                    Some(s) => problems.push(format!(
                        "state says {s:?} 2 s after the VMM was killed (expected stopped)"
                    )),
                }
                if st.as_deref() == Some("stopped") {
                    force = false;
                }
            }
            let (del, del_time, hung) = delete(&self.hj, &id, force);
            if force {
                self.delete_times.push(del_time);
            }
            if let Some(h) = &hung {
                problems.push(h.clone());
            }
            if !del.ok() && st.is_some() {
                problems.push(format!(
                    "delete{} failed: code {:?} stderr {:?}",
                    if force { " --force" } else { "" },
                    del.code,
                    del.stderr.trim()
                ));
            }
            let left = leftovers(&self.hj, &b, &id);
            if !left.is_empty() {
                // Does it go away by itself (a race with delete's return) or stay?
                std::thread::sleep(Duration::from_millis(500));
                let still = leftovers(&self.hj, &b, &id);
                for l in &left {
                    let kind = if still.contains(l) {
                        "persistent"
                    } else {
                        "gone 500 ms later"
                    };
                    problems.push(format!("after the delete ({kind}): {l}"));
                }
                for l in still.iter().filter(|l| !left.contains(l)) {
                    problems.push(format!("after the delete (appeared later): {l}"));
                }
            }
            let mut second = None;
            if !left.is_empty() && hung.is_none() {
                let (d2, _, _) = delete(&self.hj, &id, true);
                let after2 = leftovers(&self.hj, &b, &id);
                second = Some(format!(
                    "a second delete --force: code {:?} stderr {:?}; left after it: {after2:?}",
                    d2.code,
                    d2.stderr.trim()
                ));
            }
            // A later create with the same id must work on the machine as the delete
            // left it, and must come up as a working VM.
            b.save();
            let again = self
                .hj
                .call(["create", "--bundle"])
                .arg(b.path())
                .arg(&id)
                .env(MARK_VAR, b.marker())
                .output();
            if !again.ok() {
                problems.push(format!(
                    "create with the same id failed: code {:?} stderr {:?}",
                    again.code,
                    again.stderr.trim()
                ));
            } else if status(&self.hj, &id).as_deref() != Some("created") {
                problems.push(format!(
                    "the re-created domain says {:?}, not created",
                    status(&self.hj, &id)
                ));
            }
            let (d3, _, h3) = delete(&self.hj, &id, true);
            if let Some(h) = h3 {
                problems.push(format!("re-created domain: {h}"));
            }
            if again.ok() && !d3.ok() {
                problems.push(format!(
                    "delete --force of the re-created domain failed: {:?}",
                    d3.stderr.trim()
                ));
            }
            for l in leftovers(&self.hj, &b, &id) {
                problems.push(format!("after re-create + delete --force: {l}"));
            }
            scrub(&self.hj, &b, &id);
            if !problems.is_empty() {
                case_failures += 1;
                let mut msg = format!(
                    "{} ({:?} killed at {} of {} measured; {what}); then {}: code {:?} stderr {:?} in {}",
                    verb.name(),
                    self.target,
                    ms(delay),
                    ms(dur),
                    if force { "delete --force" } else { "delete" },
                    del.code,
                    del.stderr.trim(),
                    ms(del_time)
                );
                for p in &problems {
                    let _ = write!(msg, "\n    {p}");
                }
                let _ = write!(msg, "\n    before the delete: {pre:?}");
                if let Some(s) = second {
                    let _ = write!(msg, "\n    {s}");
                }
                println!("{}: LEFTOVER: {msg}", self.tag());
                self.failures.push(msg);
            }
        }
        self.missed += case_missed;
        let _ = writeln!(
            self.summary,
            "  {:<17} duration {:>10}  runs {runs:>4}  not killed {case_missed:>4}  runs with leftovers {case_failures}",
            verb.name(),
            ms(dur)
        );
    }

    /// Prints the report and fails the test if any run left something.
    fn report(mut self, seed: u64) {
        let med = median(&mut self.delete_times);
        let max = self.delete_times.last().copied().unwrap_or_default();
        let (what, missed) = match self.target {
            Target::Cli => ("the CLI", "had exited before the kill"),
            Target::Vmm => ("the VMM", "found no VMM to kill"),
        };
        println!(
            "{tag}: seed {seed}, SIGKILL of {what}, program: {prog}\n{summary}{tag}: {total} runs, \
             {missed_n} {missed}, {fails} with leftovers; delete --force: {n} timed, median {med}, max {max}",
            tag = self.tag(),
            prog = self.prog.describe(),
            summary = self.summary,
            total = self.total,
            missed_n = self.missed,
            fails = self.failures.len(),
            n = self.delete_times.len(),
            med = ms(med),
            max = ms(max),
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} runs left something behind (seed {seed}):\n{}",
            self.failures.len(),
            self.total,
            self.failures.join("\n")
        );
    }
}

/// Runs every case of `cases` against `target`.
fn campaign(target: Target, cases: &[Verb]) {
    let (runs, seed) = settings();
    let prog = Program::build();
    let mut c = Campaign {
        hj: Hyperjail::new(),
        prog: &prog,
        target,
        rng: Rng(seed),
        n: 0,
        total: 0,
        missed: 0,
        delete_times: Vec::new(),
        failures: Vec::new(),
        summary: String::new(),
    };
    println!(
        "{}: seed {seed} (HJ_VM_CRASH_SEED={seed} replays), {runs} runs per verb",
        c.tag()
    );
    for &verb in cases {
        c.case(verb, runs);
    }
    c.report(seed);
}

#[test]
fn sigkill_of_runtime_during_each_vm_verb_leaves_nothing_after_delete_force() {
    require_kvm!();
    campaign(Target::Cli, &CLI_CASES);
}

#[test]
fn sigkill_of_vmm_during_each_vm_verb_leaves_nothing_after_delete() {
    require_kvm!();
    campaign(Target::Vmm, &VMM_CASES);
}

// ---------------------------------------------------------------------------------------
// The VMM killed in a settled state
// ---------------------------------------------------------------------------------------

/// Asserts that nothing of domain `id` is left (with the full list on failure).
#[track_caller]
fn assert_clean(hj: &Hyperjail, b: &Bundle, id: &str, when: &str) {
    let left = leftovers(hj, b, id);
    assert!(left.is_empty(), "{when}: left behind: {left:#?}");
}

/// The VMM of domain `id`: the state's pid, which must carry the bundle's marker (so
/// that the leftover scan would see it) and hold the VM.
fn vmm_pid(hj: &Hyperjail, b: &Bundle, id: &str) -> i32 {
    let st = hj.state(id).expect("state of the domain");
    assert_eq!(st["backend"], "vm", "{st}");
    let pid = st["pid"].as_i64().expect("state has a pid") as i32;
    assert!(pid_alive(pid), "the VMM {pid} must be alive: {st}");
    assert!(
        marked_processes(b.marker()).contains(&pid),
        "the VMM {pid} does not carry {MARK_VAR}: the leftover scan could not find it"
    );
    assert!(
        vm_note(pid).starts_with("holds a KVM VM fd"),
        "the VMM {pid}: {}",
        vm_note(pid)
    );
    pid
}

/// Kills the VMM and waits until `state` says stopped.
fn kill_vmm_and_wait_stopped(hj: &Hyperjail, id: &str, pid: i32) {
    sigkill(pid);
    wait_until(Duration::from_secs(10), "state to say stopped", || {
        status(hj, id).as_deref() == Some("stopped")
    });
    let st = hj.state(id).expect("state after the VMM died");
    assert_eq!(st["pid"], 0, "a stopped domain shows pid 0: {st}");
}

#[test]
fn sigkill_of_vmm_when_created_or_running_then_delete_removes_everything() {
    require_kvm!();
    let prog = Program::build();
    let hj = Hyperjail::new();
    println!("vm_crash: program: {}", prog.describe());

    for phase in ["created", "running"] {
        let b = prog.bundle(true);
        let c = hj.container(&format!("vmmkill-{phase}"));
        c.create(&b, &[]).assert_ok();
        if phase == "running" {
            c.start().assert_ok();
        }
        assert_eq!(c.status().as_deref(), Some(phase));
        let pid = vmm_pid(&hj, &b, &c.id);
        kill_vmm_and_wait_stopped(&hj, &c.id, pid);
        // Stopped: delete needs no --force, and must take everything.
        let (out, took, hung) = delete(&hj, &c.id, false);
        assert!(hung.is_none(), "{phase}: {hung:?}");
        out.assert_ok();
        println!(
            "vm_crash: VMM killed while {phase}: delete took {}",
            ms(took)
        );
        assert_clean(&hj, &b, &c.id, &format!("VMM killed while {phase}, delete"));
        c.assert_nothing_left(&b);
        // The id is free again.
        c.create(&b, &[]).assert_ok();
        assert_eq!(c.status().as_deref(), Some("created"));
        c.delete().assert_ok();
        assert_clean(&hj, &b, &c.id, &format!("{phase}: re-create + delete"));
    }

    // A foreground `run` whose VMM is killed reports 137 and deletes the domain itself.
    let b = prog.bundle(true);
    let c = hj.container("vmmkill-run");
    let run = c.run_call(&b, &[]).spawn();
    wait_until(Duration::from_secs(20), "the VM to run", || {
        c.status().as_deref() == Some("running")
    });
    let pid = vmm_pid(&hj, &b, &c.id);
    sigkill(pid);
    let (out, _, hung) = finish(run, Duration::from_secs(10), "run after its VMM was killed");
    assert!(hung.is_none(), "{hung:?}");
    assert_eq!(out.code, Some(137), "{out}");
    assert_clean(&hj, &b, &c.id, "run (foreground) after its VMM was killed");
    c.create(&b, &[]).assert_ok();
    c.delete().assert_ok();
    assert_clean(&hj, &b, &c.id, "run: re-create + delete");
}

/// The guest program really loops in the VM (so the cases above kill a live vCPU).
#[test]
fn loop_program_keeps_running_in_the_vm() {
    require_kvm!();
    let prog = Program::build();
    let hj = Hyperjail::new();
    let b = prog.bundle(true);
    let c = hj.container("vmloop");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.status().as_deref(), Some("running"));
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);

    let b = prog.bundle(false);
    let c = hj.container("vmexit");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_clean(&hj, &b, &c.id, "run of the exiting program");
}
