#!/usr/bin/env bash
# A short tour of hyperjail: one container in the foreground, one detached
# container in `list`, then clean up. Needs root and target/release/hyperjail
# (or $HYPERJAIL); `make demo` builds it first.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERJAIL=${HYPERJAIL:-$repo/target/release/hyperjail}

if [ -t 1 ]; then
    section() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
    section() { printf '\n==> %s\n' "$*"; }
fi
die() { echo "demo.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (containers need namespaces and cgroups)"
[ -x "$HYPERJAIL" ] || die "no hyperjail binary at $HYPERJAIL (run 'make build')"

work=$(mktemp -d /tmp/hyperjail-demo.XXXXXX)
root=$work/state
hj() { "$HYPERJAIL" --root "$root" "$@"; }
hello_id=demo-hello-$$
detached_id=demo-sleeper-$$

cleanup() {
    if [ -d "$root/$detached_id" ]; then
        hj delete --force "$detached_id" >/dev/null 2>&1 || true
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

section "hyperjail $("$HYPERJAIL" --version | awk '{print $2}') at $HYPERJAIL (state under $root)"

section "Building a busybox bundle in $work/hello"
"$repo/scripts/mkbundle.sh" "$work/hello" \
    sh -c 'echo hello from the jail; uname -a; hostname; id; cat /proc/self/cgroup | head -3'

section "hyperjail run --bundle $work/hello $hello_id"
set +e
hj run --bundle "$work/hello" "$hello_id"
rc=$?
set -e
echo "(exit status $rc)"
[ "$rc" -eq 0 ] || die "hyperjail run failed with exit status $rc"

section "hyperjail run --detach --bundle $work/sleeper $detached_id   (sleep 30)"
"$repo/scripts/mkbundle.sh" "$work/sleeper" sleep 30
# The container's stdio would otherwise hold our stdout open for 30 s.
if ! hj run --detach --bundle "$work/sleeper" "$detached_id" \
        </dev/null >"$work/sleeper.out" 2>&1; then
    cat "$work/sleeper.out" >&2
    die "hyperjail run --detach failed"
fi

section "hyperjail list"
hj list

section "hyperjail state $detached_id"
hj state "$detached_id"

section "hyperjail delete --force $detached_id"
hj delete --force "$detached_id"
hj list

section "VM backend: uname -a in a KVM microVM (org.hyperjail.backend=vm) next to the jail"
if [ -c /dev/kvm ]; then
    "$repo/scripts/mkbundle.sh" "$work/vm" uname -a >/dev/null
    jq '.annotations["org.hyperjail.backend"] = "vm"' "$work/vm/config.json" >"$work/vm/config.json.new"
    mv "$work/vm/config.json.new" "$work/vm/config.json"
    printf 'jail: '
    "$repo/scripts/mkbundle.sh" "$work/jail" uname -a >/dev/null
    hj run --bundle "$work/jail" "demo-jail-$$"
    printf 'vm:   '
    hj run --bundle "$work/vm" "demo-vm-$$" || echo "(the VM backend failed on this machine; see the error above)"
else
    echo "No /dev/kvm on this machine: the VM backend is not available here."
fi

section "Done"
