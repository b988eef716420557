//! One function per verb; each is a thin call into the runtime.

mod list;
mod spec;

use crate::args::{Cli, Cmd, CreateArgs};
use anyhow::{bail, Context, Result};
use hyperjail_runtime::{parse_signal, CreateOpts, RunOutcome, Runtime};
use std::path::{Path, PathBuf};

fn runtime(cli: &Cli) -> Result<Runtime> {
    let backends: Vec<Box<dyn hyperjail_runtime::Backend>> = vec![
        Box::new(hyperjail_jail::JailBackend),
        Box::new(hyperjail_vm::VmBackend),
    ];
    Ok(Runtime::new(&cli.root, backends)?)
}

/// Makes a path given on the command line absolute (the runtime may chdir later).
fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(p)
    })
}

fn create_opts(a: &CreateArgs, foreground: bool) -> Result<CreateOpts> {
    Ok(CreateOpts {
        pid_file: a.pid_file.as_deref().map(absolute).transpose()?,
        console_socket: a.console_socket.as_deref().map(absolute).transpose()?,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        foreground,
    })
}

/// Runs the verb; returns the process exit code.
pub fn dispatch(cli: &Cli) -> Result<u8> {
    if cli.systemd_cgroup && matches!(cli.cmd, Cmd::Create(_) | Cmd::Run { .. }) {
        bail!("--systemd-cgroup is not supported: hyperjail manages cgroupfs directly (configure the engine's cgroup manager as cgroupfs)");
    }
    match &cli.cmd {
        Cmd::Spec { bundle, rootless } => spec::write(bundle, *rootless).map(|_| 0),
        Cmd::Features => {
            println!("{:#}", hyperjail_oci::features());
            Ok(0)
        }
        Cmd::Create(a) => {
            runtime(cli)?.create(&a.id, &a.bundle, &create_opts(a, false)?)?;
            Ok(0)
        }
        Cmd::Start { id } => {
            runtime(cli)?.start(id)?;
            Ok(0)
        }
        Cmd::Run { create, detach } => {
            let opts = create_opts(create, !detach)?;
            match runtime(cli)?.run(&create.id, &create.bundle, &opts)? {
                RunOutcome::Detached => Ok(0),
                RunOutcome::Exited(code) => Ok(code.clamp(0, 255) as u8),
            }
        }
        Cmd::State { id } => {
            let st = runtime(cli)?.state(id)?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(0)
        }
        Cmd::Kill { id, signal, all } => {
            let sig = parse_signal(signal)?;
            runtime(cli)?.kill(id, sig, *all)?;
            Ok(0)
        }
        Cmd::Delete { id, force } => {
            runtime(cli)?.delete(id, *force)?;
            Ok(0)
        }
        Cmd::List { format, quiet } => list::print(&runtime(cli)?, *format, *quiet).map(|_| 0),
    }
}
