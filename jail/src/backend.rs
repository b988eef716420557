//! [`Backend`] for the jail.

use crate::create::{cgroup_path, create, short_path, START_SOCKET};
use hyperjail_isolation::cgroups::Cgroup;
use hyperjail_isolation::{resources, stats};
use hyperjail_runtime::{
    Backend, BackendKind, CreateRequest, DomainDir, DomainId, DomainRecord, Error, ExecRequest,
    OomWatch, Result,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The jail backend (stateless: everything lives in the domain record).
#[derive(Debug, Default)]
pub struct JailBackend;

/// kill(2) with a raw signal number (real-time signals have no nix `Signal`).
fn signal_pid(pid: i32, signal: i32) -> nix::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory.
    nix::errno::Errno::result(unsafe { libc::kill(pid, signal) }).map(drop)
}

struct Oom(stats::OomWatcher);

impl OomWatch for Oom {
    fn wait(&mut self, timeout: std::time::Duration) -> Result<bool> {
        self.0
            .wait(timeout)
            .map_err(|e| Error::Backend(e.to_string()))
    }
}

fn cgroup(rec: &DomainRecord) -> Cgroup {
    Cgroup::from_dirs(rec.cgroups.clone())
}

fn same_process(rec: &DomainRecord) -> bool {
    rec.process().is_some()
}

impl Backend for JailBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Jail
    }

    fn create(&self, req: &CreateRequest<'_>, rec: &mut DomainRecord) -> Result<()> {
        Ok(create(req, rec)?)
    }

    fn start(&self, _rec: &DomainRecord, dir: &DomainDir) -> Result<()> {
        let (_f, path) = short_path(dir.path(), START_SOCKET)?;
        let mut s = UnixStream::connect(&path)
            .map_err(|e| Error::Backend(format!("cannot reach the container's init: {e}")))?;
        s.write_all(b"s")
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
        if all {
            for p in Cgroup::from_dirs(rec.cgroups.clone()).pids() {
                let _ = signal_pid(p, signal);
            }
            return Ok(());
        }
        if !same_process(rec) {
            return Err(Error::Backend(format!(
                "container {} is not running",
                rec.id
            )));
        }
        signal_pid(rec.pid, signal).map_err(|e| Error::Sys {
            op: "kill",
            source: e,
        })
    }

    fn is_paused(&self, rec: &DomainRecord) -> bool {
        Cgroup::from_dirs(rec.cgroups.clone()).is_frozen()
    }

    fn pause(&self, rec: &DomainRecord) -> Result<()> {
        cgroup(rec)
            .set_frozen(true)
            .map_err(|e| Error::Backend(e.to_string()))
    }

    fn resume(&self, rec: &DomainRecord) -> Result<()> {
        cgroup(rec)
            .set_frozen(false)
            .map_err(|e| Error::Backend(e.to_string()))
    }

    fn set_sched(&self, rec: &DomainRecord, cpu: &hyperjail_sched::LinuxCpu) -> Result<String> {
        crate::sched::apply(&cgroup(rec), cpu)
    }

    fn hold(&self, rec: &DomainRecord, frozen: bool) -> Result<()> {
        cgroup(rec)
            .request_frozen(frozen)
            .map_err(|e| Error::Backend(e.to_string()))
    }

    fn pids(&self, rec: &DomainRecord) -> Result<Vec<i32>> {
        Ok(cgroup(rec).pids())
    }

    fn update(
        &self,
        rec: &DomainRecord,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let settings = resources::check_host(resources, false)
            .and_then(|()| resources::plan(resources, &[]))
            .map_err(|e| Error::Backend(e.to_string()))?;
        cgroup(rec)
            .apply(&settings)
            .map_err(|e| Error::Backend(e.to_string()))
    }

    fn exec(
        &self,
        rec: &DomainRecord,
        config: &oci_spec::runtime::Spec,
        req: &ExecRequest,
    ) -> Result<i32> {
        Ok(crate::exec::exec(rec, config, req)?)
    }

    fn stats(&self, rec: &DomainRecord) -> Result<serde_json::Value> {
        Ok(stats::stats(&cgroup(rec)))
    }

    fn oom_watcher(&self, rec: &DomainRecord) -> Result<Box<dyn OomWatch>> {
        let w = stats::OomWatcher::new(&cgroup(rec)).map_err(|e| Error::Backend(e.to_string()))?;
        Ok(Box::new(Oom(w)))
    }

    fn cgroups_of(&self, id: &DomainId, config: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
        // Where `create` put them; the parents it may have made are not known.
        Cgroup::plan(&cgroup_path(config, id.as_str()))
            .leaves()
            .into_iter()
            .filter(|d| d.is_dir())
            .cloned()
            .collect()
    }

    fn destroy(&self, rec: &DomainRecord) -> Result<()> {
        if same_process(rec) {
            let _ = kill(Pid::from_raw(rec.pid), Signal::SIGKILL);
        }
        hyperjail_isolation::rootfs::unmount_host_rootfs(&rec.rootfs);
        Cgroup::from_dirs(rec.cgroups.clone())
            .destroy()
            .map_err(|e| Error::Backend(e.to_string()))
    }
}
