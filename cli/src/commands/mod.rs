//! One function per verb; each is a thin call into the runtime.

mod exec;
mod list;
mod manage;
mod sched;
mod spec;
mod tty;

use crate::args::{Cli, Cmd, CreateArgs};
use anyhow::{bail, Context, Result};
use hyperjail_runtime::{parse_signal, CreateOpts, RunOutcome, Runtime};
use std::path::{Path, PathBuf};

fn runtime(cli: &Cli) -> Result<Runtime> {
    let backends: Vec<Box<dyn hyperjail_runtime::Backend>> = vec![
        Box::new(hyperjail_jail::JailBackend),
        Box::new(hyperjail_vm::VmBackend),
    ];
    Ok(Runtime::new(&cli.root(), backends)?)
}

/// Makes a path given on the command line absolute (the runtime may chdir later).
pub(crate) fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(p)
    })
}

fn create_opts(cli: &Cli, a: &CreateArgs, foreground: bool) -> Result<CreateOpts> {
    Ok(CreateOpts {
        log: cli.log.as_deref().map(absolute).transpose()?,
        log_json: cli.log_format == crate::args::LogFormat::Json,
        pid_file: a.pid_file.as_deref().map(absolute).transpose()?,
        console_socket: a.console_socket.as_deref().map(absolute).transpose()?,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        foreground,
    })
}

/// Writes `text` and a newline to stdout (an error, not a panic, when the reader has
/// gone: `main` ends quietly on a broken pipe).
pub(crate) fn out(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{text}")?;
    o.flush()?;
    Ok(())
}

/// Reads a JSON document given as a file path, or `-` for stdin.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    use std::io::Read;
    let mut data = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut data)
            .with_context(|| format!("read {what} from stdin"))?;
    } else {
        data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    }
    serde_json::from_slice(&data)
        .with_context(|| format!("invalid {what} JSON in {}", path.display()))
}

/// Whether the bundle's process asks for a terminal (unreadable configs are left for
/// `create` to report).
fn wants_terminal(bundle: &Path) -> bool {
    std::fs::read(bundle.join(hyperjail_oci::CONFIG_FILE))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
        .is_some_and(|v| v["process"]["terminal"] == serde_json::Value::Bool(true))
}

/// Runs the verb; returns the process exit code.
pub fn dispatch(cli: &Cli) -> Result<u8> {
    if cli.systemd_cgroup && matches!(cli.cmd, Cmd::Create(_) | Cmd::Run { .. }) {
        bail!("--systemd-cgroup is not supported: hyperjail manages cgroupfs directly (configure the engine's cgroup manager as cgroupfs)");
    }
    match &cli.cmd {
        Cmd::Spec { bundle, rootless } => spec::write(bundle, *rootless).map(|_| 0),
        Cmd::Features => {
            out(format!("{:#}", hyperjail_oci::features()))?;
            Ok(0)
        }
        Cmd::Create(a) => {
            runtime(cli)?.create(&a.id, &a.bundle, &create_opts(cli, a, false)?)?;
            Ok(0)
        }
        Cmd::Start { id } => {
            runtime(cli)?.start(id)?;
            Ok(0)
        }
        Cmd::Run { create, detach } => {
            let mut opts = create_opts(cli, create, !detach)?;
            let rt = runtime(cli)?;
            let proxy = !detach && opts.console_socket.is_none() && wants_terminal(&create.bundle);
            let outcome = if proxy {
                let sock = tty::ConsoleSocket::new()?;
                opts.console_socket = Some(sock.path());
                let mut relay = None;
                let out = rt.run_with(&create.id, &create.bundle, &opts, &mut || {
                    let master = sock
                        .receive()
                        .map_err(|e| hyperjail_runtime::Error::Backend(format!("{e:#}")))?;
                    relay = Some(
                        tty::Relay::start(master)
                            .map_err(|e| hyperjail_runtime::Error::Backend(format!("{e:#}")))?,
                    );
                    Ok(())
                });
                drop(relay);
                out?
            } else {
                rt.run(&create.id, &create.bundle, &opts)?
            };
            match outcome {
                RunOutcome::Detached => Ok(0),
                RunOutcome::Exited(code) => Ok(code.clamp(0, 255) as u8),
            }
        }
        Cmd::State { id } => {
            let st = runtime(cli)?.state(id)?;
            out(serde_json::to_string_pretty(&st)?)?;
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
        Cmd::List {
            format,
            quiet,
            long,
        } => {
            let rt = runtime(cli)?;
            if *long && !*quiet {
                sched::list_long(&rt, *format).map(|_| 0)
            } else {
                list::print(&rt, *format, *quiet).map(|_| 0)
            }
        }
        Cmd::Sched { cmd } => sched::sched(&runtime(cli)?, cmd).map(|_| 0),
        Cmd::Cpupool { cmd } => sched::cpupool(&runtime(cli)?, cmd).map(|_| 0),
        Cmd::Arinc653Switcher { pool } => sched::switcher(&runtime(cli)?, pool).map(|_| 0),
        Cmd::Exec(a) => exec::run(&runtime(cli)?, a),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => manage::ps(&runtime(cli)?, id, *format, ps_args).map(|_| 0),
        Cmd::Pause { id } => {
            runtime(cli)?.pause(id)?;
            Ok(0)
        }
        Cmd::Resume { id } => {
            runtime(cli)?.resume(id)?;
            Ok(0)
        }
        Cmd::Update(a) => manage::update(&runtime(cli)?, a).map(|_| 0),
        Cmd::Events {
            id,
            stats,
            interval,
        } => manage::events(&runtime(cli)?, id, *stats, interval).map(|_| 0),
    }
}
