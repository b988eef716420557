//! From the bundle to a [`Plan`]: finds `process.args[0]` inside the rootfs (PATH
//! lookup as runc does, symlinks resolved inside the rootfs with openat2
//! RESOLVE_IN_ROOT), reads and checks the ELF, and sizes guest memory.

use crate::abi::{HUGE, RAM_MAX, USER_MIN};
use crate::elf;
use crate::vmm::Plan;
use hyperjail_oci::Bundle;
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Guest memory without `linux.resources.memory.limit`.
pub const DEFAULT_RAM: u64 = 64 << 20;
/// Smallest guest memory.
const MIN_RAM: u64 = 8 << 20;
/// Heap room the program needs at least, above its image.
const MIN_HEAP: u64 = 1 << 20;
/// Largest program file.
const MAX_FILE: u64 = 256 << 20;
/// Bytes read from the start of the program to parse it (ELF and program headers).
const HEAD: u64 = 64 << 10;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Opens `path` inside the rootfs; Ok(None) when it does not exist there.
fn open_in_root(root: &std::fs::File, path: &str) -> Result<Option<std::fs::File>, String> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    match openat2(root, path, how) {
        Ok(fd) => Ok(Some(std::fs::File::from(fd))),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(format!("open {path} in the rootfs: {e}")),
    }
}

/// The program file found in the rootfs.
#[derive(Debug)]
pub struct Found {
    /// Its path in the rootfs (AT_EXECFN).
    pub path: String,
    /// The open file (the VMM reads the segments from it into guest memory).
    pub file: std::fs::File,
    /// Its first bytes (up to [`HEAD`]), for the ELF parser.
    pub head: Vec<u8>,
    /// Its length.
    pub len: u64,
}

/// Finds the program and reads its start.
pub fn find(rootfs: &Path, arg0: &str, env: &[String], cwd: &str) -> Result<Found, String> {
    let root = std::fs::File::open(rootfs)
        .map_err(|e| format!("open rootfs {}: {e}", rootfs.display()))?;
    let candidates: Vec<String> = if arg0.starts_with('/') {
        vec![arg0.to_string()]
    } else if arg0.contains('/') {
        vec![format!("{}/{arg0}", cwd.trim_end_matches('/'))]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{arg0}", d.trim_end_matches('/')))
            .collect()
    };
    for c in &candidates {
        let Some(f) = open_in_root(&root, c)? else {
            continue;
        };
        let meta = f.metadata().map_err(|e| format!("stat {c}: {e}"))?;
        if !meta.is_file() {
            continue;
        }
        if nix::sys::stat::Mode::from_bits_truncate(std::os::unix::fs::PermissionsExt::mode(
            &meta.permissions(),
        ))
        .intersection(Mode::S_IXUSR | Mode::S_IXGRP | Mode::S_IXOTH)
        .is_empty()
        {
            return Err(format!(
                "{c} in the rootfs is not executable (permission denied)"
            ));
        }
        if meta.len() > MAX_FILE {
            return Err(format!("{c} is too large for the VM backend"));
        }
        let mut head = vec![0u8; meta.len().min(HEAD) as usize];
        f.read_exact_at(&mut head, 0)
            .map_err(|e| format!("read {c}: {e}"))?;
        return Ok(Found {
            path: c.clone(),
            file: f,
            head,
            len: meta.len(),
        });
    }
    Err(format!(
        "executable file {arg0:?} not found in the rootfs (no such file in {})",
        if candidates.len() == 1 {
            "the given path"
        } else {
            "$PATH"
        }
    ))
}

/// The loader (PT_INTERP) of the dynamically linked `execfn`, opened in the rootfs
/// and placed at the first 2 MiB boundary above the program.
fn loader(
    bundle: &Bundle,
    execfn: &str,
    path: &str,
    image: &elf::Image,
) -> Result<(std::fs::File, elf::Image), String> {
    let root = std::fs::File::open(&bundle.rootfs)
        .map_err(|e| format!("open rootfs {}: {e}", bundle.rootfs.display()))?;
    let missing =
        || format!("{execfn} is dynamically linked and its loader {path} is not in the rootfs");
    let file = open_in_root(&root, path)?.ok_or_else(missing)?;
    let meta = file.metadata().map_err(|e| format!("stat {path}: {e}"))?;
    if !meta.is_file() {
        return Err(missing());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{path} is too large for the VM backend"));
    }
    let mut head = vec![0u8; meta.len().min(HEAD) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| format!("read {path}: {e}"))?;
    let img = elf::parse_loader(execfn, image, path, &head, meta.len())?;
    Ok((file, img))
}

/// Builds the VM plan for the bundle.
pub fn plan(bundle: &Bundle) -> Result<Plan, String> {
    let spec = &bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or("config.json has no process to run")?;
    let argv: Vec<String> = process.args().clone().unwrap_or_default();
    let arg0 = argv.first().ok_or("process.args is empty")?;
    let envp: Vec<String> = process.env().clone().unwrap_or_default();
    let cwd = process.cwd().to_string_lossy().into_owned();
    let found = find(&bundle.rootfs, arg0, &envp, &cwd)?;
    let execfn = found.path;
    let image = elf::parse(&execfn, &found.head, found.len, USER_MIN)?;
    let file = std::sync::Arc::new(found.file);
    let interp = match &image.interp {
        Some(path) => Some(loader(bundle, &execfn, path, &image)?)
            .map(|(f, img)| (std::sync::Arc::new(f), img)),
        None => None,
    };
    let end = interp.as_ref().map_or(image.end, |(_, i)| i.end);
    let limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|&l| l > 0)
        .map_or(DEFAULT_RAM, |l| l as u64);
    let ram = (limit & !(HUGE - 1)).min(RAM_MAX);
    let stack = (ram / 8).clamp(256 << 10, 8 << 20);
    let need = end.saturating_add(MIN_HEAP).saturating_add(stack);
    if ram < MIN_RAM || need > ram {
        return Err(format!(
            "memory limit {} MiB is too small for {execfn} in the VM (needs at least {} MiB)",
            limit >> 20,
            need.max(MIN_RAM).div_ceil(1 << 20)
        ));
    }
    Ok(Plan {
        ram,
        file,
        image,
        interp,
        argv,
        envp,
        execfn,
        hostname: spec.hostname().clone().unwrap_or_default(),
        cwd,
        stack,
        terminal: process.terminal().unwrap_or(false),
        console_size: process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16)),
        user: (process.user().uid(), process.user().gid()),
        groups: process.user().additional_gids().clone().unwrap_or_default(),
        capabilities: process.capabilities().clone(),
        rootfs: bundle.rootfs.clone(),
        readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
    })
}
