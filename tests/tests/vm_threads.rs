//! Threads in the VM: each guest thread runs on a vCPU of its own (a host thread of
//! the VMM, so in the domain's cgroup). A futex-heavy pthreads program gives the
//! same output as on the host (a new thread inherits the parent's SSE rounding mode,
//! too); sleeping threads sleep in parallel; the vCPU threads
//! are in the domain's cgroup; the first thread may exit before the others.

use hyperjail_tests::vm::{assert_vm_matches_host, compile_static, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, wait_until, Hyperjail};
use std::fs;
use std::process::Command;
use std::time::Duration;

const THREADS: &str = r#"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long counter, ready, tids[4];

static void *work(void *arg) {
    long id = (long)arg;
    tids[id] = syscall(SYS_gettid);
    pthread_mutex_lock(&mu);
    ready++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 50000; i++) {
        pthread_mutex_lock(&mu);
        counter++;
        pthread_mutex_unlock(&mu);
    }
    unsigned long x = id + 1;
    for (long i = 0; i < 1000000; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    return (void *)(x & 0xffff);
}

static unsigned get_mxcsr(void) { unsigned m; __asm__ volatile("stmxcsr %0" : "=m"(m)); return m; }
static void set_mxcsr(unsigned m) { __asm__ volatile("ldmxcsr %0" : : "m"(m)); }

static void *rounding(void *arg) {
    return (void *)(long)(get_mxcsr() & 0x6000);
}

static void *sleeper(void *arg) {
    struct timespec t = {0, (long)arg * 1000000L};
    nanosleep(&t, 0);
    return 0;
}

static void *last(void *arg) {
    struct timespec t = {0, 50000000};
    nanosleep(&t, 0);
    printf("last thread done\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    pthread_t t[4];
    long sum = 0;
    for (long i = 0; i < 4; i++)
        if (pthread_create(&t[i], 0, work, (void *)i)) { printf("pthread_create failed\n"); return 1; }
    pthread_mutex_lock(&mu);
    while (ready < 4) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); sum += (long)r; }
    int unique = 1;
    for (int i = 0; i < 4; i++) {
        if (tids[i] == getpid()) unique = 0;
        for (int j = 0; j < i; j++) if (tids[i] == tids[j]) unique = 0;
    }
    printf("counter=%ld sum=%ld tids-unique=%d\n", counter, sum, unique);

    /* A timed wait that nobody signals ends with ETIMEDOUT. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 20000000;
    if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
    pthread_mutex_lock(&mu);
    int r = pthread_cond_timedwait(&cv, &mu, &until);
    pthread_mutex_unlock(&mu);
    printf("timedwait=%s\n", r == ETIMEDOUT ? "ETIMEDOUT" : "other");

    /* A new thread inherits the SSE rounding mode (here: round up). */
    unsigned saved = get_mxcsr();
    set_mxcsr((saved & ~0x6000u) | 0x4000u);
    void *mode;
    pthread_create(&t[0], 0, rounding, 0);
    pthread_join(t[0], &mode);
    set_mxcsr(saved);
    printf("rounding-inherited=%d\n", (long)mode == 0x4000);

    /* Four threads sleeping 300 ms each take about 300 ms together. */
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, sleeper, (void *)300);
    for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("parallel-sleep=%s\n", ms < 1000 ? "yes" : "no");
    fflush(stdout);
    if (argc > 1) {
        /* Threads that stay for the test to look at, then the first thread leaves
           before the last one. */
        for (long i = 0; i < 3; i++) pthread_create(&t[i], 0, sleeper, (void *)(long)atoi(argv[1]));
        pthread_t l;
        pthread_create(&l, 0, last, 0);
        printf("waiting\n");
        fflush(stdout);
        pthread_exit(0);
    }
    return 0;
}
"#;

#[test]
fn pthreads_match_the_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "threads", THREADS, &["-static", "-pthread"]),
        "gcc -static -pthread does not work here (apt-get install gcc libc6-dev)"
    );
    let host = Command::new(b.rootfs().join("threads"))
        .output()
        .expect("run the program on the host");
    let host_out = String::from_utf8_lossy(&host.stdout).to_string();
    assert!(host.status.success(), "host run: {host_out}");
    assert!(host_out.starts_with("counter=200000 "), "{host_out}");

    b.args(&["/threads"]);
    let out = assert_vm_matches_host(&hj, &b, "vmthreads", 0, &host_out);
    assert!(out.stdout.contains("tids-unique=1"), "{out}");
    assert!(out.stdout.contains("timedwait=ETIMEDOUT"), "{out}");
    assert!(out.stdout.contains("parallel-sleep=yes"), "{out}");
    assert!(out.stdout.contains("rounding-inherited=1"), "{out}");
}

/// The cgroup.procs-level view: every thread of the VMM (first vCPU, ring thread,
/// one per guest thread) is in the domain's cgroups; the first guest thread exits
/// before the others and the domain ends when the last one does, with status 0.
#[test]
fn vcpu_threads_live_in_the_domain_cgroup() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "threads", THREADS, &["-static", "-pthread"]),
        "gcc -static -pthread does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/threads", "1500"]);
    let c = hj.container("vmthreadcg");
    let running = c.run_call(&b, &[]).spawn();
    let mut pid = 0;
    wait_until(Duration::from_secs(20), "the VMM's pid", || {
        pid = c.state().and_then(|s| s["pid"].as_i64()).unwrap_or(0) as i32;
        pid > 0
    });
    let tasks = || -> Vec<String> {
        fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("VMM cgroups");
    assert!(
        own.contains(&c.id),
        "the VMM is in the domain's cgroup: {own}"
    );
    // Every thread seen is in the domain's cgroup; at some moment at least six of
    // them (the first vCPU, the ring thread and four guest threads) are seen at
    // once (threads come and go, so each look takes a fresh list).
    wait_until(Duration::from_secs(20), "six threads in the cgroup", || {
        let mut seen = 0;
        for t in tasks() {
            if let Ok(cg) = fs::read_to_string(format!("/proc/{pid}/task/{t}/cgroup")) {
                assert_eq!(cg, own, "thread {t} of the VMM is in another cgroup");
                seen += 1;
            }
        }
        seen >= 6
    });
    let out = running.wait();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout.ends_with("waiting\nlast thread done\n"),
        "the last thread outlives the first: {out}"
    );
    c.assert_nothing_left(&b);
}

/// A fault in a thread other than the first ends the domain like any guest crash,
/// and the report is that thread's (each vCPU takes IDT events on its own stack).
#[test]
fn a_fault_in_a_thread_ends_the_domain() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let src = r#"
#include <pthread.h>
#include <unistd.h>
static void *bad(void *arg) { volatile int *p = (int *)0x10; return (void *)(long)*p; }
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, bad, 0);
    pthread_join(t, 0);
    sleep(5);
    return 0;
}
"#;
    skip_unless!(
        compile_static(&b, "tfault", src, &["-static", "-pthread"]),
        "gcc -static -pthread does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/tfault"]);
    let c = hj.container("vmtfault");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(139), "{out}");
    assert!(out.stderr.contains("page fault at address 0x10"), "{out}");
    c.assert_nothing_left(&b);
}

/// The guest's CPU count is the domain's: `linux.resources.cpu.cpus` (its cpuset)
/// is what sched_getaffinity reports in the VM.
#[test]
fn guest_cpu_count_follows_the_cpuset() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let src = "#define _GNU_SOURCE\n#include <sched.h>\n#include <stdio.h>\n\
               int main(void) { cpu_set_t s; sched_getaffinity(0, sizeof s, &s);\n\
               printf(\"cpus=%d\\n\", CPU_COUNT(&s)); return 0; }\n";
    skip_unless!(
        compile_static(&b, "ncpu", src, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    b.args(&["/ncpu"]);
    b.config_mut()["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": "0"});
    let c = hj.container("vmncpu");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.stdout, "cpus=1\n", "{out}");
    c.assert_nothing_left(&b);
}

const EXEC_THREADED: &str = r#"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
static volatile long spins;
static void *spinner(void *a) {
    for (;;) {
        spins++;
        usleep(1000);
    }
    return 0;
}
/* The Threads: line of /proc/self/status. */
static int threads(void) {
    char buf[4096];
    FILE *f = fopen("/proc/self/status", "r");
    int n = -1;
    while (f && fgets(buf, sizeof buf, f))
        if (sscanf(buf, "Threads: %d", &n) == 1) break;
    if (f) fclose(f);
    return n;
}
int main(int argc, char **argv) {
    if (argc > 1) {
        printf("after exec: %s threads=%d tid-is-pid=%d\n", argv[1], threads(),
               (long)syscall(SYS_gettid) == (long)getpid());
        return 0;
    }
    pthread_t t[2];
    pthread_create(&t[0], 0, spinner, 0);
    pthread_create(&t[1], 0, spinner, 0);
    printf("before: threads=%d\n", threads());
    /* A failed execve leaves the other threads running. */
    char *bad[] = {"/nonexistent", 0};
    int r = execve("/nonexistent", bad, 0);
    int e = errno;
    long before = spins;
    for (int i = 0; i < 2000 && spins == before; i++) usleep(1000);
    printf("failed exec=%d %s, threads alive=%d\n", r, strerror(e), spins > before);
    fflush(stdout);
    /* One that works ends them: the new image runs with one thread. */
    char *args[] = {argv[0], "again", 0};
    execve("/proc/self/exe", args, 0);
    printf("execve failed: %s\n", strerror(errno));
    return 9;
}
"#;

/// execve from a process with several threads: a failing one leaves the threads
/// alone; one that works ends them first and the new image runs alone, its one
/// thread the leader (tid = pid). The same output as on the host.
#[test]
fn execve_from_a_threaded_process() {
    let (hj, mut b) =
        hyperjail_tests::vm_program!("execth", EXEC_THREADED, &["-static", "-pthread"]);
    hyperjail_tests::vm::assert_host_then_vm(
        &hj,
        &mut b,
        "execth",
        "vmexecth",
        "before: threads=3\nfailed exec=-1 No such file or directory, threads alive=1\nafter exec: again threads=1 tid-is-pid=1\n",
    );
}

const FPU: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static unsigned long long start[2];

/* Fills xmm15 with a pattern, then ends (its vCPU may be reused). */
static void *mark(void *a) {
    (void)a;
    unsigned long long p[2] = {0x5a5a5a5a5a5a5a5aULL, 0xa5a5a5a5a5a5a5a5ULL};
    __asm__ volatile("movdqu %0, %%xmm15" : : "m"(p) : "xmm15");
    return 0;
}

/* Records xmm15 as the thread found it. */
static void *look(void *a) {
    (void)a;
    __asm__ volatile("movdqu %%xmm15, %0" : "=m"(start) : : "memory");
    return 0;
}

int main(void) {
    for (int i = 0; i < 20; i++) {
        pthread_t t;
        pthread_create(&t, 0, mark, 0);
        pthread_join(t, 0);
        unsigned long long z[2] = {0, 0};
        __asm__ volatile("movdqu %0, %%xmm15" : : "m"(z) : "xmm15");
        pthread_create(&t, 0, look, 0);
        pthread_join(t, 0);
        if (start[0] == 0x5a5a5a5a5a5a5a5aULL || start[1] == 0xa5a5a5a5a5a5a5a5ULL) {
            printf("round %d: a new thread saw an ended thread's xmm15\n", i);
            return 1;
        }
    }
    printf("clean\n");
    return 0;
}
"#;

/// A new thread never starts with the SSE registers of a thread that ended (its
/// vCPU is reused, and KVM_SET_FPU does not reach a vCPU on this host: the guest
/// kernel's thread entry clears them), as on the host, where it gets its parent's.
#[test]
fn a_new_thread_does_not_see_an_ended_threads_registers() {
    let (hj, mut b) = hyperjail_tests::vm_program!("fpu", FPU, &["-static", "-pthread"]);
    hyperjail_tests::vm::assert_host_then_vm(&hj, &mut b, "fpu", "vmfpu", "clean\n");
}
