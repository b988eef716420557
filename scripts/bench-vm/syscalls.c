/* bench-vm: cost per call, in ns, of
 *   getpid         raw syscall(SYS_getpid): answered by the guest kernel in the VM
 *   write1 devnull 1-byte write(2) to /dev/null; "refused <errno text>" when the
 *                  open fails (the VM gives no device nodes)
 *   write1 file    1-byte write(2) to a regular file (argv[3], created)
 *   pread4k        4 KiB pread(2) of a regular file (argv[2], >= 64 KiB)
 *   write1 idle    1-byte write(2) to the regular file after 300 us without a system
 *                  call (the VM's ring thread has gone to sleep: the doorbell wakes
 *                  it); median of 200
 * argv: N DATAFILE SINKFILE. One line per measurement on stdout. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int writes(const char *what, int fd, long n) {
    char c = 'x';
    long long t0 = now();
    for (long i = 0; i < n; i++)
        if (write(fd, &c, 1) != 1) { fprintf(stderr, "write %s: %s\n", what, strerror(errno)); return 1; }
    long long t1 = now();
    printf("write1_%s_ns %.1f\n", what, (double)(t1 - t0) / n);
    return 0;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* One write after each of `k` quiet spells of `quiet_ns` (a spin on the clock, no
   system call in the VM); prints the median. */
static int idle_writes(int fd, int k, long long quiet_ns) {
    static long long t[200];
    char c = 'y';
    if (k > 200) k = 200;
    for (int i = 0; i < k; i++) {
        long long until = now() + quiet_ns;
        while (now() < until) ;
        long long t0 = now();
        if (write(fd, &c, 1) != 1) { fprintf(stderr, "write idle: %s\n", strerror(errno)); return 1; }
        t[i] = now() - t0;
    }
    qsort(t, k, sizeof t[0], cmp_ll);
    printf("write1_idle_ns %lld\n", t[k / 2]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s N DATAFILE SINKFILE\n", argv[0]); return 2; }
    long n = atol(argv[1]);
    if (n <= 0) return 2;

    long long t0 = now();
    for (long i = 0; i < n; i++) syscall(SYS_getpid);
    long long t1 = now();
    printf("getpid_ns %.1f\n", (double)(t1 - t0) / n);

    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) printf("write1_devnull_refused %s\n", strerror(errno));
    else if (writes("devnull", fd, n)) return 1;
    if (fd >= 0) close(fd);

    fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", argv[3], strerror(errno)); return 1; }
    if (writes("file", fd, n)) return 1;
    if (idle_writes(fd, 200, 300000)) return 1;
    close(fd);

    fd = open(argv[2], O_RDONLY);
    if (fd < 0) { fprintf(stderr, "open %s: %s\n", argv[2], strerror(errno)); return 1; }
    static char buf[4096];
    t0 = now();
    for (long i = 0; i < n; i++)
        if (pread(fd, buf, sizeof buf, (i % 16) * 4096) != 4096) { fprintf(stderr, "pread: %s\n", strerror(errno)); return 1; }
    t1 = now();
    printf("pread4k_ns %.1f\n", (double)(t1 - t0) / n);
    return 0;
}
