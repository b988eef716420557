//! Processes in the VM: fork (the child's memory is a copy in an address space of
//! its own), execve (a new image loaded by the VMM, close-on-exec honoured),
//! wait4 with exit statuses, pipes between processes, and a busybox shell running
//! pipelines, subshells and command substitution.

use hyperjail_tests::vm::{assert_vm_matches_host, compile_static, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, Hyperjail};
use std::process::Command;

const PROCS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int counter = 1;
static volatile long spins;

static void *spin(void *arg) { for (;;) spins++; }
static void *sleeper(void *arg) { sleep(30); return 0; }

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "child")) {
        /* The exec'd image: its arguments, environment and inherited fds. */
        errno = 0;
        int closed = fcntl(9, F_GETFD) == -1 && errno == EBADF;
        printf("exec'd argv=%s env=%s cloexec-closed=%d inherited=%d counter=%d\n", argv[2],
               getenv("PT"), closed, fcntl(8, F_GETFD) == 0, counter);
        return 42;
    }
    setvbuf(stdout, 0, _IONBF, 0);
    int st;
    pid_t me = getpid();

    /* Exit statuses. */
    pid_t p = fork();
    if (p == 0) _exit(3);
    int right = waitpid(p, &st, 0) == p;
    printf("waited-right=%d exit=%d\n", right, WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    /* The child's memory is a copy: its writes stay its own. */
    counter = 5;
    p = fork();
    if (p == 0) {
        int ok = counter == 5 && getppid() == me && getpid() != me;
        counter = 99;
        char *big = malloc(4 << 20);
        memset(big, 7, 4 << 20);
        _exit(ok && big[(4 << 20) - 1] == 7 ? 0 : 1);
    }
    waitpid(p, &st, 0);
    printf("child-ok=%d parent-counter=%d\n", WEXITSTATUS(st) == 0, counter);

    /* A pipe between parent and child; the child execs this program again (busybox
       sh below execs through /proc/self/exe) with
       stdout on the pipe, fd 9 close-on-exec and fd 8 inherited. */
    int fd[2];
    pipe(fd);
    p = fork();
    if (p == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        dup3(open("/procs", O_RDONLY), 9, O_CLOEXEC);
        dup2(open("/procs", O_RDONLY), 8);
        char *av[] = {"procs", "child", "A1", 0};
        char *ev[] = {"PT=e1", 0};
        execve("/procs", av, ev);
        _exit(127);
    }
    close(fd[1]);
    char buf[256] = {0};
    int n = 0, r;
    while ((r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0) n += r;
    waitpid(p, &st, 0);
    printf("piped=[%s] status=%d\n", strtok(buf, "\n"), WEXITSTATUS(st));

    /* execve failures come back to the caller. */
    char *none[] = {"x", 0};
    errno = 0;
    int e1 = execve("/no/such/program", none, none) == -1 ? errno : 0;
    errno = 0;
    int e2 = execve("/", none, none) == -1 ? errno : 0;
    printf("exec-missing=%s exec-dir=%s\n", strerror(e1), strerror(e2));

    /* wait4 corner cases. */
    int none_left = waitpid(-1, &st, 0);
    printf("no-children=%d %s\n", none_left, strerror(errno));
    p = fork();
    if (p == 0) { usleep(100000); _exit(0); }
    int nohang = waitpid(p, &st, WNOHANG);
    printf("wnohang=%d\n", nohang);
    int then = waitpid(-1, &st, 0) == p;
    printf("then=%d\n", then);

    /* waitid: the child's siginfo; WNOWAIT leaves it to be reaped; WNOHANG. */
    p = fork();
    if (p == 0) _exit(6);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int wr = waitid(P_PID, p, &si, WEXITED | WNOWAIT);
    printf("waitid=%d pid-right=%d code=%d status=%d\n", wr, si.si_pid == p, si.si_code,
           si.si_status);
    int again = waitpid(p, &st, 0) == p;
    printf("reaped-after-nowait=%d\n", again);
    p = fork();
    if (p == 0) { usleep(100000); _exit(0); }
    si.si_pid = 123;
    wr = waitid(P_ALL, 0, &si, WEXITED | WNOHANG);
    printf("waitid-nohang=%d pid=%d\n", wr, si.si_pid);
    waitpid(p, &st, 0);

    /* A child that faults is killed by the signal; the parent goes on. */
    p = fork();
    if (p == 0) { *(volatile int *)8 = 1; _exit(0); }
    waitpid(p, &st, 0);
    printf("segv=%d sig=%d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    p = fork();
    if (p == 0) { __builtin_trap(); }
    waitpid(p, &st, 0);
    printf("ill=%d sig=%d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);

    /* A child with three threads (one spinning, one asleep) calls exit: its other
       threads end with it, and the slots are free for the next ones. */
    p = fork();
    if (p == 0) {
        pthread_t t1, t2;
        pthread_create(&t1, 0, spin, 0);
        pthread_create(&t2, 0, sleeper, 0);
        usleep(20000);
        exit(9);
    }
    waitpid(p, &st, 0);
    printf("threaded-exit=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    /* Many in a row: slots are given back. */
    int good = 0;
    for (int i = 0; i < 40; i++) {
        p = fork();
        if (p == 0) _exit(i & 0x7f);
        if (waitpid(p, &st, 0) == p && WEXITSTATUS(st) == (i & 0x7f)) good++;
    }
    printf("forty=%d\n", good);
    return 0;
}
"#;

#[test]
fn fork_exec_wait_match_the_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "procs", PROCS, &["-static", "-pthread"]),
        "gcc -static -pthread does not work here (apt-get install gcc libc6-dev)"
    );
    // On the host the program finds itself at /procs only through the rootfs.
    let host = Command::new("chroot")
        .arg(b.rootfs())
        .arg("/procs")
        .output()
        .expect("run the program on the host");
    let host_out = String::from_utf8_lossy(&host.stdout).to_string();
    assert!(host.status.success(), "host run: {host_out} {host:?}");
    for want in [
        "waited-right=1 exit=3",
        "child-ok=1 parent-counter=5",
        "piped=[exec'd argv=A1 env=e1 cloexec-closed=1 inherited=1 counter=1] status=42",
        "exec-missing=No such file or directory exec-dir=Permission denied",
        "no-children=-1 No child processes",
        "wnohang=0",
        "then=1",
        "waitid=0 pid-right=1 code=1 status=6",
        "reaped-after-nowait=1",
        "waitid-nohang=0 pid=0",
        "segv=1 sig=11",
        "ill=1 sig=4",
        "threaded-exit=9",
        "forty=40",
    ] {
        assert!(host_out.contains(want), "host: {want:?} in {host_out}");
    }

    b.args(&["/procs"]);
    assert_vm_matches_host(&hj, &b, "vmprocs", 0, &host_out);
}

/// busybox sh: external commands (fork + exec of busybox applets), pipelines,
/// subshells and their statuses, command substitution, a missing command.
/// The guest's device nodes come from the VMM whatever the rootfs holds:
/// /dev/null, /dev/zero, /dev/full, /dev/urandom and /dev/std{in,out,err}.
#[test]
fn device_nodes() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let _ = std::fs::remove_dir_all(b.rootfs().join("dev"));
    let script = r#"
        echo gone > /dev/null; echo null=$?
        head -c 4096 /dev/zero | tr -d '\0' | wc -c
        head -c 64 /dev/urandom | wc -c
        echo x > /dev/full 2>/dev/null; echo full=$?
        echo to-stderr > /dev/stderr
        wc -c < /dev/null
    "#;
    b.args(&["/bin/sh", "-c", script]);
    let c = hj.container("vmdev");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "null=0\n0\n64\nfull=1\n0\n", "{out}");
    assert_eq!(out.stderr, "to-stderr\n", "{out}");
    // Nothing was created in the rootfs (there is not even a /dev there).
    assert!(!b.rootfs().join("dev").exists());
    c.assert_nothing_left(&b);
}

#[test]
fn busybox_shell_pipelines() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let script = r#"
        echo one two three | wc -w
        printf 'b\na\nc\n' | sort | head -n 2 | tr '\n' ' '; echo
        (exit 3); echo sub=$?
        x=$(echo inner | tr a-z A-Z); echo sub2=$x
        sh -c 'exit 7'; echo sh=$?
        false | true; echo pipe=$?
        nosuchcommand 2>/dev/null; echo missing=$?
        ls /bin | grep -c '^sh$'
        i=0; while [ $i -lt 25 ]; do /bin/true; i=$((i+1)); done; echo loop=$i
        echo ppid-of-child=$(sh -c 'echo $PPID') self=$$
        head -c 3000000 /dev/zero > /big
        cat /big | (sleep 0.3; wc -c)
    "#;
    b.args(&["/bin/sh", "-c", script]);
    let c = hj.container("vmsh");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    // cat moves the file with sendfile into a pipe that is full most of the time.
    let want = "3\na b \nsub=3\nsub2=INNER\nsh=7\npipe=0\nmissing=127\n1\nloop=25\nppid-of-child=1 self=1\n3000000\n";
    assert_eq!(out.stdout, want, "{out}");
    c.assert_nothing_left(&b);
}

/// The guest kernel's /proc: meminfo (the VM's RAM), cpuinfo (the domain's CPUs),
/// uptime, and a process's status, stat and cmdline; files that are not there, and
/// no writing.
#[test]
fn proc_files() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let script = r#"
        grep MemTotal /proc/meminfo
        [ "$(grep -c ^processor /proc/cpuinfo)" = "$(nproc)" ] && echo cpus-agree
        grep -E '^[0-9]+\.[0-9]{2} [0-9]+\.[0-9]{2}$' /proc/uptime > /dev/null && echo uptime-ok
        cat /proc/self/status | grep -E '^(Name|PPid):'
        cat /proc/self/cmdline | tr '\0' ' '; echo
        cut -d' ' -f1-6 /proc/$$/stat
        cat /proc/nosuch 2>/dev/null || echo nosuch-missing
        (echo x > /proc/uptime) 2>/dev/null || echo read-only
    "#;
    b.args(&["/bin/sh", "-c", script]);
    let c = hj.container("vmproc");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.stdout,
        "MemTotal:          65536 kB\ncpus-agree\nuptime-ok\nName:\tcat\nPPid:\t1\n\
         cat /proc/self/cmdline \n1 (sh) R 0 1 1\nnosuch-missing\nread-only\n",
        "{out}"
    );
    c.assert_nothing_left(&b);
}

/// The guest's /proc directories: /proc lists the live guest processes and the
/// kernel's files, /proc/PID what a process has, /proc/PID/fd its open fds; stat,
/// readlink, chdir and test(1) see them as Linux's (directories, files, links), and
/// a process that ended is gone from them.
#[test]
fn proc_directories() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let script = r#"
        sleep 30 7</dev/null & s=$!
        i=0
        while [ "$(cat /proc/$s/comm 2>/dev/null)" != sleep ] && [ $i -lt 500 ]; do
            i=$((i + 1))
        done
        [ -d /proc ] && [ -d /proc/self ] && [ -d /proc/$s ] && [ -L /proc/self ] && echo dirs
        ls /proc | grep -qx "$s" && ls /proc | grep -qx "$$" && echo pids-listed
        ls /proc | grep -v '^[0-9]' | tr '\n' ' '; echo
        ls /proc/self/ | tr '\n' ' '; echo
        ls /proc/self/fd | tr '\n' ' '; echo
        ls /proc/$s/fd | tr '\n' ' '; echo
        readlink /proc/$s/fd/7
        [ "$(sh -c 'echo $$; exec readlink /proc/self' | uniq | wc -l)" = 1 ] && echo self-link
        [ "$(readlink /proc/$$/exe)" = "$(readlink /proc/self/exe)" ] && echo exe-link
        [ -f /proc/self/status ] && [ -r /proc/uptime ] && echo files
        stat -c %F /proc/$s/fd
        cd /proc/$s/fd && ls | grep -qx 7 && cd / && echo cd-ok
        (cd /proc/self/fd && exec 5</dev/null && ls; true)
        cat /proc/self/exe > /exe.copy && cmp -s /exe.copy /bin/busybox && echo exe-opens
        cat /proc/$s/comm
        { kill $s; wait $s; } 2>/dev/null
        [ -e /proc/$s ] || echo gone
        ls /proc/nosuch 2>/dev/null || echo nosuch
        ls /proc/self/nosuch 2>/dev/null || echo nosuch-file
    "#;
    b.args(&["/bin/sh", "-c", script]);
    let c = hj.container("vmprocdir");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    // ls's own fd 3 (the directory it reads) is in its /proc/self/fd, as on Linux;
    // a subshell's /proc/self/fd as working directory stays the subshell's for ls.
    assert_eq!(
        out.stdout,
        "dirs\npids-listed\ncpuinfo loadavg meminfo self thread-self uptime \n\
         cmdline comm exe fd maps stat status \n0 1 2 3 \n0 1 2 7 \n/dev/null\nself-link\n\
         exe-link\nfiles\ndirectory\ncd-ok\n0\n1\n2\n5\nexe-opens\nsleep\ngone\nnosuch\nnosuch-file\n",
        "{out}"
    );
    assert_eq!(out.stderr, "", "{out}");
    c.assert_nothing_left(&b);
}

const REUSE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char data[3 * 4096] = "initial";
static char bss[64 * 4096];

/* Fills everything a process has of its own with 0xab, then exits. */
static void dirty(void) {
    memset(data, 0xab, sizeof data);
    memset(bss, 0xab, sizeof bss);
    memset(malloc(1000), 0xab, 1000);
    memset(malloc(256 << 10), 0xab, 256 << 10);
    volatile char deep[128 << 10];
    for (size_t i = 0; i < sizeof deep; i++) deep[i] = (char)0xab;
    _exit(0);
}

/* Whether this process's memory is as a fresh one's (or its parent's) would be:
   data as in the file, bss, new heap and new mappings zero, the stack below it
   untouched. */
static int clean(const char *who) {
    int ok = 1;
    if (strcmp(data, "initial")) ok = 0, printf("%s: data\n", who);
    for (size_t i = 8; i < sizeof data; i++)
        if (data[i]) { ok = 0; printf("%s: data at %zu\n", who, i); break; }
    for (size_t i = 0; i < sizeof bss; i++)
        if (bss[i]) { ok = 0; printf("%s: bss at %zu\n", who, i); break; }
    unsigned char *small = malloc(1000), *big = malloc(256 << 10);
    for (size_t i = 0; i < 1000; i++)
        if (small[i]) { ok = 0; printf("%s: heap at %zu\n", who, i); break; }
    for (size_t i = 0; i < (256 << 10); i++)
        if (big[i]) { ok = 0; printf("%s: mapping at %zu\n", who, i); break; }
    volatile char here;
    volatile char *below = &here - (96 << 10);
    for (size_t i = 0; i < (32 << 10); i++)
        if (below[i]) { ok = 0; printf("%s: stack at %zu\n", who, i); break; }
    return ok;
}

static int child(void (*f)(void)) {
    int st;
    pid_t p = fork();
    if (p == 0) f();
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void check_forked(void) { _exit(clean("fork") ? 0 : 1); }

/* Runs `prog mode` in a child; its exit status. */
static int run(const char *prog, const char *mode) {
    int st;
    pid_t p = fork();
    if (p == 0) {
        char *av[] = {(char *)prog, (char *)mode, 0};
        execv(prog, av);
        _exit(127);
    }
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    setvbuf(stdout, 0, _IONBF, 0);
    if (argc > 1 && !strcmp(argv[1], "dirty")) dirty();
    if (argc > 1) return clean("exec") ? 0 : 1;
    /* This program, and a copy of it (another file: another program). */
    char self[256] = {0}, other[300];
    if (readlink("/proc/self/exe", self, sizeof self - 1) < 0) return 2;
    snprintf(other, sizeof other, "%.*s/reuse2", (int)(strrchr(self, '/') - self), self);
    for (int round = 0; round < 3; round++) {
        child(dirty);
        int f = child(check_forked);
        child(dirty);
        int e = run(self, "check");
        run(other, "dirty");
        int o = run(other, "check");
        printf("round %d: forked %d execd %d other %d\n", round, f, e, o);
    }
    return 0;
}
"#;

/// A process slot's windows outlive their processes (the VMM keeps what the next
/// process can use as it is), but nothing a process wrote reaches the next one in
/// the same window: after a child fills its data, bss, heap, a mapping and its
/// stack, the next child — forked, forked and exec'd into the same program, or
/// exec'd into another program that the slot's other window held last — finds
/// them as a fresh process does.
#[test]
fn a_process_never_sees_what_the_last_one_in_its_slot_left() {
    let (hj, mut b) = hyperjail_tests::vm_program!("reuse", REUSE, &["-static", "-O1"]);
    std::fs::copy(b.rootfs().join("reuse"), b.rootfs().join("reuse2")).expect("copy the program");
    let want = "round 0: forked 0 execd 0 other 0\nround 1: forked 0 execd 0 other 0\n\
                round 2: forked 0 execd 0 other 0\n";
    hyperjail_tests::vm::assert_host_then_vm(&hj, &mut b, "reuse", "vmreuse", want);
}
