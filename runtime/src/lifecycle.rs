//! The lifecycle verbs: status rules, locking and state writes around a backend.

use crate::store::STATE_VERSION;
use crate::{
    Backend, BackendKind, CreateOpts, CreateRequest, DomainDir, DomainId, DomainRecord, Error,
    ExecRequest, OciState, Result, Status, Store,
};
use hyperjail_oci::{run_hook, Bundle, HookKind};
use std::collections::BTreeMap;
use std::path::Path;

/// A file in a domain's state directory where a backend reports that its guest
/// crashed (JSON: `reason`, `signal`); `events` turns it into a `crashed` event.
pub const CRASH_FILE: &str = "crashed.json";
/// Annotation that routes a domain to a backend.
pub const BACKEND_ANNOTATION: &str = "org.hyperjail.backend";

/// How a foreground `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// `--detach`: the container runs on.
    Detached,
    /// The container process exited with this status (128+n when killed by signal n).
    Exited(i32),
}

/// The runtime: a state store and the registered backends.
pub struct Runtime {
    store: Store,
    backends: Vec<Box<dyn Backend>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("store", &self.store)
            .finish()
    }
}

impl Runtime {
    /// A runtime over the store at `root`.
    pub fn new(root: &Path, backends: Vec<Box<dyn Backend>>) -> Result<Runtime> {
        Ok(Runtime {
            store: Store::open(root)?,
            backends,
        })
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn backend(&self, name: &str) -> Result<&dyn Backend> {
        self.backends
            .iter()
            .find(|b| b.kind().name() == name)
            .map(|b| b.as_ref())
            .ok_or_else(|| {
                Error::Backend(format!("backend {name:?} is not available in this build"))
            })
    }

    /// The backend that runs `rec`.
    pub(crate) fn backend_of(&self, rec: &DomainRecord) -> Result<&dyn Backend> {
        self.backend(&rec.backend)
    }

    /// A domain's record, locked.
    pub(crate) fn locked_record(&self, id: &str) -> Result<(DomainDir, DomainRecord)> {
        self.locked(id)
    }

    /// The status of a domain now, from its record and the live process.
    pub fn status_of(&self, rec: &DomainRecord) -> Status {
        let alive = rec
            .process()
            .is_some_and(|st| !matches!(st.state, 'Z' | 'X'));
        if !alive {
            return Status::Stopped;
        }
        // In an ARINC 653 pool the switcher freezes and thaws the domain every frame:
        // only `pause` makes it paused.
        let paused = if matches!(rec.sched, Some(hyperjail_sched::DomainSched::Arinc653)) {
            rec.user_paused
        } else {
            rec.status != Status::Creating
                && self.backend(&rec.backend).is_ok_and(|b| b.is_paused(rec))
        };
        if paused {
            return Status::Paused;
        }
        rec.status
    }

    /// The OCI state document of a record at a given status.
    pub fn oci_state(rec: &DomainRecord, status: Status) -> OciState {
        OciState {
            oci_version: hyperjail_oci::OCI_VERSION.to_string(),
            id: rec.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                rec.pid
            },
            bundle: rec.bundle.clone(),
            rootfs: rec.rootfs.clone(),
            created: rec.created.clone(),
            annotations: rec.annotations.clone(),
            owner: String::new(),
            backend: rec.backend.clone(),
            backend_reason: rec.backend_reason.clone(),
        }
    }

    /// `create`: builds the domain; on any error nothing is left behind.
    pub fn create(&self, id: &str, bundle_dir: &Path, opts: &CreateOpts) -> Result<DomainRecord> {
        self.create_locked(id, bundle_dir, opts)
            .map(|(_dir, rec)| rec)
    }

    /// `create`, returning with the domain still locked (for `run`).
    fn create_locked(
        &self,
        id: &str,
        bundle_dir: &Path,
        opts: &CreateOpts,
    ) -> Result<(DomainDir, DomainRecord)> {
        let id = DomainId::new(id)?;
        let bundle = Bundle::load(bundle_dir)?;
        let annotations: BTreeMap<String, String> = bundle
            .spec
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (kind, reason) = route(&annotations)?;
        let backend = self.backend(kind.name())?;
        let dir = self.store.create(&id)?;
        let domid = match self.store.next_domid() {
            Ok(d) => d,
            Err(e) => {
                let _ = dir.remove();
                return Err(e);
            }
        };
        let mut rec = DomainRecord {
            version: STATE_VERSION,
            id: id.to_string(),
            domid,
            backend: kind.name().to_string(),
            backend_reason: reason,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            pid: 0,
            pid_start: 0,
            status: Status::Creating,
            created: crate::lifecycle::now_rfc3339(),
            annotations,
            cgroups: Vec::new(),
            hooks: bundle.spec.hooks().clone(),
            pool: hyperjail_sched::DEFAULT_POOL.to_string(),
            sched: None,
            sched_note: String::new(),
            user_paused: false,
            dir: dir.path().to_path_buf(),
        };
        let req = CreateRequest {
            id: &id,
            bundle: &bundle,
            dir: &dir,
            opts,
        };
        let result = save_config(&dir, &bundle.spec)
            .and_then(|()| self.admit_new(&mut rec))
            .and_then(|admitted| {
                backend.create(&req, &mut rec)?;
                match admitted {
                    Some(a) => self.apply_new(&mut rec, a),
                    None => Ok(()),
                }
            })
            .and_then(|()| {
                rec.status = Status::Created;
                dir.save(&rec)?;
                if let Some(p) = &opts.pid_file {
                    write_pid_file(p, rec.pid)?;
                }
                Ok(())
            });
        if let Err(e) = result {
            let _ = backend.destroy(&rec);
            let _ = dir.remove();
            return Err(e);
        }
        Ok((dir, rec))
    }

    fn locked(&self, id: &str) -> Result<(DomainDir, DomainRecord)> {
        let id = DomainId::new(id)?;
        let dir = self.store.lock(&id)?;
        match dir.load()? {
            Some(rec) => Ok((dir, rec)),
            None => Err(Error::WrongState {
                verb: "use",
                id: id.to_string(),
                status: Status::Creating,
            }),
        }
    }

    /// `start`: runs the user program of a created domain.
    pub fn start(&self, id: &str) -> Result<()> {
        let (dir, rec) = self.locked(id)?;
        self.start_locked(&dir, rec)
    }

    fn start_locked(&self, dir: &DomainDir, mut rec: DomainRecord) -> Result<()> {
        let status = self.status_of(&rec);
        if status != Status::Created {
            return Err(Error::WrongState {
                verb: "start",
                id: rec.id,
                status,
            });
        }
        self.backend(&rec.backend)?.start(&rec, dir)?;
        rec.status = Status::Running;
        dir.save(&rec)?;
        if matches!(rec.sched, Some(hyperjail_sched::DomainSched::Arinc653)) {
            // From now on it runs in its slots only: the pool's switcher thaws it there.
            self.backend(&rec.backend)?.hold(&rec, true)?;
        }
        let state = Self::oci_state(&rec, Status::Running);
        run_record_hooks(&rec, HookKind::Poststart, &state);
        Ok(())
    }

    /// `state`: the OCI state document (no lock, see the store's docs).
    pub fn state(&self, id: &str) -> Result<OciState> {
        let id = DomainId::new(id)?;
        match self.store.read(&id)? {
            Some(rec) => {
                let st = self.status_of(&rec);
                Ok(Self::oci_state(&rec, st))
            }
            None => Err(Error::WrongState {
                verb: "read the state of",
                id: id.to_string(),
                status: Status::Creating,
            }),
        }
    }

    /// Every domain's record and current status; unreadable ones are skipped.
    pub fn list(&self) -> Result<Vec<(DomainRecord, Status)>> {
        let mut out = Vec::new();
        for id in self.store.ids()? {
            if let Ok(Some(rec)) = self.store.read(&id) {
                let st = self.status_of(&rec);
                out.push((rec, st));
            }
        }
        Ok(out)
    }

    /// `kill`: a signal to the container process (or all its processes).
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let (_dir, rec) = self.locked(id)?;
        let status = self.status_of(&rec);
        if status == Status::Stopped && !all {
            return Err(Error::WrongState {
                verb: "kill",
                id: rec.id,
                status,
            });
        }
        self.backend(&rec.backend)?.kill(&rec, signal, all)
    }

    /// `delete`: removes a stopped (or, like runc, a created) domain; `force` kills a
    /// running one first.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let did = DomainId::new(id)?;
        let dir = match self.store.lock(&did) {
            // Like runc: --force on a missing container is success (engines call it to
            // clean up after any failure, including a create that never got far).
            Err(Error::NotFound(_)) if force => return Ok(()),
            r => r?,
        };
        let rec = match dir.load() {
            Ok(Some(rec)) => rec,
            // No record: `create` stopped before its first save, which comes before any
            // cgroup or process of the domain exists. Only the directory is left.
            Ok(None) if force => return dir.remove(),
            // An unreadable record (a full disk, a hand edit): the config copy still
            // tells where the domain's cgroups are, and so every process in them.
            Err(Error::CorruptState { .. }) if force => {
                return match self.record_from_config(&did) {
                    Some(rec) => self.destroy(dir, &rec),
                    None => dir.remove(),
                };
            }
            Ok(None) => {
                return Err(Error::WrongState {
                    verb: "delete",
                    id: did.to_string(),
                    status: Status::Creating,
                })
            }
            Err(e) => return Err(e),
        };
        let status = self.status_of(&rec);
        // runc and crun delete a `created` container without --force (containerd's shim
        // relies on it when a task is deleted before start), so we do too.
        if !force && !matches!(status, Status::Stopped | Status::Created) {
            return Err(Error::WrongState {
                verb: "delete",
                id: rec.id,
                status,
            });
        }
        self.destroy(dir, &rec)
    }

    /// A stand-in for the unreadable record of domain `id`, made from its config copy:
    /// backend, annotations, hooks and the cgroups that exist; no pid (the processes
    /// are found in the cgroups). `None` when the config copy is unreadable too.
    fn record_from_config(&self, id: &DomainId) -> Option<DomainRecord> {
        let spec = self.config(id.as_str()).ok()?;
        let annotations: BTreeMap<String, String> = spec
            .annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (kind, reason) = route(&annotations).ok()?;
        let backend = self.backend(kind.name()).ok()?;
        // A relative root.path needs the bundle, which only the record knew.
        let rootfs = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .filter(|p| p.is_absolute())
            .unwrap_or_default();
        Some(DomainRecord {
            version: STATE_VERSION,
            id: id.to_string(),
            domid: 0,
            backend: kind.name().to_string(),
            backend_reason: reason,
            bundle: Default::default(),
            rootfs,
            pid: 0,
            pid_start: 0,
            status: Status::Stopped,
            created: String::new(),
            annotations,
            cgroups: backend.cgroups_of(id, &spec),
            hooks: spec.hooks().clone(),
            pool: hyperjail_sched::DEFAULT_POOL.to_string(),
            sched: None,
            sched_note: String::new(),
            user_paused: false,
            dir: Default::default(),
        })
    }

    fn destroy(&self, dir: DomainDir, rec: &DomainRecord) -> Result<()> {
        self.backend(&rec.backend)?.destroy(rec)?;
        let state = Self::oci_state(rec, Status::Stopped);
        run_record_hooks(rec, HookKind::Poststop, &state);
        dir.remove()
    }

    /// The config.json a domain was created with.
    pub fn config(&self, id: &str) -> Result<oci_spec::runtime::Spec> {
        let id = DomainId::new(id)?;
        let path = self.store.path_of(&id).join(CONFIG_COPY);
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(id.to_string()),
            _ => Error::io("read", &path, e),
        })?;
        serde_json::from_slice(&data).map_err(|e| Error::CorruptState {
            path,
            msg: e.to_string(),
        })
    }

    fn live(
        &self,
        id: &str,
        verb: &'static str,
        ok: &[Status],
    ) -> Result<(DomainDir, DomainRecord)> {
        let (dir, rec) = self.locked(id)?;
        let status = self.status_of(&rec);
        if !ok.contains(&status) {
            return Err(Error::WrongState {
                verb,
                id: rec.id,
                status,
            });
        }
        Ok((dir, rec))
    }

    /// `pause`: freezes a running domain.
    pub fn pause(&self, id: &str) -> Result<()> {
        let (d, mut rec) = self.live(id, "pause", &[Status::Running, Status::Created])?;
        if matches!(rec.sched, Some(hyperjail_sched::DomainSched::Arinc653)) {
            rec.user_paused = true;
            d.save(&rec)?;
        }
        self.backend(&rec.backend)?.pause(&rec)
    }

    /// `resume`: thaws a paused domain.
    pub fn resume(&self, id: &str) -> Result<()> {
        let (d, mut rec) = self.live(id, "resume", &[Status::Paused])?;
        if rec.user_paused {
            // The pool's switcher thaws it in its next slot.
            rec.user_paused = false;
            return d.save(&rec);
        }
        self.backend(&rec.backend)?.resume(&rec)
    }

    /// `ps`: host pids of the domain's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (rec, _) = self.record(id)?;
        self.backend(&rec.backend)?.pids(&rec)
    }

    /// `ps` of a domain whose processes are a guest kernel's (a VM's): its own list;
    /// `None` for a domain of host processes.
    pub fn guest_processes(&self, id: &str) -> Result<Option<Vec<crate::GuestProcess>>> {
        let (rec, _) = self.record(id)?;
        self.backend(&rec.backend)?.guest_processes(&rec)
    }

    /// `update`: new resource limits for a live domain.
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let (_d, rec) = self.live(
            id,
            "update",
            &[Status::Created, Status::Running, Status::Paused],
        )?;
        self.backend(&rec.backend)?.update(&rec, resources)
    }

    /// `events --stats` data of a live domain.
    pub fn stats(&self, id: &str) -> Result<serde_json::Value> {
        let (rec, status) = self.record(id)?;
        if status == Status::Stopped {
            return Err(Error::WrongState {
                verb: "get stats of",
                id: rec.id,
                status,
            });
        }
        self.backend(&rec.backend)?.stats(&rec)
    }

    /// A watcher of the domain's OOM kills, for `events`.
    pub fn oom_watcher(&self, id: &str) -> Result<Box<dyn crate::OomWatch>> {
        let (rec, _) = self.record(id)?;
        self.backend(&rec.backend)?.oom_watcher(&rec)
    }

    /// A domain's record and current status, without locking.
    pub fn record(&self, id: &str) -> Result<(DomainRecord, Status)> {
        let id = DomainId::new(id)?;
        let rec = self
            .store
            .read(&id)?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let st = self.status_of(&rec);
        Ok((rec, st))
    }

    /// Why the domain's guest crashed, if it did: the report a backend left in the
    /// state directory ([`CRASH_FILE`]), for the `crashed` event.
    pub fn crash_report(&self, id: &str) -> Result<Option<serde_json::Value>> {
        let id = DomainId::new(id)?;
        let path = self.store.path_of(&id).join(CRASH_FILE);
        Ok(std::fs::read(&path)
            .ok()
            .filter(|d| !d.is_empty())
            .map(|d| {
                serde_json::from_slice(&d).unwrap_or_else(
                    |_| serde_json::json!({"reason": String::from_utf8_lossy(&d).trim()}),
                )
            }))
    }

    /// `exec`: a new process in a created or running domain; waits for it unless
    /// detached, forwarding signals, and returns its exit status.
    pub fn exec(&self, id: &str, req: &ExecRequest) -> Result<RunOutcome> {
        let config = self.config(id)?;
        let guard = if req.detach {
            None
        } else {
            Some(crate::wait::Foreground::enter()?)
        };
        // Locked while the process starts, so a concurrent kill or delete waits for it.
        let (dir, rec) = self.live(id, "exec in", &[Status::Created, Status::Running])?;
        let mut req = req.clone();
        req.lock_fd = Some(dir.lock_fd());
        let pid = self.backend(&rec.backend)?.exec(&rec, &config, &req)?;
        drop(dir);
        if let Some(p) = &req.pid_file {
            write_pid_file(p, pid)?;
        }
        match guard {
            None => Ok(RunOutcome::Detached),
            Some(g) => Ok(RunOutcome::Exited(g.wait_for(pid))),
        }
    }

    /// `run`: create + start, then (unless detached) wait for the container process,
    /// forwarding signals to it, and delete it once it has exited.
    pub fn run(&self, id: &str, bundle_dir: &Path, opts: &CreateOpts) -> Result<RunOutcome> {
        self.run_with(id, bundle_dir, opts, &mut || Ok(()))
    }

    /// `run`, calling `created` between create and start (the CLI uses it to pick up
    /// the pty master when it proxies a terminal itself).
    pub fn run_with(
        &self,
        id: &str,
        bundle_dir: &Path,
        opts: &CreateOpts,
        created: &mut dyn FnMut() -> Result<()>,
    ) -> Result<RunOutcome> {
        let guard = if opts.foreground {
            Some(crate::wait::Foreground::enter()?)
        } else {
            None
        };
        // Locked from create through start: no other verb sees the domain in between.
        let (dir, rec) = self.create_locked(id, bundle_dir, opts)?;
        if let Err(e) = created().and_then(|()| self.start_locked(&dir, rec.clone())) {
            let rec = dir.load().ok().flatten().unwrap_or(rec);
            let _ = self.destroy(dir, &rec);
            return Err(e);
        }
        drop(dir);
        let Some(guard) = guard else {
            return Ok(RunOutcome::Detached);
        };
        let code = guard.wait_for(rec.pid);
        let dir = self.store.lock(&DomainId::new(id)?)?;
        let rec = dir.load()?.unwrap_or(rec);
        self.destroy(dir, &rec)?;
        Ok(RunOutcome::Exited(code))
    }
}

/// Keeps the config the domain was created with, for `exec` and `update`.
fn save_config(dir: &DomainDir, spec: &oci_spec::runtime::Spec) -> Result<()> {
    // Written atomically: `exec` reads it without the lock.
    let path = dir.path().join(CONFIG_COPY);
    let tmp = dir.path().join("config.json.tmp");
    let data = serde_json::to_vec(spec).map_err(|e| Error::Backend(e.to_string()))?;
    std::fs::write(&tmp, data).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
}

/// Name of the config copy in the domain directory.
const CONFIG_COPY: &str = "config.json";

/// Chooses the backend from the `org.hyperjail.backend` annotation.
fn route(annotations: &BTreeMap<String, String>) -> Result<(BackendKind, String)> {
    match annotations.get(BACKEND_ANNOTATION).map(String::as_str) {
        None => Ok((BackendKind::Jail, "default".into())),
        Some("jail") => Ok((
            BackendKind::Jail,
            format!("annotation {BACKEND_ANNOTATION}=jail"),
        )),
        Some("vm") => Ok((
            BackendKind::Vm,
            format!("annotation {BACKEND_ANNOTATION}=vm"),
        )),
        Some("auto") => Ok((
            BackendKind::Jail,
            "auto: nothing in the config needs a kernel of its own".into(),
        )),
        Some(other) => Err(Error::Backend(format!(
            "annotation {BACKEND_ANNOTATION}={other:?} is not one of jail, vm, auto"
        ))),
    }
}

/// Runs poststart/poststop hooks: each failure is a warning and the remaining hooks
/// still run (runtime-spec, Lifecycle).
fn run_record_hooks(rec: &DomainRecord, kind: HookKind, state: &OciState) {
    let Some(hooks) = &rec.hooks else { return };
    let spec = oci_spec::runtime::SpecBuilder::default()
        .hooks(hooks.clone())
        .build();
    let Ok(spec) = spec else { return };
    let json = serde_json::to_vec(state).unwrap_or_default();
    for h in kind.of(&spec) {
        if let Err(e) = run_hook(h, kind, &json) {
            eprintln!("hyperjail: warning: {e}");
        }
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("hjtmp");
    std::fs::write(&tmp, pid.to_string()).map_err(|e| Error::io("write pid file", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("write pid file", path, e))
}

/// One record for the `--log` file, in runc's text or JSON format.
pub fn log_line(json: bool, level: &str, msg: &str) -> String {
    let time = now_rfc3339();
    if json {
        serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
    } else {
        format!("time={time:?} level={level} msg={msg:?}")
    }
}

/// The current time as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        let mut a = BTreeMap::new();
        assert_eq!(route(&a).expect("default").0, BackendKind::Jail);
        a.insert(BACKEND_ANNOTATION.to_string(), "vm".to_string());
        assert_eq!(route(&a).expect("vm").0, BackendKind::Vm);
        a.insert(BACKEND_ANNOTATION.to_string(), "qemu".to_string());
        assert!(route(&a).unwrap_err().to_string().contains("not one of"));
    }

    #[test]
    fn rfc3339_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T');
        assert!(s.starts_with("20"));
    }
}
