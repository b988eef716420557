//! Dynamically linked programs in the VM: the VMM loads the program's PT_INTERP
//! loader from the rootfs beside it and starts there; the loader maps libc with
//! private file mappings (read into guest memory), and `dlopen` does the same at run
//! time. The program gives the same output as on the host.

use hyperjail_tests::vm::{assert_vm_matches_host, compile_dynamic, copy_into_rootfs, vm_bundle};
use hyperjail_tests::{require_kvm, skip_unless, Hyperjail};
use std::fs;
use std::process::Command;

const DYNAMIC: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

static int cmp(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int main(int argc, char **argv) {
    int v[6] = {42, 7, 19, 3, 88, 1};
    qsort(v, 6, sizeof v[0], cmp);
    printf("argc=%d arg1=%s env=%s sorted=%d,%d,%d,%d,%d,%d\n", argc, argv[1],
           getenv("DYN_TEST"), v[0], v[1], v[2], v[3], v[4], v[5]);
    char *heap = malloc(1 << 20);
    memset(heap, 'z', (1 << 20) - 1);
    heap[(1 << 20) - 1] = 0;
    printf("heap=%zu %.3f\n", strlen(heap), 2.0 / 3.0);

    /* A private file mapping: the file's bytes, a copy that writes do not reach. */
    int fd = open(argv[2], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) { perror("open data"); return 1; }
    char *m = mmap(0, st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    printf("map0=%c%c size=%ld\n", m[0], m[4095], (long)st.st_size);
    m[0] = 'X';
    char first;
    pread(fd, &first, 1, 0);
    printf("file-unchanged=%d\n", first == 'a');
    /* At a page offset; past the end of the file the last page reads as zero. */
    char *p2 = mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 4096);
    printf("map1=%s tail-zero=%d\n", p2, p2[4095] == 0);
    printf("bad-offset=%d\n", mmap(0, 4096, PROT_READ, MAP_PRIVATE, fd, 100) == MAP_FAILED);
    printf("shared-write=%d\n",
           mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);

    /* The loader maps another library at run time. */
    void *h = dlopen("libm.so.6", RTLD_NOW);
    double (*c)(double) = h ? (double (*)(double))dlsym(h, "cos") : 0;
    printf("cos=%.9f\n", c ? c(0.5) : -1.0);

    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    printf("cpus=%d\n", CPU_COUNT(&set));
    if (argc > 3) {
        struct sysinfo si;
        sysinfo(&si);
        printf("totalram=%lu procs=%d uptime-small=%d\n",
               (unsigned long)si.totalram * si.mem_unit, si.procs, si.uptime < 600);
    }
    return 7;
}
"#;

/// The bytes of /data.bin: a page of 'a', then "second page".
fn data() -> Vec<u8> {
    let mut d = vec![b'a'; 4096];
    d.extend_from_slice(b"second page");
    d
}

#[test]
fn dynamic_program_matches_the_host() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_dynamic(&b, "dyn", DYNAMIC, &[]),
        "gcc or ldd does not work here (apt-get install gcc libc6-dev)"
    );
    // libm for dlopen: beside libc, which ldd listed.
    let libc = b.rootfs().join("lib/x86_64-linux-gnu/libc.so.6");
    skip_unless!(libc.exists(), "libc is not in /lib/x86_64-linux-gnu here");
    copy_into_rootfs(&b, "/lib/x86_64-linux-gnu/libm.so.6");
    fs::write(b.rootfs().join("data.bin"), data()).expect("write data");

    let host = Command::new(b.rootfs().join("dyn"))
        .args(["one"])
        .arg(b.rootfs().join("data.bin"))
        .env("DYN_TEST", "on-host-too")
        .output()
        .expect("run the program on the host");
    let host_out = String::from_utf8_lossy(&host.stdout).to_string();
    assert_eq!(host.status.code(), Some(7), "host run: {host_out}");
    for want in [
        "sorted=1,3,7,19,42,88",
        "map0=aa size=4107",
        "file-unchanged=1",
        "map1=second page tail-zero=1",
        "bad-offset=1",
        "shared-write=1",
        "cos=0.877582562",
    ] {
        assert!(host_out.contains(want), "host: {want} in {host_out}");
    }

    b.args(&["/dyn", "one", "/data.bin"])
        .env("DYN_TEST=on-host-too");
    // A writable shared mapping fails in both: EACCES on the host (read-only fd),
    // ENODEV in the VM (no shared file mappings).
    assert_vm_matches_host(&hj, &b, "vmdyn", 7, &host_out);

    // The guest kernel's sysinfo: the VM's RAM (64 MiB by default), one thread.
    b.args(&["/dyn", "one", "/data.bin", "sysinfo"]);
    let c = hj.container("vmdynsi");
    let out = c.run(&b, &[]);
    assert_eq!(out.code, Some(7), "{out}");
    assert!(
        out.stdout
            .contains("totalram=67108864 procs=1 uptime-small=1"),
        "{out}"
    );
}

#[test]
fn missing_loader_is_refused() {
    require_kvm!();
    let hj = Hyperjail::new();
    let mut b = vm_bundle();
    skip_unless!(
        compile_dynamic(&b, "dyn", DYNAMIC, &[]),
        "gcc or ldd does not work here (apt-get install gcc libc6-dev)"
    );
    // The loader's path as PT_INTERP names it, taken out of the rootfs.
    let interp = Command::new("readelf")
        .args(["-l"])
        .arg(b.rootfs().join("dyn"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let Some(path) = interp
        .split("interpreter: ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .map(str::to_string)
    else {
        panic!("no PT_INTERP in readelf's output: {interp}");
    };
    fs::remove_file(b.rootfs().join(path.trim_start_matches('/'))).expect("remove loader");
    b.args(&["/dyn"]);
    let c = hj.container("vmdynnoload");
    c.create(&b, &[])
        .assert_error(&["dynamically linked", &path, "not in the rootfs"]);
    c.assert_nothing_left(&b);
    assert!(hj.root_entries().iter().all(|e| e != &c.id));
}
