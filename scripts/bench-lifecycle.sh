#!/usr/bin/env bash
# Lifecycle benchmark: wall time of `RUNTIME run` of busybox `true`, hyperjail
# against runc and crun from Debian, on one bundle, in one run.
#
# Runs are interleaved: each of N rounds (env N, default 200) runs every runtime
# once, in an order that rotates from round to round, so drift on the machine
# hits all runtimes alike. Every runtime has its own --root and every run its
# own container id. Then RSS_RUNS (default 20) more interleaved runs per runtime
# under /usr/bin/time -f %M give the peak RSS.
#
# Output: a table on stdout, bench-results/lifecycle.csv (summary) and
# bench-results/lifecycle-samples.csv (every timed run).
#
# Env: N, RSS_RUNS, WARMUP (default 3), HYPERJAIL (default
# target/release/hyperjail), RUNC (default /usr/sbin/runc), CRUN (default
# /usr/bin/crun), OUT_DIR (default bench-results).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERJAIL=${HYPERJAIL:-$repo/target/release/hyperjail}
RUNC=${RUNC:-/usr/sbin/runc}
CRUN=${CRUN:-/usr/bin/crun}
N=${N:-200}
RSS_RUNS=${RSS_RUNS:-20}
WARMUP=${WARMUP:-3}
OUT_DIR=${OUT_DIR:-$repo/bench-results}

die() { echo "bench-lifecycle: error: $*" >&2; exit 1; }
note() { echo "bench-lifecycle: $*"; }
# shellcheck source=scripts/bench-common.sh
. "$repo/scripts/bench-common.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (containers need namespaces and cgroups)"
[ -x "$HYPERJAIL" ] || die "no hyperjail binary at $HYPERJAIL (run 'make build')"
[ -x "$RUNC" ] || die "no runc at $RUNC (apt-get install runc, or scripts/deps.sh)"
[ -x "$CRUN" ] || die "no crun at $CRUN (apt-get install crun, or scripts/deps.sh)"
[ -x /usr/bin/time ] || die "no /usr/bin/time (apt-get install time, or scripts/deps.sh)"
command -v python3 >/dev/null || die "python3 not found (scripts/deps.sh)"
command -v jq >/dev/null || die "jq not found (scripts/deps.sh)"
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, not '$N'"
[[ "$RSS_RUNS" =~ ^[1-9][0-9]*$ ]] || die "RSS_RUNS must be a positive integer, not '$RSS_RUNS'"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a non-negative integer, not '$WARMUP'"

work=$(mktemp -d /tmp/hyperjail-bench.XXXXXX)
cleanup() {
    # Anything a failed run left behind, then the files.
    local rt name
    for rt in "hyperjail:$HYPERJAIL" "runc:$RUNC" "crun:$CRUN"; do
        name=${rt%%:*}
        [ -d "$work/root-$name" ] || continue
        for id in $("${rt#*:}" --root "$work/root-$name" list -q 2>/dev/null); do
            "${rt#*:}" --root "$work/root-$name" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

bundle=$work/bundle
"$repo/scripts/mkbundle.sh" "$bundle" true >/dev/null

# Bundle adaptations, the same config for all three runtimes:
# - crun 1.8.1 accepts only ociVersion 1.0.x ("unknown version specified" for
#   the 1.2.0 that `hyperjail spec` writes); runc and hyperjail accept 1.0.2-dev.
jq '.ociVersion = "1.0.2-dev"' "$bundle/config.json" > "$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"
note "bundle: $bundle (busybox true); ociVersion set to 1.0.2-dev because crun 1.8.1 rejects 1.2.0"

mount_hugetlb_v1_for_crun

mkdir -p "$OUT_DIR"

export BENCH_WORK=$work BENCH_BUNDLE=$bundle BENCH_RUNC=$RUNC BENCH_CRUN=$CRUN
export BENCH_N=$N BENCH_RSS_RUNS=$RSS_RUNS BENCH_WARMUP=$WARMUP BENCH_OUT=$OUT_DIR
python3 - <<'PY'
import csv, os, statistics, subprocess, sys, time

work = os.environ["BENCH_WORK"]
bundle = os.environ["BENCH_BUNDLE"]
n = int(os.environ["BENCH_N"])
rss_runs = int(os.environ["BENCH_RSS_RUNS"])
warmup = int(os.environ["BENCH_WARMUP"])
out = os.environ["BENCH_OUT"]
runtimes = [
    ("hyperjail", os.environ["HYPERJAIL"]),
    ("runc", os.environ["BENCH_RUNC"]),
    ("crun", os.environ["BENCH_CRUN"]),
]

def version(path):
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        first = (r.stdout or r.stderr).strip().splitlines()[0]
        return first.split()[-1]
    except Exception:
        return "?"

versions = {name: version(path) for name, path in runtimes}
roots = {}
for name, _ in runtimes:
    roots[name] = os.path.join(work, "root-" + name)
    os.makedirs(roots[name], exist_ok=True)

seq = 0
def argv(name, path):
    global seq
    seq += 1
    return [path, "--root", roots[name], "run", "--bundle", bundle, f"bench-{name}-{seq}"]

def run(name, path, prefix=()):
    """One `run`; returns (wall ns, CompletedProcess)."""
    cmd = list(prefix) + argv(name, path)
    t0 = time.perf_counter_ns()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    t1 = time.perf_counter_ns()
    return t1 - t0, p, cmd

def fail(name, p, cmd, what):
    msg = (p.stderr.decode(errors="replace") + p.stdout.decode(errors="replace")).strip()
    print(f"bench-lifecycle: error: {name} failed {what} (exit status {p.returncode}):\n"
          f"  command: {' '.join(cmd)}\n  output: {msg or '(none)'}", file=sys.stderr)
    sys.exit(1)

# Warm-up: every runtime must succeed before anything is measured.
for name, path in runtimes:
    for _ in range(max(1, warmup)):
        _, p, cmd = run(name, path)
        if p.returncode != 0:
            fail(name, p, cmd, "the warm-up run")
print("bench-lifecycle: warm-up ok: " +
      ", ".join(f"{name} {versions[name]}" for name, _ in runtimes))

# Timed, interleaved rounds.
samples = {name: [] for name, _ in runtimes}
raw = []
k = len(runtimes)
for rnd in range(n):
    for j in range(k):
        name, path = runtimes[(rnd + j) % k]
        ns, p, cmd = run(name, path)
        if p.returncode != 0:
            fail(name, p, cmd, f"in round {rnd + 1}")
        samples[name].append(ns)
        raw.append((rnd + 1, name, ns))
    if (rnd + 1) % 50 == 0 or rnd + 1 == n:
        print(f"bench-lifecycle: {rnd + 1}/{n} rounds", file=sys.stderr)

# Peak RSS, interleaved too: /usr/bin/time reports the largest max-RSS of the
# runtime process and the descendants it reaped.
rss = {name: [] for name, _ in runtimes}
timefile = os.path.join(work, "time.out")
for rnd in range(rss_runs):
    for j in range(k):
        name, path = runtimes[(rnd + j) % k]
        _, p, cmd = run(name, path, ["/usr/bin/time", "-f", "%M", "-o", timefile])
        if p.returncode != 0:
            fail(name, p, cmd, "under /usr/bin/time")
        with open(timefile) as f:
            rss[name].append(int(f.read().strip().splitlines()[-1]))

def p90(xs):
    s = sorted(xs)
    return s[max(0, -(-9 * len(s) // 10) - 1)]  # nearest rank

ms = lambda ns: ns / 1e6
hj_median = statistics.median(samples["hyperjail"])
rows = []
for name, _ in runtimes:
    xs = samples[name]
    med = statistics.median(xs)
    rows.append({
        "runtime": name,
        "version": versions[name],
        "runs": len(xs),
        "median_ms": round(ms(med), 3),
        "mean_ms": round(ms(statistics.fmean(xs)), 3),
        "p90_ms": round(ms(p90(xs)), 3),
        "min_ms": round(ms(min(xs)), 3),
        "max_ms": round(ms(max(xs)), 3),
        "hyperjail_median_ratio": round(hj_median / med, 3),
        "maxrss_kb_median": int(statistics.median(rss[name])),
        "rss_runs": len(rss[name]),
    })

os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "lifecycle.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
with open(os.path.join(out, "lifecycle-samples.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["round", "runtime", "wall_ns"])
    w.writerows(raw)

print()
print(f"`run` of busybox true, {n} interleaved rounds; peak RSS over {rss_runs} runs each")
hdr = f"{'runtime':<10} {'version':<12} {'median ms':>10} {'mean ms':>9} {'p90 ms':>8} {'hj/x median':>12} {'max RSS KB':>11}"
print(hdr)
print("-" * len(hdr))
for r in rows:
    print(f"{r['runtime']:<10} {r['version']:<12} {r['median_ms']:>10.2f} {r['mean_ms']:>9.2f} "
          f"{r['p90_ms']:>8.2f} {r['hyperjail_median_ratio']:>12.3f} {r['maxrss_kb_median']:>11}")
print()
print("hj/x median = hyperjail's median / that runtime's median (below 1: hyperjail is faster)")
print(f"CSV: {os.path.join(out, 'lifecycle.csv')} (summary), "
      f"{os.path.join(out, 'lifecycle-samples.csv')} (every run)")
PY

# Every run removes its container; anything left is a runtime bug worth seeing.
for rt in "hyperjail:$HYPERJAIL" "runc:$RUNC" "crun:$CRUN"; do
    left=$("${rt#*:}" --root "$work/root-${rt%%:*}" list -q 2>/dev/null | wc -l)
    [ "$left" -eq 0 ] || note "warning: ${rt%%:*} left $left container(s) in its state dir after run"
done
