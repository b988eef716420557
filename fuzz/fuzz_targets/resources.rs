//! `update --resources` / linux.resources JSON -> oci-spec LinuxResources -> the cgroup
//! settings of hyperjail_isolation::resources::plan, then (as on cgroup v2) the device
//! rules -> the eBPF device program. Nothing is written to a cgroup.
#![no_main]

use hyperjail_isolation::{devices_bpf, resources};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::{LinuxDevice, LinuxResources};

#[derive(serde::Deserialize)]
struct Input {
    resources: LinuxResources,
    #[serde(default)]
    devices: Vec<LinuxDevice>,
}

fuzz_target!(|data: &[u8]| {
    // Either a bare linux.resources document (what `update --resources` reads) or
    // {"resources": ..., "devices": [...]} (linux.resources with linux.devices).
    let (r, devices) = match serde_json::from_slice::<LinuxResources>(data) {
        Ok(r) => (r, Vec::new()),
        Err(_) => match serde_json::from_slice::<Input>(data) {
            Ok(i) => (i.resources, i.devices),
            Err(_) => return,
        },
    };
    if let Some(cpu) = r.cpu() {
        for list in [cpu.cpus(), cpu.mems()].into_iter().flatten() {
            let _ = resources::parse_list(list);
        }
    }
    let Ok(settings) = resources::plan(&r, &devices) else {
        return;
    };
    let lines: Vec<(bool, String)> = settings
        .iter()
        .filter(|s| s.controller == "devices")
        .filter_map(|s| s.v1.as_ref())
        .map(|(f, v)| (f == "devices.allow", v.clone()))
        .collect();
    if let Ok(rules) = devices_bpf::rules_from_lines(&lines) {
        let _ = devices_bpf::program(&rules);
    }
});
