#!/usr/bin/env bash
# Scheduler fidelity benchmark (tracker issue 5, "Fidelity, measured"): do hyperjail's
# Xen-style schedulers deliver what their parameters promise? Everything runs on a
# CPU pool of one CPU (env CPU, default 1), one scheduler after the other:
#
# 1. Credit (pool cr): three CPU-bound busybox guests with weights 256/512/1024;
#    each one's share of the CPU time the three got (cpuacct.usage, host side) must
#    be 1/7, 2/7, 4/7. Then one guest alone with cap 20: its share of the wall time
#    must be 20%. Target: within 2 percentage points.
# 2. RTDS (pool rt): three CPU-bound guests with (budget, period) = (2000, 10000),
#    (5000, 20000), (3000, 30000) us, extratime 0. CPU delivered per period
#    (cpuacct.usage / number of periods) must be the budget within 2%, measured
#    alone and then next to a host CPU hog pinned to the CPU (taskset, not in a
#    container). A 4th domain (6000, 10000) must be refused by admission control.
#    Then, the hog still there, three guests with the same parameters run a
#    periodic task (schedprobe periodic, a static C program built here) that burns
#    80% of the budget in CPU time each period and counts the jobs that end after
#    their deadline: target 0 misses.
# 3. ARINC 653 (pool ar): three guests with slots 5/10/5 ms (major frame 20 ms)
#    spin reading CLOCK_MONOTONIC (schedprobe gaps) and log every gap > 200 us. A
#    gap that began before one of the guest's slot starts (per
#    <root>/@cpupools/ar.frame) ends at a slot entry: jitter = resume - slot start.
#    Target: p99 < 1 ms. Each guest's CPU fraction must be 25/50/25% within 2 pp.
#
# The guests use no time namespace, so CLOCK_MONOTONIC inside is the host's.
# Other work on the machine that runs on the CPU competes with the guests (a pool
# does not keep host processes off its CPUs): the script prints how busy the CPU
# was before it started, and an "(others)" row per measurement.
#
# Output: a table on stdout and bench-results/sched.csv.
#
# Env: DURATION (s per measurement, default 10; the whole run takes about
# 6*DURATION + 30 s), CPU (default 1; must not be the machine's only CPU),
# HYPERJAIL (default target/release/hyperjail), OUT_DIR (default bench-results),
# KEEP=1 (keep the temporary directory: bundles, guest output, the frame, logs).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERJAIL=${HYPERJAIL:-$repo/target/release/hyperjail}
DURATION=${DURATION:-10}
CPU=${CPU:-1}
OUT_DIR=${OUT_DIR:-$repo/bench-results}
KEEP=${KEEP:-0}

die() { echo "bench-sched: error: $*" >&2; exit 1; }
note() { echo "bench-sched: $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (containers need namespaces and cgroups)"
[ -x "$HYPERJAIL" ] || die "no hyperjail binary at $HYPERJAIL (run 'make build')"
command -v gcc >/dev/null || die "gcc not found (apt-get install gcc libc6-dev)"
command -v python3 >/dev/null || die "python3 not found (scripts/deps.sh)"
command -v jq >/dev/null || die "jq not found (scripts/deps.sh)"
command -v taskset >/dev/null || die "taskset not found (apt-get install util-linux)"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive integer (seconds), not '$DURATION'"
[[ "$CPU" =~ ^[0-9]+$ ]] || die "CPU must be a CPU number, not '$CPU'"
[ -d "/sys/devices/system/cpu/cpu$CPU" ] && [ "$(cat "/sys/devices/system/cpu/cpu$CPU/online" 2>/dev/null || echo 1)" = 1 ] ||
    die "CPU $CPU is not online"
for c in cpuacct freezer; do
    [ -d "/sys/fs/cgroup/$c" ] || die "no cgroup v1 $c hierarchy at /sys/fs/cgroup/$c (the benchmark reads the v1 layout)"
done

work=$(mktemp -d /tmp/hyperjail-bench-sched.XXXXXX)
root=$work/root
mkdir -p "$root" "$work/bundles" "$work/logs"
hog_pid=

hj() { "$HYPERJAIL" --root "$root" "$@"; }

# Pids of the ARINC 653 switchers of our state root (started by our `create`).
switchers() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        tr '\0' ' ' 2>/dev/null <"$f" | grep -qF -- "--root $root arinc653-switcher" && echo "$pid"
    done
    return 0
}

cleanup() {
    set +e
    if [ -n "$hog_pid" ]; then
        kill "$hog_pid" 2>/dev/null
        wait "$hog_pid" 2>/dev/null
    fi
    local id pool pid i
    for id in $(hj list -q 2>/dev/null); do
        hj delete --force "$id" >/dev/null 2>&1
    done
    for pool in cr rt ar; do
        hj cpupool destroy "$pool" >/dev/null 2>&1
    done
    # A switcher leaves by itself two frames after its pool's last domain.
    for i in $(seq 50); do
        [ -z "$(switchers)" ] && break
        sleep 0.1
    done
    for pid in $(switchers); do
        note "warning: the arinc653 switcher (pid $pid) did not exit after its pool emptied; killing it"
        kill "$pid" 2>/dev/null
    done
    if [ "$KEEP" = 1 ]; then
        note "kept $work (bundles, guest output, logs)"
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- The guest program ---------------------------------------------------------------
probe=$work/schedprobe
cat >"$work/schedprobe.c" <<'EOF'
/* schedprobe: guest side of scripts/bench-sched.sh.
 *
 *   schedprobe periodic PERIOD_US WORK_US DURATION_S OUTFILE
 *     Job k is released at r0 + k*PERIOD (CLOCK_MONOTONIC, absolute), burns WORK_US
 *     of its own CPU time (CLOCK_THREAD_CPUTIME_ID) and misses if it ends after its
 *     deadline r0 + (k+1)*PERIOD. No job is skipped (a late job delays the next).
 *     Writes "periods=N misses=M max_response_us=R max_late_us=L" to OUTFILE.
 *   schedprobe gaps START_NS END_NS OUTFILE
 *     Spins reading CLOCK_MONOTONIC from START_NS to END_NS (absolute); whenever two
 *     consecutive reads are more than 200 us apart, records "GAP_START_NS RESUME_NS"
 *     (the last read before and the first read after the gap).
 *   SIGTERM ends either mode early; what was measured is still written.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void on_term(int s) { (void)s; stop = 1; }

static uint64_t now(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void sleep_until(uint64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (!stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) != 0) {}
}

static FILE *out(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(1); }
    return f;
}

static int periodic(uint64_t period_us, uint64_t work_us, uint64_t duration_s, const char *path) {
    uint64_t p = period_us * 1000, w = work_us * 1000;
    uint64_t n = duration_s * 1000000000ull / p, misses = 0, k;
    uint64_t max_resp = 0, max_late = 0;
    uint64_t r0 = (now(CLOCK_MONOTONIC) / 1000000ull + 2) * 1000000ull;
    for (k = 0; k < n && !stop; k++) {
        uint64_t rel = r0 + k * p, dl = rel + p;
        sleep_until(rel);
        uint64_t c0 = now(CLOCK_THREAD_CPUTIME_ID);
        while (now(CLOCK_THREAD_CPUTIME_ID) - c0 < w && !stop) {}
        uint64_t done = now(CLOCK_MONOTONIC);
        if (done - rel > max_resp) max_resp = done - rel;
        if (done > dl) {
            misses++;
            if (done - dl > max_late) max_late = done - dl;
        }
    }
    FILE *f = out(path);
    fprintf(f, "periods=%llu misses=%llu max_response_us=%llu max_late_us=%llu\n",
            (unsigned long long)k, (unsigned long long)misses,
            (unsigned long long)(max_resp / 1000), (unsigned long long)(max_late / 1000));
    fclose(f);
    return 0;
}

#define MAXGAPS (1u << 20)
static uint64_t gs[MAXGAPS], ge[MAXGAPS];

static int gaps(uint64_t start, uint64_t end, const char *path) {
    unsigned n = 0, lost = 0;
    sleep_until(start);
    uint64_t prev = now(CLOCK_MONOTONIC);
    while (!stop && prev < end) {
        uint64_t t = now(CLOCK_MONOTONIC);
        if (t - prev > 200000) {
            if (n < MAXGAPS) { gs[n] = prev; ge[n] = t; n++; } else lost++;
        }
        prev = t;
    }
    FILE *f = out(path);
    for (unsigned i = 0; i < n; i++)
        fprintf(f, "%llu %llu\n", (unsigned long long)gs[i], (unsigned long long)ge[i]);
    if (lost) fprintf(f, "# lost %u\n", lost);
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGTERM, on_term);
    if (argc == 6 && !strcmp(argv[1], "periodic"))
        return periodic(strtoull(argv[2], 0, 10), strtoull(argv[3], 0, 10),
                        strtoull(argv[4], 0, 10), argv[5]);
    if (argc == 5 && !strcmp(argv[1], "gaps"))
        return gaps(strtoull(argv[2], 0, 10), strtoull(argv[3], 0, 10), argv[4]);
    fprintf(stderr, "usage: schedprobe periodic PERIOD_US WORK_US DURATION_S OUTFILE\n"
                    "       schedprobe gaps START_NS END_NS OUTFILE\n");
    return 2;
}
EOF
gcc -O2 -Wall -Wextra -static -o "$probe" "$work/schedprobe.c" 2>"$work/gcc.log" ||
    die "gcc -static failed (libc6-dev installed?): $(head -n 3 "$work/gcc.log" | tr '\n' ' ')"

# --- Host-side measurement and analysis ----------------------------------------------
cat >"$work/bench.py" <<'PY'
import csv, json, math, os, sys, time

CG = "/sys/fs/cgroup/cpuacct/hyperjail"
MONO = time.CLOCK_MONOTONIC

def mono():
    return time.clock_gettime_ns(MONO)

def usage(ids):
    out = {}
    for i in ids:
        with open(f"{CG}/{i}/cpuacct.usage") as f:
            out[i] = int(f.read())
    return out

def hog_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)

def sleep_until(ns):
    while True:
        d = ns - mono()
        if d <= 0:
            return
        time.sleep(d / 1e9)

def cpu_busy_s(cpu):
    """Busy time of one CPU (all but idle and iowait) from /proc/stat, in seconds."""
    with open("/proc/stat") as f:
        for line in f:
            p = line.split()
            if p[0] == f"cpu{cpu}":
                v = list(map(int, p[1:]))
                return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    raise SystemExit(f"bench-sched: error: cpu{cpu} is not in /proc/stat")

def sample(start_ns, end_ns, ids, hog=None):
    """CPU time (ns) of each domain's cgroup between two CLOCK_MONOTONIC instants, the
    hog's CPU time (s) and how much of the CPU others (neither) used."""
    cpu = os.environ["BENCH_CPU"]
    sleep_until(start_ns)
    t0, u0, b0 = mono(), usage(ids), cpu_busy_s(cpu)
    h0 = hog_ticks(hog) if hog else 0
    sleep_until(end_ns)
    t1, u1, b1 = mono(), usage(ids), cpu_busy_s(cpu)
    h1 = hog_ticks(hog) if hog else 0
    res = {"wall_ns": t1 - t0, "usage": {i: u1[i] - u0[i] for i in ids}}
    res["hog_s"] = (h1 - h0) / os.sysconf("SC_CLK_TCK") if hog else 0
    ours = sum(res["usage"].values()) / 1e9 + res["hog_s"]
    res["others"] = max(0.0, (b1 - b0) - ours) / (res["wall_ns"] / 1e9)
    return res

def others_row(rows, sched, s):
    row(rows, sched, "(others)", f"CPU {os.environ['BENCH_CPU']} time used by other "
        "processes (of wall time)", "%", 0, pct(s["others"]), pct(s["others"]), "-", "info")

def row(rows, *r):
    with open(rows, "a", newline="") as f:
        csv.writer(f).writerow(r)

def verdict(ok):
    return "PASS" if ok else "FAIL"

def pct(x):
    return round(100 * x, 2)

def cmd_cpubusy(cpu, secs):
    def read():
        with open("/proc/stat") as f:
            for line in f:
                p = line.split()
                if p[0] == f"cpu{cpu}":
                    v = list(map(int, p[1:]))
                    return sum(v), v[3] + v[4]
        raise SystemExit(f"cpu{cpu} not in /proc/stat")
    a, ia = read()
    time.sleep(float(secs))
    b, ib = read()
    print(f"{100 * (1 - (ib - ia) / max(1, b - a)):.1f}")

def cmd_window(out, start, end, pid, *ids):
    s = sample(int(start), int(end), list(ids), hog=int(pid) or None)
    with open(out, "w") as f:
        json.dump(s, f)

def cmd_credit(rows, secs, *doms):
    ids = [d.split(":")[0] for d in doms]
    w = {d.split(":")[0]: int(d.split(":")[1]) for d in doms}
    now = mono()
    s = sample(now, now + int(float(secs) * 1e9), ids)
    tot = sum(s["usage"].values())
    for i in ids:
        exp, got = w[i] / sum(w.values()), s["usage"][i] / tot
        d = pct(got) - pct(exp)
        row(rows, "credit", i, f"weight {w[i]}: share of the pool's CPU time", "%",
            pct(exp), pct(got), round(d, 2), "±2 pp", verdict(abs(d) <= 2))
    row(rows, "credit", "(3 guests)", "CPU busy with guests (of wall time)", "%",
        100, pct(tot / s["wall_ns"]), round(pct(tot / s["wall_ns"]) - 100, 2), "-", "info")
    others_row(rows, "credit", s)

def cmd_cap(rows, secs, dom, cap):
    now = mono()
    s = sample(now, now + int(float(secs) * 1e9), [dom])
    got = pct(s["usage"][dom] / s["wall_ns"])
    d = round(got - int(cap), 2)
    row(rows, "credit", dom, f"cap {cap}: share of wall time", "%", int(cap), got, d,
        "±2 pp", verdict(abs(d) <= 2))
    others_row(rows, "credit", s)

def cmd_rtds(rows, secs, hog, *doms):
    ids = [d.split(":")[0] for d in doms]
    par = {d.split(":")[0]: (int(d.split(":")[1]), int(d.split(":")[2])) for d in doms}
    now = mono()
    s = sample(now, now + int(float(secs) * 1e9), ids, hog=int(hog) or None)
    with_hog = "with the host hog" if int(hog) else "no hog"
    for i in ids:
        b, p = par[i]
        periods = s["wall_ns"] / (p * 1000)
        got = s["usage"][i] / 1000 / periods
        d = 100 * (got - b) / b
        row(rows, "rtds", i, f"CPU per {p} us period (budget {b} us), {with_hog}", "us", b,
            round(got, 1), f"{d:+.2f}%", "±2%", verdict(abs(d) <= 2))
    if int(hog):
        hog_frac = s["hog_s"] / (s["wall_ns"] / 1e9)
        free = 1 - sum(b / p for b, p in par.values())
        row(rows, "rtds", "(host hog)", "CPU share of the pinned host hog", "%", pct(free),
            pct(hog_frac), round(pct(hog_frac) - pct(free), 2), "-", "info")
    others_row(rows, "rtds", s)

def cmd_misses(rows, *doms):
    for d in doms:
        i, b, p, wk, path = d.split(":", 4)
        try:
            with open(path) as f:
                kv = dict(x.split("=") for x in f.read().split())
        except OSError as e:
            row(rows, "rtds", i, f"deadline misses ({wk} us work per {p} us)", "jobs", 0,
                "no result", "-", "0", "FAIL")
            print(f"bench-sched: {i}: no result from the periodic task: {e}", file=sys.stderr)
            continue
        m, n = int(kv["misses"]), int(kv["periods"])
        row(rows, "rtds", i, f"deadline misses of {n} jobs ({wk} us work per {p} us)", "jobs",
            0, m, m, "0", verdict(m == 0))
        row(rows, "rtds", i, "worst response time (release to end of job)", "us", p,
            int(kv["max_response_us"]), int(kv["max_response_us"]) - int(p), "-", "info")

def pctl(xs, q):
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else float("nan")

def cmd_arinc(rows, frame_path, usage_path, start, end, *doms):
    start, end = int(start), int(end)
    with open(frame_path) as f:
        fr = json.load(f)
    with open(usage_path) as f:
        us = json.load(f)
    t0, F = fr["t0_ns"], fr["major_frame_us"] * 1000
    slots = {s["domain"]: (s["offset_us"] * 1000, s["runtime_us"] * 1000) for s in fr["slots"]}
    others_row(rows, "arinc653", us)
    row(rows, "arinc653", "(switcher)", "CPU share of the switcher (SCHED_FIFO on the pool's "
        "CPU)", "%", 0, pct(us["hog_s"] / (us["wall_ns"] / 1e9)),
        pct(us["hog_s"] / (us["wall_ns"] / 1e9)), "-", "info")
    all_jit, all_over = [], []
    for d in doms:
        i, path = d.split(":", 1)
        if i not in slots:
            raise SystemExit(f"bench-sched: error: {i} has no slot in {frame_path}: {fr}")
        off, rt = slots[i]
        gaps = []
        with open(path) as f:
            for line in f:
                if not line.startswith("#"):
                    a, b = map(int, line.split())
                    if a >= start and b <= end:
                        gaps.append((a, b))
        jit, over, entered, inslot = [], [], set(), 0
        for gs, ge in gaps:
            n = round((ge - t0 - off) / F)       # the nearest slot start
            s = t0 + n * F + off
            if gs < s:                           # the guest stopped before it: an entry
                jit.append(ge - s)
                entered.add(n)
                m = math.floor((gs - t0 - off) / F)  # the slot it ran in before
                over.append(gs - (t0 + m * F + off + rt))
            else:
                inslot += 1
        # Slot instances wholly inside the window, but not the first frame (the guest
        # starts spinning at `start`, so it has no gap before the first one).
        first = math.ceil((start + F - t0 - off) / F)
        last = math.floor((end - rt - t0 - off) / F)
        want = set(range(first, last + 1))
        # Time run outside own slots: run segments are between a resume and the next gap.
        # (Only between two gaps: the guest's first and last run in the window are not
        # known exactly.)
        segs = [(gaps[k][1], gaps[k + 1][0]) for k in range(len(gaps) - 1)]
        ran = outside = 0
        for a, b in segs:
            if b <= a:
                continue
            ran += b - a
            inside = 0
            for n in range(math.floor((a - t0 - off) / F), math.floor((b - t0 - off) / F) + 1):
                lo, hi = t0 + n * F + off, t0 + n * F + off + rt
                inside += max(0, min(b, hi) - max(a, lo))
            outside += (b - a) - inside
        exp = rt / F
        got = us["usage"][i] / us["wall_ns"]
        dd = pct(got) - pct(exp)
        row(rows, "arinc653", i, f"CPU fraction of each frame (slot {rt // 1000000} ms of "
            f"{F // 1000000} ms)", "%", pct(exp), pct(got), round(dd, 2), "±2 pp",
            verdict(abs(dd) <= 2))
        missed = len(want - entered)
        row(rows, "arinc653", i, f"slots entered from frozen (of {len(want)} in the window)",
            "slots", len(want), len(want & entered), -missed, "-", "info")
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            row(rows, "arinc653", i, f"slot-start jitter {name} ({len(jit)} entries)", "us",
                0, round(pctl(jit, q) / 1000, 1) if jit else "none", "-", "-", "info")
        row(rows, "arinc653", i, "run time outside own slots (of its run time)", "%", 0,
            pct(outside / ran) if ran else 0, pct(outside / ran) if ran else 0, "-", "info")
        row(rows, "arinc653", i, "gaps > 200 us inside own slot (preempted)", "gaps", 0,
            inslot, inslot, "-", "info")
        all_jit += jit
        all_over += over
    if not all_jit:
        row(rows, "arinc653", "(all)", "slot-start jitter p99", "us", 0, "no slot entries",
            "-", "<1000", "FAIL")
        return
    for q, name in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
        v = round(pctl(all_jit, q) / 1000, 1)
        row(rows, "arinc653", "(all)", f"slot-start jitter {name} (resume - slot start, "
            f"{len(all_jit)} entries)", "us", 0, v, v, "<1000" if name == "p99" else "-",
            verdict(v < 1000) if name == "p99" else "info")
    for q, name in ((0.5, "p50"), (0.99, "p99"), (1.0, "max")):
        v = round(pctl(all_over, q) / 1000, 1)
        row(rows, "arinc653", "(all)", f"slot-end overrun {name} (last read - slot end)",
            "us", 0, v, v, "-", "info")

def cmd_report(rows, out_csv, header):
    cols = ["scheduler", "domain", "parameter", "unit", "expected", "measured", "delta",
            "target", "result"]
    with open(rows, newline="") as f:
        data = [dict(zip(cols, r)) for r in csv.reader(f)]
    os.makedirs(os.path.dirname(out_csv), exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(data)
    print()
    print(header)
    shown = [["scheduler", "domain", "parameter", "expected", "measured", "delta", "target",
              "pass/fail"]]
    for r in data:
        u = "" if r["unit"] in ("jobs", "slots", "gaps", "-") else " " + r["unit"]
        def fmt(v, unit):
            try:
                float(v)
            except ValueError:
                return v
            return v + unit
        du = " pp" if r["unit"] == "%" else u
        shown.append([r["scheduler"], r["domain"], r["parameter"], fmt(r["expected"], u),
                      fmt(r["measured"], u), fmt(r["delta"], du), r["target"], r["result"]])
    width = [max(len(x[k]) for x in shown) for k in range(len(shown[0]))]
    for n, x in enumerate(shown):
        print("  ".join(c.ljust(width[k]) if k < 3 else c.rjust(width[k])
                        for k, c in enumerate(x)).rstrip())
        if n == 0:
            print("-" * (sum(width) + 2 * (len(width) - 1)))
    fails = sum(r["result"] == "FAIL" for r in data)
    passes = sum(r["result"] == "PASS" for r in data)
    print()
    print(f"{passes} pass, {fails} fail (rows marked info have no target)")
    print(f"CSV: {out_csv}")

if __name__ == "__main__":
    globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
PY
bench() { BENCH_CPU=$CPU python3 "$work/bench.py" "$@"; }
rows=$work/rows.csv
: >"$rows"
mono_ns() { python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))'; }

# --- Domains -------------------------------------------------------------------------
# mkdomain ID ANNOTATIONS_JSON ARG...: a busybox bundle with schedprobe in /bin, a
# writable root and an /out directory (the host reads it under the bundle).
mkdomain() {
    local id=$1 ann=$2 b=$work/bundles/$1
    shift 2
    "$repo/scripts/mkbundle.sh" "$b" "$@" >/dev/null
    cp "$probe" "$b/rootfs/bin/schedprobe"
    mkdir -p "$b/rootfs/out"
    jq --argjson a "$ann" '.annotations = $a | .root.readonly = false' "$b/config.json" >"$b/config.json.new"
    mv "$b/config.json.new" "$b/config.json"
    [ -z "$(jq '.linux.namespaces[]? | select(.type == "time")' "$b/config.json")" ] ||
        die "the bundle of $id has a time namespace; CLOCK_MONOTONIC would not be the host's"
}
create() {
    hj create --bundle "$work/bundles/$1" "$1" </dev/null >"$work/logs/$1.log" 2>&1 ||
        die "create $1 failed: $(tail -n 3 "$work/logs/$1.log" | tr '\n' ' ')"
}
start() { hj start "$1" || die "start $1 failed"; }
remove() { local id; for id in "$@"; do hj delete --force "$id" >/dev/null || die "delete $id failed"; done; }
status() { hj state "$1" 2>/dev/null | jq -r .status; }
wait_stopped() { # TIMEOUT_S ID...
    local until=$((SECONDS + $1)) id
    shift
    for id in "$@"; do
        while [ "$(status "$id")" != stopped ]; do
            [ $SECONDS -lt $until ] || die "$id still $(status "$id") after the measurement (log: $(tail -n 2 "$work/logs/$id.log" | tr '\n' ' '))"
            sleep 0.2
        done
    done
}
loop=(sh -c 'while :; do :; done')

mkdir -p "$OUT_DIR"
busy=$(bench cpubusy "$CPU" 1)
note "CPU $CPU was ${busy}% busy in the second before the run (other work on the machine competes with the guests)"
[ "${busy%.*}" -lt 10 ] || note "warning: CPU $CPU is busy; the results include that interference"
note "hyperjail: $HYPERJAIL; DURATION=${DURATION}s per measurement; state root $root"
foreign=0
for f in /proc/[0-9]*/cmdline; do
    tr '\0' '\n' 2>/dev/null <"$f" | grep -qx arinc653-switcher && foreign=$((foreign + 1))
done
[ "$foreign" -eq 0 ] ||
    note "warning: $foreign arinc653 switcher(s) of other state roots run (real-time tasks that may share CPU $CPU)"

# --- 1. Credit -----------------------------------------------------------------------
hj cpupool create cr --cpus "$CPU" --sched credit || die "cpupool create cr failed"
for w in 256 512 1024; do
    mkdomain "cr-w$w" "{\"org.hyperjail.pool\":\"cr\",\"org.hyperjail.sched.credit.weight\":\"$w\"}" "${loop[@]}"
    create "cr-w$w"
done
for w in 256 512 1024; do start "cr-w$w"; done
hj sched credit
sleep 1
note "credit: measuring weights 256/512/1024 for ${DURATION}s"
bench credit "$rows" "$DURATION" cr-w256:256 cr-w512:512 cr-w1024:1024
remove cr-w256 cr-w512 cr-w1024
mkdomain cr-cap20 '{"org.hyperjail.pool":"cr","org.hyperjail.sched.credit.cap":"20"}' "${loop[@]}"
create cr-cap20
start cr-cap20
sleep 1
note "credit: measuring cap 20 alone for ${DURATION}s"
bench cap "$rows" "$DURATION" cr-cap20 20
remove cr-cap20
hj cpupool destroy cr || die "cpupool destroy cr failed"

# --- 2. RTDS -------------------------------------------------------------------------
rtds=("a:2000:10000" "b:5000:20000" "c:3000:30000")
rtann() { echo "{\"org.hyperjail.pool\":\"rt\",\"org.hyperjail.sched.rtds.budget\":\"$1\",\"org.hyperjail.sched.rtds.period\":\"$2\",\"org.hyperjail.sched.rtds.extratime\":\"0\"}"; }
hj cpupool create rt --cpus "$CPU" --sched rtds || die "cpupool create rt failed"
args=()
for d in "${rtds[@]}"; do
    IFS=: read -r n b p <<<"$d"
    mkdomain "rt-$n" "$(rtann "$b" "$p")" "${loop[@]}"
    create "rt-$n"
    args+=("rt-$n:$b:$p")
done
for d in "${rtds[@]}"; do start "rt-${d%%:*}"; done
hj sched rtds
sleep 1
note "rtds: measuring CPU per period of three CPU-bound guests for ${DURATION}s"
bench rtds "$rows" "$DURATION" 0 "${args[@]}"
taskset -c "$CPU" /bin/busybox sh -c 'while :; do :; done' &
hog_pid=$!
sleep 1
note "rtds: measuring again next to a host hog (pid $hog_pid, pinned to CPU $CPU) for ${DURATION}s"
bench rtds "$rows" "$DURATION" "$hog_pid" "${args[@]}"

# Admission: a 4th domain that does not fit must be refused at create.
mkdomain rt-d "$(rtann 6000 10000)" "${loop[@]}"
set +e
hj create --bundle "$work/bundles/rt-d" rt-d </dev/null >"$work/logs/rt-d.log" 2>&1
rc=$?
set -e
msg=$(tr '\n' ' ' <"$work/logs/rt-d.log")
note "rtds: create of a 4th domain (6000, 10000) exited $rc: ${msg:-(no output)}"
if [ $rc -ne 0 ] && grep -q "rtds admission" "$work/logs/rt-d.log"; then
    res=PASS
else
    res=FAIL
    [ $rc -ne 0 ] || remove rt-d
fi
echo "rtds,rt-d,\"admission of (6000, 10000) next to 0.55 utilisation\",-,non-zero,$rc,-,refused,$res" >>"$rows"
remove rt-a rt-b rt-c

args=()
for d in "${rtds[@]}"; do
    IFS=: read -r n b p <<<"$d"
    w=$((b * 8 / 10))
    mkdomain "rt-p$n" "$(rtann "$b" "$p")" /bin/schedprobe periodic "$p" "$w" "$DURATION" /out/result
    create "rt-p$n"
    args+=("rt-p$n:$b:$p:$w:$work/bundles/rt-p$n/rootfs/out/result")
done
for d in "${rtds[@]}"; do start "rt-p${d%%:*}"; done
note "rtds: periodic tasks (80% of the budget per period) next to the hog for ${DURATION}s"
hj sched rtds
wait_stopped $((DURATION + 20)) rt-pa rt-pb rt-pc
bench misses "$rows" "${args[@]}"
kill "$hog_pid" 2>/dev/null || true
wait "$hog_pid" 2>/dev/null || true
hog_pid=
remove rt-pa rt-pb rt-pc
hj cpupool destroy rt || die "cpupool destroy rt failed"

# --- 3. ARINC 653 --------------------------------------------------------------------
hj cpupool create ar --cpus "$CPU" --sched arinc653 || die "cpupool create ar failed"
arinc=("a:5" "b:10" "c:5")
for d in "${arinc[@]}"; do
    IFS=: read -r n ms <<<"$d"
    mkdomain "ar-$n" "{\"org.hyperjail.pool\":\"ar\",\"org.hyperjail.sched.arinc653.slot\":\"$ms\"}" true
done
# Every guest measures the same window, from t_start on (CLOCK_MONOTONIC).
t_start=$(($(mono_ns) + 4000000000))
t_end=$((t_start + DURATION * 1000000000))
args=()
for d in "${arinc[@]}"; do
    n=${d%%:*} b=$work/bundles/ar-${d%%:*}
    jq --arg s "$t_start" --arg e "$t_end" '.process.args = ["/bin/schedprobe", "gaps", $s, $e, "/out/gaps"]' \
        "$b/config.json" >"$b/config.json.new"
    mv "$b/config.json.new" "$b/config.json"
    create "ar-$n"
    args+=("ar-$n:$b/rootfs/out/gaps")
done
for d in "${arinc[@]}"; do start "ar-${d%%:*}"; done
[ "$(mono_ns)" -lt "$t_start" ] || die "creating and starting the arinc653 guests took more than 4 s; the window started without them"
hj sched arinc653 --pool ar
frame=$root/@cpupools/ar.frame
note "arinc653: guests spin from $t_start for ${DURATION}s; measuring"
sleep 0.2
[ -f "$frame" ] || die "no $frame while the pool's guests run (the switcher should write it)"
cp "$frame" "$work/ar.frame"
sw_pid=$(switchers | head -n 1)
[ -n "$sw_pid" ] || die "no arinc653 switcher runs for pool ar"
bench window "$work/ar-usage.json" "$t_start" "$((t_end - 100000000))" "$sw_pid" ar-a ar-b ar-c
cmp -s "$frame" "$work/ar.frame" ||
    die "the frame changed during the measurement: $(cat "$work/ar.frame") then $(cat "$frame" 2>/dev/null || echo '(gone)')"
wait_stopped $((DURATION + 20)) ar-a ar-b ar-c
note "arinc653: frame $(cat "$work/ar.frame")"
bench arinc "$rows" "$work/ar.frame" "$work/ar-usage.json" "$t_start" "$((t_end - 100000000))" "${args[@]}"
remove ar-a ar-b ar-c
hj cpupool destroy ar || die "cpupool destroy ar failed"

bench report "$rows" "$OUT_DIR/sched.csv" \
    "Scheduler fidelity on a pool of CPU $CPU, ${DURATION}s per measurement (CPU $CPU ${busy}% busy before the run)"
