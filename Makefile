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

.PHONY: all deps build demo test require-root bench-lifecycle bench-scale bench-sched bench-vm vm-debian fmt clippy clean fuzz

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

# N (default 200) live containers per runtime: list/state/ps/events, create+start growth.
bench-scale: require-root build
	scripts/bench-scale.sh

# Scheduler fidelity (Credit, RTDS, ARINC 653 on a one-CPU pool); DURATION=s per measurement.
bench-sched: require-root build
	scripts/bench-sched.sh

# VM backend vs. jail, crun, runc, runsc: run of true, start latency, CPU, syscalls, VMM RSS.
bench-vm: require-root build
	scripts/bench-vm.sh

# Debian's dash, coreutils and python3 (a minbase debootstrap, built once) in the VM.
vm-debian: require-root build
	scripts/vm-debian.sh

fmt:
	$(CARGO) fmt --all

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# cargo-fuzz targets (fuzz/, not a workspace member), one after the other, each for
# FUZZ_SECONDS. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 lets stable take them.
# Seeds are in fuzz/corpus-seeds/TARGET; the corpus grows in fuzz/corpus/TARGET and
# crashing inputs land in fuzz/artifacts/TARGET (both gitignored). The JSON targets
# use fuzz/oci.dict (JSON syntax, runtime-spec keys and values).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config state cli_args seccomp signal resources process mount_options vm_hcall

fuzz: deps
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build -O
	fail=0; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		mkdir -p fuzz/corpus/$$t; \
		case $$t in cli_args|signal) dict= ;; *) dict=-dict=oci.dict ;; esac; \
		(cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t corpus/$$t corpus-seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 $$dict) || fail=1; \
	done; \
	if [ $$fail -ne 0 ]; then echo "make: a fuzz target failed; crashing inputs are in fuzz/artifacts/" >&2; exit 1; fi

clean:
	$(CARGO) clean
	rm -rf bench-results
