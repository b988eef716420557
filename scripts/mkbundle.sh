#!/usr/bin/env bash
# Build a busybox OCI bundle.
#
#   scripts/mkbundle.sh DIR [ARG...]
#
# DIR/rootfs gets a copy of Debian's static /bin/busybox (package busybox-static)
# with a symlink per applet in /bin, the usual empty directories and an
# /etc/passwd and /etc/group with root and nobody (65534). DIR/config.json is the
# one `hyperjail spec` writes, with process.terminal=false and process.args set to
# ARG... (default: sh). The hyperjail binary is $HYPERJAIL, default
# target/release/hyperjail in this repository.
set -euo pipefail

usage() { echo "usage: $0 DIR [ARG...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
[ $# -ge 1 ] || set -- sh

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hyperjail=${HYPERJAIL:-$repo/target/release/hyperjail}
busybox=${BUSYBOX:-/bin/busybox}

die() { echo "mkbundle.sh: $*" >&2; exit 1; }
[ -x "$hyperjail" ] || die "no hyperjail binary at $hyperjail (run 'cargo build --release' or set HYPERJAIL)"
[ -x "$busybox" ] || die "no $busybox (apt-get install busybox-static, or run scripts/deps.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install busybox-static (not busybox)"
fi
command -v jq >/dev/null || die "jq not found (run scripts/deps.sh)"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rootfs=$dir/rootfs

# Start from scratch so a re-run gives the same bundle; never cross into
# something still mounted below rootfs.
rm -rf --one-file-system "$rootfs" "$dir/config.json"
mkdir -p "$rootfs"/{bin,proc,sys,dev,etc,tmp,root}
chmod 1777 "$rootfs/tmp"
chmod 700 "$rootfs/root"

cp "$busybox" "$rootfs/bin/busybox"
chmod 755 "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] && continue
    ln -s busybox "$rootfs/bin/$applet"
done

cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP

"$hyperjail" spec --bundle "$dir"
tmp=$(mktemp "$dir/config.json.XXXXXX")
# Encode each argument on its own: jq 1.6 would parse an argument such as "-c"
# given after --args as one of its own options.
args_json=$(for a in "$@"; do printf '%s' "$a" | jq -Rs .; done | jq -cs .)
jq --argjson args "$args_json" '.process.terminal = false | .process.args = $args' \
    "$dir/config.json" > "$tmp"
mv "$tmp" "$dir/config.json"
chmod 644 "$dir/config.json"

echo "mkbundle.sh: bundle at $dir (args: $*)"
