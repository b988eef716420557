/* bench-vm: argv[2] xorshift64 steps in all, split over argv[1] threads; prints the
 * in-process CLOCK_MONOTONIC time from the first create to the last join in ns. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static long per;
static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
static void *work(void *arg) {
    unsigned long x = 88172645463325252UL ^ (unsigned long)arg;
    for (long i = 0; i < per; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    return (void *)(x & 1);
}
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 4;
    long total = argc > 2 ? atol(argv[2]) : 400000000L;
    if (n < 1 || n > 64) return 2;
    per = total / n;
    pthread_t t[64];
    long long t0 = now();
    for (long i = 0; i < n; i++)
        if (pthread_create(&t[i], 0, work, (void *)i)) { perror("pthread_create"); return 1; }
    long s = 0;
    for (int i = 0; i < n; i++) { void *r; pthread_join(t[i], &r); s += (long)r; }
    printf("par_ns %lld s %ld\n", now() - t0, s);
    return 0;
}
