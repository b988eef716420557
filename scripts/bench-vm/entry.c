/* bench-vm: the earliest user code: no libc. Reads CLOCK_MONOTONIC with a raw clock_gettime
 * syscall at _start, prints "sec nsec\n" on fd 1, exits 0. */
struct ts { long s, ns; };
static long sys(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static char *fmt(char *p, unsigned long v) {
    char t[24]; int i = 0;
    do { t[i++] = '0' + v % 10; v /= 10; } while (v);
    while (i) *p++ = t[--i];
    return p;
}
void _start(void) {
    struct ts t;
    sys(228, 1, (long)&t, 0);
    char buf[64], *p = buf;
    p = fmt(p, t.s); *p++ = ' '; p = fmt(p, t.ns); *p++ = '\n';
    sys(1, 1, (long)buf, p - buf);
    sys(60, 0, 0, 0);
    for (;;) ;
}
