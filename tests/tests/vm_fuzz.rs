//! A system-call fuzzer inside the VM: the guest's init forks children one after
//! the other; each makes random system calls (random numbers, and arguments mixing
//! small integers, pointers into its own memory, pointers into the guest kernel's
//! memory and garbage) and reports its count through a pipe. A child that makes no
//! progress for 200 ms (a random call that waits: a read from a pipe it made) is
//! killed with SIGKILL, and the next one starts. The guest kernel may
//! kill a child; it must not panic or hang, and the VMM must not crash.

use hyperjail_tests::vm::{compile_static, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, Hyperjail};
use std::time::Duration;

const FUZZ: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned long long rs;
static unsigned long long rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs; }
static char scratch[1 << 16] __attribute__((aligned(4096)));

static long arg(void) {
    switch (rnd() % 9) {
    case 0: return rnd() % 8;
    case 1: return (long)(scratch + rnd() % sizeof scratch);
    case 2: return -1;
    case 3: return (long)rnd();
    case 4: return (long)(rnd() & 0x3ff000); /* the guest kernel's memory and the image */
    case 5: return (long)scratch;
    case 6: return rnd() % 4096;
    case 7: return 0x10000 << (rnd() % 8);
    default: return 0;
    }
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

/* Never (as a syscall fuzzer keeps its process alive and busy): the calls that end
   or replace the child or make more processes, the ones that send it signals or
   jump to a garbage frame, mmap/mremap (a MAP_FIXED over its own code ends it at
   once), and the waits that last for ever (pause, sleeps, sigsuspend, futex). */
static int denied(long nr) {
    switch (nr) {
    case 9: case 15: case 25: case 34: case 35: case 56: case 57: case 58: case 59:
    case 60: case 62: case 130: case 200: case 202: case 230: case 231: case 234:
    case 322: case 435:
        return 1;
    }
    return 0;
}

static void child(unsigned long long seed, long calls) {
    rs = seed | 1;
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0); dup2(null, 1); dup2(null, 2);
    for (size_t i = 0; i < sizeof scratch; i++) scratch[i] = (char)rnd();
    long n = 0;
    while (n < calls) {
        long nr = rnd() % 460;
        if (denied(nr)) continue;
        syscall(nr, arg(), arg(), arg(), arg(), arg(), arg());
        n++;
        if (n % 64 == 0) {
            long long v = n;
            if (write(200, &v, 8) != 8) { /* the report fd was closed: go on */ }
        }
    }
    _exit(0);
}

int main(int argc, char **argv) {
    int children = atoi(argv[1]);
    long per_child = atol(argv[2]);
    unsigned long long seed = strtoull(argv[3], 0, 10);
    mkdir("/fz", 0755);
    chdir("/fz");
    long long total = 0;
    int watchdog = 0, signaled = 0;
    for (int c = 0; c < children; c++) {
        int p[2];
        pipe2(p, O_NONBLOCK | O_CLOEXEC);
        pid_t pid = fork();
        if (pid == 0) {
            dup2(p[1], 200);
            child(seed * 1000003ULL + c, per_child);
        }
        close(p[1]);
        long long best = 0, last_change = now_ms(), v;
        int st;
        for (;;) {
            /* A report is a multiple of 64 up to the child's count: anything else
               is a random write that hit the pipe. */
            while (read(p[0], &v, 8) == 8)
                if (v > best && v <= per_child && v % 64 == 0) { best = v; last_change = now_ms(); }
            pid_t r = waitpid(pid, &st, WNOHANG);
            if (r == pid) break;
            if (now_ms() - last_change > 200) {
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                watchdog++;
                break;
            }
            usleep(2000);
        }
        while (read(p[0], &v, 8) == 8)
            if (v > best && v <= per_child && v % 64 == 0) best = v;
        close(p[0]);
        if (WIFSIGNALED(st)) signaled++;
        total += best;
    }
    printf("fuzz children=%d calls=%lld signaled=%d watchdog=%d\n", children, total, signaled,
           watchdog);
    return 0;
}
"#;

#[test]
fn guest_syscall_fuzzer() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "fuzz", FUZZ, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    // A longer run: HJ_VM_FUZZ_CHILDREN=2000 HJ_VM_FUZZ_CALLS=5000 (10 M calls).
    let num = |k: &str, d: u64| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (children, calls) = (
        num("HJ_VM_FUZZ_CHILDREN", 40),
        num("HJ_VM_FUZZ_CALLS", 5000),
    );
    let seed = num("HJ_VM_FUZZ_SEED", 7);
    b.args(&[
        "/fuzz",
        &children.to_string(),
        &calls.to_string(),
        &seed.to_string(),
    ]);
    let c = hj.container("vmfuzz");
    let out = c
        .run_call(&b, &[])
        .timeout(Duration::from_secs(3600))
        .output();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stderr.contains("guest kernel panic"), "{out}");
    assert!(!out.stderr.contains("crashed"), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("fuzz "))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    let calls_made: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("calls="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    eprintln!("vm syscall fuzzer: {line}");
    // Most children make most of their calls.
    assert!(calls_made >= children * calls / 4, "{line}");
    c.assert_nothing_left(&b);
}
