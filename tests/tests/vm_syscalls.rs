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
