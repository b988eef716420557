//! The guest kernel's syscall-site rewriting (vm-backend/guest/patch.rs): after the
//! first trap, a site's `mov` is replaced by a jump into the kernel. These tests run
//! sites many times in the VM and check every result against the host, that the
//! user's red zone survives both paths, and that a `syscall` reached by a jump (not
//! through the moved `mov`) still gets its own system call.

use hyperjail_tests::vm::{compile_static, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, Hyperjail};
use std::fs;
use std::process::Command;

const SITES: &str = r#"
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>

extern unsigned char site_mov[];
long redzone_check(void);

/* One site reached two ways: through `mov $39,%eax` (getpid), or by a jump straight
   to its `syscall` with another number in rax. */
__attribute__((noinline)) static long site(long direct, long nr) {
    long ret;
    __asm__ volatile("test %1, %1\n\t"
                     "mov %2, %%rax\n\t"
                     "jnz 1f\n\t"
                     ".globl site_mov\n"
                     "site_mov: mov $39, %%eax\n"
                     "1: syscall\n\t"
                     : "=a"(ret) : "r"(direct), "r"(nr) : "rcx", "r11", "memory");
    return ret;
}

/* Fills the 128-byte red zone below rsp, makes a system call, and counts the
   quadwords that changed. */
__asm__(".globl redzone_check\n"
        "redzone_check:\n"
        "  lea -128(%rsp), %rdi\n"
        "  xor %ecx, %ecx\n"
        "2: lea 0x1000(%rcx), %rdx\n"
        "  mov %rdx, (%rdi,%rcx,8)\n"
        "  inc %ecx\n"
        "  cmp $16, %ecx\n"
        "  jne 2b\n"
        "  mov $39, %eax\n"
        "  syscall\n"
        "  xor %esi, %esi\n"
        "  xor %ecx, %ecx\n"
        "3: lea 0x1000(%rcx), %rdx\n"
        "  cmp %rdx, (%rdi,%rcx,8)\n"
        "  je 4f\n"
        "  inc %esi\n"
        "4: inc %ecx\n"
        "  cmp $16, %ecx\n"
        "  jne 3b\n"
        "  mov %rsi, %rax\n"
        "  ret\n");

int main(int argc, char **argv) {
    long pid = getpid(), uid = getuid(), ppid = getppid();
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    for (int i = 0; i < 1000; i++) {
        char c = 'a' + i % 26;
        if (site(0, 0) != pid) { printf("mov path: wrong result at %d\n", i); return 1; }
        if (site(1, SYS_getuid) != uid) { printf("jump path: wrong result at %d\n", i); return 1; }
        if (syscall(SYS_getppid) != ppid) { printf("syscall(): wrong result at %d\n", i); return 1; }
        if (getpid() != pid) { printf("getpid: wrong result at %d\n", i); return 1; }
        long bad = redzone_check();
        if (bad) { printf("red zone: %ld quadwords changed at %d\n", bad, i); return 1; }
        if (write(fd, &c, 1) != 1) { perror("write"); return 1; }
    }
    close(fd);
    printf("site=%s\n", site_mov[0] == 0xe9 ? "rewritten" : "original");
    printf("done\n");
    return 0;
}
"#;

#[test]
fn rewritten_sites_give_the_same_results() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "sites", SITES, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    let want: String = (0..1000).map(|i| (b'a' + (i % 26) as u8) as char).collect();

    // On the host the program passes and its code is never changed.
    let host_out = b.path().join("host-out");
    let o = Command::new(b.rootfs().join("sites"))
        .arg(&host_out)
        .output()
        .expect("run sites on the host");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "host run: {text}");
    assert_eq!(text.lines().collect::<Vec<_>>(), ["site=original", "done"]);

    b.args(&["/sites", "/out"]);
    let c = hj.container("vmsites");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.lines(), ["site=rewritten", "done"], "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    let got = fs::read_to_string(b.rootfs().join("out")).expect("read /out");
    assert_eq!(got, want, "the bytes written through rewritten sites");
    c.assert_nothing_left(&b);
}

const RING: &str = r#"
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Bursts of forwarded writes separated by quiet spells (the VMM's ring thread goes
   to sleep after 50 us) and by long forwarded calls (sleeps that park the vCPU);
   every byte must land, in order. argv[2] = ms to sleep at the end. */
int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    unsigned x = 12345;
    long total = 0;
    for (int round = 0; round < 300; round++) {
        int k = round % 7 + 1;
        for (int i = 0; i < k; i++) {
            char c = 'a' + total % 26;
            if (write(fd, &c, 1) != 1) { perror("write"); return 1; }
            total++;
        }
        x = x * 1103515245 + 12345;
        long long until = now() + (x >> 8) % 400000;
        while (now() < until) ;
        if (round % 50 == 49) {
            struct timespec ts = {0, 5000000};
            if (nanosleep(&ts, 0) != 0) { perror("nanosleep"); return 1; }
        }
    }
    close(fd);
    printf("total=%ld\n", total);
    fflush(stdout);
    struct timespec ts = {atoi(argv[2]) / 1000, (atoi(argv[2]) % 1000) * 1000000L};
    nanosleep(&ts, 0);
    return 0;
}
"#;

/// The forwarding ring across its modes: polled while busy, asleep after a quiet
/// spell (the next request exits to the vCPU thread), and long calls that park the
/// vCPU. Every byte arrives in order, and a guest asleep in a forwarded nanosleep
/// costs the VMM next to no CPU (no thread spins while nothing happens).
#[test]
fn ring_busy_idle_and_long_calls() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(
            &b,
            "ring",
            &format!("#include <stdlib.h>\n{RING}"),
            &["-static"]
        ),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    let total: usize = (0..300).map(|r| r % 7 + 1).sum();
    let want: String = (0..total)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    b.args(&["/ring", "/out", "1500"]);
    let c = hj.container("vmring");
    c.create(&b, &[]).assert_ok();
    let pid = c.pid();
    c.start().assert_ok();
    // Wait for the writes to finish, then measure the VMM's CPU time across a
    // second of the guest's final sleep.
    hyperjail_tests::wait_until(
        std::time::Duration::from_secs(20),
        "the guest's writes",
        || fs::metadata(b.rootfs().join("out")).is_ok_and(|m| m.len() as usize == total),
    );
    let cpu = || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // utime and stime: fields 14 and 15, counted from the state (field 3).
        f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = cpu();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let ticks = cpu() - before;
    c.wait_status("stopped");
    let got = fs::read_to_string(b.rootfs().join("out")).expect("read /out");
    assert_eq!(got, want, "bytes through the ring, in order");
    assert!(
        ticks < 10,
        "a sleeping guest cost the VMM {ticks} clock ticks of CPU in 1 s (a thread spins)"
    );
    c.delete().assert_ok();
    c.assert_nothing_left(&b);
}

const MEMFILES: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    /* mremap: growing moves the contents; the new part reads as zero. */
    unsigned char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 0xab, 4096);
    unsigned char *q = mremap(p, 4096, 3 * 4096, MREMAP_MAYMOVE);
    int same = 1, zero = 1;
    for (int i = 0; i < 4096; i++) same &= q[i] == 0xab;
    for (int i = 4096; i < 3 * 4096; i++) zero &= q[i] == 0;
    q[3 * 4096 - 1] = 7;
    printf("grow=%d kept=%d zero=%d\n", q != MAP_FAILED, same, zero);
    /* Shrinking stays in place. */
    printf("shrink-same=%d\n", mremap(q, 3 * 4096, 4096, 0) == q);
    int bad = mremap(q, 4096, 8192, 0x80) == MAP_FAILED;
    printf("bad-flags=%d %s\n", bad, strerror(errno));
    /* glibc's realloc of a large block (mmapped: it uses mremap). */
    size_t big = 1 << 20;
    unsigned char *r = malloc(big);
    for (size_t i = 0; i < big; i++) r[i] = i * 7;
    r = realloc(r, 8 * big);
    int ok = 1;
    for (size_t i = 0; i < big; i++) ok &= r[i] == (unsigned char)(i * 7);
    memset(r + big, 1, 7 * big);
    printf("realloc=%d\n", ok);
    /* copy_file_range between two files, with and without offsets. */
    int src = open("cfr.src", O_RDWR | O_CREAT | O_TRUNC, 0600);
    int dst = open("cfr.dst", O_RDWR | O_CREAT | O_TRUNC, 0600);
    char buf[100000];
    for (int i = 0; i < (int)sizeof buf; i++) buf[i] = 'a' + i % 26;
    write(src, buf, sizeof buf);
    lseek(src, 0, SEEK_SET);
    ssize_t n = 0, k;
    while ((k = copy_file_range(src, 0, dst, 0, sizeof buf, 0)) > 0) n += k;
    char back[100000];
    pread(dst, back, sizeof back, 0);
    printf("copied=%zd equal=%d pos=%ld\n", n, memcmp(buf, back, sizeof buf) == 0,
           (long)lseek(src, 0, SEEK_CUR));
    loff_t in = 1000, out = 0;
    k = copy_file_range(src, &in, dst, &out, 5000, 0);
    pread(dst, back, 5000, 0);
    printf("offsets=%zd in=%ld out=%ld pos=%ld equal=%d\n", k, (long)in, (long)out,
           (long)lseek(src, 0, SEEK_CUR), memcmp(buf + 1000, back, 5000) == 0);
    int pfd[2];
    pipe(pfd);
    write(pfd[1], "x", 1);
    k = copy_file_range(pfd[0], 0, dst, 0, 1, 0);
    printf("pipe=%zd %s\n", k, strerror(errno));
    k = copy_file_range(src, 0, dst, 0, 1, 1);
    printf("flags=%zd %s\n", k, strerror(errno));
    unlink("cfr.src");
    unlink("cfr.dst");
    return 0;
}
"#;

/// mremap (growing moves, shrinking stays, glibc's realloc of a large block) and
/// copy_file_range (offsets or file positions, pipes refused) give the host's
/// results.
#[test]
fn mremap_and_copy_file_range_match_the_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "memfiles", MEMFILES, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    let host_dir = b.path().join("hostrun");
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    let host = Command::new(b.rootfs().join("memfiles"))
        .current_dir(&host_dir)
        .output()
        .expect("run the program on the host");
    let host_out = String::from_utf8_lossy(&host.stdout).to_string();
    assert!(host.status.success(), "host run: {host_out}");
    assert_eq!(
        host_out,
        "grow=1 kept=1 zero=1\nshrink-same=1\nbad-flags=1 Invalid argument\nrealloc=1\n\
         copied=100000 equal=1 pos=100000\noffsets=5000 in=6000 out=5000 pos=100000 equal=1\n\
         pipe=-1 Invalid argument\nflags=-1 Invalid argument\n"
    );
    b.args(&["/memfiles"]);
    b.config_mut()["root"]["readonly"] = serde_json::json!(false);
    hyperjail_tests::vm::assert_vm_matches_host(&hj, &b, "vmmemfiles", 0, &host_out);
}

const CPUCLOCK: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static void *fresh(void *a) {
    (void)a;
    printf("fresh: thread=%d\n", now(CLOCK_THREAD_CPUTIME_ID) < 0.1);
    return 0;
}
static void *spin(void *a) {
    (void)a;
    double s = now(CLOCK_THREAD_CPUTIME_ID);
    while (now(CLOCK_THREAD_CPUTIME_ID) - s < 0.2) {
    }
    return 0;
}
int main(void) {
    /* Sleeping takes no CPU time. */
    double p = now(CLOCK_PROCESS_CPUTIME_ID), t = now(CLOCK_THREAD_CPUTIME_ID);
    usleep(300000);
    printf("sleep: process=%d thread=%d\n", now(CLOCK_PROCESS_CPUTIME_ID) - p < 0.1,
           now(CLOCK_THREAD_CPUTIME_ID) - t < 0.1);
    /* Spinning does, in the thread's clock and the process's. */
    p = now(CLOCK_PROCESS_CPUTIME_ID);
    spin(0);
    double d = now(CLOCK_PROCESS_CPUTIME_ID) - p;
    printf("spin: process=%d\n", d >= 0.19 && d < 1.0);
    /* Two threads' time (both ended) counts for the process. */
    p = now(CLOCK_PROCESS_CPUTIME_ID);
    pthread_t a, b;
    pthread_create(&a, 0, spin, 0);
    pthread_create(&b, 0, spin, 0);
    pthread_join(a, 0);
    pthread_join(b, 0);
    d = now(CLOCK_PROCESS_CPUTIME_ID) - p;
    printf("threads: process=%d\n", d >= 0.38 && d < 2.0);
    /* A thread started after those ended, and a forked child, start from zero
       (in the VM they may run on a host thread that ran those). */
    pthread_t c;
    pthread_create(&c, 0, fresh, 0);
    pthread_join(c, 0);
    fflush(stdout);
    pid_t k = fork();
    if (k == 0) {
        printf("child: process=%d thread=%d\n", now(CLOCK_PROCESS_CPUTIME_ID) < 0.1,
               now(CLOCK_THREAD_CPUTIME_ID) < 0.1);
        return 0;
    }
    waitpid(k, 0, 0);
    return 0;
}
"#;

/// CLOCK_PROCESS_CPUTIME_ID and CLOCK_THREAD_CPUTIME_ID count CPU time (the vCPU
/// threads' host CPU time): not a sleep, a spin in the thread and the process, and
/// ended threads' time in the process; a new thread and a forked child start from
/// zero, though their host thread may have run ended ones; the same as on the host.
#[test]
fn cpu_clocks_match_the_host() {
    let (hj, mut b) = hyperjail_tests::vm_program!("cpuclock", CPUCLOCK, &["-static", "-pthread"]);
    hyperjail_tests::vm::assert_host_then_vm(
        &hj,
        &mut b,
        "cpuclock",
        "vmcpuclock",
        "sleep: process=1 thread=1\nspin: process=1\nthreads: process=1\nfresh: thread=1\n\
         child: process=1 thread=1\n",
    );
}

const AGAIN: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern unsigned char again_site[];

__attribute__((noinline)) static long site(void) {
    long ret;
    __asm__ volatile(".globl again_site\n"
                     "again_site: mov $110, %%eax\n\t"
                     "syscall\n\t"
                     : "=a"(ret) : : "rcx", "r11", "memory");
    return ret;
}

static const char *state(unsigned char b) {
    return b == 0xe9 ? "rewritten" : b == 0xb8 ? "original" : "other";
}

/* Prints the state of its getppid site before and after it runs, and whether the
   call gave getppid's answer; with "x", then executes itself again. */
int main(int argc, char **argv) {
    const char *before = state(again_site[0]);
    long ppid = site();
    printf("%s %s %s\n", before, state(again_site[0]), ppid == getppid() ? "ok" : "wrong");
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "x") == 0) {
        execl(argv[0], argv[0], (char *)0);
        perror("execl");
        return 1;
    }
    return 0;
}
"#;

/// A rewrite made in one process is made again, before it runs, in the next image
/// of the same program (vm-backend/src/patches.rs): after an exit, and after an
/// execve of the program itself; a copy of the program in another file (another
/// inode) starts from its own bytes. The site still gives its own system call's
/// answer every time, and the host never sees a rewrite.
#[test]
fn rewrites_are_made_again_in_the_next_run_of_a_program() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "again", AGAIN, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    for copy in ["again2", "again3"] {
        fs::copy(b.rootfs().join("again"), b.rootfs().join(copy)).expect("copy the program");
    }
    let o = Command::new(b.rootfs().join("again"))
        .output()
        .expect("run again on the host");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "original original ok\n");

    b.args(&["/bin/sh", "-c", "/again; /again; /again2; /again3 x"]);
    let c = hj.container("vmagain");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.lines(),
        [
            "original rewritten ok",
            "rewritten rewritten ok",
            "original rewritten ok",
            "original rewritten ok",
            "rewritten rewritten ok",
        ],
        "{out}"
    );
    c.assert_nothing_left(&b);
}

const RUSAGE: &str = r#"
#include <stdio.h>
#include <sys/resource.h>
#include <sys/times.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static void spin(double s) {
    double t = cpu();
    while (cpu() - t < s) {
    }
}
static double sec(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }
static double used(struct rusage *r) { return sec(r->ru_utime) + sec(r->ru_stime); }

int main(void) {
    long hz = sysconf(_SC_CLK_TCK);
    struct tms t0;
    clock_t wall0 = times(&t0);
    spin(0.3);
    struct rusage self, children;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &children);
    printf("self: %d children before: %d\n", used(&self) >= 0.29 && used(&self) < 3,
           used(&children) < 0.05);
    /* A child spins 0.3 s and has a child of its own that spins 0.2 s. */
    fflush(stdout);
    pid_t k = fork();
    if (k == 0) {
        pid_t g = fork();
        if (g == 0) {
            spin(0.2);
            return 0;
        }
        waitpid(g, 0, 0);
        spin(0.3);
        return 0;
    }
    struct rusage ru;
    int st;
    wait4(k, &st, 0, &ru);
    getrusage(RUSAGE_CHILDREN, &children);
    printf("wait4: %d children: %d\n", used(&ru) >= 0.49 && used(&ru) < 3,
           used(&children) >= 0.49 && used(&children) < 3);
    struct tms t1;
    clock_t wall1 = times(&t1);
    double me = (double)(t1.tms_utime + t1.tms_stime) / hz;
    double kids = (double)(t1.tms_cutime + t1.tms_cstime) / hz;
    double wall = (double)(wall1 - wall0) / hz;
    printf("times: self %d children %d elapsed %d\n", me >= 0.28 && me < 3,
           kids >= 0.47 && kids < 3, wall >= 0.75 && wall < 30);
    return 0;
}
"#;

/// getrusage (RUSAGE_SELF, RUSAGE_CHILDREN), wait4's rusage and times(2) count the
/// CPU time of the process, and of its children and theirs once waited for, and
/// times returns a clock that advances with real time; the same as on the host
/// (the VM counts all CPU time as user time).
#[test]
fn rusage_and_times_count_cpu_time() {
    let (hj, mut b) = hyperjail_tests::vm_program!("rusage", RUSAGE, &["-static"]);
    hyperjail_tests::vm::assert_host_then_vm(
        &hj,
        &mut b,
        "rusage",
        "vmrusage",
        "self: 1 children before: 1\nwait4: 1 children: 1\ntimes: self 1 children 1 elapsed 1\n",
    );
}

const CPU_TIMERS: &str = r#"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static volatile sig_atomic_t prof, vt;
static void on_prof(int s) { (void)s; prof++; }
static void on_vt(int s) { (void)s; vt++; }

static long long cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static volatile unsigned long spins;

int main(void) {
    signal(SIGPROF, on_prof);
    signal(SIGVTALRM, on_vt);

    /* ITIMER_PROF, one shot of 50 ms of CPU time. */
    struct itimerval shot = {{0, 0}, {0, 50000}}, cur;
    long long t0 = cpu_ns();
    setitimer(ITIMER_PROF, &shot, 0);
    getitimer(ITIMER_PROF, &cur);
    int armed = cur.it_value.tv_sec == 0 && cur.it_value.tv_usec > 0 && cur.it_value.tv_usec <= 60000;
    while (!prof) spins++;
    long long used = cpu_ns() - t0;
    getitimer(ITIMER_PROF, &cur);
    printf("prof: armed=%d fired=%d after-50ms-of-cpu=%d disarmed=%d\n", armed, prof,
           used >= 45000000 && used < 1000000000LL, cur.it_value.tv_usec == 0 && cur.it_value.tv_sec == 0);

    /* ITIMER_VIRTUAL every 20 ms, three times; then disarmed, its old period read back. */
    struct itimerval every = {{0, 20000}, {0, 20000}}, zero = {{0, 0}, {0, 0}}, old;
    t0 = cpu_ns();
    setitimer(ITIMER_VIRTUAL, &every, 0);
    while (vt < 3) spins++;
    used = cpu_ns() - t0;
    setitimer(ITIMER_VIRTUAL, &zero, &old);
    printf("virtual: ticks=%d after-60ms-of-cpu=%d old-interval-us=%ld\n", vt >= 3 ? 3 : vt,
           used >= 55000000 && used < 2000000000LL, old.it_interval.tv_usec);

    /* Sleeping uses no CPU time: a CPU timer does not fire meanwhile. */
    int before = prof;
    struct itimerval soon = {{0, 0}, {0, 30000}};
    setitimer(ITIMER_PROF, &soon, 0);
    struct timespec nap = {0, 150000000};
    nanosleep(&nap, 0);
    int slept_through = prof == before;
    setitimer(ITIMER_PROF, &zero, 0);
    printf("sleep: not-fired=%d\n", slept_through);

    errno = 0;
    int bad = setitimer(3, &shot, 0);
    printf("which-3: %d %s\n", bad, errno == EINVAL ? "EINVAL" : "other");
    return 0;
}
"#;

/// ITIMER_PROF and ITIMER_VIRTUAL run on the process's CPU time (SIGPROF,
/// SIGVTALRM), one-shot and periodic; getitimer and the old value of setitimer
/// read them back; a sleeping process's timer does not fire; an unknown timer is
/// EINVAL. Compared with the host's run of the same program.
#[test]
fn cpu_time_interval_timers() {
    let (hj, mut b) = hyperjail_tests::vm_program!("cputimers", CPU_TIMERS, &["-static", "-O1"]);
    hyperjail_tests::vm::assert_host_then_vm(
        &hj,
        &mut b,
        "cputimers",
        "vmcputimers",
        "prof: armed=1 fired=1 after-50ms-of-cpu=1 disarmed=1\n\
         virtual: ticks=3 after-60ms-of-cpu=1 old-interval-us=20000\n\
         sleep: not-fired=1\nwhich-3: -1 EINVAL\n",
    );
}
