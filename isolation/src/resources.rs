//! `linux.resources` as cgroup file writes, for v1 and v2.
//!
//! [`plan`] is a pure translation (unit-tested): each [`Setting`] names a controller and
//! its file/value on v1 and on v2. [`crate::cgroups::Cgroup::apply`] then writes each
//! one where its controller lives, which on the hybrid layout of our machines means v1
//! for most controllers and v2 for hugetlb. cgroups-rs picks one of v1 or v2 for the
//! whole machine and so cannot drive that layout; this module is why we do not use it.

use crate::{Error, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

/// One value to write into the container's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Controller (`cpu`, `memory`, `pids`, `cpuset`, `blkio`/`io`, `hugetlb`,
    /// `devices`, `net_cls`, `net_prio`), as named on v1.
    pub controller: &'static str,
    /// File and value on v1, if v1 has it.
    pub v1: Option<(String, String)>,
    /// File and value on v2, if v2 has it.
    pub v2: Option<(String, String)>,
}

fn both(controller: &'static str, v1: (&str, String), v2: (&str, String)) -> Setting {
    Setting {
        controller,
        v1: Some((v1.0.to_string(), v1.1)),
        v2: Some((v2.0.to_string(), v2.1)),
    }
}

fn v1_only(controller: &'static str, file: &str, value: String) -> Setting {
    Setting {
        controller,
        v1: Some((file.to_string(), value)),
        v2: None,
    }
}

/// v1 cpu.shares to v2 cpu.weight (the conversion runc and crun use).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// Translates `linux.resources` into settings, validating values on the way.
pub fn plan(
    r: &LinuxResources,
    devices: &[oci_spec::runtime::LinuxDevice],
) -> Result<Vec<Setting>> {
    let bad = |m: String| Err(Error::Invalid(format!("linux.resources: {m}")));
    let mut out = Vec::new();
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares() {
            if s != 0 && s < 2 {
                return bad(format!("cpu.shares {s} is below the minimum 2"));
            }
            out.push(both(
                "cpu",
                ("cpu.shares", s.to_string()),
                ("cpu.weight", shares_to_weight(s).to_string()),
            ));
        }
        if c.period().is_some() || c.quota().is_some() {
            let period = c.period().unwrap_or(100_000);
            if !(1000..=1_000_000).contains(&period) {
                return bad(format!(
                    "cpu.period {period} must be between 1000 and 1000000 µs"
                ));
            }
            let quota = c.quota().unwrap_or(-1);
            if quota == 0 || (quota > 0 && quota < 1000) {
                return bad(format!(
                    "cpu.quota {quota} must be -1 (none) or at least 1000 µs"
                ));
            }
            out.push(v1_only("cpu", "cpu.cfs_period_us", period.to_string()));
            out.push(Setting {
                controller: "cpu",
                v1: Some(("cpu.cfs_quota_us".into(), quota.max(-1).to_string())),
                v2: Some(("cpu.max".into(), format!("{} {period}", max_or(quota)))),
            });
        }
        if let Some(b) = c.burst() {
            out.push(both(
                "cpu",
                ("cpu.cfs_burst_us", b.to_string()),
                ("cpu.max.burst", b.to_string()),
            ));
        }
        if let Some(p) = c.realtime_period() {
            out.push(v1_only("cpu", "cpu.rt_period_us", p.to_string()));
        }
        if let Some(rt) = c.realtime_runtime() {
            out.push(v1_only("cpu", "cpu.rt_runtime_us", rt.to_string()));
        }
        if let Some(i) = c.idle() {
            if !(0..=1).contains(&i) {
                return bad(format!("cpu.idle {i} must be 0 or 1"));
            }
            out.push(both(
                "cpu",
                ("cpu.idle", i.to_string()),
                ("cpu.idle", i.to_string()),
            ));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            check_list("cpu.cpus", cpus)?;
            out.push(both(
                "cpuset",
                ("cpuset.cpus", cpus.into()),
                ("cpuset.cpus", cpus.into()),
            ));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            check_list("cpu.mems", mems)?;
            out.push(both(
                "cpuset",
                ("cpuset.mems", mems.into()),
                ("cpuset.mems", mems.into()),
            ));
        }
    }
    if let Some(m) = r.memory() {
        let limit = m.limit();
        if let Some(l) = limit {
            if l == 0 || l < -1 {
                return bad(format!("memory.limit {l} must be -1 (none) or positive"));
            }
            out.push(both(
                "memory",
                ("memory.limit_in_bytes", l.to_string()),
                ("memory.max", max_or(l)),
            ));
        }
        if let Some(s) = m.swap() {
            if let (Some(l), true) = (limit, s > 0) {
                if l > 0 && s < l {
                    return bad(format!(
                        "memory.swap {s} is below memory.limit {l} (swap is memory+swap)"
                    ));
                }
            }
            let v2 = match (s, limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l > 0 => (s - l).to_string(),
                (s, _) => s.to_string(),
            };
            out.push(both(
                "memory",
                ("memory.memsw.limit_in_bytes", s.to_string()),
                ("memory.swap.max", v2),
            ));
        }
        if let Some(res) = m.reservation() {
            out.push(both(
                "memory",
                ("memory.soft_limit_in_bytes", res.to_string()),
                ("memory.low", max_or(res)),
            ));
        }
        if let Some(k) = m.kernel() {
            out.push(v1_only(
                "memory",
                "memory.kmem.limit_in_bytes",
                k.to_string(),
            ));
        }
        if let Some(k) = m.kernel_tcp() {
            out.push(v1_only(
                "memory",
                "memory.kmem.tcp.limit_in_bytes",
                k.to_string(),
            ));
        }
        if let Some(sw) = m.swappiness() {
            if sw > 100 {
                return bad(format!("memory.swappiness {sw} must be 0..100"));
            }
            out.push(v1_only("memory", "memory.swappiness", sw.to_string()));
        }
        if m.disable_oom_killer() == Some(true) {
            out.push(v1_only("memory", "memory.oom_control", "1".into()));
        }
        if let Some(h) = m.use_hierarchy() {
            out.push(v1_only(
                "memory",
                "memory.use_hierarchy",
                u8::from(h).to_string(),
            ));
        }
    }
    if let Some(p) = r.pids() {
        let v = if p.limit() <= 0 {
            "max".to_string()
        } else {
            p.limit().to_string()
        };
        out.push(both("pids", ("pids.max", v.clone()), ("pids.max", v)));
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            check_weight(w)?;
            out.push(both(
                "blkio",
                ("blkio.weight", w.to_string()),
                ("io.bfq.weight", w.to_string()),
            ));
        }
        if let Some(w) = b.leaf_weight() {
            check_weight(w)?;
            out.push(v1_only("blkio", "blkio.leaf_weight", w.to_string()));
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight() {
                check_weight(w)?;
                let v = format!("{}:{} {w}", d.major(), d.minor());
                out.push(both(
                    "blkio",
                    ("blkio.weight_device", v.clone()),
                    ("io.bfq.weight", v),
                ));
            }
            if let Some(w) = d.leaf_weight() {
                check_weight(w)?;
                out.push(v1_only(
                    "blkio",
                    "blkio.leaf_weight_device",
                    format!("{}:{} {w}", d.major(), d.minor()),
                ));
            }
        }
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ];
        for (list, f1, key) in throttles {
            for d in list.iter().flatten() {
                let dev = format!("{}:{}", d.major(), d.minor());
                out.push(both(
                    "blkio",
                    (f1, format!("{dev} {}", d.rate())),
                    ("io.max", format!("{dev} {key}={}", d.rate())),
                ));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if !size.ends_with('B')
            || size.len() < 3
            || !size[..size.len() - 2].chars().all(|c| c.is_ascii_digit())
        {
            return bad(format!(
                "hugepageLimits pageSize {size:?} is not like 2MB or 1GB"
            ));
        }
        out.push(both(
            "hugetlb",
            (
                &format!("hugetlb.{size}.limit_in_bytes"),
                h.limit().to_string(),
            ),
            (&format!("hugetlb.{size}.max"), max_or(h.limit())),
        ));
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            out.push(v1_only("net_cls", "net_cls.classid", id.to_string()));
        }
        for p in n.priorities().iter().flatten() {
            out.push(v1_only(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", p.name(), p.priority()),
            ));
        }
    }
    if let Some(rules) = r.devices().as_ref().filter(|d| !d.is_empty()) {
        for line in device_rules(rules, devices)? {
            out.push(line);
        }
    }
    if let Some(u) = r.unified() {
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort();
        for (k, v) in keys {
            if k.contains('/') || k.starts_with('.') || !k.contains('.') {
                return bad(format!("unified key {k:?} is not a cgroup v2 file name"));
            }
            let ctrl: &'static str = match k.split('.').next().unwrap_or("") {
                "cpu" => "cpu",
                "memory" => "memory",
                "pids" => "pids",
                "io" => "blkio",
                "hugetlb" => "hugetlb",
                "cpuset" => "cpuset",
                _ => "unified",
            };
            out.push(Setting {
                controller: ctrl,
                v1: None,
                v2: Some((k.clone(), v.clone())),
            });
        }
    }
    Ok(out)
}

/// Parses a CPU/node list like `0-2,4` into its members.
pub fn parse_list(list: &str) -> Option<Vec<u32>> {
    // No machine has more CPUs or memory nodes than this (the kernel's NR_CPUS is at
    // most 8192); a longer list is an error, not gigabytes of numbers.
    const MAX_ENTRIES: usize = 65_536;
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v: u32 = part.trim().parse().ok()?;
                (v, v)
            }
        };
        if b < a || b - a > 65_536 || out.len() + (b - a) as usize >= MAX_ENTRIES {
            return None;
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Checks the parts of `linux.resources` that depend on this host: CPUs and memory
/// nodes must exist. With `creating`, a CFS quota also needs its period (an update may
/// change the quota alone and keep the period the cgroup has).
pub fn check_host(r: &LinuxResources, creating: bool) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    if creating && c.quota().is_some_and(|q| q > 0) && c.period().is_none() {
        return Err(Error::Invalid(
            "linux.resources: cpu.quota needs cpu.period".into(),
        ));
    }
    for (field, value, online) in [
        ("cpu.cpus", c.cpus(), "/sys/devices/system/cpu/online"),
        ("cpu.mems", c.mems(), "/sys/devices/system/node/online"),
    ] {
        let Some(v) = value.as_deref().filter(|v| !v.is_empty()) else {
            continue;
        };
        let Some(have) = std::fs::read_to_string(online)
            .ok()
            .and_then(|s| parse_list(&s))
        else {
            continue;
        };
        let want = parse_list(v).unwrap_or_default();
        if let Some(bad) = want.iter().find(|x| !have.contains(x)) {
            return Err(Error::Invalid(format!(
                "linux.resources: {field} {v:?} names {bad}, which this machine does not have (online: {})",
                std::fs::read_to_string(online).unwrap_or_default().trim()
            )));
        }
    }
    Ok(())
}

fn check_weight(w: u16) -> Result<()> {
    if !(10..=1000).contains(&w) {
        return Err(Error::Invalid(format!(
            "linux.resources: blockIO weight {w} must be 10..1000"
        )));
    }
    Ok(())
}

fn check_list(field: &str, list: &str) -> Result<()> {
    let ok = list.split(',').all(|part| {
        let mut it = part.splitn(2, '-');
        let a = it.next().unwrap_or("");
        let b = it.next();
        a.parse::<u32>().is_ok()
            && b.is_none_or(|b| b.parse::<u32>().is_ok_and(|b| Some(b) >= a.parse().ok()))
    });
    if !ok {
        return Err(Error::Invalid(format!(
            "linux.resources: {field} {list:?} is not a CPU/node list like 0-2,4"
        )));
    }
    Ok(())
}

/// Devices the container always gets (its default devices and terminals), allowed
/// after the configured rules as runc does.
const DEFAULT_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

fn device_rule(d: &LinuxDeviceCgroup) -> Result<String> {
    let t = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::P => "p",
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "*".into())
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::Invalid(format!(
            "linux.resources.devices: access {access:?} must be made of r, w, m"
        )));
    }
    Ok(format!(
        "{t} {}:{} {access}",
        num(d.major()),
        num(d.minor())
    ))
}

fn device_rules(
    rules: &[LinuxDeviceCgroup],
    devices: &[oci_spec::runtime::LinuxDevice],
) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    for d in rules {
        let line = device_rule(d)?;
        let file = if d.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        out.push(v1_only("devices", file, line));
    }
    for line in DEFAULT_ALLOW {
        out.push(v1_only("devices", "devices.allow", (*line).to_string()));
    }
    // FIFOs are not devices to the devices controller.
    for d in devices.iter().filter(|d| d.typ() != LinuxDeviceType::P) {
        let rule: LinuxDeviceCgroup = d.into();
        out.push(v1_only("devices", "devices.allow", device_rule(&rule)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources JSON")
    }

    fn v1(s: &[Setting]) -> Vec<(String, String)> {
        s.iter().filter_map(|x| x.v1.clone()).collect()
    }

    #[test]
    fn cpu_and_memory() {
        let s = plan(&res(r#"{"cpu":{"shares":1024,"quota":50000,"period":100000,"cpus":"0"},"memory":{"limit":104857600,"swap":209715200}}"#), &[]).expect("plan");
        let v = v1(&s);
        assert!(v.contains(&("cpu.shares".into(), "1024".into())));
        assert!(v.contains(&("cpu.cfs_quota_us".into(), "50000".into())));
        assert!(v.contains(&("memory.memsw.limit_in_bytes".into(), "209715200".into())));
        let v2: Vec<_> = s.iter().filter_map(|x| x.v2.clone()).collect();
        assert!(v2.contains(&("cpu.max".into(), "50000 100000".into())));
        assert!(v2.contains(&("memory.swap.max".into(), "104857600".into())));
        assert!(v2.contains(&("cpu.weight".into(), "39".into())));
    }

    #[test]
    fn weights_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10000);
        assert_eq!(shares_to_weight(1024), 39);
    }

    #[test]
    fn bad_values_are_rejected() {
        for j in [
            r#"{"cpu":{"quota":500}}"#,
            r#"{"cpu":{"period":10}}"#,
            r#"{"cpu":{"cpus":"0-x"}}"#,
            r#"{"memory":{"limit":-5}}"#,
            r#"{"memory":{"limit":200,"swap":100}}"#,
            r#"{"memory":{"swappiness":101}}"#,
            r#"{"blockIO":{"weight":5}}"#,
            r#"{"hugepageLimits":[{"pageSize":"2M","limit":1}]}"#,
            r#"{"devices":[{"allow":true,"access":"rwx"}]}"#,
        ] {
            assert!(plan(&res(j), &[]).is_err(), "{j}");
        }
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-2,4"), Some(vec![0, 1, 2, 4]));
        assert_eq!(parse_list("3\n"), Some(vec![3]));
        assert_eq!(parse_list("2-1"), None);
        assert_eq!(parse_list("x"), None);
        // Found by the resources fuzz target: repeated ranges grew without bound.
        assert_eq!(parse_list(&"0-65536,".repeat(3)), None);
        assert_eq!(parse_list("1,0-1"), Some(vec![0, 1]));
    }

    #[test]
    fn host_checks() {
        assert!(check_host(&res(r#"{"cpu":{"quota":50000}}"#), true).is_err());
        assert!(check_host(&res(r#"{"cpu":{"quota":50000}}"#), false).is_ok());
        let e = check_host(&res(r#"{"cpu":{"cpus":"0-4095"}}"#), true).unwrap_err();
        assert!(e.to_string().contains("does not have"), "{e}");
        assert!(check_host(&res(r#"{"cpu":{"cpus":"0"}}"#), true).is_ok());
    }

    #[test]
    fn pids_and_devices() {
        let s = plan(&res(r#"{"pids":{"limit":0},"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":229,"access":"rw"}]}"#), &[]).expect("plan");
        let v = v1(&s);
        assert_eq!(v[0], ("pids.max".into(), "max".into()));
        assert_eq!(v[1], ("devices.deny".into(), "a *:* rwm".into()));
        assert_eq!(v[2], ("devices.allow".into(), "c 10:229 rw".into()));
        assert!(v.contains(&("devices.allow".into(), "c 1:3 rwm".into())));
    }
}
