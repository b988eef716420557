//! Concurrency and load: many clients drive the same ids under one `--root` at once.
//!
//! `random_verbs_on_shared_ids`: 8 client threads issue random valid and invalid verbs on
//! 4 shared ids for `HJ_CONC_SECS` seconds (default 20), while a checker thread parses
//! every `state.json` it can read. No call may hang, panic, or fail other than with exit 1
//! and one `hyperjail: ` line; at the end `delete --force` must leave nothing behind (no
//! state dir, cgroup dir, mount, marked process, container init or hyperjail process).
//! The test process is a child subreaper and reaps the container processes it adopts, as
//! an engine's shim does (`HJ_CONC_NO_SUBREAPER=1` turns that off); `HJ_CONC_SEED`
//! repeats a run.
//!
//! `verbs_on_other_ids_run_in_parallel`: a `create` held up by a slow createRuntime hook
//! must not block verbs on other ids.

use hyperjail_tests::{
    cgroup_dirs, cgroup_procs, marked_processes, mounts_under, pid_alive, require_root, Bundle,
    Hyperjail, Output, Rng, MARK_VAR,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one call may take before it counts as a hang (dead-lock).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 8;
const KNOWN_STATUS: &[&str] = &["creating", "created", "running", "paused", "stopped"];

#[derive(Default)]
struct VerbStats {
    calls: u64,
    ok: u64,
    failed: u64,
    max_ms: u128,
    total_ms: u128,
}

#[derive(Default)]
struct Stats {
    verbs: BTreeMap<String, VerbStats>,
    /// Normalised error line → (count, first call with its time and stderr).
    failures: BTreeMap<String, (u64, String)>,
    violations: Vec<String>,
}

struct Shared<'a> {
    hj: &'a Hyperjail,
    ids: &'a [String],
    bundles: &'a [Bundle],
    stats: Mutex<Stats>,
    stop: AtomicBool,
    state_reads: AtomicU64,
}

impl Shared<'_> {
    fn violation(&self, msg: String) {
        eprintln!("VIOLATION: {msg}");
        self.stats.lock().unwrap().violations.push(msg);
    }

    fn normalise(&self, line: &str) -> String {
        let mut s = line.to_string();
        for id in self.ids {
            s = s.replace(id.as_str(), "<id>");
        }
        for b in self.bundles {
            s = s.replace(&b.path().display().to_string(), "<bundle>");
        }
        s = s.replace(&self.hj.root().display().to_string(), "<root>");
        let mut out = String::new();
        let mut in_num = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                if !in_num {
                    out.push('N');
                }
                in_num = true;
            } else {
                in_num = false;
                out.push(c);
            }
        }
        out.chars().take(140).collect()
    }

    /// Runs one call with the timeout; checks the generic rules on its output. `None` when
    /// the call hung (already recorded as a violation).
    fn call(&self, label: &str, args: &[&str], mark: Option<&str>) -> Option<Output> {
        let mut c = self.hj.call(args.iter().copied()).timeout(CALL_TIMEOUT);
        if let Some(m) = mark {
            c = c.env(MARK_VAR, m);
        }
        let t0 = Instant::now();
        let res = catch_unwind(AssertUnwindSafe(|| c.output()));
        let ms = t0.elapsed().as_millis();
        let out = match res {
            Ok(o) => o,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                self.violation(format!(
                    "HANG after {ms} ms: `hyperjail {}`: {msg}",
                    args.join(" ")
                ));
                return None;
            }
        };
        let mut st = self.stats.lock().unwrap();
        let v = st.verbs.entry(label.to_string()).or_default();
        v.calls += 1;
        v.max_ms = v.max_ms.max(ms);
        v.total_ms += ms;
        if out.ok() {
            v.ok += 1;
        } else {
            v.failed += 1;
            let first = out.stderr.lines().next().unwrap_or("<no stderr>");
            let key = format!("{label}: {}", self.normalise(first));
            let e = st.failures.entry(key).or_insert_with(|| {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let first = format!(
                    "`hyperjail {}` at {t:.3} took {ms} ms, exit {:?}: {}",
                    args.join(" "),
                    out.code,
                    out.stderr.trim_end()
                );
                (0, first)
            });
            e.0 += 1;
        }
        drop(st);
        if out.stderr.contains("cannot reach the container's init") {
            self.diagnose(args);
        }
        let cmd = format!("`hyperjail {}` ({ms} ms)", args.join(" "));
        if out.code == Some(101) || out.stderr.contains("panicked") {
            self.violation(format!("PANIC in {cmd}: {out}"));
        } else if out.signal.is_some() {
            self.violation(format!("killed by a signal: {cmd}: {out}"));
        } else if !out.ok() {
            let err = out.stderr.trim_end_matches('\n');
            if out.code != Some(1) || err.lines().count() != 1 || !err.starts_with("hyperjail: ") {
                self.violation(format!(
                    "bad failure (want exit 1 and one 'hyperjail: ' line): {cmd}: {out}"
                ));
            }
        }
        Some(out)
    }

    /// Prints what the state dir and the recorded init look like (for odd failures).
    fn diagnose(&self, args: &[&str]) {
        let Some(id) = args.last() else { return };
        let dir = self.hj.root().join(id);
        let state = fs::read_to_string(dir.join("state.json")).unwrap_or_default();
        let files: Vec<String> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let pid = serde_json::from_str::<Value>(&state)
            .ok()
            .and_then(|v| v["pid"].as_i64())
            .unwrap_or(0);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let status: Vec<&str> = status
            .lines()
            .filter(|l| l.starts_with("State") || l.starts_with("PPid") || l.starts_with("NSpid"))
            .collect();
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let socks: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| fs::read_link(e.path()).ok())
            .map(|l| l.display().to_string())
            .filter(|l| l.starts_with("socket"))
            .collect();
        let sock_ino = fs::metadata(dir.join("start.sock"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        eprintln!(
            "DIAG `{}`: files {files:?} state {state}\n  pid {pid} {status:?} cmd {:?} sockets {socks:?} start.sock file ino {sock_ino}",
            args.join(" "),
            String::from_utf8_lossy(&cmd).replace('\0', " ")
        );
    }

    fn check_state_output(&self, id: &str, out: &Output) -> Option<Value> {
        if !out.ok() {
            return None;
        }
        match serde_json::from_str::<Value>(&out.stdout) {
            Ok(v) => {
                let status = v["status"].as_str().unwrap_or("");
                if !KNOWN_STATUS.contains(&status) || v["id"] != id {
                    self.violation(format!("state {id}: bad document: {out}"));
                }
                Some(v)
            }
            Err(e) => {
                self.violation(format!("state {id}: not JSON ({e}): {out}"));
                None
            }
        }
    }

    fn client(&self, n: usize, seed: u64, deadline: Instant) {
        let mut rng = Rng(seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        while Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) {
            let k = rng.below(self.ids.len());
            let id = self.ids[k].as_str();
            let b = &self.bundles[k];
            let bundle = b.path().display().to_string();
            let mark = Some(b.marker());
            match rng.below(19) {
                0 | 1 => {
                    self.call("create", &["create", "--bundle", &bundle, id], mark);
                }
                2 => {
                    self.call("start", &["start", id], None);
                }
                3 | 4 => {
                    self.call("run -d", &["run", "-d", "--bundle", &bundle, id], mark);
                }
                5 | 6 => {
                    if let Some(o) = self.call("state", &["state", id], None) {
                        self.check_state_output(id, &o);
                    }
                }
                7 => {
                    self.call("kill KILL", &["kill", id, "KILL"], None);
                }
                8 => {
                    self.call("kill TERM", &["kill", id, "TERM"], None);
                }
                9 => {
                    self.call("pause", &["pause", id], None);
                }
                10 => {
                    self.call("resume", &["resume", id], None);
                }
                11 => {
                    self.call("exec -d true", &["exec", "-d", id, "true"], mark);
                }
                12 => {
                    if let Some(o) = self.call("ps json", &["ps", "--format", "json", id], None) {
                        if o.ok() {
                            match serde_json::from_str::<Value>(&o.stdout) {
                                Ok(Value::Array(a)) if a.iter().all(|p| p.is_i64()) => {}
                                _ => self.violation(format!(
                                    "ps --format json {id}: not an array of pids: {o}"
                                )),
                            }
                        }
                    }
                }
                13 => {
                    self.call("delete", &["delete", id], None);
                }
                14 => {
                    self.call("delete --force", &["delete", "--force", id], None);
                }
                15 => {
                    let json = rng.below(2) == 0;
                    let args: &[&str] = if json {
                        &["list", "--format", "json"]
                    } else {
                        &["list"]
                    };
                    if let Some(o) = self.call("list", args, None) {
                        if !o.ok() {
                            self.violation(format!("list failed: {o}"));
                        } else if json {
                            match serde_json::from_str::<Value>(&o.stdout) {
                                Ok(Value::Array(a)) => {
                                    for s in a {
                                        let st = s["status"].as_str().unwrap_or("");
                                        if !KNOWN_STATUS.contains(&st) {
                                            self.violation(format!(
                                                "list: unknown status in {s}: {o}"
                                            ));
                                        }
                                    }
                                }
                                Ok(Value::Null) => {}
                                _ => self.violation(format!("list json is not an array: {o}")),
                            }
                        }
                    }
                }
                16 => {
                    // Invalid: a signal that does not exist.
                    let sig = ["BOGUS", "SIGNOPE", "999", "SIGRTMAX+99"][rng.below(4)];
                    let args = ["kill", id, sig];
                    if let Some(o) = self.call("invalid: bad signal", &args, None) {
                        if o.ok() {
                            self.violation(format!("kill with signal {sig} succeeded: {o}"));
                        }
                    }
                }
                17 => {
                    // Invalid: an id nobody ever creates.
                    let ghost = format!("{id}-ghost");
                    let verb = ["state", "start", "delete", "pause", "kill", "ps"][rng.below(6)];
                    let args = [verb, ghost.as_str()];
                    if let Some(o) = self.call("invalid: unknown id", &args, None) {
                        if o.ok() {
                            self.violation(format!("{verb} of unknown id succeeded: {o}"));
                        }
                    }
                }
                _ => {
                    // Invalid: start twice. The second start may only succeed if the id
                    // was deleted and created again in between (a different `created`).
                    let before = self
                        .call("state", &["state", id], None)
                        .and_then(|o| self.check_state_output(id, &o));
                    let first = self.call("start twice (1st)", &["start", id], None);
                    let second = self.call("start twice (2nd)", &["start", id], None);
                    if let (Some(f), Some(s)) = (first, second) {
                        if f.ok() && s.ok() {
                            let after = self
                                .call("state", &["state", id], None)
                                .and_then(|o| self.check_state_output(id, &o));
                            if let (Some(a), Some(b)) = (&before, &after) {
                                if a["created"] == b["created"] {
                                    self.violation(format!(
                                        "start {id} succeeded twice on the same container \
                                         (created {}): {f}\n{s}",
                                        a["created"]
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads every state.json directly while the clients run; each must parse.
    fn checker(
        &self,
        cgroups_seen: &Mutex<BTreeSet<PathBuf>>,
        inits: &Mutex<BTreeSet<(i32, u64)>>,
    ) {
        while !self.stop.load(Ordering::Relaxed) {
            for id in self.ids {
                let p = self.hj.root().join(id).join("state.json");
                let Ok(data) = fs::read(&p) else { continue };
                self.state_reads.fetch_add(1, Ordering::Relaxed);
                match serde_json::from_slice::<Value>(&data) {
                    Ok(v) => {
                        if v["id"] != id.as_str() {
                            self.violation(format!("{}: wrong id: {v}", p.display()));
                        }
                        if let (Some(pid), Some(start)) =
                            (v["pid"].as_i64(), v["pid_start"].as_u64())
                        {
                            if pid > 0 {
                                inits.lock().unwrap().insert((pid as i32, start));
                            }
                        }
                        if let Some(a) = v["cgroups"].as_array() {
                            let mut seen = cgroups_seen.lock().unwrap();
                            for d in a.iter().filter_map(Value::as_str) {
                                seen.insert(PathBuf::from(d));
                            }
                        }
                    }
                    Err(e) => self.violation(format!(
                        "{} is not valid JSON ({e}): {:?}",
                        p.display(),
                        String::from_utf8_lossy(&data)
                    )),
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The state letter and start time (field 22) of a process.
fn stat_of(pid: i32) -> Option<(char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(19)?.parse().ok()?))
}

/// Reaps our zombie children that live in another pid namespace: processes of the
/// containers adopted as subreaper (never the hyperjail calls, which are in ours).
fn reap_adopted() {
    let me = std::process::id().to_string();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(st) = fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |k: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        if field("PPid:") == me
            && field("State:").starts_with('Z')
            && field("NSpid:").split_whitespace().count() > 1
        {
            let mut status = 0;
            // SAFETY: waitpid on one specific zombie child of ours.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        }
    }
}

/// Waits up to 5 s for every recorded init to be gone or a zombie; a violation otherwise.
fn wait_for_inits(inits: &BTreeSet<(i32, u64)>, shared: &Shared<'_>) {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        reap_adopted();
        let live: Vec<(i32, u64)> = inits
            .iter()
            .copied()
            .filter(|&(pid, start)| matches!(stat_of(pid), Some((c, s)) if s == start && c != 'Z' && c != 'X'))
            .collect();
        if live.is_empty() {
            println!("container inits recorded: {}, none left", inits.len());
            return;
        }
        if Instant::now() > end {
            for (pid, _) in live {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let status: Vec<&str> = status
                    .lines()
                    .filter(|l| ["State", "PPid", "NSpid"].iter().any(|k| l.starts_with(k)))
                    .collect();
                let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
                let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                shared.violation(format!(
                    "container init {pid} is still alive after delete --force: {status:?} wchan {wchan} cgroup {:?}",
                    cg.lines().find(|l| l.contains("pids")).unwrap_or("")
                ));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes whose command line mentions `needle` (our `--root`), not zombies.
fn runtime_processes(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            v.push((pid, cmd));
        }
    }
    v
}

#[test]
fn random_verbs_on_shared_ids() {
    require_root!();
    let secs: u64 = std::env::var("HJ_CONC_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("HJ_CONC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("concurrency: {CLIENTS} clients, {secs} s, seed {seed} (HJ_CONC_SEED)");
    let hj = Hyperjail::new();
    let ids: Vec<String> = (0..4)
        .map(|i| format!("conc{i}-{}", std::process::id()))
        .collect();
    let bundles: Vec<Bundle> = (0..4)
        .map(|_| {
            let mut b = Bundle::new();
            // TERM ends the container (pid 1 ignores signals it has no handler for), and
            // a child process makes kill/delete deal with more than one process.
            b.sh("trap 'exit 0' TERM; sleep 3600 & wait");
            b.save();
            b
        })
        .collect();
    let shared = Shared {
        hj: &hj,
        ids: &ids,
        bundles: &bundles,
        stats: Mutex::new(Stats::default()),
        stop: AtomicBool::new(false),
        state_reads: AtomicU64::new(0),
    };
    let cgroups_seen = Mutex::new(BTreeSet::new());
    let inits = Mutex::new(BTreeSet::new());
    let subreaper = std::env::var_os("HJ_CONC_NO_SUBREAPER").is_none();
    if subreaper {
        // As an engine's shim does: orphans of the runtime (a detached exec's process, the
        // container init once `create` exits) come to us and are reaped. Without it, on
        // these machines (PID 1 does not reap), an exec'd process's zombie keeps the pid
        // namespace alive and a killed init hangs in zap_pid_ns_processes for ever.
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    }
    println!("subreaper: {subreaper} (HJ_CONC_NO_SUBREAPER unset)");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    std::thread::scope(|s| {
        let checker = s.spawn(|| shared.checker(&cgroups_seen, &inits));
        let reaper = s.spawn(|| {
            while !shared.stop.load(Ordering::Relaxed) {
                reap_adopted();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let sh = &shared;
                s.spawn(move || sh.client(n, seed, deadline))
            })
            .collect();
        for c in clients {
            if let Err(p) = c.join() {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                shared.violation(format!("client thread panicked: {msg}"));
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
        checker.join().expect("checker thread");
        reaper.join().expect("reaper thread");
    });
    let elapsed = t0.elapsed();

    // Clean up: delete --force of every id must succeed and leave nothing.
    for (id, b) in ids.iter().zip(&bundles) {
        if let Some(o) = shared.call("final delete --force", &["delete", "--force", id], None) {
            if !o.ok() {
                shared.violation(format!("final delete --force {id} failed: {o}"));
            }
        }
        if hj.root().join(id).exists() {
            shared.violation(format!("state dir of {id} is left after delete --force"));
        }
        for d in cgroup_dirs(&format!("/hyperjail/{id}")) {
            if d.exists() {
                let live: Vec<i32> = cgroup_procs(&d)
                    .into_iter()
                    .filter(|p| pid_alive(*p))
                    .collect();
                shared.violation(format!(
                    "cgroup dir {} of {id} is left (live procs {live:?})",
                    d.display()
                ));
            }
        }
        let m = mounts_under(b.path());
        if !m.is_empty() {
            shared.violation(format!("mounts under the bundle of {id} are left: {m:?}"));
        }
        let p = marked_processes(b.marker());
        if !p.is_empty() {
            let desc: Vec<String> = p
                .iter()
                .map(|pid| {
                    let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                    format!(
                        "{pid} {:?} cgroup {:?}",
                        String::from_utf8_lossy(&cmd).replace('\0', " "),
                        cg.lines().find(|l| l.contains("pids")).unwrap_or("")
                    )
                })
                .collect();
            shared.violation(format!("live processes of {id} are left: {desc:?}"));
        }
    }
    for d in cgroups_seen.lock().unwrap().iter() {
        if d.exists() {
            let live: Vec<i32> = cgroup_procs(d)
                .into_iter()
                .filter(|p| pid_alive(*p))
                .collect();
            shared.violation(format!(
                "cgroup dir {} (from a state.json) is left, live procs {live:?}",
                d.display()
            ));
        }
    }
    // Every container init ever recorded must be gone (or a zombie) now: an init stuck in
    // its exit is neither in a cgroup nor readable by its environment, so the checks
    // above cannot see it.
    wait_for_inits(&inits.lock().unwrap(), &shared);
    let left: Vec<String> = hj
        .root_entries()
        .into_iter()
        .filter(|e| e != "next-domid")
        .collect();
    if !left.is_empty() {
        shared.violation(format!("--root still holds {left:?}"));
    }
    let procs = runtime_processes(&hj.root().display().to_string());
    if !procs.is_empty() {
        shared.violation(format!("hyperjail processes still running: {procs:?}"));
    }

    let st = shared.stats.lock().unwrap();
    println!("ran {:.1} s", elapsed.as_secs_f64());
    println!(
        "{:<22} {:>6} {:>6} {:>6} {:>8} {:>8}",
        "verb", "calls", "ok", "failed", "avg ms", "max ms"
    );
    let mut total = 0;
    for (verb, v) in &st.verbs {
        total += v.calls;
        println!(
            "{verb:<22} {:>6} {:>6} {:>6} {:>8} {:>8}",
            v.calls,
            v.ok,
            v.failed,
            v.total_ms / u128::from(v.calls.max(1)),
            v.max_ms
        );
    }
    println!("total calls {total}");
    println!(
        "state.json reads by the checker: {}",
        shared.state_reads.load(Ordering::Relaxed)
    );
    println!("failures by kind:");
    for (k, (n, first)) in &st.failures {
        println!("  {n:>6}  {k}");
        println!("            first: {first}");
    }
    assert!(
        st.violations.is_empty(),
        "{} violation(s):\n{}",
        st.violations.len(),
        st.violations.join("\n")
    );
}

#[test]
fn verbs_on_other_ids_run_in_parallel() {
    require_root!();
    let hj = Hyperjail::new();
    let hook_secs = 3;
    let mut slow = Bundle::new();
    slow.args(&["sleep", "3600"]);
    slow.config_mut()["hooks"] = json!({
        "createRuntime": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("sleep {hook_secs}")],
        }]
    });
    let mut fast = Bundle::new();
    fast.args(&["sleep", "3600"]);
    let mut other = Bundle::new();
    other.args(&["sleep", "3600"]);
    let c_slow = hj.container("slow");
    let c_fast = hj.container("fast");
    let c_other = hj.container("other");
    c_other.create(&other, &[]).assert_ok();

    let t0 = Instant::now();
    let mut running = c_slow
        .create_call(&slow, &[])
        .timeout(Duration::from_secs(30))
        .spawn();
    // Wait until the slow create holds its lock (its state dir exists).
    let dir = c_slow.state_dir();
    while !dir.join("config.json").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the slow create did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let budget = Duration::from_millis(1500);
    let time = |what: &str, f: &mut dyn FnMut() -> Output| {
        let t = Instant::now();
        let out = f();
        let took = t.elapsed();
        println!("{what}: {took:?} (code {:?})", out.code);
        assert!(
            took < budget,
            "{what} took {took:?} while another id's create was in its hook: {out}"
        );
        out
    };
    time("state of another id", &mut || {
        hj.run(["state", &c_other.id])
    })
    .assert_ok();
    time("create of another id", &mut || c_fast.create(&fast, &[])).assert_ok();
    time("start of another id", &mut || c_fast.start()).assert_ok();
    time("kill of another id", &mut || c_other.kill("KILL")).assert_ok();
    time("list", &mut || hj.run(["list"])).assert_ok();
    // `state` of the id being created takes no lock either: it answers at once.
    let st = time("state of the id being created", &mut || {
        hj.run(["state", &c_slow.id])
    });
    if !st.ok() {
        st.assert_error(&["creating", "exist"]);
    }
    assert!(
        !running.is_finished(),
        "the slow create finished before the other verbs ran ({:?}): the test proves nothing",
        t0.elapsed()
    );
    let out = running.wait();
    out.assert_ok();
    let took = t0.elapsed();
    println!("slow create took {took:?}");
    assert!(took >= Duration::from_secs(hook_secs));
    c_slow.delete_force().assert_ok();
    c_fast.delete_force().assert_ok();
    c_other.delete_force().assert_ok();
    c_slow.assert_nothing_left(&slow);
    c_fast.assert_nothing_left(&fast);
    c_other.assert_nothing_left(&other);
}
