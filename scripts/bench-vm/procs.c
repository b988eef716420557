/* bench-vm: processes. `procs forkexec N`: N rounds of fork, execve("/true") in the
 * child and waitpid in the parent; prints the mean ns per round. `procs pipe MIB`:
 * a forked child writes MIB MiB into a pipe in 64 KiB writes, the parent reads them;
 * prints MB/s from the fork to the reader's EOF. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int forkexec(long n) {
    char *av[] = {"/true", 0}, *ev[] = {0};
    long long t0 = now();
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 1; }
        if (p == 0) { execve("/true", av, ev); _exit(127); }
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child %ld failed (status %#x)\n", i, st);
            return 1;
        }
    }
    printf("forkexec_ns %lld\n", (now() - t0) / n);
    return 0;
}

static int pipe_mbps(long mib) {
    static char buf[64 << 10];
    int fd[2];
    if (pipe(fd)) { perror("pipe"); return 1; }
    long long t0 = now();
    pid_t p = fork();
    if (p < 0) { perror("fork"); return 1; }
    if (p == 0) {
        close(fd[0]);
        memset(buf, 'p', sizeof buf);
        for (long left = mib << 20; left > 0;) {
            ssize_t w = write(fd[1], buf, left < (long)sizeof buf ? left : (long)sizeof buf);
            if (w <= 0) _exit(1);
            left -= w;
        }
        _exit(0);
    }
    close(fd[1]);
    long total = 0;
    ssize_t r;
    while ((r = read(fd[0], buf, sizeof buf)) > 0) total += r;
    long long ns = now() - t0;
    int st;
    waitpid(p, &st, 0);
    if (total != mib << 20 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "pipe: read %ld of %ld bytes\n", total, mib << 20);
        return 1;
    }
    printf("pipe_mbps %.1f\n", (double)total / 1e6 / ((double)ns / 1e9));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "forkexec")) return forkexec(atol(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "pipe")) return pipe_mbps(atol(argv[2]));
    fprintf(stderr, "usage: procs forkexec N | procs pipe MIB\n");
    return 2;
}
