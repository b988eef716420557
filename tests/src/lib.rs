//! Harness for hyperjail's integration tests (the tests themselves live in `tests/tests/`).
//!
//! The tests drive the real binary, as an engine would: [`Hyperjail`] runs it with a
//! per-test `--root`, [`Bundle`] builds a busybox bundle in a temporary directory with a
//! `config.json` derived from `hyperjail spec`, and [`Container`] is a guard that always
//! runs `delete --force` when it goes out of scope. Every test starts with
//! [`require_root!`], which prints `SKIP <test>: <reason>` and returns when the machine
//! cannot run containers (not root, no busybox).
//!
//! The binary is `$HYPERJAIL_BIN`, or `<workspace>/target/release/hyperjail`.
//! Run the tests serially: `cargo test -p hyperjail-tests --release -- --test-threads=1`.

#![deny(missing_docs)]

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

/// The busybox binary the bundles are made from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// How long one CLI call may take before the test fails (and the call is killed).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable put into every bundle's process env, and into the environment
/// of the `create`/`run` calls made through [`Container`] (so the runtime's own processes
/// and a container process that has not exec'd yet carry it too), so that every process a
/// test started can be found on the host: `HJTEST_MARK=<unique>`.
pub const MARK_VAR: &str = "HJTEST_MARK";

pub mod crash;
pub mod vm;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The name of the enclosing function (for SKIP lines).
#[macro_export]
macro_rules! function_name {
    () => {{
        fn f() {}
        fn type_name_of<T>(_: T) -> &'static str {
            std::any::type_name::<T>()
        }
        let name = type_name_of(f);
        let name = name.strip_suffix("::f").unwrap_or(name);
        name.rsplit("::").next().unwrap_or(name)
    }};
}

/// Returns from the calling test, printing `SKIP <test>: <reason>`, when the machine
/// cannot run containers (see [`skip_reason`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = $crate::skip_reason() {
            println!("SKIP {}: {}", $crate::function_name!(), reason);
            return;
        }
    };
}

/// Returns from the calling test, printing `SKIP <test>: <reason>`, unless `cond` holds.
#[macro_export]
macro_rules! skip_unless {
    ($cond:expr, $reason:expr) => {
        if !$cond {
            println!("SKIP {}: {}", $crate::function_name!(), $reason);
            return;
        }
    };
}

/// Why this machine cannot run the tests, or `None` when it can: they need root and
/// `/bin/busybox`. A missing hyperjail binary is not a reason to skip: it panics.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, cgroups, mounts)".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    let bin = hyperjail_bin();
    assert!(
        bin.is_file(),
        "hyperjail binary {} not found: run `cargo build --release` or set HYPERJAIL_BIN",
        bin.display()
    );
    None
}

/// The hyperjail binary under test: `$HYPERJAIL_BIN` or `<workspace>/target/release/hyperjail`.
pub fn hyperjail_bin() -> PathBuf {
    match std::env::var_os("HYPERJAIL_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/hyperjail"),
    }
}

/// A container id unique to this test run: `<tag>-<pid>-<n>-<micros>`, well under 200 bytes.
pub fn unique_id(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000)
        .unwrap_or(0);
    format!("{tag}-{}-{n}-{micros}", std::process::id())
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

/// The result of one CLI call. stdout and stderr went to files (not pipes), so a
/// container process that inherited them cannot keep the call from returning; the files
/// can be read again later with [`Output::stdout_now`] to see what the container wrote.
#[derive(Debug)]
pub struct Output {
    /// The arguments (after `--root DIR`).
    pub args: Vec<String>,
    /// Exit code, if the call exited.
    pub code: Option<i32>,
    /// Signal that killed the call, if any.
    pub signal: Option<i32>,
    /// stdout at the time the call returned.
    pub stdout: String,
    /// stderr at the time the call returned.
    pub stderr: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Output {
    /// Did the call exit 0?
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with the call's output unless it exited 0; returns `self`.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "`hyperjail {}` failed: {self}",
            self.args.join(" ")
        );
        self
    }

    /// Asserts a runtime error as the CLI promises it: exit 1 and exactly one line on
    /// stderr, starting with `hyperjail: ` and mentioning (case-insensitively) at least one
    /// of `mentions`.
    #[track_caller]
    pub fn assert_error(&self, mentions: &[&str]) -> &Self {
        assert_eq!(
            self.code,
            Some(1),
            "`hyperjail {}` should fail with exit 1: {self}",
            self.args.join(" ")
        );
        let err = self.stderr.trim_end_matches('\n');
        assert_eq!(
            err.lines().count(),
            1,
            "error output must be one line: {self}"
        );
        assert!(
            err.starts_with("hyperjail: "),
            "error line must start with 'hyperjail: ': {self}"
        );
        let low = err.to_lowercase();
        assert!(
            mentions.iter().any(|m| low.contains(&m.to_lowercase())),
            "error line should mention one of {mentions:?}: {self}"
        );
        self
    }

    /// What is in the stdout file now (the container may have written more since).
    pub fn stdout_now(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What is in the stderr file now.
    pub fn stderr_now(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The stdout lines, trimmed.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().map(str::trim).collect()
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "code={:?} signal={:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// A call that was spawned and may still run (see [`Call::spawn`]).
#[derive(Debug)]
pub struct Running {
    child: Child,
    args: Vec<String>,
    timeout: Duration,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// The pid of the hyperjail process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Has the call exited yet? (Does not reap it.)
    pub fn is_finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the call (killing it and panicking after its timeout).
    pub fn wait(mut self) -> Output {
        let end = Instant::now() + self.timeout;
        let status = loop {
            match self.child.try_wait().expect("wait for hyperjail") {
                Some(st) => break st,
                None if Instant::now() >= end => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "`hyperjail {}` did not finish within {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        self.args.join(" "),
                        self.timeout,
                        fs::read_to_string(&self.stdout_path).unwrap_or_default(),
                        fs::read_to_string(&self.stderr_path).unwrap_or_default()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        Output {
            args: self.args,
            code: status.code(),
            signal: status.signal(),
            stdout: fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            stdout_path: self.stdout_path,
            stderr_path: self.stderr_path,
        }
    }
}

/// A CLI call being put together: `hyperjail --root ROOT <args>`.
pub struct Call<'a> {
    hj: &'a Hyperjail,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    extra_fds: Vec<OwnedFd>,
    timeout: Duration,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

impl Call<'_> {
    /// Runs the call in directory `dir` (for relative paths in its arguments).
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Adds one argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Feeds `data` to the call's stdin through a pipe, then closes it.
    /// Without this, stdin is `/dev/null`.
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    /// Passes `fds` to the call as fds 3, 4, ... (for `--preserve-fds`).
    pub fn pass_fds(mut self, fds: Vec<OwnedFd>) -> Self {
        self.extra_fds = fds;
        self
    }

    /// Sets the call's timeout (default [`CALL_TIMEOUT`]).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sets an environment variable for the call.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts the call without waiting for it.
    pub fn spawn(self) -> Running {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let stdout_path = self.hj.logs.path().join(format!("{n}.out"));
        let stderr_path = self.hj.logs.path().join(format!("{n}.err"));
        let out = fs::File::create(&stdout_path).expect("stdout file");
        let err = fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(hyperjail_bin());
        cmd.arg("--root").arg(self.hj.root()).args(&self.args);
        cmd.stdout(out).stderr(err);
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        assert!(self.extra_fds.len() <= 8, "at most 8 extra fds");
        let mut raw = [-1i32; 8];
        for (slot, fd) in raw.iter_mut().zip(&self.extra_fds) {
            *slot = fd.as_raw_fd();
        }
        let count = self.extra_fds.len();
        if count > 0 {
            let hook = move || {
                // Move every source fd out of the way first, so that dup2 onto 3.. cannot
                // clobber a source that happens to sit there.
                let mut moved = [-1i32; 8];
                for i in 0..count {
                    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd we own; async-signal-safe.
                    moved[i] = unsafe { libc::fcntl(raw[i], libc::F_DUPFD_CLOEXEC, 100) };
                    if moved[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, &m) in moved.iter().take(count).enumerate() {
                    // SAFETY: dup2 onto 3+i in the forked child; the copy has no CLOEXEC.
                    if unsafe { libc::dup2(m, 3 + i as i32) } < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            };
            // SAFETY: the hook runs between fork and exec and only calls async-signal-safe
            // functions (fcntl, dup2) on fixed-size arrays: no allocation, no locks.
            unsafe {
                cmd.pre_exec(hook);
            }
        }
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", hyperjail_bin().display()));
        drop(self.extra_fds);
        let feeder = match (self.stdin, child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        Running {
            child,
            args,
            timeout: self.timeout,
            stdout_path,
            stderr_path,
            feeder,
        }
    }

    /// Runs the call to its end.
    pub fn output(self) -> Output {
        self.spawn().wait()
    }
}

/// One hyperjail "installation": the binary with its own `--root` in a temporary directory.
pub struct Hyperjail {
    base: TempDir,
    root: PathBuf,
    logs: TempDir,
}

impl Default for Hyperjail {
    fn default() -> Self {
        Self::new()
    }
}

impl Hyperjail {
    /// A fresh `--root` (`<tmp>/root`, not yet created: the runtime makes it).
    pub fn new() -> Self {
        let base = tempfile::Builder::new()
            .prefix("hj-root-")
            .tempdir()
            .expect("tempdir");
        let root = base.path().join("root");
        let logs = tempfile::Builder::new()
            .prefix("hj-logs-")
            .tempdir()
            .expect("tempdir");
        Hyperjail { base, root, logs }
    }

    /// The `--root` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory that holds the `--root` directory (to check that nothing is written
    /// beside it, e.g. for the id `../x`).
    pub fn root_parent(&self) -> &Path {
        self.base.path()
    }

    /// A call `hyperjail --root ROOT <args>` to be completed and run.
    pub fn call<I: IntoIterator<Item = S>, S: Into<OsString>>(&self, args: I) -> Call<'_> {
        Call {
            hj: self,
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            extra_fds: Vec::new(),
            timeout: CALL_TIMEOUT,
            env: Vec::new(),
            cwd: None,
        }
    }

    /// Runs `hyperjail --root ROOT <args>` to its end.
    pub fn run<I: IntoIterator<Item = S>, S: Into<OsString>>(&self, args: I) -> Output {
        self.call(args).output()
    }

    /// A guard for a container with a fresh unique id made from `tag`.
    pub fn container(&self, tag: &str) -> Container<'_> {
        self.container_with_id(&unique_id(tag))
    }

    /// A guard for a container with exactly this id.
    pub fn container_with_id(&self, id: &str) -> Container<'_> {
        Container {
            hj: self,
            id: id.to_string(),
        }
    }

    /// `state ID` parsed, or `None` when the call fails.
    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.run(["state", id]);
        if !out.ok() {
            return None;
        }
        Some(
            serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("state is not JSON ({e}): {out}")),
        )
    }

    /// `list --format json` parsed.
    pub fn list_json(&self) -> Vec<Value> {
        let out = self.run(["list", "--format", "json"]);
        out.assert_ok();
        match serde_json::from_str::<Value>(&out.stdout) {
            Ok(Value::Array(v)) => v,
            Ok(Value::Null) => Vec::new(),
            other => panic!("list --format json is not a JSON array ({other:?}): {out}"),
        }
    }

    /// The entries of the `--root` directory (missing root: none).
    pub fn root_entries(&self) -> BTreeSet<String> {
        fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A container id bound to a [`Hyperjail`]; `delete --force` runs when it is dropped (and
/// empty cgroup directories it may have left are removed, so one test's bug does not
/// spill into the next).
pub struct Container<'a> {
    hj: &'a Hyperjail,
    /// The container id.
    pub id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.id.is_empty() || self.id.contains('/') || self.id.contains("..") {
            return;
        }
        let out = self
            .hj
            .call(["delete", "--force", &self.id])
            .timeout(Duration::from_secs(30))
            .spawn()
            .wait();
        if !out.ok() && self.hj.root().join(&self.id).exists() {
            eprintln!("guard: `delete --force {}` failed: {out}", self.id);
        }
        for dir in cgroup_dirs(&format!("/hyperjail/{}", self.id)) {
            let _ = fs::remove_dir(dir);
        }
    }
}

impl Container<'_> {
    /// `create --bundle B ID <extra>` (saves the bundle's config first).
    pub fn create(&self, b: &Bundle, extra: &[&str]) -> Output {
        self.create_call(b, extra).output()
    }

    /// The `create` call, to be completed (stdin, fds) and run.
    pub fn create_call(&self, b: &Bundle, extra: &[&str]) -> Call<'_> {
        b.save();
        self.hj
            .call(["create", "--bundle"])
            .arg(b.path())
            .args(extra.iter().copied())
            .arg(&self.id)
            .env(MARK_VAR, b.marker())
    }

    /// `run --bundle B ID <extra>` (saves the bundle's config first) to its end.
    pub fn run(&self, b: &Bundle, extra: &[&str]) -> Output {
        self.run_call(b, extra).output()
    }

    /// The `run` call, to be completed (stdin, fds) and run or spawned.
    pub fn run_call(&self, b: &Bundle, extra: &[&str]) -> Call<'_> {
        b.save();
        self.hj
            .call(["run", "--bundle"])
            .arg(b.path())
            .args(extra.iter().copied())
            .arg(&self.id)
            .env(MARK_VAR, b.marker())
    }

    /// `start ID`.
    pub fn start(&self) -> Output {
        self.hj.run(["start", &self.id])
    }

    /// `kill ID SIG`.
    pub fn kill(&self, sig: &str) -> Output {
        self.hj.run(["kill", &self.id, sig])
    }

    /// `delete ID`.
    pub fn delete(&self) -> Output {
        self.hj.run(["delete", &self.id])
    }

    /// `delete --force ID`.
    pub fn delete_force(&self) -> Output {
        self.hj.run(["delete", "--force", &self.id])
    }

    /// `state ID` parsed, or `None` when it fails.
    pub fn state(&self) -> Option<Value> {
        self.hj.state(&self.id)
    }

    /// The `status` field of `state ID`, or `None` when `state` fails.
    pub fn status(&self) -> Option<String> {
        self.state()
            .and_then(|s| s["status"].as_str().map(str::to_string))
    }

    /// The `pid` field of `state ID` (panics when there is none).
    #[track_caller]
    pub fn pid(&self) -> i32 {
        let st = self
            .state()
            .unwrap_or_else(|| panic!("state {} failed", self.id));
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state has no pid: {st}")) as i32
    }

    /// Polls `state` until its status is `status`.
    #[track_caller]
    pub fn wait_status(&self, status: &str) {
        let mut last = None;
        let what = format!("container {} to be {status}", self.id);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            last = self.status().or(last);
            if last.as_deref() == Some(status) {
                return;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; last status {last:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The container's state directory `<root>/<id>`.
    pub fn state_dir(&self) -> PathBuf {
        self.hj.root().join(&self.id)
    }

    /// Asserts that nothing of this container is left: no state directory, no cgroup
    /// directory in any hierarchy (at the bundle's `cgroupsPath`, or `/hyperjail/<id>`),
    /// no mount under the bundle, no live process carrying the bundle's marker.
    #[track_caller]
    pub fn assert_nothing_left(&self, b: &Bundle) {
        assert!(
            !self.state_dir().exists(),
            "state directory {} is left",
            self.state_dir().display()
        );
        let cg = b
            .cgroups_path()
            .unwrap_or_else(|| format!("/hyperjail/{}", self.id));
        let dirs: Vec<_> = cgroup_dirs(&cg)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        assert!(dirs.is_empty(), "cgroup directories are left: {dirs:?}");
        let m = mounts_under(b.path());
        assert!(m.is_empty(), "mounts under the bundle are left: {m:?}");
        let p = marked_processes(b.marker());
        assert!(p.is_empty(), "processes of the container are left: {p:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Bundles
// ---------------------------------------------------------------------------------------

/// A busybox bundle in a temporary directory: `rootfs/` with busybox and its applets in
/// `/bin`, `/etc/passwd` and `/etc/group` (root and nobody 65534), and a `config.json`
/// made by `hyperjail spec` and adjusted for tests: no terminal, writable root, the
/// marker variable in `process.env`. Edit [`Bundle::config_mut`]; the config is written
/// by [`Bundle::save`] (which the [`Container`] helpers call).
///
/// On drop, processes carrying the marker are killed and mounts left under the bundle are
/// detached before the directory is removed.
pub struct Bundle {
    dir: TempDir,
    config: Value,
    marker: String,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    /// Builds the bundle (panics on failure).
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hj-bundle-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        for d in [
            "bin", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin", "sbin",
        ] {
            fs::create_dir_all(rootfs.join(d)).expect("mkdir in rootfs");
        }
        fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
        let list = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            let _ = symlink("busybox", rootfs.join("bin").join(applet));
        }
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .expect("passwd");
        fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n").expect("group");
        let out = Command::new(hyperjail_bin())
            .arg("spec")
            .arg("-b")
            .arg(dir.path())
            .output()
            .expect("hyperjail spec");
        assert!(
            out.status.success(),
            "hyperjail spec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text =
            fs::read_to_string(dir.path().join("config.json")).expect("spec wrote config.json");
        let mut config: Value = serde_json::from_str(&text).expect("spec config is JSON");
        let marker = unique_id("mark");
        config["process"]["terminal"] = json!(false);
        config["root"]["readonly"] = json!(false);
        config["process"]["args"] = json!(["true"]);
        let env = config["process"]["env"]
            .as_array_mut()
            .expect("spec has process.env");
        env.push(json!(format!("{MARK_VAR}={marker}")));
        Bundle {
            dir,
            config,
            marker,
        }
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<bundle>/rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The config (as it will be saved).
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The config, to edit.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// The unique value of [`MARK_VAR`] in this bundle's process env.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// Writes `config.json`.
    pub fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialise config");
        fs::write(self.path().join("config.json"), text).expect("write config.json");
    }

    /// Sets `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// Sets `process.args` to `["sh", "-c", script]`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Appends `KEY=VALUE` to `process.env`.
    pub fn env(&mut self, kv: &str) -> &mut Self {
        self.config["process"]["env"]
            .as_array_mut()
            .expect("process.env")
            .push(json!(kv));
        self
    }

    /// Appends a mount to `mounts`.
    pub fn mount(&mut self, m: Value) -> &mut Self {
        self.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .push(m);
        self
    }

    /// Removes the mounts whose destination is `dest`.
    pub fn remove_mount(&mut self, dest: &str) -> &mut Self {
        self.config["mounts"]
            .as_array_mut()
            .expect("mounts")
            .retain(|m| m["destination"] != dest);
        self
    }

    /// The namespace types in `linux.namespaces`.
    pub fn namespaces(&self) -> Vec<String> {
        self.config["linux"]["namespaces"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|n| n["type"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds (or replaces) namespace `ty`, joined at `path` when given.
    pub fn namespace(&mut self, ty: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(ty);
        let mut ns = json!({ "type": ty });
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        self.config["linux"]["namespaces"]
            .as_array_mut()
            .expect("linux.namespaces")
            .push(ns);
        self
    }

    /// Removes namespace `ty` from `linux.namespaces`.
    pub fn remove_namespace(&mut self, ty: &str) -> &mut Self {
        if let Some(v) = self.config["linux"]["namespaces"].as_array_mut() {
            v.retain(|n| n["type"] != ty);
        }
        self
    }

    /// `linux.cgroupsPath`, if set.
    pub fn cgroups_path(&self) -> Option<String> {
        self.config["linux"]["cgroupsPath"]
            .as_str()
            .map(str::to_string)
    }

    /// Writes a file into the rootfs (creating its directories).
    pub fn write_rootfs_file(&self, rel: &str, content: &str) {
        let p = self.rootfs().join(rel.trim_start_matches('/'));
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, content).expect("write rootfs file");
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for pid in marked_processes(&self.marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut left = mounts_under(self.path());
        left.reverse();
        for m in left {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Host inspection
// ---------------------------------------------------------------------------------------

/// Decodes the octal escapes (`\040`) of a /proc/self/mountinfo field.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of a mountinfo file.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// Root of the mount within its filesystem.
    pub root: String,
    /// Mount point.
    pub mount_point: String,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: Vec<String>,
    /// Optional fields (`shared:N`, `master:N`).
    pub optional: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub source: String,
    /// Superblock options (`rw,size=1024k,mode=700`).
    pub super_options: Vec<String>,
}

/// Parses mountinfo text (from the host or printed by a container).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 6 || sep + 3 > f.len() {
            continue;
        }
        v.push(MountInfo {
            root: unescape_mountinfo(f[3]),
            mount_point: unescape_mountinfo(f[4]),
            options: f[5].split(',').map(str::to_string).collect(),
            optional: f[6..sep].iter().map(|s| s.to_string()).collect(),
            fstype: f[sep + 1].to_string(),
            source: unescape_mountinfo(f[sep + 2]),
            super_options: f
                .get(sep + 3)
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        });
    }
    v
}

/// The host mount points (this process's mount namespace) at or under `dir`, outermost first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
        .into_iter()
        .map(|m| PathBuf::from(m.mount_point))
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// The host's cgroup mounts: `(mount point, fstype, super options)` for every v1
/// hierarchy and the v2 mount.
pub fn cgroup_mounts() -> Vec<(PathBuf, String, Vec<String>)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| (PathBuf::from(m.mount_point), m.fstype, m.super_options))
        .collect()
}

/// This process's cgroup in the hierarchy of `mount` (from /proc/self/cgroup).
fn own_cgroup(fstype: &str, super_options: &[String]) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let matches = if fstype == "cgroup2" {
            ctrls.is_empty()
        } else {
            !ctrls.is_empty()
                && ctrls
                    .split(',')
                    .all(|c| super_options.iter().any(|o| o == c))
        };
        if matches {
            return path.to_string();
        }
    }
    "/".into()
}

/// Where `cgroups_path` lands in every cgroup hierarchy: absolute paths under each mount
/// point, relative ones under this process's own cgroup of that hierarchy (runc's rule).
pub fn cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    cgroup_mounts()
        .into_iter()
        .map(|(mnt, ty, opts)| {
            let rel = if cgroups_path.starts_with('/') {
                cgroups_path.to_string()
            } else {
                format!(
                    "{}/{}",
                    own_cgroup(&ty, &opts).trim_end_matches('/'),
                    cgroups_path
                )
            };
            mnt.join(rel.trim_start_matches('/'))
        })
        .collect()
}

/// The directory of `cgroups_path` in the v1 hierarchy of `controller`
/// (e.g. `memory` → `/sys/fs/cgroup/memory/...`).
pub fn cgroup_dir_v1(controller: &str, cgroups_path: &str) -> Option<PathBuf> {
    let dirs = cgroup_dirs(cgroups_path);
    cgroup_mounts()
        .into_iter()
        .zip(dirs)
        .find(|((_, ty, opts), _)| ty == "cgroup" && opts.iter().any(|o| o == controller))
        .map(|(_, d)| d)
}

/// The pids in a cgroup directory's `cgroup.procs`.
pub fn cgroup_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The one-letter state of a process (`R`, `S`, `Z`, ...) or `None` when it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Does `pid` exist and is it not a zombie?
pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// A field of /proc/<pid>/status-like text (`Uid`, `CapEff`...), trimmed.
pub fn status_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Live (non-zombie) processes whose environment has `HJTEST_MARK=<marker>`.
pub fn marked_processes(marker: &str) -> Vec<i32> {
    let needle = format!("{MARK_VAR}={marker}");
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me || !pid_alive(pid) {
            continue;
        }
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            v.push(pid);
        }
    }
    v
}

/// The target of `/proc/<pid>/ns/<ns>` (e.g. `net:[4026531840]`).
pub fn ns_link(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Console
// ---------------------------------------------------------------------------------------

/// Accepts one connection on the `--console-socket` listener and receives what the
/// runtime sends: `(payload, pty master)`, the payload being the slave's path. Panics
/// after `timeout`.
pub fn receive_console(
    listener: &std::os::unix::net::UnixListener,
    timeout: Duration,
) -> (String, OwnedFd) {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let end = Instant::now() + timeout;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("no connection on the console socket: {e}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking stream");
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg on the console socket");
    let mut fd = None;
    for c in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS gave this process a new fd that nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let n = msg.bytes;
    let payload = String::from_utf8_lossy(&buf[..n])
        .trim_end_matches('\0')
        .to_string();
    (payload, fd.expect("no fd received over the console socket"))
}

/// Reads a pty master until the slave side is closed (EIO), `done(text so far)` holds, or
/// `timeout` passes (then it panics). Carriage returns are dropped.
pub fn read_pty(master: fs::File, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    let mut f = master;
    let mut out = Vec::new();
    let end = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&out).replace('\r', "");
        if done(&text) {
            return text;
        }
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the terminal did not finish; read so far: {text:?}"
        );
        let ms = PollTimeout::try_from(left.as_millis().min(500) as i32).expect("poll timeout");
        let mut pfd = [PollFd::new(std::os::fd::AsFd::as_fd(&f), PollFlags::POLLIN)];
        if poll(&mut pfd, ms).expect("poll") == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("read pty master: {e}"),
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

/// The number of a capability name (`CAP_KILL` → 5), from the `caps` crate's table.
pub fn cap_number(name: &str) -> u32 {
    let c: caps::Capability = name
        .parse()
        .unwrap_or_else(|_| panic!("unknown capability {name}"));
    u32::from(c.index())
}

/// The bit mask of a set of capability names, as /proc/self/status shows it (hex).
pub fn cap_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |m, n| m | (1u64 << cap_number(n)))
}

/// Parses a /proc/self/status capability field (`000001fffeffffff`).
pub fn parse_cap_hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim(), 16).unwrap_or_else(|e| panic!("bad capability mask {s:?}: {e}"))
}

/// Why this machine cannot run VMs (no usable /dev/kvm, or KVM_CREATE_VM fails), or None.
pub fn kvm_skip_reason() -> Option<String> {
    use std::os::fd::AsRawFd;
    let f = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(f) => f,
        Err(e) => return Some(format!("/dev/kvm is not usable: {e}")),
    };
    const KVM_CREATE_VM: libc::c_ulong = 0xae01;
    // SAFETY: KVM_CREATE_VM takes an integer argument and returns a new fd (closed
    // right below); no memory is passed.
    let vm = unsafe { libc::ioctl(f.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Some(format!(
            "KVM_CREATE_VM failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: vm is the fd the ioctl just returned, owned by nobody else.
    unsafe { libc::close(vm) };
    None
}

/// Returns from the calling test, printing `SKIP <test>: <reason>`, unless the machine
/// can run containers and VMs.
#[macro_export]
macro_rules! require_kvm {
    () => {
        $crate::require_root!();
        if let Some(reason) = $crate::kvm_skip_reason() {
            println!("SKIP {}: {}", $crate::function_name!(), reason);
            return;
        }
    };
}

/// A small deterministic PRNG (splitmix64): no rand crate in the workspace, and a
/// printed seed makes a randomised test repeatable.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
