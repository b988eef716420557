#!/usr/bin/env bash
# Real engines drive hyperjail: podman (with conmon) and containerd (with ctr and
# containerd-shim-runc-v2), from Debian, offline.
#
#   tests/engines/run.sh            (as root; scripts/engine-deps.sh installs the engines)
#
# Everything lives in a temporary directory: podman's containers.conf and
# storage.conf (vfs, file locks, cgroupfs, file events, --network none), a private
# containerd with its own socket, root and state, and the busybox image, built from
# Debian's busybox-static and imported into both engines. The engines call hyperjail
# through a wrapper that logs every runtime argv and exit status; the summary of
# verbs and flags each engine used is printed at the end.
#
# Output: `ok N - name` / `not ok N - name` (diagnostics follow as `#` lines), then
# `N passed, M failed[, K skipped]`. Exit status 1 when anything failed.
#
# Environment: HYPERJAIL_BIN (or HYPERJAIL) selects the binary, default
# target/release/hyperjail. HJ_ENGINES_KEEP=1 keeps the temporary directory.
# HJ_ENGINES_TIMEOUT is the limit for one engine command (seconds, default 60).
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HJ=${HYPERJAIL_BIN:-${HYPERJAIL:-$repo/target/release/hyperjail}}
TMO=${HJ_ENGINES_TIMEOUT:-60}
IMG=localhost/hjbusybox:latest
NS=hj

n=0 passed=0 failed=0 skipped=0
ok() { n=$((n + 1)); passed=$((passed + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
skip() { n=$((n + 1)); skipped=$((skipped + 1)); echo "ok $n - $1 # SKIP $2"; }
summary() {
    local s="$passed passed, $failed failed"
    [ "$skipped" -gt 0 ] && s+=", $skipped skipped"
    echo "$s"
}

if [ "$(id -u)" -ne 0 ]; then
    echo "# engines: skipped: needs root (rootful podman and containerd, namespaces, cgroups)"
    skip "engines" "not root"
    summary
    exit 0
fi

missing=()
for c in podman conmon containerd ctr containerd-shim-runc-v2 script timeout; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=("busybox-static")
[ -x "$HJ" ] || missing+=("$HJ (cargo build --release)")
if [ "${#missing[@]}" -gt 0 ]; then
    notok "prerequisites"
    echo "#   missing: ${missing[*]}; run scripts/engine-deps.sh"
    summary
    exit 1
fi
HJ=$(cd "$(dirname "$HJ")" && pwd)/$(basename "$HJ")

T=$(mktemp -d /tmp/hj-engines.XXXXXX)
chmod 755 "$T"
ARGV_LOG=$T/runtime-argv.log
: >"$ARGV_LOG"
SOCK=$T/ctrd/containerd.sock
PODMAN_RT=$T/podman-bin/hyperjail
CTRD_RT=$T/containerd-bin/hyperjail
OUT=$T/out # the output of the last command run with `r`
ERR=$T/err
CTRD_PID=
var_lib_containers_existed=0
[ -e /var/lib/containers ] && var_lib_containers_existed=1
run_containerd_existed=0
[ -e /run/containerd ] && run_containerd_existed=1

# ---------------------------------------------------------------- helpers

# r CMD...: run CMD with a timeout; stdout to $OUT, stderr to $ERR; returns its status.
r() {
    timeout -k 5 "$TMO" "$@" >"$OUT" 2>"$ERR"
}
# rtty "CMD ARGS": run CMD on a new pseudo-terminal (util-linux script), like r.
# script's stdin is /dev/null: make may run in a background process group of a
# terminal, where script reading or setting that terminal would stop on SIGTTIN
# or SIGTTOU. The command is exec'd (no shell in between) and timeout runs with
# --foreground, so the command stays in the pty's foreground process group
# whatever $SHELL is: engines set the pty raw, and from a background group that
# stops them with SIGTTOU (seen in CI, where $SHELL made script run `sh -c`).
rtty() {
    r script -qec "exec timeout --foreground -k 5 $TMO $1" /dev/null </dev/null
}
# rtty_ok "CMD ARGS": rtty, which must exit 0; $OUT then holds the output without
# the terminal's carriage returns.
rtty_ok() {
    rtty "$1"
    expect_rc 0 $? || return 1
    tr -d '\r' <"$OUT" >"$OUT.x" && mv "$OUT.x" "$OUT"
}
# diag LINE...: a diagnostic line for the current (failing) test.
diag() { printf '%s\n' "$@" >>"$T/diag"; }
# show: the last command's output, for diagnostics.
show() {
    diag "stdout: $(head -c 2000 "$OUT")" "stderr: $(head -c 2000 "$ERR")"
}
# expect_out WANT: the last command's stdout (trailing newlines removed) is WANT.
expect_out() {
    local got
    got=$(cat "$OUT")
    [ "$got" = "$1" ] && return 0
    diag "expected stdout: $(printf '%q' "$1")" "got stdout:      $(printf '%q' "$got")" \
        "stderr: $(head -c 2000 "$ERR")"
    return 1
}
# expect_rc WANT GOT
expect_rc() {
    [ "$2" -eq "$1" ] && return 0
    diag "expected exit status $1, got $2"
    show
    return 1
}

# t NAME FUNC [ARG...]: one test. FUNC returns 0 on success; on failure the
# diagnostics it wrote and the runtime calls made meanwhile are printed.
t() {
    local name=$1
    shift
    : >"$T/diag"
    local before
    before=$(wc -l <"$ARGV_LOG")
    if "$@"; then
        ok "$name"
    else
        notok "$name"
        sed 's/^/#   /' "$T/diag"
        local calls
        calls=$(tail -n +"$((before + 1))" "$ARGV_LOG" | grep -v '^    env' | tail -n 30)
        if [ -n "$calls" ]; then
            echo "#   runtime calls during this test:"
            printf '%s\n' "$calls" | cut -c1-400 | sed 's/^/#     /'
        fi
    fi
}

# The runtime as the engines see it: a wrapper named "hyperjail" (podman decides
# what it passes by the runtime's base name) that logs argv, the environment the
# runtime sees that matters (NOTIFY_SOCKET, LISTEN_*, XDG_RUNTIME_DIR, _OCI_*),
# and the exit status, then runs the real binary. It adds nothing to argv.
make_wrapper() { # ENGINE
    mkdir -p "$T/$1-bin"
    cat >"$T/$1-bin/hyperjail" <<EOF
#!/bin/bash
log=$ARGV_LOG
line="\$(date +%T.%N) $1 pid=\$\$ argv:"
for a in "\$@"; do line+=" \$(printf '%q' "\$a")"; done
# The verb and the flags, without their values, for the summary.
sum=() verb= expect= npos=0
for a in "\$@"; do
    if [ -n "\$expect" ]; then
        [ "\$expect" = keep ] && sum[-1]+="=\$a"
        expect=
        continue
    fi
    case \$a in
    --log-format|--format) sum+=("\$a"); expect=keep ;;
    --root|--log|--bundle|--pid-file|--console-socket|--process|--preserve-fds|--cwd|--env|--user|--cap|--resources|--interval|--process-label|--apparmor|--additional-gids|--cgroup|--memory|--memory-swap|--memory-reservation|--kernel-memory|--kernel-memory-tcp|--cpu-period|--cpu-quota|--cpu-share|--cpu-rt-period|--cpu-rt-runtime|--cpuset-cpus|--cpuset-mems|--pids-limit|--blkio-weight|--l3-cache-schema|--mem-bw-schema)
        sum+=("\$a"); expect=drop ;;
    --log-format=*|--format=*) sum+=("\$a") ;;
    --*=*) sum+=("\${a%%=*}") ;;
    -*) sum+=("\$a") ;;
    *)  if [ -z "\$verb" ]; then
            verb=\$a; sum+=("\$a")
        else
            npos=\$((npos + 1))
            [ "\$verb" = kill ] && [ \$npos = 2 ] && sum+=("SIG\$a")
        fi ;;
    esac
done
{
    printf '%s\n' "\$line"
    env | grep -E '^(NOTIFY_SOCKET|LISTEN_[A-Z]*|XDG_RUNTIME_DIR|_OCI_[A-Z]*|_LIBCONTAINER_[A-Z]*)=' | sed 's/^/    env /'
} >>"\$log"
"$HJ" "\$@"
rc=\$?
printf '%s %s pid=%s exit=%s\n' "\$(date +%T.%N)" "$1" "\$\$" "\$rc" >>"\$log"
printf '%s\n' "\${sum[*]}" >>"$T/summary.$1"
exit \$rc
EOF
    chmod 755 "$T/$1-bin/hyperjail"
}

# Every mount under the temporary directory, deepest first.
mounts_under_t() {
    awk -v t="$T" '{ if (index($5, t "/") == 1) print $5 }' /proc/self/mountinfo | sort -r
}
# Live (non-zombie) processes whose command line mentions the temporary directory.
procs_under_t() {
    local p st
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] && continue
        st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
        [ "$st" = Z ] && continue
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$T/" && echo "$p"
    done
}
# hyperjail ids the engines created that still have state: podman's under the
# default root (podman passes no --root), containerd's under our --runc-root.
leftover_state() {
    local id
    for id in $(grep -o 'argv: .*' "$ARGV_LOG" | grep -oE '\b[0-9a-f]{64}\b' | sort -u); do
        [ -e "/run/hyperjail/$id" ] && echo "/run/hyperjail/$id"
    done
    if [ -d "$T/ctrd/hjroot/$NS" ]; then
        find "$T/ctrd/hjroot/$NS" -mindepth 1 -maxdepth 1 -type d
    fi
}

cleanup() {
    trap - EXIT INT TERM
    set +e
    export CONTAINERS_CONF=$T/containers.conf CONTAINERS_STORAGE_CONF=$T/storage.conf
    if [ -e "$T/storage.conf" ]; then
        timeout -k 5 60 podman --runtime "$PODMAN_RT" rm -af -t 0 >/dev/null 2>&1
    fi
    if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
        local c
        for c in $(timeout 20 ctr --address "$SOCK" -n $NS task ls -q 2>/dev/null); do
            timeout 20 ctr --address "$SOCK" -n $NS task kill -s SIGKILL "$c" >/dev/null 2>&1
            sleep 0.2
            timeout 20 ctr --address "$SOCK" -n $NS task delete -f "$c" >/dev/null 2>&1
        done
        for c in $(timeout 20 ctr --address "$SOCK" -n $NS container ls -q 2>/dev/null); do
            timeout 20 ctr --address "$SOCK" -n $NS container delete "$c" >/dev/null 2>&1
        done
        kill -TERM "$CTRD_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$CTRD_PID" 2>/dev/null
        wait "$CTRD_PID" 2>/dev/null
    fi
    # State hyperjail kept for containers the engines no longer know.
    local s id root
    for s in $(leftover_state); do
        id=$(basename "$s")
        root=$(dirname "$s")
        "$HJ" --root "$root" delete --force "$id" >/dev/null 2>&1
    done
    # Shims, conmons and container processes of ours that are still there.
    local p
    for p in $(procs_under_t); do kill -KILL "$p" 2>/dev/null; done
    local m
    for m in $(mounts_under_t); do umount -l "$m" 2>/dev/null; done
    if [ "${HJ_ENGINES_KEEP:-0}" = 1 ]; then
        echo "# kept $T"
    else
        rm -rf --one-file-system "$T"
    fi
    # What the engines create outside their configured directories.
    if [ $var_lib_containers_existed = 0 ]; then
        # containers/image's blob-info cache (podman import/save as root)
        rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
        rmdir /var/lib/containers/cache /var/lib/containers 2>/dev/null
    fi
    if [ $run_containerd_existed = 0 ] && [ -d /run/containerd ]; then
        # ctr's fifos (/run/containerd/fifo), the shims' sockets (/run/containerd/s)
        find /run/containerd -depth -type d -empty -delete 2>/dev/null
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- set-up

make_wrapper podman
make_wrapper containerd

nofile=$(ulimit -Hn)
# podman as root asks for nofile/nproc limits above the host's; without
# CAP_SYS_RESOURCE in the bounding set no runtime can set them (MACHINE-NOTES).
cat >"$T/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$T/podman-events.log"
lock_type = "file"
tmp_dir = "$T/libpod-tmp"
volume_path = "$T/volumes"
EOF
# The same, plus hyperjail in runtime_supports_json: podman then passes
# --log-format=json --log FILE and conmon reports errors from that file.
sed "s|^\[engine\]|[engine]\nruntime_supports_json = [\"crun\", \"runc\", \"hyperjail\"]|" \
    "$T/containers.conf" >"$T/containers-json.conf"
cat >"$T/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$T/storage"
runroot = "$T/runroot"
EOF
export CONTAINERS_CONF=$T/containers.conf CONTAINERS_STORAGE_CONF=$T/storage.conf
P=(podman --runtime "$PODMAN_RT")
PN=("${P[@]}" run --network none) # every run: --network none (no CNI/netavark)

setup_image() {
    local R=$T/rootfs
    mkdir -p "$R"/{bin,proc,sys,dev,etc,tmp,root}
    chmod 1777 "$R/tmp"
    chmod 700 "$R/root"
    cp /bin/busybox "$R/bin/busybox"
    local a
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$R/etc/group"
    tar -C "$R" --numeric-owner -cf "$T/rootfs.tar" . || { diag "tar failed"; return 1; }
    r podman import --change 'CMD ["/bin/sh"]' "$T/rootfs.tar" "$IMG" || { show; return 1; }
    r podman image exists "$IMG" || { diag "image $IMG missing after import"; show; return 1; }
}
t "podman: import a busybox image from a rootfs tarball" setup_image

# ---------------------------------------------------------------- podman

p_run_echo() {
    r "${PN[@]}" --rm "$IMG" echo hi || { show; return 1; }
    expect_out hi
}
t "podman run --rm IMG echo hi" p_run_echo

p_direct() {
    # No wrapper: --runtime is the binary itself.
    r podman --runtime "$HJ" run --network none --name hj-direct "$IMG" echo direct || { show; return 1; }
    expect_out direct || return 1
    r podman inspect -f '{{.OCIRuntime}}' hj-direct || { show; return 1; }
    expect_out "$HJ" || return 1
    r podman rm hj-direct || { show; return 1; }
}
t "podman --runtime TARGET/release/hyperjail (no wrapper): run, inspect OCIRuntime" p_direct

p_exit_code() {
    r "${PN[@]}" --rm "$IMG" sh -c 'exit 3'
    expect_rc 3 $?
}
t "podman run: exit status 3 passed through" p_exit_code

p_missing_cmd() {
    r "${PN[@]}" --rm "$IMG" /nonexistent
    expect_rc 127 $? || return 1
    grep -q '/nonexistent' "$ERR" || { diag "the error does not name /nonexistent"; show; return 1; }
}
t "podman run of a missing command: exit 127 and the error names it" p_missing_cmd

p_noexec_cmd() {
    r "${PN[@]}" --rm "$IMG" /etc/passwd
    expect_rc 126 $? || return 1
    grep -qi 'permission denied' "$ERR" || { diag "no 'permission denied' in the error"; show; return 1; }
}
t "podman run of a non-executable file: exit 126, permission denied" p_noexec_cmd

p_failed_create_quiet() {
    # After a failed create podman runs `delete --force ID` for an id the runtime
    # never recorded; runc exits 0 there, and podman prints nothing more.
    r "${PN[@]}" --rm "$IMG" /nonexistent
    if grep -q 'Removing container .* from runtime after creation failed' "$ERR"; then
        diag "podman's cleanup call failed (runc: delete --force of a missing container exits 0)"
        show
        return 1
    fi
}
t "podman cleanup after a failed create: delete --force of a missing id succeeds" p_failed_create_quiet

p_json_log() {
    CONTAINERS_CONF=$T/containers-json.conf r "${PN[@]}" --rm "$IMG" echo hi-json || { show; return 1; }
    expect_out hi-json || return 1
    CONTAINERS_CONF=$T/containers-json.conf r "${PN[@]}" --rm "$IMG" /nonexistent
    expect_rc 127 $? || return 1
    grep -q 'exec: "/nonexistent"' "$ERR" ||
        { diag "podman's error does not carry the runtime's JSON log message"; show; return 1; }
}
t "podman with runtime_supports_json (--log-format=json --log): run, and errors from the log" p_json_log

D=hj-detached
p_run_d() {
    r "${PN[@]}" -d --name $D "$IMG" sh -c 'echo started; exec sleep 1000' || { show; return 1; }
    r "${P[@]}" ps --format '{{.Names}} {{.Status}}' || { show; return 1; }
    grep -q "^$D Up" "$OUT" || { diag "podman ps does not show $D as Up"; show; return 1; }
}
t "podman run -d sleep; podman ps shows it Up" p_run_d
DID=$("${P[@]}" inspect -f '{{.Id}}' $D 2>/dev/null)

p_logs() {
    local i
    for i in $(seq 50); do
        r "${P[@]}" logs $D && [ "$(cat "$OUT")" = started ] && break
        sleep 0.1
    done
    expect_out started
}
t "podman logs" p_logs

p_exec() {
    r "${P[@]}" exec $D cat /etc/hostname || { show; return 1; }
    expect_out "${DID:0:12}" || return 1
    r "${P[@]}" exec $D echo hi || { show; return 1; }
    expect_out hi
}
t "podman exec CTR cat /etc/hostname; exec echo hi" p_exec

p_exec_rc() {
    r "${P[@]}" exec $D sh -c 'exit 4'
    expect_rc 4 $?
}
t "podman exec: exit status 4 passed through" p_exec_rc

p_exec_opts() {
    r "${P[@]}" exec --user 65534 --workdir /tmp --env X=y $D sh -c 'id -u; pwd; echo $X' || { show; return 1; }
    expect_out $'65534\n/tmp\ny'
}
t "podman exec --user --workdir --env" p_exec_opts

p_exec_tty() {
    rtty_ok "${P[*]} exec -t $D tty" || return 1
    grep -q '^/dev/pts/[0-9]*$' "$OUT" || { diag "tty in the exec is not a pts"; show; return 1; }
}
t "podman exec -t (console socket): tty is /dev/pts/N" p_exec_tty

p_pause() {
    r "${P[@]}" pause $D || { show; return 1; }
    r "${P[@]}" inspect -f '{{.State.Status}}' $D
    expect_out paused || return 1
    r "$HJ" state "$DID" || { diag "hyperjail state $DID failed"; show; return 1; }
    grep -q '"status": *"paused"' "$OUT" || { diag "hyperjail state is not paused"; show; return 1; }
}
t "podman pause: inspect and hyperjail state say paused" p_pause

p_unpause() {
    r "${P[@]}" unpause $D || { show; return 1; }
    r "${P[@]}" inspect -f '{{.State.Status}}' $D
    expect_out running || return 1
    r "${P[@]}" exec $D echo alive || { show; return 1; }
    expect_out alive
}
t "podman unpause: running again, exec works" p_unpause

p_update() {
    r "${P[@]}" update --memory 128m --cpus 0.25 $D || { show; return 1; }
    r "${P[@]}" exec $D cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us ||
        { show; return 1; }
    expect_out $'134217728\n25000'
}
t "podman update --memory 128m --cpus 0.25 (runtime update --resources)" p_update

p_inspect_runtime() {
    r "${P[@]}" inspect -f '{{.OCIRuntime}}' $D || { show; return 1; }
    expect_out "$PODMAN_RT"
}
t "podman inspect: OCIRuntime is the --runtime path" p_inspect_runtime

p_restart() {
    r "${P[@]}" restart -t 1 $D || { show; return 1; }
    r "${P[@]}" inspect -f '{{.State.Status}}' $D
    expect_out running || return 1
    r "${P[@]}" exec $D echo alive || { show; return 1; }
    expect_out alive
}
t "podman restart -t 1" p_restart

p_stop() {
    local t0=$SECONDS
    r "${P[@]}" stop -t 2 $D || { show; return 1; }
    [ $((SECONDS - t0)) -le 15 ] || { diag "stop took $((SECONDS - t0))s"; return 1; }
    r "${P[@]}" inspect -f '{{.State.Status}}' $D
    expect_out exited
}
t "podman stop -t 2 (SIGTERM ignored by pid 1, then SIGKILL)" p_stop

p_rm() {
    r "${P[@]}" rm $D || { show; return 1; }
    r "${P[@]}" ps -a --format '{{.Names}}'
    grep -qx $D "$OUT" && { diag "$D still listed by podman ps -a"; return 1; }
    [ -n "$DID" ] && [ -e "/run/hyperjail/$DID" ] && { diag "/run/hyperjail/$DID is still there"; return 1; }
    return 0
}
t "podman rm: gone from podman and from hyperjail's state" p_rm

p_wait() {
    r "${PN[@]}" -d --name hj-wait "$IMG" sh -c 'sleep 1; exit 7' || { show; return 1; }
    r "${P[@]}" wait hj-wait || { show; return 1; }
    expect_out 7 || return 1
    r "${P[@]}" rm hj-wait || { show; return 1; }
}
t "podman run -d; podman wait gives exit status 7" p_wait

p_run_tty() {
    rtty_ok "${PN[*]} --rm -t $IMG tty" || return 1
    grep -q '^/dev/pts/0$' "$OUT" || { diag "tty in the container is not /dev/pts/0"; show; return 1; }
}
t "podman run --rm -t IMG tty (console socket): /dev/pts/0" p_run_tty

# The VM backend through podman: the annotation routes the container into the
# microVM, with its own kernel; stdio, exit status and the terminal pass through.
VM_ANN=(--annotation org.hyperjail.backend=vm)
p_vm_run() {
    r "${PN[@]}" --rm "${VM_ANN[@]}" "$IMG" uname -r || { show; return 1; }
    expect_out "0.1.0-hyperjail" || return 1
    r "${PN[@]}" --rm "${VM_ANN[@]}" "$IMG" sh -c 'echo in the vm; exit 3'
    expect_rc 3 $? || return 1
    expect_out "in the vm"
}
p_vm_tty() {
    rtty_ok "${PN[*]} --rm -t ${VM_ANN[*]} $IMG sh -c 'test -t 0 && test -t 1 && echo a-terminal'" || return 1
    grep -q '^a-terminal$' "$OUT" || { diag "stdin/stdout in the VM are not a terminal"; show; return 1; }
}
VD=hj-vm-detached
p_vm_exec() {
    r "${PN[@]}" -d --name $VD "${VM_ANN[@]}" "$IMG" sh -c 'exec sleep 1000' || { show; return 1; }
    r "${P[@]}" exec $VD sh -c 'uname -r; echo ppid=$PPID' || { show; return 1; }
    expect_out $'0.1.0-hyperjail\nppid=0' || return 1
    r "${P[@]}" exec $VD sh -c 'exit 6'
    expect_rc 6 $? || return 1
    rtty_ok "${P[*]} exec -t $VD sh -c 'test -t 0 && test -t 1 && echo a-terminal'" || return 1
    grep -q '^a-terminal$' "$OUT" || { diag "stdin/stdout of the exec in the VM are not a terminal"; show; return 1; }
}
p_vm_rm() {
    r "${P[@]}" rm -f -t 0 $VD || { show; return 1; }
}
if [ -c /dev/kvm ]; then
    t "podman run --annotation org.hyperjail.backend=vm: uname -r is the guest kernel's, exit 3" p_vm_run
    t "podman run --rm -t in the VM (console socket): stdin and stdout are a terminal" p_vm_tty
    t "podman exec into a VM container: the guest's kernel, ppid 0, exit 6, exec -t" p_vm_exec
    t "podman rm -f of the VM container" p_vm_rm
else
    skip "podman run in the VM" "no /dev/kvm"
    skip "podman run -t in the VM" "no /dev/kvm"
    skip "podman exec into a VM container" "no /dev/kvm"
    skip "podman rm -f of the VM container" "no /dev/kvm"
fi

p_limits() {
    r "${PN[@]}" -d --name hj-limits --memory 64m --cpus 0.5 --pids-limit 50 "$IMG" sleep 1000 ||
        { show; return 1; }
    r "${P[@]}" exec hj-limits cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
        /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/pids/pids.max ||
        { show; return 1; }
    expect_out $'67108864\n50000\n100000\n50' || return 1
    # The same from the host, in the cgroups of the container's process.
    local pid cg got
    pid=$("${P[@]}" inspect -f '{{.State.Pid}}' hj-limits)
    cg=$(awk -F: '$2=="memory"{print $3}' "/proc/$pid/cgroup")
    got=$(cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" 2>&1)
    [ "$got" = 67108864 ] || { diag "host memory$cg/memory.limit_in_bytes: $got"; return 1; }
    cg=$(awk -F: '$2=="pids"{print $3}' "/proc/$pid/cgroup")
    got=$(cat "/sys/fs/cgroup/pids$cg/pids.max" 2>&1)
    [ "$got" = 50 ] || { diag "host pids$cg/pids.max: $got"; return 1; }
    r "${P[@]}" rm -f -t 0 hj-limits || { show; return 1; }
}
t "podman run --memory 64m --cpus 0.5 --pids-limit 50: cgroup values inside and on the host" p_limits

p_capdrop() {
    r "${PN[@]}" --rm --cap-drop ALL "$IMG" grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status || { show; return 1; }
    expect_out $'CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000'
}
t "podman run --cap-drop ALL: no capabilities" p_capdrop

p_readonly() {
    r "${PN[@]}" --rm --read-only "$IMG" sh -c 'touch /x 2>/dev/null && echo rw || echo ro; touch /tmp/y && echo tmp-ok' ||
        { show; return 1; }
    expect_out $'ro\ntmp-ok'
}
t "podman run --read-only: / is read-only, /tmp (tmpfs, tmpcopyup) writable" p_readonly

p_user() {
    r "${PN[@]}" --rm --user 65534 "$IMG" id -u || { show; return 1; }
    expect_out 65534
}
t "podman run --user 65534" p_user

p_env_workdir() {
    r "${PN[@]}" --rm --env FOO=bar --workdir /tmp "$IMG" sh -c 'echo $FOO; pwd' || { show; return 1; }
    expect_out $'bar\n/tmp'
}
t "podman run --env FOO=bar --workdir /tmp" p_env_workdir

p_tmpfs() {
    r "${PN[@]}" --rm --tmpfs /scratch "$IMG" sh -c 'grep " /scratch " /proc/mounts | cut -d" " -f3; echo x > /scratch/f && cat /scratch/f' ||
        { show; return 1; }
    expect_out $'tmpfs\nx'
}
t "podman run --tmpfs /scratch" p_tmpfs

p_volume() {
    mkdir -p "$T/hostdir"
    echo from-host >"$T/hostdir/in"
    r "${PN[@]}" --rm -v "$T/hostdir:/data" "$IMG" sh -c 'cat /data/in; echo from-ctr > /data/out' || { show; return 1; }
    expect_out from-host || return 1
    [ "$(cat "$T/hostdir/out" 2>&1)" = from-ctr ] || { diag "host file: $(cat "$T/hostdir/out" 2>&1)"; return 1; }
}
t "podman run -v HOSTDIR:/data (read and write)" p_volume

# ---------------------------------------------------------------- containerd

C=$T/ctrd
mkdir -p "$C"
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
# The CRI plugin wants CNI; ctr does not need it.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.runtime.v2.task"]
  # no shim binary path: containerd-shim-runc-v2 from PATH

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  # For CRI clients; ctr passes the runc options itself (--runc-binary, --runc-root).
  BinaryName = "$CTRD_RT"
  Root = "$C/hjroot"
EOF
CTR=(ctr --address "$SOCK" -n $NS)
# ctr sends the runc shim options (binary and state root) with each container.
RUNC_OPTS=(--runc-binary "$CTRD_RT" --runc-root "$C/hjroot")

c_start() {
    containerd --config "$C/config.toml" >"$C/containerd.log" 2>&1 &
    CTRD_PID=$!
    local i
    for i in $(seq 100); do
        [ -S "$SOCK" ] && ctr --address "$SOCK" version >/dev/null 2>&1 && break
        kill -0 "$CTRD_PID" 2>/dev/null || break
        sleep 0.1
    done
    r ctr --address "$SOCK" version || { diag "containerd did not come up:" "$(tail -20 "$C/containerd.log")"; return 1; }
    r podman save --format oci-archive -o "$T/image-oci.tar" "$IMG" || { show; return 1; }
    r "${CTR[@]}" image import --base-name "${IMG%:*}" "$T/image-oci.tar" || { show; return 1; }
    r "${CTR[@]}" image ls -q || { show; return 1; }
    grep -qx "$IMG" "$OUT" || { diag "ctr image ls does not list $IMG"; show; return 1; }
}
t "containerd: private daemon up, image imported (podman save --format oci-archive)" c_start

c_run_echo() {
    r "${CTR[@]}" run --rm "${RUNC_OPTS[@]}" "$IMG" t1 echo hi || { show; return 1; }
    expect_out hi
}
t "ctr run --rm --runc-binary HYPERJAIL IMG t1 echo hi" c_run_echo

c_exit_code() {
    r "${CTR[@]}" run --rm "${RUNC_OPTS[@]}" "$IMG" t1b sh -c 'exit 3'
    expect_rc 3 $?
}
t "ctr run: exit status 3 passed through" c_exit_code

c_missing_cmd() {
    r "${CTR[@]}" run --rm "${RUNC_OPTS[@]}" "$IMG" t1c /nonexistent
    local rc=$?
    "${CTR[@]}" container delete t1c >/dev/null 2>&1
    [ $rc -ne 0 ] || { diag "ctr run of /nonexistent succeeded"; show; return 1; }
    grep -q 'OCI runtime create failed: .*exec: "/nonexistent"' "$ERR" ||
        { diag "the runtime's error (from --log log.json) did not reach ctr"; show; return 1; }
}
t "ctr run of a missing command: the runtime's JSON log error reaches ctr" c_missing_cmd

c_run_tty() {
    rtty "${CTR[*]} run --rm -t ${RUNC_OPTS[*]} $IMG t1d tty"
    local rc=$?
    expect_rc 0 $rc || return 1
    # the terminal echoes a NUL that ctr writes as ^@
    tr -d '\r\0' <"$OUT" | sed 's/^\^@//' >"$OUT.x" && mv "$OUT.x" "$OUT"
    grep -q '^/dev/pts/0$' "$OUT" || { diag "tty in the container is not /dev/pts/0"; show; return 1; }
}
t "ctr run --rm -t (console socket): tty is /dev/pts/0" c_run_tty

c_opts() {
    r "${CTR[@]}" run --rm "${RUNC_OPTS[@]}" --read-only --env FOO=bar --cwd /tmp "$IMG" t1e sh -c \
        'touch /x 2>/dev/null && echo rw || echo ro; echo $FOO; pwd' || { show; return 1; }
    expect_out $'ro\nbar\n/tmp'
}
t "ctr run --read-only --env FOO=bar --cwd /tmp" c_opts

c_limits() {
    # ctr's default spec has no cgroup mount: read the values from the host.
    r "${CTR[@]}" run -d "${RUNC_OPTS[@]}" --memory-limit 67108864 --cpus 0.5 "$IMG" t1f sleep 1000 ||
        { show; return 1; }
    local pid cg got rc=0
    pid=$(awk '$1=="t1f"{print $2}' < <("${CTR[@]}" task ls))
    cg=$(awk -F: '$2=="memory"{print $3}' "/proc/$pid/cgroup" 2>/dev/null)
    got=$(cat "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" 2>&1)
    [ "$got" = 67108864 ] || { diag "pid $pid: host memory$cg/memory.limit_in_bytes: $got"; rc=1; }
    cg=$(awk -F: '$2=="cpu"{print $3}' "/proc/$pid/cgroup" 2>/dev/null)
    got=$(cat "/sys/fs/cgroup/cpu$cg/cpu.cfs_quota_us" 2>&1)
    [ "$got" = 50000 ] || { diag "pid $pid: host cpu$cg/cpu.cfs_quota_us: $got"; rc=1; }
    "${CTR[@]}" task kill -s SIGKILL t1f >/dev/null 2>&1
    local i
    for i in $(seq 50); do
        "${CTR[@]}" task delete t1f >/dev/null 2>&1 && break
        sleep 0.1
    done
    "${CTR[@]}" container delete t1f >/dev/null 2>&1
    return $rc
}
t "ctr run -d --memory-limit 64M --cpus 0.5: host cgroup values" c_limits

c_run_d() {
    r "${CTR[@]}" run -d "${RUNC_OPTS[@]}" "$IMG" t2 sleep 1000 || { show; return 1; }
    r "${CTR[@]}" task ls || { show; return 1; }
    grep -qE '^t2 +[0-9]+ +RUNNING' "$OUT" || { diag "t2 is not RUNNING"; show; return 1; }
}
t "ctr run -d t2 sleep 1000: task RUNNING" c_run_d

c_exec() {
    r "${CTR[@]}" task exec --exec-id e1 t2 echo hi || { show; return 1; }
    expect_out hi
}
t "ctr task exec --exec-id e1 t2 echo hi" c_exec

c_exec_rc() {
    r "${CTR[@]}" task exec --exec-id e2 t2 sh -c 'exit 5'
    expect_rc 5 $?
}
t "ctr task exec: exit status 5 passed through" c_exec_rc

c_exec_tty() {
    rtty "${CTR[*]} task exec -t --exec-id e3 t2 tty"
    tr -d '\r\0' <"$OUT" | sed 's/^\^@//' >"$OUT.x" && mv "$OUT.x" "$OUT"
    grep -q '^/dev/pts/[0-9]*$' "$OUT" || { diag "tty in the exec is not a pts"; show; return 1; }
}
t "ctr task exec -t (console socket): tty is /dev/pts/N" c_exec_tty

c_pause_resume() {
    r "${CTR[@]}" task pause t2 || { show; return 1; }
    r "${CTR[@]}" task ls
    grep -qE '^t2 +[0-9]+ +PAUSED' "$OUT" || { diag "t2 is not PAUSED"; show; return 1; }
    r "${CTR[@]}" task resume t2 || { show; return 1; }
    r "${CTR[@]}" task ls
    grep -qE '^t2 +[0-9]+ +RUNNING' "$OUT" || { diag "t2 is not RUNNING after resume"; show; return 1; }
}
t "ctr task pause / resume" c_pause_resume

c_metrics() {
    r "${CTR[@]}" task metrics t2 || { show; return 1; }
    grep -qE '^memory.usage_in_bytes +[1-9]' "$OUT" && grep -qE '^pids.current +1' "$OUT" ||
        { diag "metrics lack memory usage or pids.current 1"; show; return 1; }
}
t "ctr task metrics" c_metrics

c_ps() {
    local pid
    pid=$(awk '$1=="t2"{print $2}' < <("${CTR[@]}" task ls))
    r "${CTR[@]}" task ps t2 || { show; return 1; }
    grep -qE "^$pid\b" "$OUT" || { diag "task ps does not list the init pid $pid"; show; return 1; }
}
t "ctr task ps (runtime ps --format json)" c_ps

c_kill_delete() {
    r "${CTR[@]}" task kill -s SIGKILL t2 || { show; return 1; }
    local i
    for i in $(seq 50); do
        "${CTR[@]}" task ls 2>/dev/null | grep -qE '^t2 +[0-9]+ +STOPPED' && break
        sleep 0.1
    done
    r "${CTR[@]}" task ls
    grep -qE '^t2 +[0-9]+ +STOPPED' "$OUT" || { diag "t2 not STOPPED after SIGKILL"; show; return 1; }
    r "${CTR[@]}" task delete t2 || { show; return 1; }
    r "${CTR[@]}" task ls -q
    grep -qx t2 "$OUT" && { diag "task t2 still listed after task delete"; return 1; }
    r "${CTR[@]}" container delete t2 || { show; return 1; }
    [ -e "$C/hjroot/$NS/t2" ] && { diag "hyperjail state $C/hjroot/$NS/t2 left"; return 1; }
    return 0
}
t "ctr task kill -s SIGKILL, task delete, container delete" c_kill_delete

c_shim_cleanup() {
    # When a shim exits, `containerd-shim-runc-v2 delete` calls `RUNTIME delete
    # --force ID` for a container already deleted; runc exits 0 there. (containerd
    # logs "failed to remove runc container" otherwise; that log line alone is not
    # the test, because go-runc's reaper race sometimes reports 255 for runc too.)
    local line pid rc bad=0
    while read -r line; do
        pid=$(sed -n 's/.* containerd pid=\([0-9]*\) argv: .* delete --force .*/\1/p' <<<"$line")
        [ -n "$pid" ] || continue
        rc=$(sed -n "s/.* containerd pid=$pid exit=\([0-9]*\)\$/\1/p" "$ARGV_LOG")
        if [ "$rc" != 0 ]; then
            bad=$((bad + 1))
            diag "exit ${rc:-?}: ${line#*argv: }"
        fi
    done < <(grep ' containerd pid=[0-9]* argv: .* delete --force ' "$ARGV_LOG")
    if [ $bad -gt 0 ]; then
        diag "containerd.log: $(grep -m1 'failed to remove runc container' "$C/containerd.log" |
            sed 's/\\n/ /g; s/\\"/"/g' | cut -c1-600)"
        return 1
    fi
}
t "containerd shim cleanup: delete --force of an already deleted id exits 0" c_shim_cleanup

# ---------------------------------------------------------------- cleanup check

final_check() {
    "${P[@]}" rm -af -t 0 >/dev/null 2>&1
    local c
    for c in $("${CTR[@]}" container ls -q 2>/dev/null); do
        diag "containerd container left: $c"
    done
    local s
    s=$(leftover_state)
    [ -n "$s" ] && diag "hyperjail state left: $s"
    local p
    for p in $(procs_under_t); do
        [ "$p" = "$CTRD_PID" ] && continue
        diag "process left: $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"
    done
    local m
    m=$(mounts_under_t)
    [ -n "$m" ] && diag "mounts left: $m"
    [ ! -s "$T/diag" ]
}
t "no containers, hyperjail state, processes or mounts left" final_check

# ---------------------------------------------------------------- argv summary

for e in podman containerd; do
    echo "# runtime calls by $e (count, verb and flags):"
    if [ -s "$T/summary.$e" ]; then
        sort "$T/summary.$e" | uniq -c | sort -rn | sed 's/^/#   /'
    fi
done
nz=$(grep -cE ' exit=[1-9]' "$ARGV_LOG")
if [ "${HJ_ENGINES_KEEP:-0}" = 1 ]; then
    echo "# runtime calls that exited non-zero: $nz (all calls: $ARGV_LOG)"
else
    echo "# runtime calls that exited non-zero: $nz (HJ_ENGINES_KEEP=1 keeps the log of all calls)"
fi

summary
[ "$failed" -eq 0 ]
