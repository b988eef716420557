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

use hyperjail_tests::{
    cgroup_dirs, cgroup_procs, marked_processes, mounts_under, pid_alive, require_root, Bundle,
    Hyperjail, Output, MARK_VAR,
};
use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Undisturbed runs per verb to measure its duration.
const MEASURE_RUNS: usize = 5;
/// Fault-injection runs per verb by default.
const DEFAULT_RUNS: usize = 10;

/// A small deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

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

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    if v.is_empty() {
        Duration::ZERO
    } else {
        v[v.len() / 2]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A fresh bundle for one run of `verb`.
fn bundle(verb: Verb) -> Bundle {
    let mut b = Bundle::new();
    b.args(verb.args());
    b.save();
    b
}

/// Does `cg` (a path from /proc/<pid>/cgroup) lie in the container's cgroup `path`?
fn in_cgroup(cg: &str, path: &str) -> bool {
    cg == path || cg.starts_with(&format!("{path}/"))
}

/// Everything of container `id` (bundle `b`, state root `hj.root()`) left on the machine.
fn leftovers(hj: &Hyperjail, b: &Bundle, id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let cg_path = format!("/hyperjail/{id}");
    let bundle_dir = b.path().canonicalize().unwrap_or_else(|_| b.path().into());
    let marked = marked_processes(b.marker());
    let me = std::process::id() as i32;
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let mut why = Vec::new();
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        for line in cgroup.lines() {
            if let Some(p) = line.splitn(3, ':').nth(2) {
                if in_cgroup(p, &cg_path) {
                    why.push(format!("cgroup {line}"));
                    break;
                }
            }
        }
        for link in ["cwd", "root"] {
            if let Ok(t) = fs::read_link(format!("/proc/{pid}/{link}")) {
                if t.starts_with(&bundle_dir) {
                    why.push(format!("{link} {}", t.display()));
                }
            }
        }
        if marked.contains(&pid) {
            why.push(format!("{MARK_VAR}={}", b.marker()));
        }
        if !why.is_empty() && pid_alive(pid) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|v| String::from_utf8_lossy(&v).replace('\0', " "))
                .unwrap_or_default();
            let state = hyperjail_tests::proc_state(pid).unwrap_or('?');
            left.push(format!(
                "process {pid} ({} state {state}, cmd `{}`): {}",
                comm.trim(),
                cmdline.trim(),
                why.join("; ")
            ));
        }
    }
    for dir in cgroup_dirs(&cg_path) {
        if dir.exists() {
            let procs = cgroup_procs(&dir);
            left.push(format!(
                "cgroup dir {} (cgroup.procs {procs:?})",
                dir.display()
            ));
        }
    }
    for m in mounts_under(b.path()) {
        left.push(format!("mount {} (under the bundle)", m.display()));
    }
    for m in mounts_under(hj.root()) {
        left.push(format!("mount {} (under the state root)", m.display()));
    }
    let sd = hj.root().join(id);
    if sd.exists() {
        let entries: Vec<String> = fs::read_dir(&sd)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        left.push(format!("state dir {} (entries {entries:?})", sd.display()));
    }
    left
}

/// Removes what [`leftovers`] found, so that one failure does not spill into later runs.
fn scrub(hj: &Hyperjail, b: &Bundle, id: &str) {
    let cg_path = format!("/hyperjail/{id}");
    for dir in cgroup_dirs(&cg_path) {
        for pid in cgroup_procs(&dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = fs::write(dir.join("freezer.state"), "THAWED");
        let _ = fs::write(dir.join("cgroup.freeze"), "0");
    }
    for pid in marked_processes(b.marker()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut ms = mounts_under(b.path());
    ms.extend(mounts_under(hj.root()));
    ms.reverse();
    for m in ms {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    for dir in cgroup_dirs(&cg_path) {
        let _ = fs::remove_dir(dir);
    }
    let _ = fs::remove_dir_all(hj.root().join(id));
}

/// How long `delete --force` may take before it counts as hung (and is killed).
const DELETE_LIMIT: Duration = Duration::from_secs(5);

/// One `delete --force`, timed. A call that hangs is SIGKILLed after [`DELETE_LIMIT`];
/// then the returned note says what it was blocked on.
fn delete_force(hj: &Hyperjail, id: &str) -> (Output, Duration, Option<String>) {
    let t = Instant::now();
    let mut running = hj
        .call(["delete", "--force", id])
        .timeout(DELETE_LIMIT * 3)
        .spawn();
    let mut hung = None;
    while !running.is_finished() {
        if t.elapsed() > DELETE_LIMIT {
            let pid = running.pid();
            let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            let stack = fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            let first = stack.lines().take(3).collect::<Vec<_>>().join(" | ");
            hung = Some(format!(
                "delete --force hung for {DELETE_LIMIT:?} (wchan {wchan:?}, kernel stack {first:?})"
            ));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = running.wait();
    (out, t.elapsed(), hung)
}

/// Waits `d` from `since`: sleeps for most of it, spins for the last part (sub-ms delays).
fn wait_from(since: Instant, d: Duration) {
    let end = since + d;
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        let left = end - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep(left - Duration::from_micros(200));
        } else {
            std::hint::spin_loop();
        }
    }
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
        let (_, _, hung) = delete_force(hj, &id);
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
            let (del, del_time, hung) = delete_force(&hj, &id);
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
                let (d2, _, _) = delete_force(&hj, &id);
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
            let (d3, _, h3) = delete_force(&hj, &id);
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
