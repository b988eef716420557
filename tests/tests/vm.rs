//! The VM backend (`org.hyperjail.backend=vm`): static programs run in a KVM microVM
//! under hyperjail's own guest kernel. Every test skips with a reason when /dev/kvm is
//! missing or cannot create a VM; the ones that compile C skip without `gcc -static`.

use hyperjail_tests::vm::{compile_static, vm_bundle};
use hyperjail_tests::{pid_alive, require_kvm, skip_unless, wait_until, Bundle, Hyperjail};
use serde_json::json;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const HELLO: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/utsname.h>
int main(int argc, char **argv) {
    struct utsname u;
    char cwd[256];
    printf("hello from the VM\n");
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    printf("GREETING=%s\n", getenv("GREETING"));
    printf("pagesz=%lu\n", getauxval(AT_PAGESZ));
    printf("cwd=%s\n", getcwd(cwd, sizeof cwd));
    uname(&u);
    printf("sysname=%s\n", u.sysname);
    void *p = malloc(1 << 20);
    printf("malloc=%s\n", p ? "ok" : "failed");
    return 3;
}
"#;

#[test]
fn static_c_program() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "hello", HELLO, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/hello", "one", "two words"]);
    b.env("GREETING=hi there");
    let c = hj.container("vmhello");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(3), "{out}");
    let lines = out.lines();
    for want in [
        "hello from the VM",
        "argv[0]=/hello",
        "argv[1]=one",
        "argv[2]=two words",
        "GREETING=hi there",
        "pagesz=4096",
        "cwd=/",
        "sysname=hyperjail",
        "malloc=ok",
    ] {
        assert!(lines.contains(&want), "missing {want:?}: {out}");
    }
    assert!(
        out.stderr.is_empty(),
        "no unsupported syscall expected: {out}"
    );
    c.assert_nothing_left(&b);

    // The same program as a static PIE (ET_DYN without an interpreter).
    assert!(compile_static(&b, "hello-pie", HELLO, &["-static-pie"]));
    b.args(&["/hello-pie"]);
    let c = hj.container("vmpie");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(3), "{out}");
    assert!(out.lines().contains(&"hello from the VM"), "{out}");
}

#[test]
fn process_user_is_reported() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.config_mut()["process"]["user"] = json!({"uid": 1000, "gid": 100});
    // One applet per VM: `sh` would need fork, which the guest lacks so far.
    for (flag, want) in [("-u", "1000"), ("-g", "100")] {
        b.args(&["id", flag]);
        let c = hj.container("vmuser");
        let out = c.run(&b, &[]);
        assert_eq!(out.code, Some(0), "{out}");
        assert_eq!(out.stdout.trim(), want, "{out}");
    }
}

#[test]
fn busybox_echo_and_sh() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["echo", "hi"]);
    let c = hj.container("vmecho");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "hi\n", "{out}");
    c.assert_nothing_left(&b);

    b.sh("echo $((6*7)); exit 3");
    let c = hj.container("vmsh");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(out.lines(), ["42"], "{out}");
    c.assert_nothing_left(&b);
}

#[test]
fn uname_differs_from_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["uname", "-r"]);
    let c = hj.container("vmuname");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let host = fs::read_to_string("/proc/sys/kernel/osrelease").expect("host release");
    let guest = out.stdout.trim();
    assert!(guest.contains("hyperjail"), "{out}");
    assert_ne!(guest, host.trim(), "{out}");
}

#[test]
fn stdin_is_forwarded() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["wc", "-c"]);
    let c = hj.container("vmwc");
    let out = c.run_call(&b, &[]).stdin(b"twelve bytes").output();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout.trim(), "12", "{out}");
}

#[test]
fn create_start_kill_delete() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["sleep", "1000"]);
    let c = hj.container("vmlife");
    c.create(&b, &[]).assert_ok();
    let st = c.state().expect("state after create");
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["backend"], "vm", "{st}");
    let pid = c.pid();
    assert!(pid_alive(pid), "the VMM must exist after create");
    // Built and confined before `create` returns: every thread of the VMM (the vCPU
    // loop, the ring thread, the signal thread, and with a v1 memory controller the
    // OOM thread, which waits for a limit to be set) in seccomp filter mode with
    // no_new_privs.
    let tasks: Vec<_> = fs::read_dir(format!("/proc/{pid}/task"))
        .expect("VMM tasks")
        .map(|e| e.expect("task entry").path())
        .collect();
    let oom = usize::from(hyperjail_tests::cgroup_dir_v1("memory", "/").is_some());
    assert_eq!(
        tasks.len(),
        3 + oom,
        "vCPU, ring, signal (and OOM) threads: {tasks:?}"
    );
    for t in tasks {
        let status = fs::read_to_string(t.join("status")).expect("task status");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::trim)
                .map(str::to_string)
        };
        assert_eq!(field("Seccomp:").as_deref(), Some("2"), "{status}");
        assert_eq!(field("NoNewPrivs:").as_deref(), Some("1"), "{status}");
        // No capability beyond file access (CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH,
        // FOWNER, FSETID), in every set, bounding included.
        for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
            let v = hyperjail_tests::parse_cap_hex(&field(set).unwrap_or_default());
            assert_eq!(v & !0x1f, 0, "{set} {v:#x}");
        }
    }
    // Jailed like Firecracker's jailer: its root is the bundle's rootfs, in a mount
    // namespace of its own.
    let root = fs::read_link(format!("/proc/{pid}/root")).expect("VMM root");
    assert_eq!(root, fs::canonicalize(b.rootfs()).expect("rootfs"));
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("VMM mount ns"),
        fs::read_link("/proc/self/ns/mnt").expect("our mount ns"),
    );
    c.start().assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    // The guest's first process is its init: as in a PID namespace, a signal it has
    // no handler for does not reach it (the jail's `sleep` ignores TERM the same way).
    c.kill("TERM").assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.status().as_deref(), Some("running"));
    c.kill("KILL").assert_ok();
    c.wait_status("stopped");
    // Killed, not crashed: `events` ends without a `crashed` event.
    let ev = hj.run(["events", c.id.as_str()]);
    ev.assert_ok();
    assert!(!ev.stdout.contains("crashed"), "{ev}");
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

/// `kill` passes the signal to the guest's init, whose handler runs: a shell's
/// `trap` on TERM ends it with its own status.
#[test]
fn kill_reaches_a_guest_handler() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&[
        "/bin/sh",
        "-c",
        "trap 'echo TERM caught; exit 7' TERM; echo ready > /ready; echo ready; \
         while :; do sleep 0.05; done",
    ]);
    let c = hj.container("vmtrapkill");
    let run = c.run_call(&b, &[]).spawn();
    let ready = b.rootfs().join("ready");
    wait_until(Duration::from_secs(20), "the guest to be ready", || {
        ready.exists()
    });
    c.kill("TERM").assert_ok();
    let out = run.wait();
    assert_eq!(out.code, Some(7), "{out}");
    assert_eq!(out.stdout, "ready\nTERM caught\n", "{out}");
    c.assert_nothing_left(&b);
}

#[test]
fn pause_resume_and_delete_created() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["sleep", "1000"]);
    let c = hj.container("vmpause");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    hj.run(["pause", c.id.as_str()]).assert_ok();
    assert_eq!(c.status().as_deref(), Some("paused"));
    hj.run(["resume", c.id.as_str()]).assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    let list = hj.list_json();
    assert!(
        list.iter()
            .any(|e| e["id"] == c.id.as_str() && e["backend"] == "vm"),
        "{list:?}"
    );
    c.delete_force().assert_ok();
    c.assert_nothing_left(&b);

    // A created VM (never started) is deleted without --force, VMM included.
    let c = hj.container("vmcreated");
    c.create(&b, &[]).assert_ok();
    let pid = c.pid();
    c.delete().assert_ok();
    wait_until(Duration::from_secs(10), "the VMM to exit", || {
        !pid_alive(pid)
    });
    c.assert_nothing_left(&b);
}

#[test]
fn killed_by_signal_status() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["sleep", "1000"]);
    let c = hj.container("vmkill");
    let run = c.run_call(&b, &[]).spawn();
    wait_until(Duration::from_secs(20), "the VM to run", || {
        c.status().as_deref() == Some("running")
    });
    c.kill("KILL").assert_ok();
    let out = run.wait();
    assert_eq!(out.code, Some(137), "{out}");
    c.assert_nothing_left(&b);
}

#[test]
fn guest_fault_ends_domain() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let src = "int main(void) { volatile int *p = 0; return *p; }\n";
    skip_unless!(
        compile_static(&b, "crash", src, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/crash"]);
    let c = hj.container("vmcrash");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(139), "{out}");
    assert!(out.stderr.contains("page fault"), "{out}");
    c.assert_nothing_left(&b);

    // create + start: `events` ends with a `crashed` event that names the fault.
    let c = hj.container("vmcrashev");
    c.create(&b, &[]).assert_ok();
    c.start().assert_ok();
    c.wait_status("stopped");
    let ev = hj.run(["events", "--interval", "1s", c.id.as_str()]);
    ev.assert_ok();
    let last = ev.lines().last().map(|l| l.to_string()).unwrap_or_default();
    let e: serde_json::Value = serde_json::from_str(&last).expect("an event JSON line");
    assert_eq!(e["type"], "crashed", "{ev}");
    assert_eq!(e["id"], c.id.as_str(), "{ev}");
    assert_eq!(e["data"]["signal"], "SIGSEGV", "{ev}");
    assert_eq!(e["data"]["exitStatus"], 139, "{ev}");
    let reason = e["data"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("page fault at address 0x0"), "{ev}");
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

/// A system call the guest kernel lacks returns ENOSYS and is reported once per
/// number, with its name: in the `--log` file when there is one (runc's format),
/// else on stderr.
#[test]
fn unsupported_syscalls_are_logged_once() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let src = r#"
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    for (int i = 0; i < 3; i++) {
        long r = syscall(SYS_kexec_load, 0, 0, 0, 0);
        printf("kexec_load=%ld errno=%d\n", r, errno);
    }
    return 0;
}
"#;
    skip_unless!(
        compile_static(&b, "nosys", src, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/nosys"]);
    let want = ["kexec_load=-1 errno=38"; 3];
    let c = hj.container("vmnosys");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.lines(), want, "{out}");
    let note = "vm: unsupported system call 246 (kexec_load); returning ENOSYS";
    assert_eq!(out.stderr.matches(note).count(), 1, "{out}");

    let log = b.path().join("hj.log");
    let c = hj.container("vmnosyslog");
    b.save();
    let out = hj
        .call(["--log"])
        .arg(&log)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(b.path())
        .arg(&c.id)
        .output();
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.lines(), want, "{out}");
    assert!(!out.stderr.contains("unsupported"), "{out}");
    let text = fs::read_to_string(&log).expect("log file");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log record"))
        .filter(|r: &serde_json::Value| r["msg"].as_str().is_some_and(|m| m.contains("kexec")))
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["level"], "warning", "{text}");
    assert_eq!(records[0]["msg"], note, "{text}");
    c.assert_nothing_left(&b);
}

const HOSTILE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>
int main(void) {
    long r;
    struct iovec v[2] = {{"ok", 2}, {(void *)-4096L, 100}};
    r = write(1, (void *)0x7fff00000000L, 10);
    printf("write=%ld errno=%d\n", r, errno);
    r = writev(1, v, 2);
    printf("writev=%ld errno=%d\n", r, errno);
    r = writev(1, (void *)-64L, 1);
    printf("writev-iov=%ld errno=%d\n", r, errno);
    r = read(0, (void *)0x7fff00000000L, 5);
    printf("read=%ld errno=%d\n", r, errno);
    r = uname((struct utsname *)0x7fff00000000L);
    printf("uname=%ld errno=%d\n", r, errno);
    return 0;
}
"#;

/// Bad pointers from the guest get EFAULT (from the VMM for forwarded calls, from
/// the guest kernel for its own), and the VMM carries on.
#[test]
fn hostile_pointers_get_efault() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "hostile", HOSTILE, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/hostile"]);
    let c = hj.container("vmhostile");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.lines(),
        [
            "write=-1 errno=14",
            "writev=-1 errno=14",
            "writev-iov=-1 errno=14",
            "read=-1 errno=14",
            "uname=-1 errno=14"
        ],
        "{out}"
    );
}

/// `create` must fail with one line mentioning one of `mentions`, leaving nothing.
fn expect_bad_program(tag: &str, b: &mut Bundle, args: &[&str], mentions: &[&str]) {
    let hj = Hyperjail::new();
    b.args(args);
    let c = hj.container(tag);
    c.create(b, &[]).assert_error(mentions);
    c.assert_nothing_left(b);
    assert!(hj.root_entries().iter().all(|e| e != &c.id));
}

#[test]
fn non_elf_program() {
    require_kvm!();
    let mut b = vm_bundle();
    b.write_rootfs_file("/script", "#!/bin/sh\necho hi\n");
    let p = b.rootfs().join("script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    expect_bad_program("vmnonelf", &mut b, &["/script"], &["not an ELF"]);
}

#[test]
fn dynamically_linked_program() {
    require_kvm!();
    let mut b = vm_bundle();
    let host = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let Some(host) = host else {
        println!("SKIP dynamically_linked_program: no /usr/bin/true on the host");
        return;
    };
    fs::copy(host, b.rootfs().join("dyn")).expect("copy host binary");
    expect_bad_program("vmdyn", &mut b, &["/dyn"], &["dynamically linked"]);
}

#[test]
fn missing_program() {
    require_kvm!();
    let mut b = vm_bundle();
    expect_bad_program("vmmissing", &mut b, &["no-such-program"], &["not found"]);
}

#[test]
fn memory_too_small() {
    require_kvm!();
    let mut b = vm_bundle();
    b.config_mut()["linux"]["resources"] = json!({"memory": {"limit": 4 << 20}});
    expect_bad_program("vmsmall", &mut b, &["echo", "hi"], &["too small"]);
}

#[test]
fn busybox_cat_and_ls() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.args(&["cat", "/etc/passwd"]);
    let c = hj.container("vmcat");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let passwd = fs::read_to_string(b.rootfs().join("etc/passwd")).expect("passwd");
    assert_eq!(out.stdout, passwd, "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    c.assert_nothing_left(&b);

    b.args(&["ls", "/"]);
    let c = hj.container("vmls");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    let lines = out.lines();
    for want in ["bin", "etc", "tmp", "usr"] {
        assert!(lines.contains(&want), "missing {want:?}: {out}");
    }
    assert!(out.stderr.is_empty(), "{out}");
}

const FILES: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
/* Each call is made before its result and errno are printed. */
#define SHOW(name, expr) do { errno = 0; long r_ = (long)(expr); \
    printf("%s=%ld errno=%d\n", name, r_, errno); } while (0)
int main(void) {
    char buf[128] = {0};
    struct stat st;
    int fd = open("/in.txt", O_RDONLY);
    long n = read(fd, buf, sizeof buf - 1);
    printf("in=%ld:%s", n, buf);
    SHOW("fstat", fstat(fd, &st));
    printf("size=%ld\n", (long)st.st_size);
    SHOW("pread", pread(fd, buf, 4, 5));
    printf("pread-data=[%.4s]\n", buf);
    close(fd);
    SHOW("mkdir", mkdir("/out", 0755));
    SHOW("chdir", chdir("/out"));
    printf("cwd=%s\n", getcwd(buf, sizeof buf));
    fd = open("guest.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    SHOW("write", write(fd, "written by the guest\n", 21));
    int fd2 = dup(fd);
    printf("dup=%d\n", fd2);
    SHOW("cloexec", fcntl(fd2, F_GETFD));
    close(fd);
    close(fd2);
    close(open("tmp.txt", O_WRONLY | O_CREAT | O_EXCL, 0600));
    SHOW("excl", open("tmp.txt", O_WRONLY | O_CREAT | O_EXCL, 0600));
    SHOW("rename", rename("tmp.txt", "renamed.txt"));
    SHOW("access", access("/out/renamed.txt", F_OK));
    SHOW("unlink", unlink("renamed.txt"));
    SHOW("gone", access("renamed.txt", F_OK));
    SHOW("mkdir2", mkdir("sub", 0700));
    SHOW("rmdir", rmdir("sub"));
    SHOW("stat", stat("/out/guest.txt", &st));
    printf("size=%ld\n", (long)st.st_size);
    fd = open("guest.txt", O_RDWR | O_APPEND);
    SHOW("getfl", fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND | O_NONBLOCK));
    SHOW("lseek", lseek(fd, 0, SEEK_END));
    SHOW("pwrite", pwrite(fd, "W", 1, 0));
    SHOW("readable", access("guest.txt", R_OK | W_OK));
    SHOW("symlink", symlink("/out/guest.txt", "link"));
    memset(buf, 0, sizeof buf);
    SHOW("readlink", readlink("link", buf, sizeof buf));
    printf("target=%s\n", buf);
    struct statx sx;
    SHOW("statx", statx(AT_FDCWD, "link", 0, STATX_BASIC_STATS, &sx));
    printf("statx-size=%ld\n", (long)sx.stx_size);
    SHOW("unlink-link", unlink("link"));
    close(fd);
    DIR *d = opendir("/out");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') printf("entry=%s\n", e->d_name);
    return 0;
}
"#;

/// The guest reads a file the host wrote and writes one the host reads; mkdir,
/// chdir, rename, unlink, rmdir and readdir act on the rootfs.
#[test]
fn guest_and_host_share_files() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "files", FILES, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.write_rootfs_file("/in.txt", "from the host\n");
    b.args(&["/files"]);
    let c = hj.container("vmfiles");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.lines(),
        [
            "in=14:from the host",
            "fstat=0 errno=0",
            "size=14",
            "pread=4 errno=0",
            "pread-data=[the ]",
            "mkdir=0 errno=0",
            "chdir=0 errno=0",
            "cwd=/out",
            "write=21 errno=0",
            "dup=4",
            "cloexec=0 errno=0",
            "excl=-1 errno=17",
            "rename=0 errno=0",
            "access=0 errno=0",
            "unlink=0 errno=0",
            "gone=-1 errno=2",
            "mkdir2=0 errno=0",
            "rmdir=0 errno=0",
            "stat=0 errno=0",
            "size=21",
            "getfl=1026 errno=0",
            "lseek=21 errno=0",
            "pwrite=1 errno=0",
            "readable=0 errno=0",
            "symlink=0 errno=0",
            "readlink=14 errno=0",
            "target=/out/guest.txt",
            "statx=0 errno=0",
            "statx-size=22",
            "unlink-link=0 errno=0",
            "entry=guest.txt",
        ],
        "{out}"
    );
    let written = fs::read_to_string(b.rootfs().join("out/guest.txt")).expect("guest file");
    // pwrite on an O_APPEND fd appends, as on Linux.
    assert_eq!(written, "written by the guest\nW");
    c.assert_nothing_left(&b);
}

const ESCAPE: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#define SHOW(name, expr) do { errno = 0; long r_ = (long)(expr); \
    printf("%s=%ld errno=%d\n", name, r_, errno); } while (0)
static void show(const char *what, const char *path) {
    char buf[256] = {0};
    errno = 0;
    int fd = openat(AT_FDCWD, path, O_RDONLY);
    long n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
    printf("%s=%s errno=%d\n", what, n > 0 ? buf : "-", errno);
    if (fd >= 0) close(fd);
}
int main(void) {
    static char longp[5000];
    show("shadow", "../../../../etc/shadow");
    show("hostname", "/hostlink");
    show("dotdot", "/etc/../../../../etc/hostname");
    show("relative", "/rellink");
    show("device", "/zero");
    SHOW("efault", openat(AT_FDCWD, (char *)0x7fff00000000L, O_RDONLY));
    memset(longp, 'a', sizeof longp - 1);
    SHOW("toolong", open(longp, O_RDONLY));
    SHOW("badfd", close(77));
    SHOW("baddirfd", openat(55, "x", O_RDONLY));
    SHOW("badbuf", read(0, (void *)0x7fff00000000L, 10));
    int last = 0;
    for (int i = 0; i < 2000; i++) {
        int fd = open("/etc/passwd", O_RDONLY);
        if (fd < 0) { printf("emfile errno=%d at %d\n", errno, last); break; }
        last = fd;
    }
    return 0;
}
"#;

/// Paths that try to leave the rootfs (`..`, absolute symlinks) resolve inside it;
/// device nodes are refused; bad pointers, lengths and fds get errnos, and the VMM
/// survives all of it.
#[test]
fn hostile_paths_stay_in_rootfs() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "escape", ESCAPE, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.write_rootfs_file("/etc/hostname", "rootfs-own-hostname\n");
    std::os::unix::fs::symlink("/etc/hostname", b.rootfs().join("hostlink")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../etc/hostname", b.rootfs().join("rellink"))
        .expect("symlink");
    // A device node in the rootfs (/dev/zero's numbers) is refused as on nodev.
    nix::sys::stat::mknod(
        &b.rootfs().join("zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .expect("mknod");
    b.args(&["/escape"]);
    let c = hj.container("vmescape");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.lines(),
        [
            "shadow=- errno=2",
            "hostname=rootfs-own-hostname errno=0",
            "dotdot=rootfs-own-hostname errno=0",
            "relative=rootfs-own-hostname errno=0",
            "device=- errno=13",
            "efault=-1 errno=14",
            "toolong=-1 errno=36",
            "badfd=-1 errno=9",
            "baddirfd=-1 errno=9",
            "badbuf=-1 errno=14",
            "emfile errno=24 at 1023",
        ],
        "{out}"
    );
    c.assert_nothing_left(&b);
}

/// busybox applets that change the rootfs, one VM each (no fork in the guest yet).
#[test]
fn busybox_mkdir_mv_rm() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.write_rootfs_file("/work/note", "note\n");
    for (args, check) in [
        (&["mkdir", "-p", "/work/a/b"][..], "work/a/b"),
        (
            &["mv", "/work/note", "/work/a/b/note2"][..],
            "work/a/b/note2",
        ),
        (&["ln", "-s", "/etc/passwd", "/work/link"][..], "work/link"),
    ] {
        b.args(args);
        let c = hj.container("vmfsapplet");
        let out = c.run(&b, &[]);
        assert_eq!(out.code, Some(0), "{args:?}: {out}");
        assert!(
            b.rootfs().join(check).symlink_metadata().is_ok(),
            "{args:?}: {check} missing: {out}"
        );
    }
    b.args(&["rm", "-r", "/work/a"]);
    let c = hj.container("vmrm");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!b.rootfs().join("work/a").exists(), "{out}");
}

/// root.readonly: the guest can read the rootfs but not change it.
#[test]
fn readonly_rootfs_refuses_writes() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.config_mut()["root"]["readonly"] = json!(true);
    b.args(&["mkdir", "/nope"]);
    let c = hj.container("vmro");
    let out = c.run(&b, &[]);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(!b.rootfs().join("nope").exists());
    b.args(&["cat", "/etc/group"]);
    let c = hj.container("vmro2");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.starts_with("root:x:0:"), "{out}");
}

/// The VMM reaches the rootfs as process.user: its permissions apply to the guest,
/// and what the guest creates is owned by it.
#[test]
fn process_user_owns_guest_files() {
    require_kvm!();
    use std::os::unix::fs::MetadataExt;
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    b.config_mut()["process"]["user"] = json!({"uid": 1000, "gid": 100});
    b.write_rootfs_file("/secret", "root only\n");
    fs::set_permissions(b.rootfs().join("secret"), fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let home = b.rootfs().join("home/u");
    fs::create_dir_all(&home).expect("mkdir home");
    std::os::unix::fs::chown(&home, Some(1000), Some(100)).expect("chown");

    b.args(&["cat", "/secret"]);
    let c = hj.container("vmuserro");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("Permission denied"), "{out}");

    b.args(&["mkdir", "/home/u/made", "/not-mine"]);
    let c = hj.container("vmusermk");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("Permission denied"), "{out}");
    let meta = fs::metadata(home.join("made")).expect("the guest's directory");
    assert_eq!((meta.uid(), meta.gid()), (1000, 100));
    assert!(!b.rootfs().join("not-mine").exists());
}
