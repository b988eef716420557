/* bench-vm: 1e9 (argv[1]) xorshift64 steps; prints the result and the in-process
 * CLOCK_MONOTONIC time of the loop in ns. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static long long now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000000L;
    unsigned long x = 88172645463325252UL ^ (unsigned long)argc;
    long long t0 = now();
    for (long i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; }
    long long t1 = now();
    printf("loop_ns %lld x %lu\n", t1 - t0, x);
    return 0;
}
