//! CPU pools on disk: `<root>/@cpupools/<name>.json`, one file per pool except
//! `Pool-0`, which holds every online CPU that no other pool holds and runs Credit.
//! (`@` cannot start a container id, so the directory never collides with one.)
//! Changes take the pools lock (`<root>/@cpupools/.lock`).

use crate::{Error, Result};
use hyperjail_sched::{parse_cpus, validate_pool_name, Pool, Scheduler, DEFAULT_POOL};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The pools of one state root.
#[derive(Debug, Clone)]
pub struct Pools {
    dir: PathBuf,
}

/// Held while pools change (and while a domain is admitted to one).
#[derive(Debug)]
pub struct PoolsLock(#[allow(dead_code)] Flock<File>);

/// Every online CPU (/sys/devices/system/cpu/online).
pub fn online_cpus() -> Result<Vec<u32>> {
    let p = "/sys/devices/system/cpu/online";
    let s = fs::read_to_string(p).map_err(|e| Error::io("read", p, e))?;
    parse_cpus(&s).map_err(|e| Error::Backend(e.to_string()))
}

impl Pools {
    /// The pools under `root`.
    pub fn new(root: &Path) -> Pools {
        Pools {
            dir: root.join("@cpupools"),
        }
    }

    /// The directory of pool files (switcher pid files live there too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the pools lock.
    pub fn lock(&self) -> Result<PoolsLock> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io("create", &self.dir, e))?;
        let p = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| Error::io("open", &p, e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map(PoolsLock)
            .map_err(|(_, e)| Error::Sys {
                op: "flock cpupools",
                source: e,
            })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The pools other than Pool-0, sorted by name.
    fn others(&self) -> Result<Vec<Pool>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &self.dir, e)),
        };
        let mut out = Vec::new();
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(p) = self.read(n)? {
                out.push(p);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, name: &str) -> Result<Option<Pool>> {
        let p = self.path(name);
        match fs::read(&p) {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|e| Error::CorruptState {
                    path: p,
                    msg: e.to_string(),
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &p, e)),
        }
    }

    /// Every pool, Pool-0 first.
    pub fn list(&self) -> Result<Vec<Pool>> {
        let others = self.others()?;
        let taken: Vec<u32> = others.iter().flat_map(|p| p.cpus.clone()).collect();
        let pool0 = Pool {
            name: DEFAULT_POOL.into(),
            cpus: online_cpus()?
                .into_iter()
                .filter(|c| !taken.contains(c))
                .collect(),
            scheduler: Scheduler::Credit,
            arinc653: None,
        };
        Ok(std::iter::once(pool0).chain(others).collect())
    }

    /// One pool by name; an unknown name is an error naming the pools there are.
    pub fn get(&self, name: &str) -> Result<Pool> {
        let all = self.list()?;
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        all.iter().find(|p| p.name == name).cloned().ok_or_else(|| {
            Error::Backend(format!(
                "cpupool {name:?} does not exist (pools: {})",
                names.join(", ")
            ))
        })
    }

    /// Creates a pool from CPUs that Pool-0 holds now; Pool-0 keeps at least one CPU.
    pub fn create(&self, _lock: &PoolsLock, pool: &Pool) -> Result<()> {
        validate_pool_name(&pool.name).map_err(|e| Error::Backend(e.to_string()))?;
        if pool.name == DEFAULT_POOL || self.path(&pool.name).exists() {
            return Err(Error::Backend(format!(
                "cpupool {} already exists",
                pool.name
            )));
        }
        if pool.cpus.is_empty() {
            return Err(Error::Backend(
                "cpupool: a pool needs at least one CPU".into(),
            ));
        }
        let all = self.list()?;
        let online = online_cpus()?;
        let free = &all[0].cpus;
        for c in &pool.cpus {
            if !online.contains(c) {
                return Err(Error::Backend(format!("cpupool: CPU {c} is not online")));
            }
            if !free.contains(c) {
                let owner = all
                    .iter()
                    .find(|p| p.cpus.contains(c))
                    .map_or("another pool", |p| p.name.as_str());
                return Err(Error::Backend(format!(
                    "cpupool: CPU {c} belongs to {owner}"
                )));
            }
        }
        if free.iter().all(|c| pool.cpus.contains(c)) {
            return Err(Error::Backend(format!(
                "cpupool: {DEFAULT_POOL} must keep at least one CPU (it holds {})",
                hyperjail_sched::format_cpus(free)
            )));
        }
        self.save(_lock, pool)
    }

    /// Writes a pool's file (atomically).
    pub fn save(&self, _lock: &PoolsLock, pool: &Pool) -> Result<()> {
        let dst = self.path(&pool.name);
        let tmp = self.dir.join(format!(".{}.tmp", pool.name));
        let data = serde_json::to_vec_pretty(pool).map_err(|e| Error::Backend(e.to_string()))?;
        fs::write(&tmp, data).map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| Error::io("rename", &dst, e))
    }

    /// Removes a pool's file.
    pub fn remove(&self, _lock: &PoolsLock, name: &str) -> Result<()> {
        if name == DEFAULT_POOL {
            return Err(Error::Backend(format!(
                "cpupool: {DEFAULT_POOL} cannot be destroyed"
            )));
        }
        let p = self.path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(Error::Backend(format!("cpupool {name:?} does not exist")))
            }
            Err(e) => Err(Error::io("remove", &p, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_destroy() {
        let online = online_cpus().expect("online");
        let tmp = tempfile::tempdir().expect("tmp");
        let pools = Pools::new(tmp.path());
        let l = pools.lock().expect("lock");
        let p0 = pools.get(DEFAULT_POOL).expect("pool-0");
        assert_eq!(p0.cpus, online);
        let last = *online.last().expect("a cpu");
        let rt = Pool {
            name: "rt".into(),
            cpus: vec![last],
            scheduler: Scheduler::Rtds,
            arinc653: None,
        };
        if online.len() > 1 {
            pools.create(&l, &rt).expect("create");
            assert!(!pools.get(DEFAULT_POOL).expect("p0").cpus.contains(&last));
            let e = pools.create(&l, &rt).unwrap_err().to_string();
            assert!(e.contains("already exists"), "{e}");
            pools.remove(&l, "rt").expect("remove");
        }
        // Taking every CPU from Pool-0 is refused.
        let all = Pool {
            cpus: online.clone(),
            ..rt.clone()
        };
        let e = pools.create(&l, &all).unwrap_err().to_string();
        assert!(e.contains("must keep at least one CPU"), "{e}");
        let e = pools.get("nope").unwrap_err().to_string();
        assert!(e.contains("does not exist (pools: Pool-0)"), "{e}");
        assert!(pools.remove(&l, DEFAULT_POOL).is_err());
    }
}
