#!/usr/bin/env bash
# Install what tests/engines/run.sh needs on Debian 12: podman (with conmon and
# containers-common), containerd (with ctr), and script(1) from util-linux.
# Idempotent and non-interactive: checks each package with dpkg-query and runs
# apt-get (update + install) only when something is missing, which needs root.
# No recommends: no buildah, slirp4netns, fuse-overlayfs or netavark; the tests
# use --network none, the vfs storage driver and images built from busybox-static.
set -euo pipefail

PACKAGES=(
    podman conmon golang-github-containers-common
    containerd
    runc busybox-static util-linux jq
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "engine-deps.sh: all Debian packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "engine-deps.sh: missing ${missing[*]}; run as root to install them" >&2
    exit 1
fi
echo "engine-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# containerd's Debian package enables and starts a system containerd; the tests
# run their own private daemon, so the system one is left as the package set it.
