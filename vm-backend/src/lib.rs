//! hyperjail-vm: the KVM microVM backend.
//!
//! This crate is a skeleton until the VM backend issue lands: it registers the `vm`
//! backend so that routing and error messages are in place, and refuses to create a
//! domain with a message that names the jail as the working alternative.

#![forbid(unsafe_code)]

use hyperjail_runtime::{
    Backend, BackendKind, CreateRequest, DomainDir, DomainRecord, Error, ExecRequest, OomWatch,
    Result,
};

/// The VM backend.
#[derive(Debug, Default)]
pub struct VmBackend;

fn unavailable() -> Error {
    Error::Backend(
        "the VM backend (org.hyperjail.backend=vm) is not implemented yet; the jail backend is available".into(),
    )
}

impl Backend for VmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    fn create(&self, _req: &CreateRequest<'_>, _rec: &mut DomainRecord) -> Result<()> {
        Err(unavailable())
    }

    fn start(&self, _rec: &DomainRecord, _dir: &DomainDir) -> Result<()> {
        Err(unavailable())
    }

    fn kill(&self, _rec: &DomainRecord, _signal: i32, _all: bool) -> Result<()> {
        Err(unavailable())
    }

    fn set_sched(&self, _rec: &DomainRecord, _c: &hyperjail_sched::LinuxCpu) -> Result<String> {
        Err(unavailable())
    }

    fn hold(&self, _rec: &DomainRecord, _frozen: bool) -> Result<()> {
        Err(unavailable())
    }

    fn is_paused(&self, _rec: &DomainRecord) -> bool {
        false
    }

    fn pause(&self, _rec: &DomainRecord) -> Result<()> {
        Err(unavailable())
    }

    fn resume(&self, _rec: &DomainRecord) -> Result<()> {
        Err(unavailable())
    }

    fn pids(&self, _rec: &DomainRecord) -> Result<Vec<i32>> {
        Err(unavailable())
    }

    fn update(&self, _rec: &DomainRecord, _r: &oci_spec::runtime::LinuxResources) -> Result<()> {
        Err(unavailable())
    }

    fn exec(
        &self,
        _rec: &DomainRecord,
        _c: &oci_spec::runtime::Spec,
        _r: &ExecRequest,
    ) -> Result<i32> {
        Err(unavailable())
    }

    fn stats(&self, _rec: &DomainRecord) -> Result<serde_json::Value> {
        Err(unavailable())
    }

    fn oom_watcher(&self, _rec: &DomainRecord) -> Result<Box<dyn OomWatch>> {
        Err(unavailable())
    }

    fn destroy(&self, _rec: &DomainRecord) -> Result<()> {
        Ok(())
    }
}
