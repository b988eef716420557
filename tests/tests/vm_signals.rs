//! Signals in the VM: handlers with siginfo and a Linux signal frame, masks and
//! pending sets, SIGCHLD, sigsuspend, default actions (terminate, ignore, stop and
//! continue with WUNTRACED/WCONTINUED/waitid WSTOPPED), an
//! alternate signal stack (sigaltstack, SA_ONSTACK), a
//! signal waking a thread from a sleep, a wait or a blocked read; busybox sh
//! `trap`, `kill` and `wait`. The program prints only what the host run prints too.

use hyperjail_tests::vm::{assert_vm_matches_host, compile_static, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, Hyperjail};
use std::process::Command;

const SIGNALS: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got, code, from_me, child_status, chld;
static volatile double kept = 1.25;

static void on_usr1(int sig, siginfo_t *si, void *uc) {
    got = sig;
    code = si->si_code;
    from_me = si->si_pid == getpid();
    kept *= 2; /* FPU state is the handler's own, restored after */
}

static void on_chld(int sig, siginfo_t *si, void *uc) {
    chld++;
    child_status = si->si_status * 100 + si->si_code;
}

static void on_alrm(int sig) { got = sig; }

static volatile sig_atomic_t ticks;
static void on_tick(int sig) { ticks++; }

static volatile sig_atomic_t chld2;
static void on_chld2(int sig) { chld2++; }

static volatile sig_atomic_t stop_flag;
static void on_usr2(int sig) { stop_flag = 1; }

/* A busy loop with no system call: its state must survive a handler run between
   two of its instructions. Returns 0 when the final value is what n steps give. */
static int busy_until_signalled(void) {
    unsigned long a = 88172645463325252UL, n = 0;
    while (!stop_flag) {
        a = a * 6364136223846793005UL + 1442695040888963407UL;
        n++;
    }
    unsigned long b = 88172645463325252UL;
    for (unsigned long i = 0; i < n; i++) b = b * 6364136223846793005UL + 1442695040888963407UL;
    return a == b && n > 0 ? 0 : 1;
}

/* sigaltstack: where a handler runs, and what sigaltstack says inside it. */
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31) /* Linux 4.7; glibc 2.36 headers lack it */
#endif
static char altbuf[65536];
static volatile int on_alt = -1, alt_flags = -1;
static void on_alt_sig(int sig) {
    char local;
    stack_t cur;
    on_alt = &local >= altbuf && &local < altbuf + sizeof altbuf;
    sigaltstack(0, &cur);
    alt_flags = cur.ss_flags;
}

static void altstack_checks(void) {
    stack_t ss = {.ss_sp = altbuf, .ss_size = sizeof altbuf, .ss_flags = 0}, old;
    int r = sigaltstack(&ss, &old);
    printf("sigaltstack=%d old-disabled=%d\n", r, old.ss_flags == SS_DISABLE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alt_sig;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGURG, &sa, 0);
    raise(SIGURG);
    printf("onstack: on-alt=%d flags-onstack=%d\n", on_alt, alt_flags == SS_ONSTACK);
    sigaltstack(0, &old);
    printf("after: flags=%d size-kept=%d\n", old.ss_flags, old.ss_size == sizeof altbuf);
    sa.sa_flags = 0;
    sigaction(SIGURG, &sa, 0);
    raise(SIGURG);
    printf("no SA_ONSTACK: on-alt=%d\n", on_alt);
    stack_t small = {.ss_sp = altbuf, .ss_size = 100, .ss_flags = 0};
    errno = 0;
    r = sigaltstack(&small, 0);
    printf("small=%d %s\n", r, strerror(errno));
    stack_t bad = {.ss_sp = altbuf, .ss_size = sizeof altbuf, .ss_flags = 77};
    errno = 0;
    r = sigaltstack(&bad, 0);
    printf("bad-flags=%d %s\n", r, strerror(errno));
    /* SS_AUTODISARM: off while the handler runs, back after it. */
    stack_t autod = {.ss_sp = altbuf, .ss_size = sizeof altbuf, .ss_flags = SS_AUTODISARM};
    r = sigaltstack(&autod, 0);
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGURG, &sa, 0);
    raise(SIGURG);
    sigaltstack(0, &old);
    printf("autodisarm=%d on-alt=%d inside-disabled=%d after=%d\n", r, on_alt,
           alt_flags == SS_DISABLE, old.ss_flags == SS_AUTODISARM);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, 0);
    sigaltstack(0, &old);
    printf("disabled=%d\n", old.ss_flags == SS_DISABLE);
}

/* Job control: SIGSTOP stops a process (its parent sees it with
   WUNTRACED or waitid WSTOPPED; it makes no progress), SIGCONT continues it
   (WCONTINUED), SIGKILL ends a stopped one. */
static void job_control(void) {
    int p[2];
    pipe(p);
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        for (;;) {
            write(p[1], "t", 1);
            usleep(5000);
        }
    }
    close(p[1]);
    char buf[256];
    read(p[0], buf, 1);
    kill(c, SIGSTOP);
    int st = 0;
    pid_t w = waitpid(c, &st, WUNTRACED);
    printf("stopped: match=%d stopped=%d sig=%d\n", w == c, WIFSTOPPED(st), WSTOPSIG(st));
    usleep(50000);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    while (read(p[0], buf, sizeof buf) > 0) {
    }
    usleep(100000);
    ssize_t n = read(p[0], buf, sizeof buf);
    printf("while stopped: read=%zd\n", n);
    kill(c, SIGCONT);
    w = waitpid(c, &st, WCONTINUED);
    printf("continued: match=%d continued=%d\n", w == c, WIFCONTINUED(st));
    fcntl(p[0], F_SETFL, 0);
    n = read(p[0], buf, 1);
    printf("runs again: read=%zd\n", n);
    /* (SIGTSTP, SIGTTIN and SIGTTOU stop too, except in an orphaned process
       group, where Linux drops them: the host run may be in one.) */
    kill(c, SIGSTOP);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, c, &si, WSTOPPED);
    printf("waitid: %d stopped=%d status=%d\n", r, si.si_code == CLD_STOPPED, si.si_status);
    kill(c, SIGKILL);
    waitpid(c, &st, 0);
    printf("killed while stopped: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));
    close(p[0]);
    /* A read that a stop interrupted runs on once continued (no handler ran). */
    int q[2];
    pipe(q);
    pid_t d = fork();
    if (d == 0) {
        char ch = 0;
        ssize_t k = read(q[0], &ch, 1);
        _exit(k == 1 && ch == 'z' ? 0 : (k < 0 ? errno : 100));
    }
    usleep(100000);
    kill(d, SIGSTOP);
    waitpid(d, &st, WUNTRACED);
    kill(d, SIGCONT);
    waitpid(d, &st, WCONTINUED);
    write(q[1], "z", 1);
    waitpid(d, &st, 0);
    printf("read across stop: exited=%d status=%d\n", WIFEXITED(st), WEXITSTATUS(st));
    close(q[0]);
    close(q[1]);
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    altstack_checks();
    job_control();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, 0);

    /* A handler runs on the way out of kill; registers and FPU survive it. */
    double x = 3.5;
    long k = 12345;
    kill(getpid(), SIGUSR1);
    printf("handler sig=%d code=%d from-me=%d kept=%.2f x=%.1f k=%ld\n", got, code, from_me, kept,
           x * 2, k + 1);

    /* Blocked: pending until unblocked. */
    sigset_t set, old, pend;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, &old);
    got = 0;
    kill(getpid(), SIGUSR1);
    sigpending(&pend);
    printf("blocked got=%d pending=%d\n", got, sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_SETMASK, &old, 0);
    printf("unblocked got=%d\n", got);

    /* Ignored and default-ignored signals do nothing. */
    signal(SIGUSR2, SIG_IGN);
    kill(getpid(), SIGUSR2);
    kill(getpid(), SIGWINCH);
    printf("ignored: still here\n");

    /* SIGCHLD with the child's status; sigsuspend waits for it. */
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGCHLD, &sa, 0);
    sigset_t chldset, waitmask;
    sigemptyset(&chldset);
    sigaddset(&chldset, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chldset, &old);
    pid_t p = fork();
    if (p == 0) { usleep(50000); _exit(5); }
    sigemptyset(&waitmask);
    int r = sigsuspend(&waitmask);
    int e = errno;
    sigprocmask(SIG_SETMASK, &old, 0);
    int st;
    waitpid(p, &st, 0);
    printf("sigsuspend=%d %s chld=%d status=%d\n", r, strerror(e), chld, child_status);
    signal(SIGCHLD, SIG_DFL);

    /* SIGTERM's default kills a sleeping child; SIGKILL one blocked in a read. */
    p = fork();
    if (p == 0) { sleep(10); _exit(0); }
    usleep(50000);
    kill(p, SIGTERM);
    waitpid(p, &st, 0);
    printf("term: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));
    int fd[2];
    pipe(fd);
    p = fork();
    if (p == 0) { char c; read(fd[0], &c, 1); _exit(0); }
    usleep(50000);
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    printf("kill: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));

    /* A handled signal interrupts a sleep: EINTR. */
    signal(SIGALRM, on_alrm);
    p = fork();
    if (p == 0) { usleep(50000); kill(getppid(), SIGALRM); _exit(0); }
    struct timespec ts = {5, 0};
    got = 0;
    r = nanosleep(&ts, 0);
    e = errno;
    waitpid(p, &st, 0);
    printf("nanosleep=%d %s got=%d\n", r, strerror(e), got);

    /* SA_RESETHAND: the second one takes the default action (ignore, for
       SIGURG's default) and the handler runs once. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGURG, &sa, 0);
    got = 0;
    kill(getpid(), SIGURG);
    int first = got;
    got = 0;
    kill(getpid(), SIGURG);
    printf("resethand first=%d second=%d\n", first, got);

    /* A process in a busy loop (no system call) is reached at once: SIGKILL and
       SIGTERM end it, a handler runs in the middle of the loop and returns to it. */
    p = fork();
    if (p == 0) { for (;;) stop_flag++; }
    usleep(50000);
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    printf("busy kill: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));
    p = fork();
    if (p == 0) { for (;;) stop_flag++; }
    usleep(50000);
    kill(p, SIGTERM);
    waitpid(p, &st, 0);
    printf("busy term: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));
    signal(SIGUSR2, on_usr2);
    stop_flag = 0;
    p = fork();
    if (p == 0) _exit(busy_until_signalled());
    usleep(50000);
    kill(p, SIGUSR2);
    waitpid(p, &st, 0);
    printf("busy handler: exited=%d status=%d\n", WIFEXITED(st), WEXITSTATUS(st));

    /* ppoll with a signal mask: SIGCHLD, blocked around the call, is let in
       during the wait only. */
    signal(SIGCHLD, on_chld2);
    sigprocmask(SIG_BLOCK, &chldset, &old);
    p = fork();
    if (p == 0) { usleep(50000); _exit(0); }
    int pp[2];
    pipe(pp);
    struct pollfd pf2 = {pp[0], POLLIN, 0};
    sigset_t none;
    sigemptyset(&none);
    struct timespec to = {5, 0};
    r = ppoll(&pf2, 1, &to, &none);
    e = errno;
    sigset_t now;
    sigprocmask(SIG_SETMASK, 0, &now);
    printf("ppoll=%d %s chld=%d mask-back=%d\n", r, strerror(e), chld2, sigismember(&now, SIGCHLD));
    sigprocmask(SIG_SETMASK, &old, 0);
    waitpid(p, &st, 0);
    signal(SIGCHLD, SIG_DFL);

    /* SA_RESTART: a read a handled signal interrupts goes on after the handler. */
    struct sigaction sr;
    memset(&sr, 0, sizeof sr);
    sr.sa_handler = on_alrm;
    sr.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sr, 0);
    int rp[2];
    pipe(rp);
    p = fork();
    if (p == 0) {
        usleep(30000);
        kill(getppid(), SIGALRM);
        usleep(30000);
        write(rp[1], "R", 1);
        _exit(0);
    }
    char rc = 0;
    got = 0;
    r = read(rp[0], &rc, 1);
    printf("restarted read=%d c=%c got=%d\n", r, rc, got);
    waitpid(p, &st, 0);

    /* Interval timers: setitimer/getitimer, pause until SIGALRM, alarm's seconds
       left, a periodic timer, and SIGALRM's default action in a child. */
    signal(SIGALRM, on_alrm);
    got = 0;
    struct itimerval itv = {{0, 0}, {0, 50000}}, cur;
    setitimer(ITIMER_REAL, &itv, 0);
    getitimer(ITIMER_REAL, &cur);
    int armed = cur.it_value.tv_sec > 0 || cur.it_value.tv_usec > 0;
    r = pause();
    printf("setitimer armed=%d pause=%d got=%d\n", armed, r, got);
    alarm(10);
    unsigned left = alarm(0);
    printf("alarm-left=%u\n", left);
    signal(SIGALRM, on_tick);
    struct itimerval every = {{0, 20000}, {0, 20000}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &every, 0);
    while (ticks < 3) pause();
    setitimer(ITIMER_REAL, &off, 0);
    printf("periodic ticks>=3\n");
    p = fork();
    if (p == 0) {
        signal(SIGALRM, SIG_DFL);
        struct itimerval once = {{0, 0}, {0, 30000}};
        setitimer(ITIMER_REAL, &once, 0);
        for (;;) pause();
    }
    waitpid(p, &st, 0);
    printf("alarm default: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));

    /* A write to a pipe with no reader: EPIPE with SIGPIPE ignored, death by
       SIGPIPE by default. */
    int q[2];
    pipe(q);
    close(q[0]);
    signal(SIGPIPE, SIG_IGN);
    errno = 0;
    r = write(q[1], "x", 1);
    printf("sigpipe ignored: %d %s\n", r, strerror(errno));
    signal(SIGPIPE, SIG_DFL);
    p = fork();
    if (p == 0) { write(q[1], "x", 1); _exit(0); }
    waitpid(p, &st, 0);
    printf("sigpipe: signaled=%d sig=%d\n", WIFSIGNALED(st), WTERMSIG(st));

    /* Bad arguments. */
    errno = 0;
    r = kill(getpid(), 99);
    printf("bad-signal=%d %s\n", r, strerror(errno));
    r = sigaction(SIGKILL, &sa, 0);
    printf("catch-kill=%d %s\n", r, strerror(errno));
    r = kill(99999, SIGTERM);
    printf("no-such-pid=%d %s\n", r, strerror(errno));
    return 0;
}
"#;

#[test]
fn signals_match_the_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "signals", SIGNALS, &["-static"]),
        "gcc -static does not work here (apt-get install gcc libc6-dev)"
    );
    let host = Command::new(b.rootfs().join("signals"))
        .output()
        .expect("run the program on the host");
    let host_out = String::from_utf8_lossy(&host.stdout).to_string();
    assert!(host.status.success(), "host run: {host_out} {host:?}");
    for want in [
        "handler sig=10 code=0 from-me=1 kept=2.50 x=7.0 k=12346",
        "blocked got=0 pending=1",
        "unblocked got=10",
        "ignored: still here",
        "sigsuspend=-1 Interrupted system call chld=1 status=501",
        "term: signaled=1 sig=15",
        "kill: signaled=1 sig=9",
        "nanosleep=-1 Interrupted system call got=14",
        "resethand first=23 second=0",
        "busy kill: signaled=1 sig=9",
        "busy term: signaled=1 sig=15",
        "busy handler: exited=1 status=0",
        "ppoll=-1 Interrupted system call chld=1 mask-back=1",
        "restarted read=1 c=R got=14",
        "setitimer armed=1 pause=-1 got=14",
        "alarm-left=10",
        "periodic ticks>=3",
        "alarm default: signaled=1 sig=14",
        "sigpipe ignored: -1 Broken pipe",
        "sigpipe: signaled=1 sig=13",
        "bad-signal=-1 Invalid argument",
        "catch-kill=-1 Invalid argument",
        "no-such-pid=-1 No such process",
        "sigaltstack=0 old-disabled=1",
        "onstack: on-alt=1 flags-onstack=1",
        "after: flags=0 size-kept=1",
        "no SA_ONSTACK: on-alt=0",
        "small=-1 Cannot allocate memory",
        "bad-flags=-1 Invalid argument",
        "autodisarm=0 on-alt=1 inside-disabled=1 after=1",
        "disabled=1",
        "stopped: match=1 stopped=1 sig=19",
        "while stopped: read=-1",
        "continued: match=1 continued=1",
        "runs again: read=1",
        "waitid: 0 stopped=1 status=19",
        "killed while stopped: signaled=1 sig=9",
        "read across stop: exited=1 status=0",
    ] {
        assert!(host_out.contains(want), "host: {want:?} in {host_out}");
    }
    b.args(&["/signals"]);
    assert_vm_matches_host(&hj, &b, "vmsignals", 0, &host_out);
}

/// busybox sh: `trap` on TERM, `wait` for a background job (sigsuspend until
/// SIGCHLD), `kill` of a sleeping job and its status.
#[test]
fn shell_trap_kill_wait() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    let script = r#"
        trap 'echo got TERM' TERM
        kill -TERM $$
        echo after
        sh -c 'exit 3' &
        wait $!
        echo bg=$?
        sleep 5 &
        p=$!
        sleep 0.2
        kill $p
        wait $p
        echo killed=$?
        (sleep 0.1; exit 4) & (sleep 0.05; exit 6) &
        wait
        echo all-waited
    "#;
    b.args(&["/bin/sh", "-c", script]);
    let c = hj.container("vmtrap");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(
        out.stdout, "got TERM\nafter\nbg=3\nkilled=143\nall-waited\n",
        "{out}"
    );
    c.assert_nothing_left(&b);
}
