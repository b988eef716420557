/* bench-vm: touches argv[1] MiB (default 16) then sleeps argv[2] s (default 2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 16;
    int secs = argc > 2 ? atoi(argv[2]) : 2;
    if (mib > 0) {
        char *p = malloc(mib << 20);
        if (!p) { perror("malloc"); return 1; }
        for (long i = 0; i < (mib << 20); i += 4096) p[i] = 1;
    }
    printf("touched %ld\n", mib); fflush(stdout);
    struct timespec t = { secs, 0 };
    nanosleep(&t, 0);
    return 0;
}
