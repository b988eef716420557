#!/usr/bin/env bash
# Scale benchmark: N live containers per runtime, hyperjail against runc and
# crun from Debian, in one run.
#
# For each runtime in turn (hyperjail, runc, crun), with its own --root:
#   1. one warm-up create + start + delete --force (not counted), then 1 s of rest;
#   2. N (env, default 200) busybox `sleep 100000` containers, each made with
#      `create` then `start` (the pair is timed), all from one shared bundle;
#      every container gets its own cgroup because the bundle leaves
#      linux.cgroupsPath unset and each runtime then derives it from the id
#      (checked: every container's pid must be `sleep` and sit in a cgroup of
#      its own);
#   3. with all N running, REPS (default 20) rounds of `list`, `state ID`,
#      `ps --format json ID` and `events --stats ID` (IDs spread over the N),
#      each timed; the median is reported (crun 1.8.1 has no `events`);
#      besides wall time, the CPU time (user + sys) of each call is recorded,
#      which other load on the machine disturbs less;
#   4. RSS_RUNS (default 5) `list` calls under /usr/bin/time -f %M (peak RSS);
#   5. `delete --force` of every container, timed, then a check that the
#      runtime's state and the containers' cgroups are gone.
# The benchmark is a subreaper (as an engine's shim is) and reaps the killed
# containers' inits: PID 1 on our machines does not reap orphans.
#
# The targets from tracker issue 9 are printed next to hyperjail's numbers:
# `list` with 200 containers under 50 ms, and create+start of the last
# containers (median of the last 10) within 1.5x of container 1.
#
# Output: a table on stdout, bench-results/scale.csv (one row per runtime) and
# bench-results/scale-samples.csv (every create+start and every timed call).
#
# Env: N, REPS, RSS_RUNS, HYPERJAIL (default target/release/hyperjail), RUNC
# (default /usr/sbin/runc), CRUN (default /usr/bin/crun), OUT_DIR (default
# bench-results).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export HYPERJAIL=${HYPERJAIL:-$repo/target/release/hyperjail}
RUNC=${RUNC:-/usr/sbin/runc}
CRUN=${CRUN:-/usr/bin/crun}
N=${N:-200}
REPS=${REPS:-20}
RSS_RUNS=${RSS_RUNS:-5}
OUT_DIR=${OUT_DIR:-$repo/bench-results}

die() { echo "bench-scale: error: $*" >&2; exit 1; }
note() { echo "bench-scale: $*"; }
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
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer, not '$REPS'"
[[ "$RSS_RUNS" =~ ^[1-9][0-9]*$ ]] || die "RSS_RUNS must be a positive integer, not '$RSS_RUNS'"

work=$(mktemp -d /tmp/hyperjail-bench-scale.XXXXXX)
cleanup() {
    # Every container a failed or interrupted run left behind, then the files.
    local rt name id
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
"$repo/scripts/mkbundle.sh" "$bundle" sleep 100000 >/dev/null

# The same config for all three runtimes. crun 1.8.1 accepts only ociVersion
# 1.0.x ("unknown version specified" for the 1.2.0 that `hyperjail spec`
# writes); runc and hyperjail accept 1.0.2-dev. linux.cgroupsPath stays unset,
# so that each runtime puts each container in a cgroup named after its id.
jq '.ociVersion = "1.0.2-dev" | del(.linux.cgroupsPath)' "$bundle/config.json" > "$bundle/config.json.new"
mv "$bundle/config.json.new" "$bundle/config.json"
note "bundle: $bundle (busybox sleep 100000); ociVersion set to 1.0.2-dev because crun 1.8.1 rejects 1.2.0"

mount_hugetlb_v1_for_crun

mkdir -p "$OUT_DIR"

export BENCH_WORK=$work BENCH_BUNDLE=$bundle BENCH_RUNC=$RUNC BENCH_CRUN=$CRUN
export BENCH_N=$N BENCH_REPS=$REPS BENCH_RSS_RUNS=$RSS_RUNS BENCH_OUT=$OUT_DIR
python3 - <<'PY'
import csv, ctypes, json, os, resource, statistics, subprocess, sys, time

work = os.environ["BENCH_WORK"]
bundle = os.environ["BENCH_BUNDLE"]
n = int(os.environ["BENCH_N"])
reps = int(os.environ["BENCH_REPS"])
rss_runs = int(os.environ["BENCH_RSS_RUNS"])
out = os.environ["BENCH_OUT"]
runtimes = [
    ("hyperjail", os.environ["HYPERJAIL"]),
    ("runc", os.environ["BENCH_RUNC"]),
    ("crun", os.environ["BENCH_CRUN"]),
]
# Targets from tracker issue 9 (hyperjail).
LIST_TARGET_MS = 50.0
RATIO_TARGET = 1.5
CALL_TIMEOUT = 60
OUT_FILE = os.path.join(work, "call.out")
ERR_FILE = os.path.join(work, "call.err")

# As an engine's shim: the containers' inits come to us when the runtime that
# made them exits, and we reap them once they are killed (PID 1 here does not).
PR_SET_CHILD_SUBREAPER = 36
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    print("bench-scale: error: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
    sys.exit(1)

def reap():
    """Reaps adopted zombies; only called while no subprocess of ours runs."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return

def die(msg):
    print(f"bench-scale: error: {msg}", file=sys.stderr)
    sys.exit(1)

def version(path):
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0].split()[-1]
    except Exception:
        return "?"

class Rt:
    def __init__(self, name, path):
        self.name, self.path = name, path
        self.root = os.path.join(work, "root-" + name)
        os.makedirs(self.root, exist_ok=True)
        self.version = version(path)

    def argv(self, *args):
        return [self.path, "--root", self.root, *args]

    def call(self, *args, prefix=(), check=True):
        """Runs one CLI call; returns (wall ns, CompletedProcess). The CPU time
        (user + sys, ns) of the call and the children it reaped is in self.cpu."""
        cmd = list(prefix) + self.argv(*args)
        # Files, not pipes: a container process inherits the stdio of `create`
        # and would hold a pipe open for as long as it lives.
        with open(OUT_FILE, "w+b") as fo, open(ERR_FILE, "w+b") as fe:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter_ns()
            try:
                rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                    timeout=CALL_TIMEOUT).returncode
            except subprocess.TimeoutExpired:
                die(f"{self.name}: `{' '.join(cmd)}` did not finish within {CALL_TIMEOUT} s")
            ns = time.perf_counter_ns() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.cpu = round((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e9)
            fo.seek(0)
            fe.seek(0)
            p = subprocess.CompletedProcess(cmd, rc, fo.read(), fe.read())
        if check and p.returncode != 0:
            msg = (p.stderr.decode(errors="replace") + p.stdout.decode(errors="replace")).strip()
            die(f"{self.name} failed (exit status {p.returncode}): `{' '.join(cmd)}`: "
                + (msg.replace("\n", " | ") or "(no output)"))
        return ns, p

    def supports_events(self):
        _, p = self.call("events", "--help", check=False)
        text = (p.stdout + p.stderr).decode(errors="replace").lower()
        return p.returncode == 0 and "unknown command" not in text

def median_ms(xs):
    return statistics.median(xs) / 1e6 if xs else None

def memory_cgroup(pid):
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if "memory" in ctrls.split(","):
                return path
    return None

def memory_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup" and "memory" in fields[sep + 3].split(","):
                return fields[4]
    return None

mem_mnt = memory_mount()
rows, samples = [], []

for name, path in runtimes:
    rt = Rt(name, path)
    # Warm-up (page cache, the runtime's first cgroup dirs); not counted.
    rt.call("create", "--bundle", bundle, f"warm-{name}")
    rt.call("start", f"warm-{name}")
    rt.call("delete", "--force", f"warm-{name}")
    reap()
    # Let the kernel finish tearing down the warm-up's cgroups (kworkers), which
    # would otherwise land on container 1's time.
    time.sleep(1)

    ids = [f"scale-{name}-{i}" for i in range(1, n + 1)]
    pairs, pairs_cpu = [], []
    for i, cid in enumerate(ids, 1):
        c_ns, _ = rt.call("create", "--bundle", bundle, cid)
        c_cpu = rt.cpu
        s_ns, _ = rt.call("start", cid)
        pairs.append(c_ns + s_ns)
        pairs_cpu.append(c_cpu + rt.cpu)
        samples.append((name, "create+start", i, c_ns + s_ns, c_cpu + rt.cpu))
        if i % 50 == 0 or i == n:
            print(f"bench-scale: {name}: {i}/{n} containers running", file=sys.stderr)

    # Every container runs `sleep` in a cgroup of its own (shared bundle, no cgroupsPath).
    _, p = rt.call("list", "-q")
    listed = sorted(p.stdout.decode().split())
    if listed != sorted(ids):
        die(f"{name}: list -q shows {len(listed)} containers, expected the {n} made")
    cgroups = {}
    for cid in ids:
        _, p = rt.call("state", cid)
        st = json.loads(p.stdout)
        if st.get("status") != "running":
            die(f"{name}: {cid} is {st.get('status')!r}, not running")
        pid = st["pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        if cmd[:2] != [b"sleep", b"100000"]:
            die(f"{name}: pid {pid} of {cid} runs {cmd!r}, not sleep 100000")
        cg = memory_cgroup(pid)
        if cg is None or cg in cgroups.values():
            die(f"{name}: {cid} shares memory cgroup {cg} with another container")
        cgroups[cid] = cg
    print(f"bench-scale: {name}: {n} containers running sleep, each in its own cgroup "
          f"(e.g. memory:{cgroups[ids[0]]})", file=sys.stderr)

    # Read-only verbs with all N running, interleaved round by round.
    events = rt.supports_events()
    verbs = {"list": [], "state": [], "ps": [], "events": []}
    list_cpu = []
    for r in range(reps):
        cid = ids[(r * n) // reps]
        ns, p = rt.call("list")
        lines = p.stdout.decode().strip().splitlines()
        if len(lines) != n + 1:
            die(f"{name}: `list` printed {len(lines)} lines, expected {n + 1}")
        verbs["list"].append(ns)
        list_cpu.append(rt.cpu)
        samples.append((name, "list", r + 1, ns, rt.cpu))
        ns, p = rt.call("state", cid)
        json.loads(p.stdout)
        verbs["state"].append(ns)
        samples.append((name, "state", r + 1, ns, rt.cpu))
        ns, p = rt.call("ps", "--format", "json", cid)
        if not json.loads(p.stdout):
            die(f"{name}: `ps --format json {cid}` lists no process")
        verbs["ps"].append(ns)
        samples.append((name, "ps", r + 1, ns, rt.cpu))
        if events:
            ns, p = rt.call("events", "--stats", cid)
            if json.loads(p.stdout.decode().splitlines()[0]).get("type") != "stats":
                die(f"{name}: `events --stats {cid}` printed no stats line")
            verbs["events"].append(ns)
            samples.append((name, "events --stats", r + 1, ns, rt.cpu))

    # Peak RSS of `list` with N containers.
    rss = []
    timefile = os.path.join(work, "time.out")
    for _ in range(rss_runs):
        rt.call("list", prefix=["/usr/bin/time", "-f", "%M", "-o", timefile])
        with open(timefile) as f:
            rss.append(int(f.read().strip().splitlines()[-1]))

    # delete --force of all N.
    dels = []
    for i, cid in enumerate(ids, 1):
        ns, _ = rt.call("delete", "--force", cid)
        dels.append(ns)
        samples.append((name, "delete --force", i, ns, rt.cpu))
        reap()
    _, p = rt.call("list", "-q")
    if p.stdout.strip():
        die(f"{name}: list -q still shows containers after delete --force of all: "
            + " ".join(p.stdout.decode().split()[:5]))
    if mem_mnt:
        left = [cg for cg in cgroups.values()
                if os.path.isdir(os.path.join(mem_mnt, cg.lstrip("/")))]
        if left:
            die(f"{name}: {len(left)} memory cgroups are left after delete --force, e.g. {left[0]}")
    reap()

    first = pairs[0] / 1e6
    last10 = statistics.median(pairs[-10:]) / 1e6
    first10 = statistics.median(pairs[:10]) / 1e6
    rows.append({
        "runtime": name,
        "version": rt.version,
        "n": n,
        "reps": reps,
        "create_start_first_ms": round(first, 3),
        "create_start_first10_median_ms": round(first10, 3),
        "create_start_last10_median_ms": round(last10, 3),
        "create_start_ratio_last10_vs_first": round(last10 / first, 3),
        "create_start_ratio_last10_vs_first10": round(last10 / first10, 3),
        "create_start_median_ms": round(median_ms(pairs), 3),
        "create_start_cpu_first10_median_ms": round(median_ms(pairs_cpu[:10]), 3),
        "create_start_cpu_last10_median_ms": round(median_ms(pairs_cpu[-10:]), 3),
        "list_median_ms": round(median_ms(verbs["list"]), 3),
        "list_cpu_median_ms": round(median_ms(list_cpu), 3),
        "state_median_ms": round(median_ms(verbs["state"]), 3),
        "ps_median_ms": round(median_ms(verbs["ps"]), 3),
        "events_stats_median_ms": round(median_ms(verbs["events"]), 3) if events else "",
        "list_maxrss_kb_median": int(statistics.median(rss)),
        "delete_force_total_s": round(sum(dels) / 1e9, 3),
        "delete_force_median_ms": round(median_ms(dels), 3),
    })
    print(f"bench-scale: {name}: done, all {n} containers deleted", file=sys.stderr)

os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "scale.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
with open(os.path.join(out, "scale-samples.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["runtime", "what", "index", "wall_ns", "cpu_ns"])
    w.writerows(samples)

by = {r["runtime"]: r for r in rows}
hj = by["hyperjail"]
def fmt(v, spec):
    return "n/a" if v == "" else format(v, spec)
def target(key):
    if key == "list_median_ms":
        ok = hj[key] < LIST_TARGET_MS
        return f"< {LIST_TARGET_MS:g} ms ({'met' if ok else 'MISSED'})"
    if key == "create_start_ratio_last10_vs_first":
        ok = hj[key] <= RATIO_TARGET
        return f"<= {RATIO_TARGET:g}x ({'met' if ok else 'MISSED'})"
    return ""

metrics = [
    ("create+start, container 1 (ms)", "create_start_first_ms", ".2f"),
    ("create+start, median of first 10 (ms)", "create_start_first10_median_ms", ".2f"),
    ("create+start, median of last 10 (ms)", "create_start_last10_median_ms", ".2f"),
    ("  ratio last 10 / container 1", "create_start_ratio_last10_vs_first", ".2f"),
    ("  ratio last 10 / first 10", "create_start_ratio_last10_vs_first10", ".2f"),
    ("create+start CPU, median of first 10 (ms)", "create_start_cpu_first10_median_ms", ".2f"),
    ("create+start CPU, median of last 10 (ms)", "create_start_cpu_last10_median_ms", ".2f"),
    (f"list, median of {reps} (ms)", "list_median_ms", ".2f"),
    ("list CPU, median (ms)", "list_cpu_median_ms", ".2f"),
    (f"state ID, median of {reps} (ms)", "state_median_ms", ".2f"),
    ("ps --format json ID, median (ms)", "ps_median_ms", ".2f"),
    ("events --stats ID, median (ms)", "events_stats_median_ms", ".2f"),
    (f"list peak RSS, median of {rss_runs} (KB)", "list_maxrss_kb_median", "d"),
    (f"delete --force of all {n}, total (s)", "delete_force_total_s", ".2f"),
    ("delete --force, median (ms)", "delete_force_median_ms", ".2f"),
]
names = [name for name, _ in runtimes]
print()
print(f"{n} running busybox `sleep` containers per runtime "
      + ", ".join(f"{r['runtime']} {r['version']}" for r in rows))
hdr = f"{'':<40}" + "".join(f"{x:>11}" for x in names) + "   target (hyperjail, issue 9)"
print(hdr)
print("-" * len(hdr))
for label, key, spec in metrics:
    print(f"{label:<40}" + "".join(f"{fmt(by[x][key], spec):>11}" for x in names)
          + (f"   {target(key)}" if target(key) else ""))
print()
print("n/a: crun 1.8.1 has no `events` verb. Times are wall times of the CLI call "
      "from a Python parent (fork + exec included);")
print("CPU = user + sys time of the call and the children it reaped (less sensitive "
      "to other load on the machine than wall time).")
print(f"CSV: {os.path.join(out, 'scale.csv')} (summary), "
      f"{os.path.join(out, 'scale-samples.csv')} (every timed call)")
PY
