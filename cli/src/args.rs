//! The command line, shaped like runc's so that engines drive it unchanged.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// hyperjail: an OCI runtime with a jail and a KVM microVM backend.
#[derive(Debug, Parser)]
#[command(name = "hyperjail", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Directory for the state of containers [default: /run/hyperjail, or
    /// $XDG_RUNTIME_DIR/hyperjail for a non-root user].
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
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

impl Cli {
    /// The state root: `--root`, else runc's defaults.
    pub fn root(&self) -> PathBuf {
        if let Some(r) = &self.root {
            return r.clone();
        }
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(x) if !nix::unistd::geteuid().is_root() => PathBuf::from(x).join("hyperjail"),
            _ => PathBuf::from("/run/hyperjail"),
        }
    }
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
        /// xl's view: name, domid, backend, pool, VCPUs, state letters, CPU time.
        #[arg(short, long)]
        long: bool,
    },
    /// Xen-style scheduler parameters of domains (as `xl sched-credit`, `xl sched-rtds`).
    Sched {
        /// The scheduler.
        #[command(subcommand)]
        cmd: SchedCmd,
    },
    /// CPU pools: named CPU sets with one scheduler each (as `xl cpupool-*`).
    Cpupool {
        /// What to do.
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Runs the ARINC 653 partition switcher of a pool (started by the runtime).
    #[command(name = "arinc653-switcher", hide = true)]
    Arinc653Switcher {
        /// The pool.
        pool: String,
    },
    /// Print the features document.
    Features,
    /// Run a new process inside a container.
    Exec(ExecArgs),
    /// List the processes of a container.
    Ps {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        /// Container id.
        id: String,
        /// Options passed to ps(1) for the table format.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// Change the resource limits of a running container.
    Update(UpdateArgs),
    /// Print container events (stats, oom) as JSON lines.
    Events {
        /// Container id.
        id: String,
        /// Print one stats record and exit.
        #[arg(long)]
        stats: bool,
        /// Stats interval, like 5s, 500ms or 1m.
        #[arg(long, default_value = "5s")]
        interval: String,
    },
}

/// `exec` options (runc's).
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Container id.
    pub id: String,
    /// Command and arguments (unless --process).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// A process.json (runtime-spec `process`), or - for stdin.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a terminal (needs --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    /// Return once the process runs.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the new process's pid here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Extra environment variables KEY=VALUE.
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (to every set but ambient, as runc).
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs.
    #[arg(long)]
    pub no_new_privs: bool,
    /// AppArmor profile.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux process label.
    #[arg(long)]
    pub process_label: Option<String>,
    /// Pass N extra fds (3 .. 3+N).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Exec into a paused container: refused, since a process that joins the frozen
    /// cgroup cannot run.
    #[arg(long)]
    pub ignore_paused: bool,
}

/// `update` options (runc's).
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Container id.
    pub id: String,
    /// A linux.resources JSON file, or - for stdin.
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10..1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CFS period in µs.
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CFS quota in µs (-1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// Real-time period in µs.
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// Real-time runtime in µs.
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares.
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    /// CPUs allowed (0-3, 0,1).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with k/m/g suffix; -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory+swap limit.
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit (v1; ignored by recent kernels).
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer limit (v1).
    #[arg(long, allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of pids (0 or -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

/// `list` formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    /// Columns as runc prints them.
    Table,
    /// A JSON array of states.
    Json,
}

/// `sched` schedulers.
#[derive(Debug, Subcommand)]
pub enum SchedCmd {
    /// Credit: weight and cap. Without -d, lists every domain of the credit pools.
    Credit(CreditArgs),
    /// Credit2: weight and cap, as Credit.
    Credit2(CreditArgs),
    /// RTDS: period and budget in microseconds, extratime.
    Rtds(RtdsArgs),
    /// ARINC 653: the major frame and slots of a pool (no --major-frame: show it).
    Arinc653(ArincArgs),
}

/// `sched credit|credit2` flags.
#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct CreditArgs {
    /// The domain (container id).
    #[arg(short, long)]
    pub domain: Option<String>,
    /// Weight, 1..65535 (default 256).
    #[arg(short, long)]
    pub weight: Option<i64>,
    /// Cap, percent of one CPU (0 = none).
    #[arg(short, long)]
    pub cap: Option<i64>,
    /// Output format of the listing.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// `sched rtds` flags.
#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct RtdsArgs {
    /// The domain (container id).
    #[arg(short, long)]
    pub domain: Option<String>,
    /// Period in µs.
    #[arg(short, long)]
    pub period: Option<i64>,
    /// Budget in µs per period.
    #[arg(short, long)]
    pub budget: Option<i64>,
    /// Extratime: 1 (may use idle time) or 0 (hard cap).
    #[arg(short, long)]
    pub extratime: Option<i64>,
    /// Output format of the listing.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// `sched arinc653` flags.
#[derive(Debug, clap::Args)]
pub struct ArincArgs {
    /// The arinc653 pool.
    #[arg(long)]
    pub pool: String,
    /// Major frame in ms (like 20 or 2.5).
    #[arg(long)]
    pub major_frame: Option<String>,
    /// A slot, DOMAIN:MS, in the order they run; repeat for every slot.
    #[arg(long)]
    pub slot: Vec<String>,
    /// Output format when showing the schedule.
    #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// `cpupool` actions.
#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Creates a pool from CPUs of Pool-0.
    Create {
        /// Pool name.
        name: String,
        /// Its CPUs, like 1 or 2-3.
        #[arg(long)]
        cpus: String,
        /// Its scheduler: credit, credit2, rtds or arinc653.
        #[arg(long, default_value = "credit")]
        sched: String,
    },
    /// Lists pools: name, CPUs, scheduler, domains.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Destroys an empty pool; its CPUs return to Pool-0.
    Destroy {
        /// Pool name.
        name: String,
    },
    /// Moves a domain to another pool (with that pool's default parameters).
    Migrate {
        /// The domain (container id).
        domain: String,
        /// The pool.
        pool: String,
    },
}
