//! Pipes, eventfds, poll and epoll in the VM: host objects in the VMM's fd table.
//! A call that would wait (a read from an empty pipe, epoll_wait with a timeout)
//! waits on its own vCPU thread, so other guest threads' I/O goes on meanwhile.
//! Also select, timerfd, close_range, statfs, /proc/self/fd, socketpair and
//! /proc/self/maps. The program prints only what the host run prints too.

use hyperjail_tests::vm::{assert_vm_matches_host, compile_static, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, Hyperjail};
use std::process::Command;

const PIPES: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static long ms_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* A number no fd has just now. The host run may inherit open fds from whatever
   ran the tests (a CI runner held fd 200), so no fixed number is safe. */
static int closed_fd(void) {
    int fd = dup(0);
    close(fd);
    return fd;
}

static void nap(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, 0);
}

static int p[2], efd;
static volatile long io_done_at, wrote_at;

static void *late_writer(void *arg) {
    nap(300);
    wrote_at = ms_now();
    write(p[1], "hello", 5);
    return 0;
}

/* File I/O while the main thread is blocked in a read. */
static void *file_io(void *arg) {
    nap(50);
    int fd = open("io.tmp", O_CREAT | O_RDWR | O_TRUNC, 0644);
    char b[64];
    for (int i = 0; i < 200; i++) {
        pwrite(fd, "0123456789", 10, i * 10);
        pread(fd, b, 10, 0);
    }
    close(fd);
    io_done_at = ms_now();
    return 0;
}

static void *bulk_writer(void *arg) {
    static unsigned char buf[1 << 20];
    for (int i = 0; i < (int)sizeof buf; i++) buf[i] = (unsigned char)(i * 7 + 3);
    size_t off = 0;
    while (off < sizeof buf) {
        ssize_t n = write(p[1], buf + off, sizeof buf - off);
        if (n <= 0) { perror("bulk write"); return 0; }
        off += n;
    }
    close(p[1]);
    return 0;
}

static void *ticker(void *arg) {
    nap(80);
    uint64_t one = 5;
    write(efd, &one, 8);
    return 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    pthread_t a, b;

    /* A blocking read waits for the writer; other threads' file I/O is not held
       up meanwhile. */
    pipe(p);
    pthread_create(&a, 0, late_writer, 0);
    pthread_create(&b, 0, file_io, 0);
    char got[16] = {0};
    ssize_t n = read(p[0], got, sizeof got - 1);
    pthread_join(a, 0);
    pthread_join(b, 0);
    printf("read=%zd %s io-not-held-up=%d\n", n, got, io_done_at != 0 && io_done_at < wrote_at);

    /* poll: nothing ready waits out its timeout; data ready answers at once. */
    struct pollfd pf = {p[0], POLLIN, 0};
    long t0 = ms_now();
    int r = poll(&pf, 1, 150);
    long waited = ms_now() - t0;
    printf("poll-empty=%d waited-timeout=%d\n", r, waited >= 140);
    write(p[1], "x", 1);
    r = poll(&pf, 1, -1);
    printf("poll-ready=%d revents-in=%d\n", r, (pf.revents & POLLIN) != 0);
    read(p[0], got, 1);
    struct pollfd bad = {closed_fd(), POLLIN, 0};
    r = poll(&bad, 1, 0);
    printf("poll-nval=%d %d\n", r, bad.revents == POLLNVAL);

    /* O_NONBLOCK, from pipe2 and from fcntl. */
    int q[2];
    pipe2(q, O_NONBLOCK | O_CLOEXEC);
    n = read(q[0], got, 1);
    int e = errno;
    printf("nonblock-read=%zd %s getfl=%d cloexec=%d\n", n, strerror(e),
           (fcntl(q[0], F_GETFL) & O_NONBLOCK) != 0, fcntl(q[0], F_GETFD));
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
    n = read(p[0], got, 1);
    e = errno;
    printf("setfl-read=%zd %s\n", n, strerror(e));
    fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) & ~O_NONBLOCK);
    printf("getfl-cleared=%d\n", (fcntl(p[0], F_GETFL) & O_NONBLOCK) == 0);

    /* EOF once the write end is closed; EPIPE once the read end is. */
    close(q[1]);
    printf("eof=%zd\n", read(q[0], got, 1));
    int s[2];
    pipe(s);
    close(s[0]);
    n = write(s[1], "x", 1);
    e = errno;
    printf("epipe=%zd %s\n", n, strerror(e));

    /* A megabyte through a pipe between two threads, every byte in order. */
    pthread_create(&a, 0, bulk_writer, 0);
    unsigned long sum = 0, total = 0, bad_bytes = 0;
    unsigned char buf[4096];
    while ((n = read(p[0], buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != (unsigned char)((total + i) * 7 + 3)) bad_bytes++;
            sum += buf[i];
        }
        total += n;
    }
    pthread_join(a, 0);
    printf("bulk=%lu sum=%lu bad=%lu\n", total, sum, bad_bytes);

    /* epoll on an eventfd and a pipe: epoll_wait sleeps until the eventfd is
       written and hands back the data the guest registered. */
    efd = eventfd(0, EFD_CLOEXEC);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {EPOLLIN, {.u64 = 0xfeedbeef}};
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    struct epoll_event ev2 = {EPOLLIN, {.u64 = 42}};
    epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev2);
    struct epoll_event out[4];
    r = epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    e = errno;
    printf("epoll-add-twice=%d %s\n", r, strerror(e));
    epoll_ctl(ep, EPOLL_CTL_DEL, q[0], 0);
    pthread_create(&a, 0, ticker, 0);
    int k = epoll_wait(ep, out, 4, -1);
    pthread_join(a, 0);
    uint64_t v = 0;
    read(efd, &v, 8);
    printf("epoll=%d data=%llx value=%llu\n", k, (unsigned long long)out[0].data.u64,
           (unsigned long long)v);
    t0 = ms_now();
    k = epoll_wait(ep, out, 4, 100);
    printf("epoll-timeout=%d waited=%d\n", k, ms_now() - t0 >= 90);
    r = epoll_wait(ep, out, 0, 0);
    e = errno;
    printf("epoll-bad-max=%d %s\n", r, strerror(e));

    /* A semaphore eventfd counts down by one. */
    int sem = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    uint64_t x1 = 0, x2 = 0, x3 = 0;
    read(sem, &x1, 8);
    read(sem, &x2, 8);
    ssize_t r3 = read(sem, &x3, 8);
    e = errno;
    printf("semaphore=%llu %llu %zd %s\n", (unsigned long long)x1, (unsigned long long)x2, r3,
           strerror(e));
    /* select: a timeout empties the set; ready fds are kept, bad ones refused. */
    int sp[2];
    pipe(sp);
    fd_set rs, ws;
    FD_ZERO(&rs);
    FD_SET(sp[0], &rs);
    struct timeval tv = {0, 100000};
    t0 = ms_now();
    r = select(sp[0] + 1, &rs, 0, 0, &tv);
    printf("select-empty=%d waited=%d isset=%d\n", r, ms_now() - t0 >= 90, FD_ISSET(sp[0], &rs));
    write(sp[1], "y", 1);
    FD_ZERO(&rs);
    FD_SET(sp[0], &rs);
    FD_ZERO(&ws);
    FD_SET(sp[1], &ws);
    r = select(sp[1] + 1, &rs, &ws, 0, 0);
    printf("select-ready=%d r=%d w=%d\n", r, FD_ISSET(sp[0], &rs), FD_ISSET(sp[1], &ws));
    FD_ZERO(&rs);
    int dead = closed_fd();
    FD_SET(dead, &rs);
    tv.tv_usec = 0;
    r = select(dead + 1, &rs, 0, 0, &tv);
    e = errno;
    printf("select-bad=%d %s\n", r, strerror(e));

    /* A timerfd: a blocking read waits for the expiry; epoll sees it too. */
    int tf = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {{0, 0}, {0, 60000000}};
    t0 = ms_now();
    timerfd_settime(tf, 0, &its, 0);
    uint64_t exp = 0;
    n = read(tf, &exp, 8);
    printf("timerfd read=%zd expirations=%llu waited=%d\n", n, (unsigned long long)exp,
           ms_now() - t0 >= 55);
    struct itimerspec cur;
    timerfd_gettime(tf, &cur);
    printf("timerfd disarmed=%d\n", cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0);
    struct epoll_event tev = {EPOLLIN, {.u64 = 77}};
    epoll_ctl(ep, EPOLL_CTL_ADD, tf, &tev);
    timerfd_settime(tf, 0, &its, 0);
    k = epoll_wait(ep, out, 4, 1000);
    printf("timerfd epoll=%d data=%llu\n", k, (unsigned long long)out[0].data.u64);
    int bad1 = pipe2(q, 0x1234) == -1 && errno == EINVAL;
    int bad2 = eventfd(0, 0x4000) == -1 && errno == EINVAL;
    printf("bad-flags=%d %d\n", bad1, bad2);

    /* close_range: closes a range (fixed high numbers: the host run may have
       other fds open); CLOSE_RANGE_CLOEXEC (4) marks instead. */
    int cr[2];
    pipe(cr);
    dup2(cr[0], 500);
    dup2(cr[1], 501);
    dup2(cr[0], 502);
    r = syscall(SYS_close_range, 500, 501, 0);
    printf("close_range=%d closed=%d %d kept=%d\n", r, fcntl(500, F_GETFD) == -1,
           fcntl(501, F_GETFD) == -1, fcntl(502, F_GETFD) == 0);
    r = syscall(SYS_close_range, 502, 502, 4);
    printf("close_range-cloexec=%d flag=%d\n", r, fcntl(502, F_GETFD) == FD_CLOEXEC);
    errno = 0;
    r = syscall(SYS_close_range, 9, 3, 0);
    printf("close_range-bad=%d %s\n", r, strerror(errno));
    /* statfs and fstatfs of the working directory. */
    struct statfs sf, sf2;
    r = statfs(".", &sf);
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    int r2 = fstatfs(dfd, &sf2);
    printf("statfs=%d fstatfs=%d same-type=%d bsize=%d namelen=%ld\n", r, r2,
           sf.f_type == sf2.f_type, sf.f_bsize > 0, (long)sf.f_namelen);
    /* /proc/self/fd: what an fd is (readlink), and the same file again (open). */
    char lp[64], lb[512];
    int lf = open("link.tmp", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    snprintf(lp, sizeof lp, "/proc/self/fd/%d", lf);
    ssize_t ln = readlink(lp, lb, sizeof lb - 1);
    lb[ln > 0 ? ln : 0] = 0;
    char *base = strrchr(lb, '/');
    printf("fd-link=%s absolute=%d\n", base ? base + 1 : lb, lb[0] == '/');
    int lq[2];
    pipe(lq);
    snprintf(lp, sizeof lp, "/proc/self/fd/%d", lq[0]);
    ln = readlink(lp, lb, sizeof lb - 1);
    lb[ln > 0 ? ln : 0] = 0;
    printf("pipe-link=%d\n", strncmp(lb, "pipe:[", 6) == 0);
    write(lq[1], "z", 1);
    int re = open(lp, O_RDONLY);
    char zc = '-';
    read(re, &zc, 1);
    printf("reopen=%c\n", zc);
    snprintf(lp, sizeof lp, "/proc/self/fd/%d", closed_fd());
    errno = 0;
    r = open(lp, O_RDONLY);
    printf("reopen-closed=%d %s\n", r, strerror(errno));

    /* socketpair: both ways, send/recv, MSG_DONTWAIT, poll, shutdown, EPIPE. */
    int sv[2];
    r = socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    write(sv[0], "ping", 4);
    char sb[16] = {0}, sb2[16] = {0};
    ssize_t sn = read(sv[1], sb, sizeof sb - 1);
    send(sv[1], "pong", 4, 0);
    ssize_t sn2 = recv(sv[0], sb2, sizeof sb2 - 1, 0);
    printf("socketpair=%d read=%zd %s recv=%zd %s\n", r, sn, sb, sn2, sb2);
    errno = 0;
    sn = recv(sv[0], sb, sizeof sb, MSG_DONTWAIT);
    printf("dontwait=%zd %s\n", sn, strerror(errno));
    struct pollfd sp2 = {sv[0], POLLIN, 0};
    write(sv[1], "x", 1);
    printf("poll-socket=%d\n", poll(&sp2, 1, 1000));
    read(sv[0], sb, 1);
    shutdown(sv[1], SHUT_WR);
    printf("after-shutdown read=%zd\n", read(sv[0], sb, sizeof sb));
    close(sv[0]);
    errno = 0;
    sn = send(sv[1], "y", 1, MSG_NOSIGNAL);
    printf("send-closed=%zd %s\n", sn, strerror(errno));
    errno = 0;
    r = socketpair(AF_INET, SOCK_STREAM, 0, sv);
    printf("socketpair-inet=%d %s\n", r, strerror(errno));
    /* FIONBIO (how Python's setblocking works), getsockname of an unnamed pair. */
    int sv2[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv2);
    int on = 1;
    r = ioctl(sv2[0], FIONBIO, &on);
    errno = 0;
    sn = read(sv2[0], sb, 1);
    printf("fionbio=%d read=%zd %s\n", r, sn, strerror(errno));
    struct sockaddr_un su;
    memset(&su, 0xff, sizeof su);
    socklen_t sl = sizeof su;
    r = getsockname(sv2[0], (struct sockaddr *)&su, &sl);
    printf("getsockname=%d family=%d len=%d\n", r, su.sun_family, (int)sl);

    /* /proc/self/maps: glibc finds the first thread's stack there. */
    pthread_attr_t pa;
    void *stk = 0;
    size_t stsz = 0;
    int ga = pthread_getattr_np(pthread_self(), &pa);
    pthread_attr_getstack(&pa, &stk, &stsz);
    char here;
    printf("getattr=%d stack-holds-local=%d\n", ga,
           &here >= (char *)stk && &here < (char *)stk + stsz);
    FILE *mf = fopen("/proc/self/maps", "r");
    char ml[512];
    int has_stack = 0, has_heap = 0;
    while (mf && fgets(ml, sizeof ml, mf)) {
        has_stack |= strstr(ml, "[stack]") != 0;
        has_heap |= strstr(ml, "[heap]") != 0;
    }
    printf("maps stack=%d heap=%d\n", has_stack, has_heap);
    return 0;
}
"#;

#[test]
fn pipes_poll_and_epoll_match_the_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_static(&b, "pipes", PIPES, &["-static", "-pthread"]),
        "gcc -static -pthread does not work here (apt-get install gcc libc6-dev)"
    );
    // The program writes io.tmp in its working directory: on the host, a scratch
    // directory of the bundle; in the VM, the rootfs.
    let host_dir = b.path().join("hostrun");
    std::fs::create_dir_all(&host_dir).expect("mkdir");
    let host = Command::new(b.rootfs().join("pipes"))
        .current_dir(&host_dir)
        .output()
        .expect("run the program on the host");
    let host_out = String::from_utf8_lossy(&host.stdout).to_string();
    assert!(host.status.success(), "host run: {host_out}");
    for want in [
        "read=5 hello io-not-held-up=1",
        "poll-empty=0 waited-timeout=1",
        "poll-ready=1 revents-in=1",
        "poll-nval=1 1",
        "nonblock-read=-1 Resource temporarily unavailable getfl=1 cloexec=1",
        "setfl-read=-1 Resource temporarily unavailable",
        "eof=0",
        "epipe=-1 Broken pipe",
        "bulk=1048576 ",
        "bad=0",
        "epoll=1 data=feedbeef value=5",
        "epoll-add-twice=-1 File exists",
        "epoll-timeout=0 waited=1",
        "epoll-bad-max=-1 Invalid argument",
        "semaphore=1 1 -1 Resource temporarily unavailable",
        "select-empty=0 waited=1 isset=0",
        "select-ready=2 r=1 w=1",
        "select-bad=-1 Bad file descriptor",
        "timerfd read=8 expirations=1 waited=1",
        "timerfd disarmed=1",
        "timerfd epoll=1 data=77",
        "bad-flags=1 1",
        "close_range=0 closed=1 1 kept=1",
        "close_range-cloexec=0 flag=1",
        "close_range-bad=-1 Invalid argument",
        "statfs=0 fstatfs=0 same-type=1 bsize=1 namelen=255",
        "fd-link=link.tmp absolute=1",
        "pipe-link=1",
        "reopen=z",
        "reopen-closed=-1 No such file or directory",
        "socketpair=0 read=4 ping recv=4 pong",
        "dontwait=-1 Resource temporarily unavailable",
        "poll-socket=1",
        "after-shutdown read=0",
        "send-closed=-1 Broken pipe",
        "socketpair-inet=-1 Operation not supported",
        "fionbio=0 read=-1 Resource temporarily unavailable",
        "getsockname=0 family=1 len=2",
        "getattr=0 stack-holds-local=1",
        "maps stack=1 heap=1",
    ] {
        assert!(host_out.contains(want), "host: {want:?} in {host_out}");
    }

    b.args(&["/pipes"]);
    assert_vm_matches_host(&hj, &b, "vmpipes", 0, &host_out);
}
