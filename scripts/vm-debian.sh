#!/usr/bin/env bash
# Runs Debian's own programs unmodified in the VM backend: dash, coreutils and
# python3 from a minbase `debootstrap` of bookworm (plus python3), each checked by
# its output, and lists the system calls the guest kernel reported as unsupported.
#
# Needs root, /dev/kvm and the Debian mirror (apt's). The rootfs is built once into
# $DEBIAN_ROOTFS (default /var/tmp/hyperjail-debian) and reused.
# Usage: scripts/vm-debian.sh   (or `make vm-debian`)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
HJ=${HJ:-$repo/target/release/hyperjail}
ROOTFS=${DEBIAN_ROOTFS:-/var/tmp/hyperjail-debian}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

die() { echo "vm-debian: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
[ -c /dev/kvm ] || die "no /dev/kvm"
[ -x "$HJ" ] || die "no $HJ (make build)"

if [ ! -x "$ROOTFS/usr/bin/python3" ]; then
    command -v debootstrap >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
    rm -rf "$ROOTFS.tmp"
    echo "vm-debian: debootstrap --variant=minbase bookworm into $ROOTFS"
    debootstrap --variant=minbase bookworm "$ROOTFS.tmp" "$MIRROR" >/dev/null
    cp /etc/resolv.conf "$ROOTFS.tmp/etc/resolv.conf"
    DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS.tmp" apt-get install -y -q python3 >/dev/null
    mv "$ROOTFS.tmp" "$ROOTFS"
fi

work=$(mktemp -d)
root=$(mktemp -d)
trap '"$HJ" --root "$root" delete -f vm-debian >/dev/null 2>&1 || true; rm -rf "$work" "$root"' EXIT
(cd "$work" && "$HJ" spec >/dev/null)
python3 - "$work/config.json" "$ROOTFS" <<'EOF'
import json, sys
path, rootfs = sys.argv[1:]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": False}
c["process"]["terminal"] = False
c["annotations"] = {"org.hyperjail.backend": "vm"}
c["linux"]["resources"] = {"memory": {"limit": 256 << 20}}
json.dump(c, open(path, "w"))
EOF

pass=0
fail=0
# check NAME EXPECTED ARGS...: runs ARGS in the VM; its stdout must be EXPECTED.
check() {
    local name=$1 want=$2
    shift 2
    python3 - "$work/config.json" "$@" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = sys.argv[2:]
json.dump(c, open(sys.argv[1], "w"))
EOF
    local got rc=0
    got=$(timeout 120 "$HJ" --root "$root" run --bundle "$work" vm-debian 2>>"$work/stderr") || rc=$?
    "$HJ" --root "$root" delete -f vm-debian >/dev/null 2>&1 || true
    if [ "$rc" = 0 ] && [ "$got" = "$want" ]; then
        echo "PASS $name"
        pass=$((pass + 1))
    else
        echo "FAIL $name (exit $rc)"
        printf '  want: %q\n  got:  %q\n' "$want" "$got"
        fail=$((fail + 1))
    fi
}

check "dash: pipeline, arithmetic, command substitution" $'dash\n12\nX\n2\n3\nsub' \
    /bin/dash -c 'echo dash; echo $((3*4)); for i in 1 2 3; do echo $i; done | tr 1 X; echo $(echo sub)'
check "coreutils: sort, wc, seq, paste, sha256sum, id" \
    $'/usr/bin/sh\n18 /etc/passwd\n1+2+3\nedeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb  -\nuid=0(root) gid=0(root) groups=0(root)' \
    /bin/sh -c 'sort -r /etc/shells | head -1; wc -l /etc/passwd; seq 3 | paste -sd+; echo abc | sha256sum; id'
check "coreutils: ls, mkdir, cp, mv, rm, stat" $'a\nb\n6' \
    /bin/sh -c 'd=$(mktemp -d); cd $d; mkdir a; echo hello > a/f; cp -r a b; mv b/f b/g; ls; stat -c %s b/g; rm -r a b; cd /; rmdir $d'
check "python3 -c: arithmetic, os" $'332833500\n1' \
    /usr/bin/python3 -c 'import os; print(sum(i*i for i in range(1000))); print(os.getpid())'
check "python3: threads, subprocess, json, hashlib, tempfile, alarm" \
    $'threads [0, 1, 4, 9]\nsubprocess hi\njson {"a": [1, 2]} ba7816bf\ntmp 10\nalarm' \
    /usr/bin/python3 -c '
import threading, subprocess, json, hashlib, tempfile, os, signal, time
r = []
ts = [threading.Thread(target=lambda i=i: r.append(i * i)) for i in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("threads", sorted(r))
print("subprocess", subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip())
print("json", json.dumps({"a": [1, 2]}), hashlib.sha256(b"abc").hexdigest()[:8])
with tempfile.TemporaryDirectory() as d:
    p = os.path.join(d, "f"); open(p, "w").write("x" * 10); print("tmp", os.path.getsize(p))
signal.signal(signal.SIGALRM, lambda *a: print("alarm", flush=True)); signal.alarm(1); time.sleep(1.5)'

check "python3 asyncio: gather, sleep, a subprocess" "asyncio ([0, 1, 2], 'sub')" \
    /usr/bin/python3 -c '
import asyncio
async def main():
    r = await asyncio.gather(*(asyncio.sleep(0.05, result=i) for i in range(3)))
    p = await asyncio.create_subprocess_exec("echo", "sub", stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return r, out.decode().strip()
print("asyncio", asyncio.run(main()))'

echo "vm-debian: $pass passed, $fail failed"
echo "vm-debian: system calls the guest kernel does not implement (it returned ENOSYS):"
grep -o 'unsupported system call [0-9]* ([a-z0-9_]*)' "$work/stderr" | sort -u | sed 's/^/  /' || echo "  none"
[ "$fail" = 0 ]
