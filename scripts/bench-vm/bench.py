"""bench-vm measurements; driven by scripts/bench-vm.sh (see there for the env)."""
import csv, os, statistics, subprocess, sys, time

E = os.environ
work, jail, vm, binp, out = (E[k] for k in ("BENCH_WORK", "BENCH_JAIL", "BENCH_VM", "BENCH_BIN", "BENCH_OUT"))
hj = E["HYPERJAIL"]
geti = lambda k: int(E["BENCH_" + k])
N, ENTRY_RUNS, LOOP_RUNS, LOOP_ITERS = geti("N"), geti("ENTRY_RUNS"), geti("LOOP_RUNS"), geti("LOOP_ITERS")
PAR_RUNS, PAR_ITERS = geti("PAR_RUNS"), geti("PAR_ITERS")
PROC_RUNS, FORK_N, PIPE_MIB = geti("PROC_RUNS"), geti("FORK_N"), geti("PIPE_MIB")
SYSCALL_RUNS, SYSCALL_N, RSS_RUNS, TOUCH_MIB, WARMUP = (
    geti("SYSCALL_RUNS"), geti("SYSCALL_N"), geti("RSS_RUNS"), geti("TOUCH_MIB"), geti("WARMUP"))
rootfs = os.path.join(jail, "rootfs")

def log(msg):
    print("bench-vm: " + msg, file=sys.stderr, flush=True)

def version(path):
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        for line in (r.stdout or r.stderr).splitlines():
            if "version" in line:
                return line.split("version")[-1].strip().split()[0]
        return (r.stdout or r.stderr).split()[-1]
    except Exception:
        return "?"

# name -> (argv prefix before the verb, bundle)
runtimes = [("vm", [hj], vm), ("jail", [hj], jail),
            ("crun", [E["BENCH_CRUN"]], jail), ("runc", [E["BENCH_RUNC"]], jail)]
if E["BENCH_RUNSC"]:
    runtimes.append(("runsc", [E["BENCH_RUNSC"], "--network=none"], jail))
roots = {}
for name, pre, _ in runtimes:
    rt = "hyperjail" if pre[0] == hj else name
    roots[name] = os.path.join(work, "root-" + rt)
    os.makedirs(roots[name], exist_ok=True)
versions = {name: version(pre[0]) for name, pre, _ in runtimes}

seq = 0
def cid(tag):
    global seq
    seq += 1
    return f"bvm-{tag}-{seq}"

def set_args(bundle, args):
    import json
    p = os.path.join(bundle, "config.json")
    with open(p) as f:
        c = json.load(f)
    c["process"]["args"] = args
    with open(p + ".new", "w") as f:
        json.dump(c, f, indent=2)
    os.replace(p + ".new", p)

def fail(what, p, cmd):
    msg = ((p.stderr or b"").decode(errors="replace") + (p.stdout or b"").decode(errors="replace")).strip()
    print(f"bench-vm: error: {what} failed (exit status {p.returncode}):\n  command: {' '.join(cmd)}\n"
          f"  output: {msg or '(none)'}", file=sys.stderr)
    sys.exit(1)

def create_vm(c):
    """`create` of VM domain `c` with its stdio in a file (the container keeps create's
    stdio: files, never pipes, since a pipe stays open); returns the file's path."""
    outp = os.path.join(work, c + ".out")
    with open(outp, "wb") as f:
        cmd = [hj, "--root", roots["vm"], "create", "--bundle", vm, c]
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    if p.returncode != 0:
        with open(outp, "rb") as f:
            p.stdout = f.read()
        fail("vm create", p, cmd)
    return outp

def crun_(name, pre, bundle):
    cmd = pre + ["--root", roots[name], "run", "--bundle", bundle, cid(name)]
    t0 = time.perf_counter_ns()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    t1 = time.perf_counter_ns()
    if p.returncode != 0:
        fail(f"{name} run", p, cmd)
    return t1 - t0, p.stdout.decode()

samples = []  # (metric, subject, round, value)
results = []  # summary rows

def row(metric, subject, values, unit, ratio=None, ratio_of="", target="", met=""):
    results.append({"metric": metric, "subject": subject,
                    "median": round(statistics.median(values), 3) if values else "",
                    "unit": unit, "runs": len(values),
                    "ratio": "" if ratio is None else round(ratio, 3), "ratio_of": ratio_of,
                    "target": target, "met": met})

yn = lambda b: "yes" if b else "NO"

# ---- 1. run of true ------------------------------------------------------------
for b in (vm, jail):
    set_args(b, ["/true"])
for name, pre, b in runtimes:
    for _ in range(max(1, WARMUP)):
        crun_(name, pre, b)
log("warm-up ok: " + ", ".join(f"{n} {versions[n]}" for n, _, _ in runtimes))
runs = {n: [] for n, _, _ in runtimes}
k = len(runtimes)
for rnd in range(N):
    for j in range(k):
        name, pre, b = runtimes[(rnd + j) % k]
        ns, _ = crun_(name, pre, b)
        runs[name].append(ns / 1e6)
        samples.append(("run_true_ms", name, rnd + 1, ns / 1e6))
    if (rnd + 1) % 10 == 0 or rnd + 1 == N:
        log(f"run true: {rnd + 1}/{N} rounds")
med = {n: statistics.median(v) for n, v in runs.items()}
for name, _, _ in runtimes:
    ratio = med["vm"] / med[name]
    if name == "vm":
        row("run true", name, runs[name], "ms")
    elif name == "jail":
        row("run true", name, runs[name], "ms", ratio, "vm/jail", "vm <= 2x jail", yn(ratio <= 2))
    elif name == "runsc":
        row("run true", name, runs[name], "ms", ratio, "vm/runsc", "vm <= 0.1x runsc", yn(ratio <= 0.1))
    else:
        row("run true", name, runs[name], "ms", ratio, f"vm/{name}")

# ---- 2. start -> first user instruction ------------------------------------------
set_args(vm, ["/entry"])
deltas, starts, spawns, seen = [], [], [], []
for i in range(ENTRY_RUNS):
    # the spawn cost of a do-nothing hyperjail process, interleaved
    t0 = time.perf_counter_ns()
    subprocess.run([hj, "--version"], capture_output=True, check=True)
    spawns.append((time.perf_counter_ns() - t0) / 1e6)
    c = cid("entry")
    outp = create_vm(c)
    cmd = [hj, "--root", roots["vm"], "start", c]
    host0 = time.monotonic_ns()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    host1 = time.monotonic_ns()
    if p.returncode != 0:
        fail("vm start", p, cmd)
    text = ""
    for _ in range(2000):
        with open(outp) as f:
            text = f.read()
        if text.endswith("\n"):
            break
        time.sleep(0.001)
    host2 = time.monotonic_ns()
    subprocess.run([hj, "--root", roots["vm"], "delete", "--force", c], capture_output=True)
    try:
        s, ns = text.split()
        guest = int(s) * 10**9 + int(ns)
    except ValueError:
        log(f"error: the entry program printed {text!r}")
        sys.exit(1)
    if not host0 <= guest <= host2:
        log(f"error: guest CLOCK_MONOTONIC {guest} outside the host's [{host0}, {host2}]: the clocks disagree")
        sys.exit(1)
    deltas.append((guest - host0) / 1e6)
    starts.append((host1 - host0) / 1e6)
    seen.append((host2 - host0) / 1e6)
    samples += [("entry_delta_ms", "vm", i + 1, deltas[-1]), ("start_wall_ms", "vm", i + 1, starts[-1]),
                ("hyperjail_version_ms", "host", i + 1, spawns[-1])]
log(f"entry: {ENTRY_RUNS} runs; every guest timestamp within the host's [before start, output seen]")
dmed, smed = statistics.median(deltas), statistics.median(spawns)
row("start -> first user insn", "vm", deltas, "ms", None, "", "< 0.5 ms", yn(dmed < 0.5))
row("  same minus hyperjail spawn", "vm", [d - smed for d in deltas], "ms", None, "", "< 0.5 ms",
    yn(dmed - smed < 0.5))
row("  wall time of `start`", "vm", starts, "ms")
row("  `hyperjail --version` (spawn)", "host", spawns, "ms")

# ---- 3. CPU loop -----------------------------------------------------------------
set_args(vm, ["/cpuloop", str(LOOP_ITERS)])
loop = {"vm": [], "host": []}
for i in range(LOOP_RUNS):
    order = ["vm", "host"] if i % 2 == 0 else ["host", "vm"]
    for who in order:
        if who == "vm":
            _, o = crun_("vm", [hj], vm)
        else:
            o = subprocess.run([os.path.join(binp, "cpuloop"), str(LOOP_ITERS)], capture_output=True,
                               check=True).stdout.decode()
        v = int(o.split()[1]) / 1e6
        loop[who].append(v)
        samples.append(("cpuloop_ms", who, i + 1, v))
log(f"cpu loop: {LOOP_RUNS} runs each")
r = statistics.median(loop["host"]) / statistics.median(loop["vm"])
row(f"cpu loop {LOOP_ITERS:.0e} xorshift", "host", loop["host"], "ms")
row(f"cpu loop {LOOP_ITERS:.0e} xorshift", "vm", loop["vm"], "ms", r, "host/vm (speed vs native)",
    ">= 0.9", yn(r >= 0.9))

# ---- 3b. threads: speed-up of 4 threads over 1 ---------------------------------------
par = {(who, n): [] for who in ("vm", "host") for n in (1, 4)}
for i in range(PAR_RUNS):
    for n in (1, 4):
        order = ["vm", "host"] if i % 2 == 0 else ["host", "vm"]
        for who in order:
            if who == "vm":
                set_args(vm, ["/par", str(n), str(PAR_ITERS)])
                _, o = crun_("vm", [hj], vm)
            else:
                o = subprocess.run([os.path.join(binp, "par"), str(n), str(PAR_ITERS)],
                                   capture_output=True, check=True).stdout.decode()
            v = int(o.split()[1]) / 1e6
            par[(who, n)].append(v)
            samples.append((f"par{n}_ms", who, i + 1, v))
log(f"threads: {PAR_RUNS} runs each of 1 and 4 threads")
for who in ("host", "vm"):
    one, four = statistics.median(par[(who, 1)]), statistics.median(par[(who, 4)])
    row(f"cpu {PAR_ITERS:.0e} steps, 1 thread", who, par[(who, 1)], "ms")
    target, met = ("", "")
    if who == "vm":
        target, met = (">= 1.8 on 2 CPUs", yn(one / four >= 1.8))
    row(f"cpu {PAR_ITERS:.0e} steps, 4 threads", who, par[(who, 4)], "ms", one / four,
        "speed-up 1 -> 4 threads", target, met)

# ---- 3c. processes: fork+exec+wait, a pipe, a shell script --------------------------
script = os.path.join(rootfs, "script.sh")
with open(script, "w") as f:
    for i in range(250):
        f.write(f"/true\necho line {i} > /dev/null\nx=$(( {i} * 3 ))\ncat /data > /dev/null\n")
tests = [("forkexec", ["/procs", "forkexec", str(FORK_N)], "us"),
         ("pipe", ["/procs", "pipe", str(PIPE_MIB)], "MB/s"),
         ("script", ["/bin/sh", "/script.sh"], "ms")]
proc = {(t, n): [] for t, _, _ in tests for n, _, _ in runtimes}
for i in range(PROC_RUNS):
    for t, args, _ in tests:
        for b in (vm, jail):
            set_args(b, args)
        for j in range(len(runtimes)):
            name, pre, b = runtimes[(i + j) % len(runtimes)]
            ns, o = crun_(name, pre, b)
            if t == "forkexec":
                v = int(o.split()[1]) / 1e3
            elif t == "pipe":
                v = float(o.split()[1])
            else:
                v = ns / 1e6
            proc[(t, name)].append(v)
            samples.append((f"proc_{t}", name, i + 1, v))
log(f"processes: {PROC_RUNS} rounds of fork+exec+wait x{FORK_N}, a {PIPE_MIB} MiB pipe, a 1000-command script")
labels = {"forkexec": "fork+exec+wait of true", "pipe": f"pipe {PIPE_MIB} MiB to a child",
          "script": "run sh script, 1000 commands"}
for t, _, unit in tests:
    m = {n: statistics.median(proc[(t, n)]) for n, _, _ in runtimes}
    for name, _, _ in runtimes:
        ratio, of, target, met = None, "", "", ""
        if name != "vm":
            ratio, of = m["vm"] / m[name], f"vm/{name}"
        if name == "jail":
            if t == "forkexec":
                target, met = "vm <= 3x jail", yn(ratio <= 3)
            elif t == "pipe":
                target, met = "vm >= 0.5x jail", yn(ratio >= 0.5)
            else:
                target, met = "vm <= 2x jail", yn(ratio <= 2)
        if name == "runsc" and t == "script":
            target, met = "vm ahead of runsc (< 1)", yn(ratio < 1)
        row(labels[t], name, proc[(t, name)], unit, ratio, of, target, met)

# ---- 4. syscalls -----------------------------------------------------------------
set_args(vm, ["/syscalls", str(SYSCALL_N), "/data", "/sink-vm"])
sc = {"vm": {}, "host": {}}
refused = {}
for i in range(SYSCALL_RUNS):
    order = ["vm", "host"] if i % 2 == 0 else ["host", "vm"]
    for who in order:
        if who == "vm":
            _, o = crun_("vm", [hj], vm)
        else:
            o = subprocess.run([os.path.join(binp, "syscalls"), str(SYSCALL_N), os.path.join(binp, "data"),
                                os.path.join(work, "sink-host")], capture_output=True, check=True).stdout.decode()
        for line in o.splitlines():
            key, val = line.split(None, 1)
            if key == "write1_devnull_refused":
                refused[who] = val
                continue
            sc[who].setdefault(key, []).append(float(val))
            samples.append((key, who, i + 1, float(val)))
log(f"syscalls: {SYSCALL_RUNS} runs each of {SYSCALL_N} calls per kind")
BUSY = ("forwarded, ring busy: < 2000 ns", lambda v: v < 2000)
targets = {"getpid_ns": ("in-guest: < 1000 ns", lambda v: v < 1000),
           "write1_devnull_ns": BUSY, "write1_file_ns": BUSY, "pread4k_ns": BUSY,
           "write1_idle_ns": ("forwarded, wakes the VMM: < 30000 ns", lambda v: v < 30000)}
labels = {"getpid_ns": "getpid", "write1_devnull_ns": "write 1 B /dev/null",
          "write1_file_ns": "write 1 B regular file", "pread4k_ns": "pread 4 KiB",
          "write1_idle_ns": "write 1 B after 300 us quiet"}
for key in ("getpid_ns", "write1_devnull_ns", "write1_file_ns", "pread4k_ns", "write1_idle_ns"):
    h, v = sc["host"].get(key, []), sc["vm"].get(key, [])
    row(labels[key], "host", h, "ns")
    if v:
        m = statistics.median(v)
        t, ok = targets[key]
        row(labels[key], "vm", v, "ns", m / statistics.median(h) if h else None, "vm/host", t, yn(ok(m)))
    else:
        row(labels[key], "vm", [], "ns", None, "", "", "refused: open: " + refused.get("vm", "?"))

# ---- 5. VMM peak RSS -----------------------------------------------------------------
def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None

def hwm(mib):
    import json
    set_args(vm, ["/touch", str(mib), "30"])
    c = cid("rss")
    outp = create_vm(c)
    pid = json.loads(subprocess.run([hj, "--root", roots["vm"], "state", c], capture_output=True,
                                    check=True).stdout)["pid"]
    subprocess.run([hj, "--root", roots["vm"], "start", c], capture_output=True, check=True)
    for _ in range(5000):
        with open(outp) as f:
            if "touched" in f.read():
                break
        time.sleep(0.002)
    time.sleep(0.05)
    v = status_kb(pid, "VmHWM")
    subprocess.run([hj, "--root", roots["vm"], "delete", "--force", c], capture_output=True)
    return v

rss = {0: [], TOUCH_MIB: []}
for i in range(RSS_RUNS):
    for mib in ((0, TOUCH_MIB) if i % 2 == 0 else (TOUCH_MIB, 0)):
        v = hwm(mib)
        rss[mib].append(v / 1024)
        samples.append((f"vmm_vmhwm_mib_touch{mib}", "vm", i + 1, v / 1024))
log(f"rss: {RSS_RUNS} runs each")
row("VMM VmHWM, guest touched 0 MiB", "vm", rss[0], "MiB")
row(f"VMM VmHWM, guest touched {TOUCH_MIB} MiB", "vm", rss[TOUCH_MIB], "MiB")
extra = [x - TOUCH_MIB for x in rss[TOUCH_MIB]]
row(f"  VmHWM minus the {TOUCH_MIB} MiB touched", "vm", extra, "MiB", None, "", "< 5 MiB",
    yn(statistics.median(extra) < 5))

# ---- output ---------------------------------------------------------------------
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "vm.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(results[0].keys()))
    w.writeheader()
    w.writerows(results)
with open(os.path.join(out, "vm-samples.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["metric", "subject", "round", "value"])
    w.writerows(samples)

print()
print(f"hyperjail VM backend; `run` of a static true over {N} interleaved rounds. Versions: "
      + ", ".join(f"{n} {versions[n]}" for n, _, _ in runtimes if n not in ("vm", "jail")))
if not E["BENCH_RUNSC"]:
    print("runsc: not available (no runsc binary; on Debian 12: apt-get install runsc)")
if "vm" in refused:
    print(f"/dev/null in the VM: open refused ({refused['vm']}); the forwarded write is measured on a "
          "regular file in the rootfs instead")
hdr = f"{'metric':<34} {'subject':<6} {'median':>10} {'unit':<4} {'runs':>4} {'ratio':>8} {'ratio of':<26} {'target':<40} met"
print(hdr)
print("-" * len(hdr))
for r in results:
    med = f"{r['median']:.3f}" if r["median"] != "" else "-"
    ratio = f"{r['ratio']:.3f}" if r["ratio"] != "" else ""
    print(f"{r['metric']:<34} {r['subject']:<6} {med:>10} {r['unit']:<4} {r['runs']:>4} {ratio:>8} "
          f"{r['ratio_of']:<26} {r['target']:<40} {r['met']}")
print()
print(f"CSV: {os.path.join(out, 'vm.csv')} (summary), {os.path.join(out, 'vm-samples.csv')} (every sample)")
