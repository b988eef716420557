# hyperjail: build, test, demo and benchmark entry points.
# On a fresh Debian 12 machine, as root: `make demo`, `make test`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# cargo from rustup even when ~/.cargo/bin is not in PATH (CI, sudo, cron).
CARGO_BIN_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
export PATH := $(CARGO_BIN_DIR):$(PATH)
CARGO ?= cargo

# The integration tests in tests/ drive this binary.
export HYPERJAIL_BIN := $(CURDIR)/target/release/hyperjail
export HYPERJAIL := $(HYPERJAIL_BIN)

.PHONY: all deps build demo test require-root bench-lifecycle fmt clippy clean

all: build

deps:
	scripts/deps.sh

build: deps
	$(CARGO) build --release

demo: build
	scripts/demo.sh

require-root:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make: the tests need root (namespaces, cgroups, mounts); run 'make $(MAKECMDGOALS)' as root" >&2; \
		exit 1; \
	fi

# Unit and integration tests build in the dev profile (fast to compile); the
# integration tests drive the release binary (HYPERJAIL_BIN). Lints are part of it.
test: require-root deps build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace -- --test-threads=1
	scripts/engine-deps.sh
	tests/engines/run.sh

bench-lifecycle: require-root build
	scripts/bench-lifecycle.sh

fmt:
	$(CARGO) fmt --all

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf bench-results
