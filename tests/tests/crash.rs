//! Crash safety: the runtime is SIGKILLed at a random moment of a verb (as an engine's
//! timeout or the OOM killer would do it), then `delete --force ID` must leave nothing of
//! the container on the machine, and a later `create` with the same id must work.
//!
//! For each verb the test first measures the verb's duration (median of 5 undisturbed
//! runs), then kills the hyperjail CLI process it spawned (only that process, not the
//! stage processes it may have forked) after a delay drawn uniformly in
//! `[0, 1.2 × duration]`. After `delete --force` it looks for:
//!
//! - live processes (zombies ignored: PID 1 here does not reap orphans) whose
//!   `/proc/<pid>/cgroup` names the container's cgroup, whose cwd or root lies in the
//!   bundle, or that carry the bundle's marker variable;
//! - the container's cgroup directory in every hierarchy (v1 and `/sys/fs/cgroup/unified`);
//! - mounts under the bundle or under the state root;
//! - the state directory.
//!
//! The default is 10 runs per verb; `HJ_CRASH_RUNS=N` runs N per verb. The seed comes from
//! the clock (or `HJ_CRASH_SEED`) and is printed, so a failing run can be replayed.

use hyperjail_tests::crash::{delete, leftovers, median, ms, scrub, wait_from};
use hyperjail_tests::{require_root, Bundle, Hyperjail, Rng, MARK_VAR};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Undisturbed runs per verb to measure its duration.
const MEASURE_RUNS: usize = 5;
/// Fault-injection runs per verb by default.
const DEFAULT_RUNS: usize = 10;

/// The verbs under test.
#[derive(Clone, Copy, Debug)]
enum Verb {
    Create,
    Start,
    RunDetached,
    RunForeground,
    Exec,
    Pause,
    Delete,
}

const VERBS: [Verb; 7] = [
    Verb::Create,
    Verb::Start,
    Verb::RunDetached,
    Verb::RunForeground,
    Verb::Exec,
    Verb::Pause,
    Verb::Delete,
];

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

    /// The container's process: long-lived, except for a foreground `run`, which lasts as
    /// long as its process (there the whole life, up to `run`'s own delete, is covered).
    fn args(self) -> &'static [&'static str] {
        match self {
            Verb::RunForeground => &["true"],
            _ => &["sleep", "1000"],
        }
    }

    /// Brings the container to the state the verb needs (panics when that fails).
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

    /// The CLI call to kill.
    fn spawn(self, hj: &Hyperjail, b: &Bundle, id: &str) -> hyperjail_tests::Running {
        let call = match self {
            Verb::Create => hj.call(["create", "--bundle"]).arg(b.path()).arg(id),
            Verb::RunDetached => hj
                .call(["run", "--detach", "--bundle"])
                .arg(b.path())
                .arg(id),
            Verb::RunForeground => hj.call(["run", "--bundle"]).arg(b.path()).arg(id),
            Verb::Start => hj.call(["start", id]),
            Verb::Exec => hj.call(["exec", id, "true"]),
            Verb::Pause => hj.call(["pause", id]),
            Verb::Delete => hj.call(["delete", "--force", id]),
        };
        call.env(MARK_VAR, b.marker()).spawn()
    }
}

/// A fresh bundle for one run of `verb`.
fn bundle(verb: Verb) -> Bundle {
    let mut b = Bundle::new();
    b.args(verb.args());
    b.save();
    b
}

/// Measures the verb's undisturbed duration (median of [`MEASURE_RUNS`]).
fn measure(hj: &Hyperjail, verb: Verb, n: &mut usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..MEASURE_RUNS {
        let b = bundle(verb);
        *n += 1;
        let id = format!("crash-m{n}-{}", std::process::id());
        verb.prepare(hj, &b, &id);
        let t = Instant::now();
        let out = verb.spawn(hj, &b, &id).wait();
        times.push(t.elapsed());
        out.assert_ok();
        let (_, _, hung) = delete(hj, &id, true);
        assert!(hung.is_none(), "undisturbed {}: {hung:?}", verb.name());
        scrub(hj, &b, &id);
    }
    median(&mut times)
}

#[test]
fn sigkill_during_each_verb_leaves_nothing_after_delete_force() {
    require_root!();
    let runs: usize = std::env::var("HJ_CRASH_RUNS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let seed: u64 = std::env::var("HJ_CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("crash: seed {seed} (HJ_CRASH_SEED={seed} replays), {runs} runs per verb");
    let mut rng = Rng(seed);
    let hj = Hyperjail::new();
    let mut n = 0usize;
    let mut total = 0usize;
    let mut finished_before_kill = 0usize;
    let mut delete_times = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut summary = String::new();

    for verb in VERBS {
        let dur = measure(&hj, verb, &mut n);
        let max = dur.mul_f64(1.2);
        println!(
            "crash: {}: median duration {} → delays in [0, {}]",
            verb.name(),
            ms(dur),
            ms(max)
        );
        let mut verb_failures = 0;
        for _ in 0..runs {
            let b = bundle(verb);
            n += 1;
            total += 1;
            let id = format!("crash-{n}-{}", std::process::id());
            verb.prepare(&hj, &b, &id);
            let delay = max.mul_f64(rng.unit());
            let t = Instant::now();
            let mut running = verb.spawn(&hj, &b, &id);
            wait_from(t, delay);
            let done_before = running.is_finished();
            // Only the CLI process: its stage children live on, as after an engine timeout.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(running.pid()),
                nix::sys::signal::Signal::SIGKILL,
            );
            let killed = running.wait();
            if done_before || killed.signal.is_none() {
                finished_before_kill += 1;
            }
            let pre = leftovers(&hj, &b, &id);
            let (del, del_time, hung) = delete(&hj, &id, true);
            delete_times.push(del_time);
            let mut problems = Vec::new();
            if let Some(h) = &hung {
                problems.push(h.clone());
            }
            let left = leftovers(&hj, &b, &id);
            if !left.is_empty() {
                // Does it go away by itself (a race with delete's return) or does it stay?
                std::thread::sleep(Duration::from_millis(500));
                let still = leftovers(&hj, &b, &id);
                for l in &left {
                    let kind = if still.contains(l) {
                        "persistent"
                    } else {
                        "gone 500 ms later"
                    };
                    problems.push(format!("after delete --force ({kind}): {l}"));
                }
                for l in still.iter().filter(|l| !left.contains(l)) {
                    problems.push(format!("after delete --force (appeared later): {l}"));
                }
            }
            let mut second_delete = None;
            if !left.is_empty() && hung.is_none() {
                // What does a second delete --force do with it?
                let (d2, _, _) = delete(&hj, &id, true);
                let after2 = leftovers(&hj, &b, &id);
                second_delete = Some(format!(
                    "second delete --force: code {:?} stderr {:?}; left after it: {after2:?}",
                    d2.code,
                    d2.stderr.trim()
                ));
            }
            // A later create with the same id must work (and clean up), on the machine as
            // delete --force left it.
            b.save();
            let again = hj
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
            }
            let (d3, _, h3) = delete(&hj, &id, true);
            if let Some(h) = h3 {
                problems.push(format!("re-created container: {h}"));
            }
            if again.ok() && !d3.ok() {
                problems.push(format!(
                    "delete --force of the re-created container failed: {:?}",
                    d3.stderr.trim()
                ));
            }
            for l in leftovers(&hj, &b, &id) {
                problems.push(format!("after re-create + delete --force: {l}"));
            }
            scrub(&hj, &b, &id);
            if !problems.is_empty() {
                verb_failures += 1;
                let mut msg = format!(
                    "{} killed at {} (of {} measured; CLI {}), delete --force: code {:?} stderr {:?} in {}",
                    verb.name(),
                    ms(delay),
                    ms(dur),
                    if done_before || killed.signal.is_none() {
                        format!("had already exited with {:?}", killed.code)
                    } else {
                        "killed by SIGKILL".into()
                    },
                    del.code,
                    del.stderr.trim(),
                    ms(del_time)
                );
                for p in &problems {
                    let _ = write!(msg, "\n    {p}");
                }
                let _ = write!(msg, "\n    before delete --force: {pre:?}");
                if let Some(s) = second_delete {
                    let _ = write!(msg, "\n    {s}");
                }
                println!("crash: LEFTOVER: {msg}");
                failures.push(msg);
            }
        }
        let _ = writeln!(
            summary,
            "  {:<17} duration {:>10}  runs {runs:>4}  runs with leftovers {verb_failures}",
            verb.name(),
            ms(dur)
        );
    }
    let med = median(&mut delete_times);
    println!(
        "crash: seed {seed}\n{summary}crash: {total} runs, {finished_before_kill} had exited before the kill, \
         {} with leftovers; median delete --force {}",
        failures.len(),
        ms(med)
    );
    assert!(
        failures.is_empty(),
        "{} of {total} runs left something behind (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
