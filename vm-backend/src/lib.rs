//! hyperjail-vm: the KVM microVM backend.
//!
//! A domain is one VMM process, forked by `create` and recorded as the container's
//! pid. It builds a VM on the standard KVM API: guest RAM sized from
//! `linux.resources.memory.limit` (MAP_NORESERVE), page tables with U=1 at every
//! level, GDT/IDT/TSS, STAR/LSTAR/FMASK, the built-in guest kernel (`guest/`,
//! embedded at build time) and the ELF `process.args[0]` from the rootfs (its
//! segments mapped private from the file; a dynamically linked one with its
//! PT_INTERP loader) with its Linux initial stack. The vCPU starts at the program's
//! entry at CPL3 when `start` connects to the VMM's socket (`vmm.sock` in the state
//! directory), which then serves `exec`, `ps` and `kill --all` (`spawn`; the
//! runtime's side, with the `exec` proxy, is `control`). The guest kernel implements
//! process-local system calls itself and forwards console and file I/O through
//! shared-memory rings ([`abi`]) that a VMM thread polls while busy (`ring`); the
//! VMM performs file calls against the bundle's rootfs through a per-process fd
//! table, resolving every guest path inside the rootfs with
//! `openat2(RESOLVE_IN_ROOT)`. A call that would wait is handed to the calling
//! vCPU's own thread (`wait`). The VMM's exit status is the first process's.
//!
//! Memory: the low 2 MiB (kernel, tables, rings, per-CPU areas) is a memfd shared by
//! every address space. Each guest process slot has a window of guest-physical
//! memory (a memslot at `slot * 4 GiB`) and page tables of its own; the VMM keeps a
//! view of each (`mem`), so a guest pointer means the same bytes to the VMM as to
//! the process that passed it. Threads and processes each run on a vCPU of their
//! own (a host thread of the VMM); `process` does fork, execve and exit.
//!
//! The VMM lives in the domain's cgroup, so the cgroup-based verbs (pause, resume,
//! update, stats, scheduling) are the jail's, applied to that cgroup.
//!
//! This crate therefore depends on hyperjail-jail, which DESIGN.md's arrows do not
//! show (`vm-backend -> runtime, isolation, sched, oci`): the cgroup verbs are the
//! same code for a jail's process tree and for a VMM's, and one copy is better than
//! two. When the VM's verbs diverge (vCPU pause instead of the freezer, guest stats),
//! they move here and the dependency goes.

#![deny(unsafe_code)]

pub mod abi;
mod confine;
#[allow(unsafe_code)]
mod control;
#[allow(unsafe_code)]
mod create;
mod elf;
#[allow(unsafe_code)]
mod events;
mod files;
#[allow(unsafe_code)]
mod fsops;
mod futex;
mod hcall;
#[allow(unsafe_code)]
mod intr;
#[allow(unsafe_code)]
mod mem;
mod names;
#[allow(unsafe_code)]
mod oom;
mod patches;
mod procdir;
#[allow(unsafe_code)]
mod process;
mod program;
mod ring;
#[allow(unsafe_code)]
mod setup;
#[allow(unsafe_code)]
mod spawn;
mod stack;
mod stat;
mod timers;
#[allow(unsafe_code)]
mod tty;
mod vcpu;
#[allow(unsafe_code)]
mod vmm;
mod wait;
mod window;

use hyperjail_jail::JailBackend;
use hyperjail_runtime::{
    Backend, BackendKind, CreateRequest, DomainDir, DomainId, DomainRecord, Error, ExecRequest,
    GuestProcess, OomWatch, Result, Status,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The VM backend (stateless: everything lives in the domain record).
#[derive(Debug, Default)]
pub struct VmBackend;

/// OOM kills of a VM domain: the cgroup's, and the VMM's report file growing.
struct GuestOom {
    cgroup: Box<dyn OomWatch>,
    path: PathBuf,
    seen: u64,
}

impl OomWatch for GuestOom {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
            if len > self.seen {
                self.seen = len;
                return Ok(true);
            }
            let left = end.saturating_duration_since(std::time::Instant::now());
            let step = left.min(std::time::Duration::from_millis(100));
            if self.cgroup.wait(step)? {
                return Ok(true);
            }
            if left.is_zero() {
                return Ok(false);
            }
        }
    }
}

/// Whether the user paused the domain (its VMM cannot answer until resumed). In
/// an ARINC 653 pool the partition switcher freezes and thaws it on its own, so
/// there only `pause` counts (its VMM answers within a major frame).
fn paused(rec: &DomainRecord) -> bool {
    if matches!(rec.sched, Some(hyperjail_sched::DomainSched::Arinc653)) {
        return rec.user_paused;
    }
    rec.status == Status::Paused || JailBackend.is_paused(rec)
}

/// Whether the domain's guest runs (`start` let it; it may be paused since).
fn started(rec: &DomainRecord) -> bool {
    matches!(rec.status, Status::Running | Status::Paused)
}

/// kill(2) with a raw signal number.
fn signal_pid(pid: i32, signal: i32) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory.
    #[allow(unsafe_code)]
    nix::errno::Errno::result(unsafe { libc::kill(pid, signal) }).map(drop)
}

impl Backend for VmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    fn create(&self, req: &CreateRequest<'_>, rec: &mut DomainRecord) -> Result<()> {
        create::create(req, rec)
    }

    fn start(&self, _rec: &DomainRecord, dir: &DomainDir) -> Result<()> {
        let (_f, path) = create::short_path(dir.path(), create::CONTROL_SOCKET)?;
        let mut s = UnixStream::connect(&path)
            .map_err(|e| Error::Backend(format!("cannot reach the VMM: {e}")))?;
        s.write_all(&[create::START_BYTE])
            .map_err(|e| Error::Backend(format!("start: {e}")))?;
        let mut msg = String::new();
        let _ = s.read_to_string(&mut msg);
        if msg.is_empty() {
            Ok(())
        } else {
            Err(Error::Backend(msg))
        }
    }

    fn kill(&self, rec: &DomainRecord, signal: i32, all: bool) -> Result<()> {
        if rec.process().is_none() {
            if all {
                return Ok(());
            }
            return Err(Error::Backend(format!(
                "container {} is not running",
                rec.id
            )));
        }
        // `--all` into a running guest: every guest process gets it (SIGKILL ends
        // the VM, and every process in it, at once).
        if all && started(rec) && signal != libc::SIGKILL {
            return control::kill(rec, signal, None, paused(rec));
        }
        signal_pid(rec.pid, signal).map_err(|e| Error::Sys {
            op: "kill",
            source: e,
        })
    }

    fn set_sched(&self, rec: &DomainRecord, c: &hyperjail_sched::LinuxCpu) -> Result<String> {
        JailBackend.set_sched(rec, c)
    }

    fn hold(&self, rec: &DomainRecord, frozen: bool) -> Result<()> {
        JailBackend.hold(rec, frozen)
    }

    fn is_paused(&self, rec: &DomainRecord) -> bool {
        JailBackend.is_paused(rec)
    }

    fn pause(&self, rec: &DomainRecord) -> Result<()> {
        JailBackend.pause(rec)
    }

    fn resume(&self, rec: &DomainRecord) -> Result<()> {
        JailBackend.resume(rec)
    }

    /// The host pids of the domain: the VMM and `exec` proxies (its cgroup's);
    /// the guest's own processes are [`Backend::guest_processes`].
    fn pids(&self, rec: &DomainRecord) -> Result<Vec<i32>> {
        JailBackend.pids(rec)
    }

    fn guest_processes(&self, rec: &DomainRecord) -> Result<Option<Vec<GuestProcess>>> {
        if !started(rec) {
            // The guest has not run yet: no process of its exists.
            return Ok(Some(Vec::new()));
        }
        if paused(rec) {
            return Err(Error::Backend(format!(
                "container {} is paused: its guest lists its processes once resumed",
                rec.id
            )));
        }
        control::ps(rec).map(Some)
    }

    /// The cgroup's limits (the jail's); a new memory limit is then told to the
    /// VMM's OOM killer. That message is best effort: the killer also looks at the
    /// limit every second.
    fn update(&self, rec: &DomainRecord, r: &oci_spec::runtime::LinuxResources) -> Result<()> {
        JailBackend.update(rec, r)?;
        let memory = r.memory().as_ref().is_some_and(|m| m.limit().is_some());
        if memory && started(rec) {
            let _ = control::memory_changed(rec, paused(rec));
        }
        Ok(())
    }

    fn exec(
        &self,
        rec: &DomainRecord,
        config: &oci_spec::runtime::Spec,
        req: &ExecRequest,
    ) -> Result<i32> {
        if !started(rec) {
            return Err(Error::Backend(format!(
                "container {} has not been started: a VM domain runs exec'd processes once its guest runs",
                rec.id
            )));
        }
        control::exec(rec, config, req)
    }

    /// The cgroup's numbers (the VMM's CPU time and memory are the guest's), with
    /// `pids.current` the guest's process count once it runs (the cgroup's would
    /// count the VMM's threads). A paused VM cannot answer: its cgroup count stays.
    fn stats(&self, rec: &DomainRecord) -> Result<serde_json::Value> {
        let mut v = JailBackend.stats(rec)?;
        if rec.status == Status::Running && !paused(rec) {
            if let Ok(procs) = control::ps(rec) {
                v["pids"]["current"] = procs.len().into();
            }
        }
        Ok(v)
    }

    /// The cgroup's OOM kills (the VMM itself, where the VMM's OOM killer does not
    /// run) and the guest processes the VMM's OOM killer ended (oom.rs).
    fn oom_watcher(&self, rec: &DomainRecord) -> Result<Box<dyn OomWatch>> {
        let path = rec.dir.join(oom::OOM_FILE);
        let seen = std::fs::metadata(&path).map_or(0, |m| m.len());
        Ok(Box::new(GuestOom {
            cgroup: JailBackend.oom_watcher(rec)?,
            path,
            seen,
        }))
    }

    fn cgroups_of(&self, id: &DomainId, config: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
        // The VMM's cgroup is placed by the same rule as the jail's.
        JailBackend.cgroups_of(id, config)
    }

    fn destroy(&self, rec: &DomainRecord) -> Result<()> {
        if rec.process().is_some() {
            let _ = signal_pid(rec.pid, libc::SIGKILL);
        }
        hyperjail_isolation::cgroups::Cgroup::from_dirs(rec.cgroups.clone())
            .destroy()
            .map_err(|e| Error::Backend(e.to_string()))
    }
}
