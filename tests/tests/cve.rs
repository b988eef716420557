//! Known container-runtime CVEs, each attempted for real against hyperjail: the attack
//! must fail (or the container must fail to be created, cleanly) and the host must be
//! unchanged.

use hyperjail_tests::{
    hyperjail_bin, mounts_under, parse_mountinfo, read_pty, require_root, skip_unless, wait_until,
    Bundle, Container, Hyperjail, Output,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Restores a host file (a sysctl) on drop if a test changed it, so that a runtime bug
/// cannot leave the host altered.
struct Restore {
    path: PathBuf,
    original: String,
}

impl Restore {
    fn new(path: &str) -> Self {
        let original = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        Restore {
            path: PathBuf::from(path),
            original,
        }
    }

    fn current(&self) -> String {
        fs::read_to_string(&self.path).unwrap_or_default()
    }

    #[track_caller]
    fn assert_unchanged(&self, what: &str) {
        let now = self.current();
        assert_eq!(
            now,
            self.original,
            "{what}: the host's {} was changed (restored afterwards)",
            self.path.display()
        );
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.current() != self.original {
            let _ = fs::write(&self.path, self.original.trim_end());
        }
    }
}

/// A create/run that failed the way the CLI promises (exit 1, one `hyperjail: ` line).
fn failed_cleanly(out: &Output) -> bool {
    let err = out.stderr.trim_end_matches('\n');
    out.code == Some(1) && err.lines().count() == 1 && err.starts_with("hyperjail: ")
}

/// Asserts that `out` either succeeded or failed cleanly; returns whether it succeeded.
#[track_caller]
fn ok_or_clean_failure(out: &Output, what: &str) -> bool {
    if out.ok() {
        println!("{what}: ran");
        return true;
    }
    println!("{what}: failed: {}", out.stderr.trim());
    assert!(
        failed_cleanly(out),
        "{what}: neither success nor a clean one-line error: {out}"
    );
    false
}

fn host_mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo")
}

fn is_null_device(p: &str) -> bool {
    fs::metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// CVE-2019-5736: overwriting the runtime binary through /proc/<pid>/exe
// ---------------------------------------------------------------------------------------

/// Compiles `tests/attack/<name>.c` statically into `dir`; `Err(reason)` when it cannot.
fn compile_attack(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("attack")
        .join(format!("{name}.c"));
    let out = dir.join(name);
    let res = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .map_err(|e| format!("cannot run gcc: {e}"))?;
    if !res.status.success() {
        return Err(format!(
            "gcc -static {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    Ok(out)
}

/// The busybox-sh version of the attack (runs even without gcc): for each process whose
/// comm mentions hyperjail, open its exe for writing, or for reading and then re-open
/// /proc/self/fd/3 for writing until that works.
const SH_ATTACK: &str = r#"
seen=" "
while [ ! -e /stop ]; do
  for d in /proc/[0-9]*; do
    { read c < $d/comm; } 2>/dev/null || continue
    case "$c" in *hyperjail*) ;; *) continue ;; esac
    p=${d#/proc/}
    case "$seen" in *" $p "*) continue ;; esac
    seen="$seen$p "
    echo "SEEN $p $c" >> /tmp/sh.log
    if { echo HJTEST-SH-WAS-HERE >> $d/exe; } 2>/dev/null; then echo "OPENED-W $p $c ?:? direct" >> /tmp/sh.log; fi
    ( exec 3< $d/exe
      echo "OPENED-R $p $c $(stat -L -c %d:%i /proc/self/fd/3) $(readlink /proc/self/fd/3)" >> /tmp/sh.log
      i=0
      while [ $i -lt 60 ]; do
        if { echo HJTEST-SH-WAS-HERE >> /proc/self/fd/3; } 2>/dev/null; then
          echo "OPENED-W $p $c $(stat -L -c %d:%i /proc/self/fd/3) $(readlink /proc/self/fd/3)" >> /tmp/sh.log; break
        fi
        i=$((i+1)); sleep 0.05
      done ) 2>/dev/null &
  done
done
"#;

const DECOY: &str = "hyperjail-decoy";

#[test]
fn cve_2019_5736_runtime_binary_cannot_be_overwritten() {
    require_root!();
    let work = tempfile::Builder::new()
        .prefix("hj-5736-")
        .tempdir()
        .unwrap();
    // A copy, so that a successful attack cannot break the rest of the suite.
    let copy = work.path().join("hyperjail");
    fs::copy(hyperjail_bin(), &copy).expect("copy hyperjail");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    let before = fs::read(&copy).unwrap();

    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let attacker = match compile_attack("cve_2019_5736", work.path()) {
        Ok(p) => {
            fs::copy(&p, b.rootfs().join("bin/hjattack")).unwrap();
            true
        }
        Err(reason) => {
            println!("NOTE cve_2019_5736: C attacker not used ({reason}); busybox sh attack only");
            false
        }
    };
    // The decoy: an ordinary process of the container with "hyperjail" in its name. The
    // attack must succeed against it (this shows the attack works), but not against the
    // runtime.
    fs::create_dir_all(b.rootfs().join("decoy")).unwrap();
    fs::copy("/bin/busybox", b.rootfs().join("decoy").join(DECOY)).unwrap();
    let decoy_before = fs::read(b.rootfs().join("decoy").join(DECOY)).unwrap();
    let mut script = String::new();
    if attacker {
        script.push_str("/bin/hjattack hyperjail /stop 300 > /tmp/c.log 2>&1 &\n");
    }
    script.push_str(&format!("( {SH_ATTACK} ) &\n"));
    script.push_str("sleep 0.5; touch /tmp/attacking\n");
    script.push_str(&format!(
        "( exec -a sleep /decoy/{DECOY} 1 ) &\nexec sleep 100000\n"
    ));
    b.sh(&script);
    let c = hj.container("cve5736");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    wait_until(Duration::from_secs(20), "the attackers to start", || {
        b.rootfs().join("tmp/attacking").exists()
    });
    // Positive control: the attack works against an ordinary process.
    wait_until(
        Duration::from_secs(30),
        "the attack to overwrite the decoy",
        || fs::read(b.rootfs().join("decoy").join(DECOY)).is_ok_and(|d| d != decoy_before),
    );

    for i in 0..20 {
        let out = Command::new(&copy)
            .arg("--root")
            .arg(hj.root())
            .args(["exec", &c.id, "true"])
            .output()
            .expect("run the copy");
        assert!(
            out.status.success(),
            "exec {i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Give stage two (re-open for writing once the binary stops running) time to try.
    std::thread::sleep(Duration::from_secs(4));
    fs::write(b.rootfs().join("stop"), "").unwrap();
    if attacker {
        wait_until(Duration::from_secs(20), "the C attacker's summary", || {
            fs::read_to_string(b.rootfs().join("tmp/c.log")).is_ok_and(|l| l.contains("SUMMARY"))
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let logs = format!(
        "{}{}",
        fs::read_to_string(b.rootfs().join("tmp/c.log")).unwrap_or_default(),
        fs::read_to_string(b.rootfs().join("tmp/sh.log")).unwrap_or_default()
    );
    let after = fs::read(&copy).unwrap();
    assert!(
        before == after,
        "the runtime binary was modified through /proc/<pid>/exe:\n{logs}"
    );
    // Lines: OPENED-R|OPENED-W pid comm dev:ino path. What counts is the file opened.
    let field = |l: &str, n: usize| l.split_whitespace().nth(n).unwrap_or("").to_string();
    let meta = fs::metadata(&copy).unwrap();
    let runtime_id = format!("{}:{}", meta.dev(), meta.ino());
    let is_runtime =
        |l: &str| field(l, 3) == runtime_id || (field(l, 3) == "?:?" && field(l, 2) != DECOY);
    let runtime_w: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("OPENED-W") && is_runtime(l))
        .collect();
    assert!(
        runtime_w.is_empty(),
        "the container opened the runtime binary for writing: {runtime_w:?}\n{logs}"
    );
    let runtime_r: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("OPENED-R") && is_runtime(l))
        .collect();
    assert!(
        runtime_r.is_empty(),
        "the container opened the runtime binary (the first step of the attack): {runtime_r:?}\n{logs}"
    );
    let decoy_w = logs
        .lines()
        .filter(|l| l.starts_with("OPENED-W") && field(l, 2) == DECOY)
        .count();
    assert!(decoy_w > 0, "the control attack left no trace: {logs}");
    let seen = logs
        .lines()
        .filter(|l| l.starts_with("SEEN") && field(l, 2) != DECOY)
        .count();
    println!("cve_2019_5736: the attackers saw {seen} runtime processes during 20 execs; none could be opened");
}

// ---------------------------------------------------------------------------------------
// CVE-2024-21626: a leaked fd as the working directory
// ---------------------------------------------------------------------------------------

/// Prints the fds of `ls` itself, the cwd, and whether the cwd path, resolved inside the
/// container, is the cwd (it is not when the cwd lies outside the container's root).
const CWD_PROBE: &str = "c=$(readlink /proc/self/cwd); echo \"cwd=$c\"; \
    a=$(stat -c %d:%i .); b=$(stat -c %d:%i \"$c\" 2>/dev/null); \
    if [ \"$a\" = \"$b\" ]; then echo cwd-inside; else echo \"cwd-outside $a $b\"; fi; \
    echo fds: $(ls /proc/self/fd)";

#[track_caller]
fn check_probe(out: &str, what: &str) {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"cwd-inside"),
        "{what}: the working directory is outside the container: {out}"
    );
    let fds = lines
        .iter()
        .find_map(|l| l.strip_prefix("fds:"))
        .unwrap_or_else(|| panic!("{what}: no fd list: {out}"));
    let fds: BTreeSet<&str> = fds.split_whitespace().collect();
    let allowed: BTreeSet<&str> = ["0", "1", "2", "3"].into_iter().collect();
    assert!(
        fds.is_subset(&allowed),
        "{what}: fds leaked into the container: {fds:?}: {out}"
    );
}

fn host_fds(pid: i32) -> BTreeSet<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn cve_2024_21626_exec_cwd_through_leaked_fd() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    let c = hj.container("cve21626e");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    // The container's init holds nothing but stdio.
    let want: BTreeSet<String> = ["0", "1", "2"].iter().map(|s| s.to_string()).collect();
    assert_eq!(host_fds(c.pid()), want, "fds of the container's process");

    let mut ran = 0;
    for n in 3..=15 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = hj
            .call(["exec", "--cwd", &cwd, &c.id, "sh", "-c", CWD_PROBE])
            .output();
        if ok_or_clean_failure(&out, &format!("exec --cwd {cwd}")) {
            ran += 1;
            check_probe(&out.stdout, &format!("exec --cwd {cwd}"));
        }
    }
    // A relative climb from a leaked fd: ../../.. must stay inside too.
    for n in 3..=8 {
        let cwd = format!("/proc/self/fd/{n}/../../..");
        let out = hj
            .call(["exec", "--cwd", &cwd, &c.id, "sh", "-c", CWD_PROBE])
            .output();
        if ok_or_clean_failure(&out, &format!("exec --cwd {cwd}")) {
            check_probe(&out.stdout, &format!("exec --cwd {cwd}"));
        }
    }
    // An ordinary exec: no leaked fds either (seen from inside and from the host).
    let out = hj.call(["exec", &c.id, "sh", "-c", CWD_PROBE]).output();
    out.assert_ok();
    check_probe(&out.stdout, "plain exec");
    let pid_file = b.path().join("exec.pid");
    hj.call(["exec", "-d", "--pid-file"])
        .arg(&pid_file)
        .args([&c.id, "sleep", "100"])
        .output()
        .assert_ok();
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(host_fds(pid), want, "fds of a detached exec'd process");
    println!("cve_2024_21626: {ran} of 13 exec --cwd /proc/self/fd/N ran (inside the container)");
}

#[test]
fn cve_2024_21626_process_cwd_through_leaked_fd() {
    require_root!();
    let hj = Hyperjail::new();
    let mut escapes = Vec::new();
    for n in 3..=12 {
        let cwd = format!("/proc/self/fd/{n}");
        let mut b = Bundle::new();
        b.config_mut()["process"]["cwd"] = json!(cwd);
        b.sh(CWD_PROBE);
        let c = hj.container("cve21626c");
        let out = c.run(&b, &[]);
        if ok_or_clean_failure(&out, &format!("process.cwd {cwd}")) {
            if !out.stdout.lines().any(|l| l.trim() == "cwd-inside") {
                escapes.push(format!("process.cwd {cwd}: {}", out.stdout.trim()));
            }
        } else {
            c.assert_nothing_left(&b);
        }
        // The classic payload: climb out of the leaked directory and read a host file.
        let mut b = Bundle::new();
        b.config_mut()["process"]["cwd"] = json!(cwd);
        b.sh("cat ../../../../../../../../etc/os-release 2>/dev/null | grep PRETTY_NAME; true");
        let c = hj.container("cve21626d");
        let out = c.run(&b, &[]);
        if ok_or_clean_failure(&out, &format!("process.cwd {cwd} climb"))
            && out.stdout.contains("PRETTY_NAME")
        {
            escapes.push(format!(
                "process.cwd {cwd}: the host's /etc/os-release was read through ../..: {}",
                out.stdout.trim()
            ));
        }
    }
    // Positive control: the container's own os-release does not exist.
    assert!(!Bundle::new().rootfs().join("etc/os-release").exists());
    assert!(
        escapes.is_empty(),
        "the container process started outside its root:\n{}",
        escapes.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// CVE-2021-30465: mount destination through a symlink (swapped in a race)
// ---------------------------------------------------------------------------------------

fn dir_entries(p: &Path) -> Vec<String> {
    fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cve_2021_30465_symlinked_mount_destination() {
    require_root!();
    let hostdir = tempfile::Builder::new()
        .prefix("hj-30465-")
        .tempdir()
        .unwrap();
    let hd = hostdir.path().to_str().unwrap().to_string();
    let hj = Hyperjail::new();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("payload"), "bound").unwrap();
    // First with the symlink's target missing inside the rootfs, then present there.
    for target_inside in [false, true] {
        let mut b = Bundle::new();
        symlink(&hd, b.rootfs().join("evil")).unwrap();
        let inside = b.rootfs().join(hd.trim_start_matches('/'));
        if target_inside {
            fs::create_dir_all(&inside).unwrap();
        }
        b.mount(
            json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs",
                       "options": ["size=1m"]}),
        );
        b.mount(json!({"destination": "/evil/y", "type": "bind",
                       "source": src.path().to_str().unwrap(), "options": ["rbind"]}));
        b.sh("cat /proc/self/mountinfo");
        let c = hj.container("cve30465");
        let what = format!("mount through symlink (target inside rootfs: {target_inside})");
        let out = c.run(&b, &[]);
        let ran = ok_or_clean_failure(&out, &what);
        assert!(
            dir_entries(hostdir.path()).is_empty(),
            "{what}: something was created in the host directory {hd}: {:?}",
            dir_entries(hostdir.path())
        );
        assert!(
            mounts_under(hostdir.path()).is_empty(),
            "{what}: a host mount appeared under {hd}"
        );
        if target_inside {
            // The symlink was resolved inside the rootfs: the mounts are at <rootfs>/<hd>/x.
            assert!(ran, "{what}: {out}");
            let mi = parse_mountinfo(&out.stdout);
            let x = format!("{hd}/x");
            let y = format!("{hd}/y");
            assert!(
                mi.iter().any(|m| m.mount_point == x && m.fstype == "tmpfs"),
                "{what}: no tmpfs at {x} inside the container: {out}"
            );
            assert!(
                mi.iter().any(|m| m.mount_point == y),
                "{what}: no bind mount at {y} inside the container: {out}"
            );
            assert!(
                inside.join("x").is_dir() && inside.join("y").is_dir(),
                "{what}"
            );
        } else if !ran {
            c.assert_nothing_left(&b);
        }
    }
}

#[test]
fn cve_2021_30465_symlink_swapped_during_create() {
    require_root!();
    let hostdir = tempfile::Builder::new()
        .prefix("hj-30465r-")
        .tempdir()
        .unwrap();
    let hd = hostdir.path().to_str().unwrap().to_string();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    let evil = b.rootfs().join("evil");
    let swap = b.rootfs().join("evil.swap");
    fs::create_dir(&evil).unwrap();
    symlink(&hd, &swap).unwrap();
    // The symlink's target exists inside the rootfs too, so both states resolve.
    fs::create_dir_all(b.rootfs().join(hd.trim_start_matches('/'))).unwrap();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("payload"), "bound").unwrap();
    b.mount(
        json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs",
                   "options": ["size=1m"]}),
    );
    b.mount(json!({"destination": "/evil/y", "type": "bind",
                   "source": src.path().to_str().unwrap(), "options": ["rbind"]}));
    b.args(&["true"]);

    // The attacker: swap the directory and the symlink as fast as possible.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = {
        let stop = stop.clone();
        let a = std::ffi::CString::new(evil.to_str().unwrap()).unwrap();
        let s = std::ffi::CString::new(swap.to_str().unwrap()).unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: renameat2 with two valid NUL-terminated paths.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        s.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if r == 0 {
                    n += 1;
                }
            }
            n
        })
    };
    let mut ok = 0;
    for i in 0..30 {
        let c = hj.container("cve30465r");
        let out = c.run(&b, &[]);
        if ok_or_clean_failure(&out, &format!("run {i}")) {
            ok += 1;
        }
        drop(c);
        assert!(
            dir_entries(hostdir.path()).is_empty(),
            "run {i}: created in the host directory {hd}: {:?}",
            dir_entries(hostdir.path())
        );
        assert!(mounts_under(hostdir.path()).is_empty(), "run {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let n = swaps.join().unwrap();
    assert!(n > 0, "the swapper never swapped");
    println!("cve_2021_30465 race: {ok}/30 runs succeeded, {n} swaps, host dir untouched");
}

// ---------------------------------------------------------------------------------------
// CVE-2025-31133: /dev/null replaced by a symlink, used to mask paths
// ---------------------------------------------------------------------------------------

/// A bundle whose only guard of core_pattern is masking it (not read-only /proc/sys).
fn core_pattern_masked_bundle() -> Bundle {
    let mut b = Bundle::new();
    let l = &mut b.config_mut()["linux"];
    let masked = l["maskedPaths"].as_array_mut().expect("maskedPaths");
    masked.push(json!("/proc/sys/kernel/core_pattern"));
    if let Some(ro) = l["readonlyPaths"].as_array_mut() {
        ro.retain(|p| p != "/proc/sys");
    }
    b.sh("echo \"read=[$(cat /proc/sys/kernel/core_pattern)]\"; \
          echo core-hjtest-31133 > /proc/sys/kernel/core_pattern 2>/dev/null; echo write=$?; \
          echo \"reread=[$(cat /proc/sys/kernel/core_pattern)]\"");
    b
}

fn check_core_pattern_run(out: &Output, b: &Bundle, c: &Container<'_>, guard: &Restore) {
    guard.assert_unchanged("CVE-2025-31133");
    assert!(is_null_device("/dev/null"), "the host's /dev/null changed");
    if ok_or_clean_failure(out, "create with /dev/null -> core_pattern") {
        let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        assert!(
            lines.contains(&"read=[]"),
            "core_pattern is not masked: {out}"
        );
        assert!(
            lines.contains(&"reread=[]"),
            "core_pattern is not masked: {out}"
        );
    } else {
        c.assert_nothing_left(b);
    }
}

#[test]
fn cve_2025_31133_dev_null_symlink_in_rootfs() {
    require_root!();
    let guard = Restore::new("/proc/sys/kernel/core_pattern");
    let hj = Hyperjail::new();
    let mut b = core_pattern_masked_bundle();
    // No /dev tmpfs: the rootfs's own /dev is used, with the attacker's /dev/null.
    b.remove_mount("/dev");
    let null = b.rootfs().join("dev/null");
    let _ = fs::remove_file(&null);
    symlink("/proc/sys/kernel/core_pattern", &null).unwrap();
    let c = hj.container("cve31133a");
    let out = c.run(&b, &[]);
    check_core_pattern_run(&out, &b, &c, &guard);
}

#[test]
fn cve_2025_31133_dev_null_symlink_in_bind_mounted_dev() {
    require_root!();
    let guard = Restore::new("/proc/sys/kernel/core_pattern");
    let hj = Hyperjail::new();
    let dev = tempfile::Builder::new()
        .prefix("hj-31133-dev-")
        .tempdir()
        .unwrap();
    symlink("/proc/sys/kernel/core_pattern", dev.path().join("null")).unwrap();
    let mut b = core_pattern_masked_bundle();
    b.remove_mount("/dev");
    b.config_mut()["mounts"].as_array_mut().unwrap().insert(
        1,
        json!({"destination": "/dev", "type": "bind",
                   "source": dev.path().to_str().unwrap(), "options": ["rbind", "rw"]}),
    );
    let c = hj.container("cve31133b");
    let out = c.run(&b, &[]);
    check_core_pattern_run(&out, &b, &c, &guard);
    assert!(
        dev.path()
            .join("null")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
            || is_null_device(dev.path().join("null").to_str().unwrap()),
        "the host directory's null became something else"
    );
}

// ---------------------------------------------------------------------------------------
// CVE-2025-52565: /dev/console replaced by a symlink before the pty is bound onto it
// ---------------------------------------------------------------------------------------

/// Runs `b` with a terminal and returns (run output, what the terminal showed).
fn run_with_terminal(hj: &Hyperjail, b: &Bundle, tag: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let c = hj.container(tag);
    let mut running = c
        .run_call(b, &["--console-socket", sock.to_str().unwrap()])
        .spawn();
    // Wait for either the pty or the end of the call.
    listener.set_nonblocking(true).unwrap();
    let mut got = None;
    wait_until(
        Duration::from_secs(30),
        "the console or the end of run",
        || {
            if let Ok((stream, _)) = listener.accept() {
                got = Some(stream);
                return true;
            }
            running.is_finished()
        },
    );
    let text = match got {
        Some(stream) => match recv_master(&stream) {
            Some(m) => read_pty(fs::File::from(m), Duration::from_secs(30), |t| {
                t.contains("MOUNTINFO-END")
            }),
            None => String::new(),
        },
        None => String::new(),
    };
    (running.wait(), text)
}

/// Receives the pty master sent over an accepted console connection (None when the
/// runtime closed it without sending one, e.g. because create failed).
fn recv_master(stream: &std::os::unix::net::UnixStream) -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let mut master = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: SCM_RIGHTS gave this process a new fd that nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                master.get_or_insert(owned);
            }
        }
    }
    master
}

const CONSOLE_PROBE: &str =
    "ls -ln /dev/console 2>&1; echo MOUNTINFO-BEGIN; cat /proc/self/mountinfo; echo MOUNTINFO-END";

fn inner_mountinfo(text: &str) -> String {
    let start = text.find("MOUNTINFO-BEGIN").map(|i| i + 15).unwrap_or(0);
    let end = text.find("MOUNTINFO-END").unwrap_or(text.len());
    text[start..end.max(start)].to_string()
}

#[test]
fn cve_2025_52565_console_symlink_in_bind_mounted_dev() {
    require_root!();
    let hj = Hyperjail::new();
    let victim_dir = tempfile::Builder::new()
        .prefix("hj-52565-")
        .tempdir()
        .unwrap();
    let victim = victim_dir.path().join("victim");
    fs::write(&victim, "original\n").unwrap();
    let dev = tempfile::Builder::new()
        .prefix("hj-52565-dev-")
        .tempdir()
        .unwrap();
    symlink(&victim, dev.path().join("console")).unwrap();
    symlink("pts/ptmx", dev.path().join("ptmx")).unwrap();
    nix::sys::stat::mknod(
        &dev.path().join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    let mut b = Bundle::new();
    b.config_mut()["process"]["terminal"] = json!(true);
    b.remove_mount("/dev");
    b.config_mut()["mounts"].as_array_mut().unwrap().insert(
        1,
        json!({"destination": "/dev", "type": "bind",
                   "source": dev.path().to_str().unwrap(), "options": ["rbind", "rw"]}),
    );
    b.sh(CONSOLE_PROBE);
    let host_before = host_mountinfo();
    let (out, text) = run_with_terminal(&hj, &b, "cve52565a");
    ok_or_clean_failure(&out, "run with terminal and /dev/console -> host file");
    let host_after = host_mountinfo();
    let vp = victim.to_str().unwrap();
    assert!(
        !parse_mountinfo(&host_after)
            .iter()
            .any(|m| m.mount_point == vp),
        "the pty was mounted over the host file {vp}"
    );
    assert_eq!(
        parse_mountinfo(&host_before).len(),
        parse_mountinfo(&host_after).len(),
        "the host's mount table changed"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original\n");
    let inner = parse_mountinfo(&inner_mountinfo(&text));
    assert!(
        !inner.iter().any(|m| m.mount_point == vp),
        "the pty was mounted over {vp} inside the container: {text}"
    );
}

#[test]
fn cve_2025_52565_console_symlink_in_rootfs_dev() {
    require_root!();
    let hj = Hyperjail::new();
    // The rootfs's own /dev (no /dev tmpfs) carries /dev/console -> somewhere else.
    let mut overmounted = Vec::new();
    for target in [
        "/proc/sys/kernel/core_pattern",
        "/proc/sysrq-trigger",
        "/etc/passwd",
    ] {
        let mut b = Bundle::new();
        b.config_mut()["process"]["terminal"] = json!(true);
        b.remove_mount("/dev");
        let console = b.rootfs().join("dev/console");
        let _ = fs::remove_file(&console);
        symlink(target, &console).unwrap();
        // HOME given, so that nothing needs /etc/passwd (which a pty over it would block).
        b.env("HOME=/root");
        b.sh(CONSOLE_PROBE);
        let host_before = host_mountinfo();
        let (out, text) = run_with_terminal(&hj, &b, "cve52565b");
        let ran = ok_or_clean_failure(&out, &format!("/dev/console -> {target}"));
        let host_after = host_mountinfo();
        assert_eq!(
            parse_mountinfo(&host_before).len(),
            parse_mountinfo(&host_after).len(),
            "/dev/console -> {target}: the host's mount table changed"
        );
        if ran {
            let inner = parse_mountinfo(&inner_mountinfo(&text));
            assert!(
                !inner.is_empty(),
                "/dev/console -> {target}: no mountinfo: {text}"
            );
            for m in inner.iter().filter(|m| m.mount_point == target) {
                overmounted.push(format!(
                    "/dev/console -> {target}: {} mounted over {target} ({} {})",
                    m.fstype, m.source, m.root
                ));
            }
        }
    }
    assert!(
        overmounted.is_empty(),
        "the pty bind for /dev/console followed the symlink:\n{}",
        overmounted.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// CVE-2025-52881: the runtime's /proc writes redirected by a mount
// ---------------------------------------------------------------------------------------

#[test]
fn cve_2025_52881_tmpfs_over_proc_sys() {
    require_root!();
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.mount(
        json!({"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs",
                   "options": ["size=1m"]}),
    );
    b.config_mut()["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let c = hj.container("cve52881a");
    c.create(&b, &[]).assert_error(&["procfs", "/proc/sys"]);
    c.assert_nothing_left(&b);
}

#[test]
fn cve_2025_52881_host_dir_bound_over_proc_sys_net() {
    require_root!();
    let hj = Hyperjail::new();
    let fake = tempfile::Builder::new()
        .prefix("hj-52881-")
        .tempdir()
        .unwrap();
    fs::create_dir_all(fake.path().join("ipv4")).unwrap();
    let f = fake.path().join("ipv4/ip_forward");
    fs::write(&f, "0\n").unwrap();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    b.mount(json!({"destination": "/proc/sys/net", "type": "bind",
                   "source": fake.path().to_str().unwrap(), "options": ["rbind", "rw"]}));
    b.config_mut()["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    let c = hj.container("cve52881b");
    c.create(&b, &[]).assert_error(&["procfs"]);
    c.assert_nothing_left(&b);
    assert_eq!(
        fs::read_to_string(&f).unwrap(),
        "0\n",
        "the sysctl was written into the host file"
    );
}

const VICTIM_SYSCTL: &str = "/proc/sys/fs/lease-break-time";

#[test]
fn cve_2025_52881_procfs_file_bound_over_sysctl() {
    require_root!();
    skip_unless!(Path::new(VICTIM_SYSCTL).exists(), "no fs.lease-break-time");
    let guard = Restore::new(VICTIM_SYSCTL);
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    // A host procfs file (global, not namespaced) over the namespaced domainname sysctl:
    // a write checked only for "is on procfs" goes to the host.
    b.mount(
        json!({"destination": "/proc/sys/kernel/domainname", "type": "bind",
                   "source": VICTIM_SYSCTL, "options": ["bind", "rw"]}),
    );
    b.config_mut()["linux"]["sysctl"] = json!({"kernel.domainname": "777"});
    let c = hj.container("cve52881c");
    let out = c.create(&b, &[]);
    let created = ok_or_clean_failure(&out, "bind of a procfs file over a sysctl");
    guard.assert_unchanged("sysctl kernel.domainname written through a bind mount");
    if !created {
        c.assert_nothing_left(&b);
    }
}

#[test]
fn cve_2025_52881_procfs_file_bound_over_oom_score_adj() {
    require_root!();
    skip_unless!(Path::new(VICTIM_SYSCTL).exists(), "no fs.lease-break-time");
    let guard = Restore::new(VICTIM_SYSCTL);
    let hj = Hyperjail::new();
    let mut b = Bundle::new();
    b.args(&["sleep", "1000"]);
    // In a new pid namespace the runtime's init is pid 1, so /proc/self/oom_score_adj
    // is /proc/1/oom_score_adj when it writes the configured score.
    assert!(b.namespaces().iter().any(|n| n == "pid"));
    b.mount(
        json!({"destination": "/proc/1/oom_score_adj", "type": "bind",
                   "source": VICTIM_SYSCTL, "options": ["bind", "rw"]}),
    );
    b.config_mut()["process"]["oomScoreAdj"] = json!(777);
    let c = hj.container("cve52881d");
    let out = c.create(&b, &[]);
    let created = ok_or_clean_failure(&out, "bind of a procfs file over oom_score_adj");
    guard.assert_unchanged("oom_score_adj written through a bind mount");
    if !created {
        c.assert_nothing_left(&b);
    }
}
