//! Verbs that manage a live container: ps, pause, resume, update, events.

use crate::args::{ListFormat, UpdateArgs};
use anyhow::{bail, Context, Result};
use hyperjail_runtime::{Runtime, Status};
use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use std::io::Write;
use std::time::Duration;

/// `ps`: pids as JSON, or ps(1)'s table filtered to the container's processes.
pub fn ps(rt: &Runtime, id: &str, format: ListFormat, ps_args: &[String]) -> Result<()> {
    // JSON is the host pids for every backend (engines look them up on the host);
    // the table of a VM domain is its guest's.
    if format == ListFormat::Table {
        if let Some(procs) = rt.guest_processes(id)? {
            return guest_ps(&procs, ps_args);
        }
    }
    let pids = rt.pids(id)?;
    if format == ListFormat::Json {
        super::out(serde_json::to_string(&pids)?)?;
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("run ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{header}")?;
    for l in lines {
        let pid = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(stdout, "{l}")?;
        }
    }
    Ok(())
}

/// `ps` of a VM domain: the guest kernel's processes (pids in the guest) as a
/// PID/PPID/CMD table; the host's ps cannot see them, so it takes no ps options.
fn guest_ps(procs: &[hyperjail_runtime::GuestProcess], ps_args: &[String]) -> Result<()> {
    if !ps_args.is_empty() {
        bail!(
            "ps options ({}) are not supported for a VM domain: its processes are the guest kernel's, which the host's ps cannot see",
            ps_args.join(" ")
        );
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{:>7} {:>7} CMD", "PID", "PPID")?;
    for p in procs {
        writeln!(stdout, "{:>7} {:>7} {}", p.pid, p.ppid, p.args.join(" "))?;
    }
    Ok(())
}

/// A size like 512, 100k, 64m, 1g or -1.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a size like 64m"))?;
    if n < 0 {
        bail!("{s:?}: a size cannot be negative (use -1 for no limit)");
    }
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("{s:?} is too large"))
}

fn resources_from(a: &UpdateArgs) -> Result<LinuxResources> {
    if let Some(path) = &a.resources {
        return super::read_json(path, "linux.resources");
    }
    let mut r = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    macro_rules! set {
        ($target:ident, $flag:ident, $setter:ident, $conv:expr) => {
            if let Some(v) = &a.$flag {
                $target.$setter(Some($conv(v)?));
                cpu_set = true;
            }
        };
    }
    set!(
        cpu,
        cpu_share,
        set_shares,
        |v: &u64| Ok::<_, anyhow::Error>(*v)
    );
    set!(
        cpu,
        cpu_period,
        set_period,
        |v: &u64| Ok::<_, anyhow::Error>(*v)
    );
    set!(cpu, cpu_quota, set_quota, |v: &i64| Ok::<_, anyhow::Error>(
        *v
    ));
    set!(cpu, cpu_rt_period, set_realtime_period, |v: &u64| Ok::<
        _,
        anyhow::Error,
    >(*v));
    set!(cpu, cpu_rt_runtime, set_realtime_runtime, |v: &i64| Ok::<
        _,
        anyhow::Error,
    >(
        *v
    ));
    set!(cpu, cpuset_cpus, set_cpus, |v: &String| Ok::<
        _,
        anyhow::Error,
    >(v.clone()));
    set!(cpu, cpuset_mems, set_mems, |v: &String| Ok::<
        _,
        anyhow::Error,
    >(v.clone()));
    if cpu_set {
        r.set_cpu(Some(cpu));
    }
    let mut mem = LinuxMemory::default();
    let mut mem_set = false;
    for (flag, setter) in [
        (
            &a.memory,
            LinuxMemory::set_limit as fn(&mut LinuxMemory, Option<i64>) -> &mut LinuxMemory,
        ),
        (&a.memory_reservation, LinuxMemory::set_reservation),
        (&a.memory_swap, LinuxMemory::set_swap),
        (&a.kernel_memory, LinuxMemory::set_kernel),
        (&a.kernel_memory_tcp, LinuxMemory::set_kernel_tcp),
    ] {
        if let Some(v) = flag {
            setter(&mut mem, Some(parse_bytes(v)?));
            mem_set = true;
        }
    }
    if mem_set {
        r.set_memory(Some(mem));
    }
    if let Some(p) = a.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        r.set_pids(Some(pids));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = oci_spec::runtime::LinuxBlockIo::default();
        b.set_weight(Some(w));
        r.set_block_io(Some(b));
    }
    r.set_devices(None);
    Ok(r)
}

/// `update`.
pub fn update(rt: &Runtime, a: &UpdateArgs) -> Result<()> {
    let r = resources_from(a)?;
    Ok(rt.update(&a.id, &r)?)
}

/// Parses 5s, 500ms, 1m, 2h or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("--interval {s:?} is not a duration like 5s or 500ms");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `events`: stats every interval (or once with --stats) and oom events, as JSON
/// lines in runc's format, until the container stops; then a `crashed` event if
/// its guest crashed (VM backend).
pub fn events(rt: &Runtime, id: &str, once: bool, interval: &str) -> Result<()> {
    let interval = parse_duration(interval)?;
    let line = |kind: &str, data: serde_json::Value| {
        serde_json::json!({"type": kind, "id": id, "data": data}).to_string()
    };
    if once {
        super::out(line("stats", rt.stats(id)?))?;
        return Ok(());
    }
    let mut watcher = rt.oom_watcher(id)?;
    let mut out = std::io::stdout().lock();
    // The end of the stream: a `crashed` event first when the guest crashed.
    let stopped = |out: &mut std::io::StdoutLock<'_>| -> Result<()> {
        if let Some(report) = rt.crash_report(id)? {
            writeln!(out, "{}", line("crashed", report))?;
            out.flush()?;
        }
        Ok(())
    };
    loop {
        let (_, status) = rt.record(id)?;
        if status == Status::Stopped {
            return stopped(&mut out);
        }
        writeln!(out, "{}", line("stats", rt.stats(id)?))?;
        out.flush()?;
        let deadline = std::time::Instant::now() + interval;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            if watcher.wait(left.min(Duration::from_millis(500)))? {
                writeln!(out, "{}", line("oom", serde_json::Value::Null))?;
                out.flush()?;
            }
            if rt.record(id)?.1 == Status::Stopped {
                return stopped(&mut out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512").ok(), Some(512));
        assert_eq!(parse_bytes("64m").ok(), Some(64 << 20));
        assert_eq!(parse_bytes("1G").ok(), Some(1 << 30));
        assert_eq!(parse_bytes("-1").ok(), Some(-1));
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("2").ok(), Some(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        // Too large for a Duration: an error, not a panic (found by fuzzing).
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
