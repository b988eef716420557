#!/usr/bin/env bash
# VM backend benchmark (tracker issue 7, "Speed and memory"), in one run:
#   1. wall time of `run` of a static `true` (scripts/bench-vm/true.c): hyperjail's
#      VM backend vs. its jail vs. crun, runc and runsc (gVisor) from Debian, in N
#      interleaved rounds (env N, default 50) with a rotating order;
#   2. `start` to the guest's first user instruction: a no-libc program
#      (bench-vm/entry.c) reads CLOCK_MONOTONIC at _start; the delta to a host
#      CLOCK_MONOTONIC stamp taken just before `hyperjail start` is spawned
#      (ENTRY_RUNS, default 30). The guest value must lie between the stamp and the
#      moment the program was seen to finish, which checks that the guest clock
#      agrees with the host's. The spawn cost of a do-nothing hyperjail process
#      (`hyperjail --version`) is measured alongside, for reference;
#   3. a CPU-bound loop (bench-vm/cpuloop.c, LOOP_ITERS xorshift steps, default 1e9)
#      timed inside the program, in the VM vs. the same binary on the host
#      (LOOP_RUNS, default 5, interleaved);
#   3b. a CPU-bound program split over 1 and over 4 threads (bench-vm/par.c,
#      PAR_ITERS xorshift steps in all, default 4e8; PAR_RUNS, default 3): the
#      speed-up from 4 threads in the VM (a vCPU per thread) vs. on the host;
#   3c. processes, in the VM and in the jail, crun, runc and runsc (PROC_RUNS
#      rounds, default 5, rotating order): fork + execve("/true") + waitpid inside the
#      container (bench-vm/procs.c, FORK_N rounds, default 200; mean us per round),
#      pipe throughput between a process and its child (PIPE_MIB MiB, default 64;
#      MB/s), and the wall time of `run` of a busybox sh script of 1,000 commands
#      (/true, echo, arithmetic, cat: 250 of each);
#   4. ns per getpid, 1-byte write (to /dev/null, and to a regular file) and 4 KiB
#      pread, back to back (the VM's ring busy), and a 1-byte write after 300 us
#      without a system call (the ring thread asleep), in the VM vs. the same binary
#      on the host (bench-vm/syscalls.c, SYSCALL_N calls each, default 20000;
#      SYSCALL_RUNS, default 5, interleaved);
#   5. VmHWM of the VMM (the container's pid) while the guest sleeps after touching
#      TOUCH_MIB (default 16) MiB, and after touching none (RSS_RUNS, default 5).
#
# Output: a table on stdout, bench-results/vm.csv (summary) and
# bench-results/vm-samples.csv (every sample).
#
# Env: N, ENTRY_RUNS, LOOP_RUNS, LOOP_ITERS, PAR_RUNS, PAR_ITERS, PROC_RUNS, FORK_N, PIPE_MIB,
# SYSCALL_RUNS, SYSCALL_N, RSS_RUNS,
# TOUCH_MIB, WARMUP (default 3), HYPERJAIL (default target/release/hyperjail), RUNC
# (default /usr/sbin/runc), CRUN (default /usr/bin/crun), RUNSC (default
# /usr/bin/runsc; the column is skipped when it is missing), OUT_DIR (default
# bench-results).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERJAIL=${HYPERJAIL:-$repo/target/release/hyperjail}
RUNC=${RUNC:-/usr/sbin/runc}
CRUN=${CRUN:-/usr/bin/crun}
RUNSC=${RUNSC:-/usr/bin/runsc}
N=${N:-50}
ENTRY_RUNS=${ENTRY_RUNS:-30}
LOOP_RUNS=${LOOP_RUNS:-5}
LOOP_ITERS=${LOOP_ITERS:-1000000000}
PAR_RUNS=${PAR_RUNS:-3}
PAR_ITERS=${PAR_ITERS:-400000000}
PROC_RUNS=${PROC_RUNS:-5}
FORK_N=${FORK_N:-200}
PIPE_MIB=${PIPE_MIB:-64}
SYSCALL_RUNS=${SYSCALL_RUNS:-5}
SYSCALL_N=${SYSCALL_N:-20000}
RSS_RUNS=${RSS_RUNS:-5}
TOUCH_MIB=${TOUCH_MIB:-16}
WARMUP=${WARMUP:-3}
OUT_DIR=${OUT_DIR:-$repo/bench-results}

die() { echo "bench-vm: error: $*" >&2; exit 1; }
note() { echo "bench-vm: $*"; }
# shellcheck source=scripts/bench-common.sh
. "$repo/scripts/bench-common.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (containers need namespaces, cgroups and /dev/kvm)"
[ -x "$HYPERJAIL" ] || die "no hyperjail binary at $HYPERJAIL (run 'make build')"
[ -c /dev/kvm ] || die "no /dev/kvm: the VM backend needs KVM"
[ -x "$RUNC" ] || die "no runc at $RUNC (apt-get install runc, or scripts/deps.sh)"
[ -x "$CRUN" ] || die "no crun at $CRUN (apt-get install crun, or scripts/deps.sh)"
command -v gcc >/dev/null || die "gcc not found (apt-get install gcc libc6-dev)"
command -v python3 >/dev/null || die "python3 not found (scripts/deps.sh)"
command -v jq >/dev/null || die "jq not found (scripts/deps.sh)"
for v in N ENTRY_RUNS LOOP_RUNS LOOP_ITERS PAR_RUNS PAR_ITERS PROC_RUNS FORK_N PIPE_MIB SYSCALL_RUNS SYSCALL_N RSS_RUNS TOUCH_MIB; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, not '$WARMUP'"
# Debian 12 has gVisor as package runsc (0.0~20221219). Only this benchmark needs it, so
# it is installed here rather than by scripts/deps.sh (which `make test` runs).
if [ ! -x "$RUNSC" ] && [ "$RUNSC" = /usr/bin/runsc ] && command -v apt-get >/dev/null; then
    note "installing runsc (gVisor) from Debian for the comparison"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q runsc >/dev/null 2>&1; } || true
fi
if [ -x "$RUNSC" ]; then
    runsc_note=""
else
    runsc_note="runsc: not available (no $RUNSC, and apt-get install runsc failed)"
    RUNSC=""
fi

work=$(mktemp -d /tmp/hyperjail-bench-vm.XXXXXX)
cleanup() {
    local rt name
    for rt in "hyperjail:$HYPERJAIL" "runc:$RUNC" "crun:$CRUN" ${RUNSC:+"runsc:$RUNSC"}; do
        name=${rt%%:*}
        [ -d "$work/root-$name" ] || continue
        for id in $("${rt#*:}" --root "$work/root-$name" list -q 2>/dev/null); do
            "${rt#*:}" --root "$work/root-$name" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# The guest programs: static, from scripts/bench-vm/*.c. entry has no libc at all.
bin=$work/bin
mkdir -p "$bin"
for p in true cpuloop syscalls touch par procs; do
    gcc -O2 -Wall -static -pthread -o "$bin/$p" "$repo/scripts/bench-vm/$p.c" || die "gcc -static failed for $p.c (apt-get install libc6-dev)"
done
gcc -O2 -Wall -static -nostdlib -fno-stack-protector -o "$bin/entry" "$repo/scripts/bench-vm/entry.c" ||
    die "gcc failed for entry.c"
head -c 65536 /dev/urandom > "$bin/data"

# One rootfs (scripts/mkbundle.sh: busybox plus the programs above), two configs:
# jail/ for hyperjail's jail, crun, runc and runsc; vm/ with org.hyperjail.backend=vm.
# ociVersion 1.0.2-dev because crun 1.8.1 rejects the 1.2.0 that `hyperjail spec` writes.
jail=$work/jail
"$repo/scripts/mkbundle.sh" "$jail" /true >/dev/null
cp "$bin"/{true,entry,cpuloop,syscalls,touch,par,procs,data} "$jail/rootfs/"
jq '.ociVersion = "1.0.2-dev" | .root.readonly = false' "$jail/config.json" > "$jail/config.json.new"
mv "$jail/config.json.new" "$jail/config.json"
vm=$work/vm
mkdir -p "$vm"
jq --arg r "$jail/rootfs" '.annotations["org.hyperjail.backend"] = "vm" | .root.path = $r' \
    "$jail/config.json" > "$vm/config.json"
# The syscall program writes its sink file into the rootfs (root.readonly is false
# for it), and there is a /dev/null node in the rootfs, so the VM's answer to a device node is measured
# (the jail runtimes mount their own /dev over it).
mknod -m 666 "$jail/rootfs/dev/null" c 1 3
note "bundles: $jail (jail, crun, runc, runsc) and $vm (VM); ociVersion 1.0.2-dev because crun 1.8.1 rejects 1.2.0"

mount_hugetlb_v1_for_crun
[ -z "$runsc_note" ] || note "$runsc_note; skipping that column"
[ -z "$RUNSC" ] || note "runsc runs with --network=none (runsc 20221219 refuses: 'cannot run with network enabled in root network namespace')"

mkdir -p "$OUT_DIR"

export BENCH_WORK=$work BENCH_JAIL=$jail BENCH_VM=$vm BENCH_BIN=$bin BENCH_OUT=$OUT_DIR
export BENCH_RUNC=$RUNC BENCH_CRUN=$CRUN BENCH_RUNSC=$RUNSC
export BENCH_N=$N BENCH_ENTRY_RUNS=$ENTRY_RUNS BENCH_LOOP_RUNS=$LOOP_RUNS BENCH_LOOP_ITERS=$LOOP_ITERS
export BENCH_PAR_RUNS=$PAR_RUNS BENCH_PAR_ITERS=$PAR_ITERS
export BENCH_PROC_RUNS=$PROC_RUNS BENCH_FORK_N=$FORK_N BENCH_PIPE_MIB=$PIPE_MIB
export BENCH_SYSCALL_RUNS=$SYSCALL_RUNS BENCH_SYSCALL_N=$SYSCALL_N BENCH_RSS_RUNS=$RSS_RUNS
export BENCH_TOUCH_MIB=$TOUCH_MIB BENCH_WARMUP=$WARMUP
python3 "$repo/scripts/bench-vm/bench.py"
