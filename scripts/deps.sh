#!/usr/bin/env bash
# Install what hyperjail's build, tests, demo and benchmarks need on Debian 12.
# Idempotent and non-interactive: checks each package with dpkg-query and runs
# apt-get (update + install) only when something is missing, which needs root.
set -euo pipefail

PACKAGES=(
    # build
    gcc binutils libc6-dev pkg-config libseccomp-dev
    # test bundles, tests and scripts
    busybox-static bats jq python3 procps util-linux iproute2
    # benchmarks: the other runtimes, timers, max-RSS
    runc crun hyperfine time
    # fetching a Rust toolchain when none is installed
    curl ca-certificates
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps.sh: missing ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "deps.sh: all Debian packages present"
fi

# Rust: the workspace needs a newer toolchain (rust-version in Cargo.toml) than
# Debian 12's rustc 1.63, so use rustup's stable toolchain when cargo is absent
# or too old. The Makefile puts ~/.cargo/bin first in PATH, as we do here.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml" | head -1)
want=${want:-1.80}
have=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if command -v cargo >/dev/null 2>&1 && [ -n "$have" ] &&
    [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" = "$want" ]; then
    echo "deps.sh: cargo present ($(cargo --version)), rustc $have >= $want"
elif command -v rustup >/dev/null 2>&1; then
    echo "deps.sh: rustc ${have:-missing} is older than $want; updating the stable toolchain"
    rustup toolchain install stable --profile minimal -c clippy -c rustfmt
    rustup default stable
else
    echo "deps.sh: no Rust toolchain >= $want; installing the stable one with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal -c clippy -c rustfmt
fi
