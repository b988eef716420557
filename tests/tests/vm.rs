//! The VM backend (`org.hyperjail.backend=vm`): static programs run in a KVM microVM
//! under hyperjail's own guest kernel. Every test skips with a reason when /dev/kvm is
//! missing or cannot create a VM; the ones that compile C skip without `gcc -static`.

use hyperjail_tests::{pid_alive, require_root, skip_unless, wait_until, Bundle, Hyperjail};
use serde_json::json;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Why this machine cannot run VMs, or None.
fn kvm_skip_reason() -> Option<String> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(f) => f,
        Err(e) => return Some(format!("/dev/kvm is not usable: {e}")),
    };
    const KVM_CREATE_VM: libc::c_ulong = 0xae01;
    use std::os::fd::AsRawFd;
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

macro_rules! require_kvm {
    () => {
        require_root!();
        if let Some(reason) = kvm_skip_reason() {
            println!("SKIP {}: {}", hyperjail_tests::function_name!(), reason);
            return;
        }
    };
}

/// A busybox bundle routed to the VM backend.
fn vm_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.config_mut()["annotations"] = json!({"org.hyperjail.backend": "vm"});
    b
}

/// Whether `gcc -static` works here (compiler and static libc present).
fn static_cc_works(b: &Bundle) -> bool {
    let dir = b.path().join("src");
    fs::create_dir_all(&dir).expect("mkdir src");
    let c = dir.join("probe.c");
    fs::write(&c, "int main(void) { return 0; }\n").expect("write probe");
    Command::new("gcc")
        .args(["-static", "-o"])
        .arg(dir.join("probe"))
        .arg(&c)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles `src` with gcc and `extra` flags into the bundle's rootfs at `/name`;
/// false (the test skips) if `gcc -static` does not work on this machine. A
/// compile error in `src` fails the test.
fn compile_static(b: &Bundle, name: &str, src: &str, extra: &[&str]) -> bool {
    if !static_cc_works(b) {
        return false;
    }
    let c = b.path().join("src").join(format!("{name}.c"));
    fs::write(&c, src).expect("write C source");
    let out = Command::new("gcc")
        .args(extra)
        .args(["-O2", "-w"])
        .arg("-o")
        .arg(b.rootfs().join(name))
        .arg(&c)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

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
    // Built and confined before `create` returns: seccomp filter mode, no_new_privs.
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("VMM status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .map(str::to_string)
    };
    assert_eq!(field("Seccomp:").as_deref(), Some("2"), "{status}");
    assert_eq!(field("NoNewPrivs:").as_deref(), Some("1"), "{status}");
    c.start().assert_ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    c.kill("TERM").assert_ok();
    c.wait_status("stopped");
    c.delete().assert_ok();
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
