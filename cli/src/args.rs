//! The command line, shaped like runc's so that engines drive it unchanged.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// hyperjail: an OCI runtime with a jail and a KVM microVM backend.
#[derive(Debug, Parser)]
#[command(name = "hyperjail", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Directory for the state of containers.
    #[arg(long, global = true, default_value = "/run/hyperjail")]
    pub root: PathBuf,
    /// Also write errors and debug output to this file.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of the --log file.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (not supported: hyperjail drives cgroupfs directly).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// The verb.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Log file formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// `time="..." level=error msg="..."`
    Text,
    /// `{"level":"error","msg":"...","time":"..."}`
    Json,
}

/// Options shared by `create` and `run`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Container id.
    pub id: String,
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container process's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Do not use pivot_root (for ramdisk roots).
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N extra fds (3 .. 3+N) to the container process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

/// Verbs.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Write a default config.json into the bundle.
    Spec {
        /// Bundle directory.
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for a non-root user (user namespace, no cgroup mounts).
        #[arg(long)]
        rootless: bool,
    },
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Create and start a container, then wait for it (unless --detach).
    Run {
        /// Options as for create.
        #[command(flatten)]
        create: CreateArgs,
        /// Return once the container runs.
        #[arg(short, long)]
        detach: bool,
    },
    /// Print the state of a container as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal to the container process.
    Kill {
        /// Container id.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container and everything it holds.
    Delete {
        /// Container id.
        id: String,
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
    },
    /// List containers.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print the features document.
    Features,
}

/// `list` formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    /// Columns as runc prints them.
    Table,
    /// A JSON array of states.
    Json,
}
