//! The VMM proper: builds the VM (memory, vCPU at the program's entry, CPL3) and runs
//! it, serving the guest's doorbells until the program exits.

use crate::abi::*;
use crate::elf::Image;
use crate::files::Host;
use crate::futex::Futexes;
use crate::mem::GuestMem;
use crate::ring;
use crate::vcpu::{self, Machine};
use crate::{setup, stack};
use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{Kvm, VcpuFd};
use nix::sys::signal::{SigSet, Signal};
use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything needed to build the VM.
#[derive(Debug)]
pub struct Plan {
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub ram: u64,
    /// The program file (its segments are read into guest memory at build).
    pub file: Arc<std::fs::File>,
    /// Parsed program.
    pub image: Image,
    /// Its loader (PT_INTERP), opened in the rootfs and placed above it, when the
    /// program is dynamically linked: the vCPU starts at the loader's entry.
    pub interp: Option<(Arc<std::fs::File>, Image)>,
    /// process.args.
    pub argv: Vec<String>,
    /// process.env.
    pub envp: Vec<String>,
    /// Path of the program inside the rootfs (AT_EXECFN).
    pub execfn: String,
    /// uname nodename.
    pub hostname: String,
    /// process.cwd.
    pub cwd: String,
    /// Size of the stack region at the top of RAM.
    pub stack: u64,
    /// process.terminal: the guest's stdio is a pty whose master goes to the
    /// engine over `--console-socket`.
    pub terminal: bool,
    /// process.consoleSize as (height, width).
    pub console_size: Option<(u16, u16)>,
    /// process.user (uid, gid) the guest reports and the VMM uses for its files.
    pub user: (u32, u32),
    /// process.user.additionalGids.
    pub groups: Vec<u32>,
    /// process.capabilities (the VMM keeps the file-access ones of the effective set).
    pub capabilities: Option<oci_spec::runtime::LinuxCapabilities>,
    /// The bundle's rootfs, where forwarded file calls are performed.
    pub rootfs: std::path::PathBuf,
    /// root.readonly: file calls that would change the rootfs fail with EROFS.
    pub readonly: bool,
}

/// A built VM, stopped before the program's first instruction.
#[derive(Debug)]
pub struct Vm {
    _kvm: Kvm,
    machine: Arc<Machine>,
    /// The first thread's vCPU (slot 0).
    boot: VcpuFd,
    /// The rootfs and fds, until [`Vm::start_ring`] hands them to the ring thread.
    host: Option<Host>,
    tsc_khz: u32,
}

/// Where the VMM reports, opened before it is confined (it can open nothing later).
#[derive(Debug, Default)]
pub struct Reports {
    /// The state directory's crash report (runtime's CRASH_FILE), for `events`.
    pub crash: Option<std::fs::File>,
    /// The runtime's `--log` file and whether it is JSON.
    pub log: Option<(std::fs::File, bool)>,
}

static REPORTS: std::sync::OnceLock<Reports> = std::sync::OnceLock::new();

/// Installs the VMM's report files (once, at its start).
pub fn set_reports(r: Reports) {
    let _ = REPORTS.set(r);
}

/// A warning for the user: to the `--log` file when there is one, else to stderr.
pub fn warn(msg: &str) {
    use std::io::Write;
    match REPORTS.get().and_then(|r| r.log.as_ref()) {
        Some((f, json)) => {
            let line = hyperjail_runtime::log_line(*json, "warning", msg);
            let _ = writeln!(&*f, "{line}");
        }
        None => eprintln!("hyperjail: {msg}"),
    }
}

/// Ends the VMM the way a crashed guest ends: a one-line message, the crash report
/// for the `crashed` event, and the status of a process killed by `sig` (callable
/// from any VMM thread).
pub fn crash_exit(sig: i32, what: &str) -> ! {
    use std::io::Write;
    eprintln!("hyperjail: vm: the guest crashed: {what}");
    if let Some(f) = REPORTS.get().and_then(|r| r.crash.as_ref()) {
        let signal = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| sig.to_string());
        let report = serde_json::json!({
            "reason": what,
            "signal": signal,
            "exitStatus": 128 + sig,
        });
        let _ = writeln!(&*f, "{report}");
    }
    std::process::exit(128 + sig)
}

/// Maps a KVM error to a message naming `what` failed.
pub fn kvm_err(what: &str) -> impl Fn(kvm_ioctls::Error) -> String + '_ {
    move |e| format!("KVM: {what}: {e}")
}

fn random_u64s() -> [u64; 4] {
    let mut b = [0u8; 32];
    // The seed only feeds the guest's getrandom; a failure leaves a fixed seed.
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut b)
    });
    let w = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[8 * i..8 * i + 8]);
        u64::from_le_bytes(x)
    };
    [w(0), w(1), w(2), w(3)]
}

/// CPUs this process may run on (the domain's cpuset once it joined its cgroup).
fn host_cpus() -> u64 {
    use nix::sched::{sched_getaffinity, CpuSet};
    let Ok(set) = sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return 1;
    };
    (0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .count() as u64
}

/// Opens /dev/kvm (in the runtime, before the VMM joins the domain's cgroup, whose
/// device rules need not allow it).
pub fn open_kvm() -> Result<Kvm, String> {
    Kvm::new().map_err(|e| {
        format!(
            "cannot open /dev/kvm ({e}); the VM backend needs KVM, the jail backend is available"
        )
    })
}

/// Builds the VM described by `p`.
pub fn build(kvm: Kvm, p: &Plan) -> Result<Vm, String> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    // The low memory every process shares (kernel, tables, rings): a memfd that
    // each process's view maps at the same place.
    let shared_low = nix::sys::memfd::memfd_create(
        c"hyperjail-guest-low",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )
    .and_then(|f| nix::unistd::ftruncate(&f, LOW as i64).map(|()| f))
    .map_err(|e| format!("guest memory: {e}"))?;
    let mut mem = GuestMem::with_shared_low(p.ram as usize, shared_low.as_fd(), LOW as usize)
        .map_err(|e| format!("guest memory: {e}"))?;
    for (slot, gpa) in [(0, 0), (1, LOW)] {
        let size = if gpa == 0 { LOW } else { mem.size() - LOW };
        let region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: mem.host_addr() + gpa,
            flags: 0,
        };
        // SAFETY: the region is part of `mem`, which lives in the returned Vm as
        // long as the VmFd does (fields drop in order: the VM before its memory).
        unsafe { vm.set_user_memory_region(region) }.map_err(kvm_err("memory slot"))?;
    }

    let entries = setup::load_kernel(&mut mem)?;
    let lstar = entries.syscall;
    crate::intr::install_kick()?;
    let top = mem.size();
    let rnd = random_u64s();
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&rnd[2].to_le_bytes());
    random[8..].copy_from_slice(&rnd[3].to_le_bytes());
    let mut image_maps = setup::load_program(&mut mem, &p.image, &p.file)?;
    if let Some((file, img)) = &p.interp {
        image_maps.extend(setup::load_program(&mut mem, img, file)?);
    }
    let (end, entry, interp_base) = match &p.interp {
        Some((_, img)) => (img.end, img.entry, img.base),
        None => (p.image.end, p.image.entry, 0),
    };
    let ok = setup::page_tables(&mut mem)
        && setup::descriptors(&mut mem)
        && setup::boot_info(
            &mut mem,
            &setup::BootInfo {
                seed: [rnd[0], rnd[1]],
                user: p.user,
                hostname: &p.hostname,
                cwd: &p.cwd,
                ncpus: host_cpus(),
            },
        )
        && setup::proc_info(
            &mut mem,
            0,
            &setup::ProcInfo {
                brk_start: (end + PAGE - 1) & !(PAGE - 1),
                mmap_top: top - p.stack,
                exe: &p.execfn,
                argv: &p.argv,
            },
        )
        // The first process is pid 1 (`ps` lists it), in group and session 1.
        && mem.write_u64(PROC_INFO_GPA + PI_PGID, 1)
        && mem.write_u64(PROC_INFO_GPA + PI_SID, 1)
        && mem.write_u64(PROC_INFO_GPA + PI_PID, 1);
    if !ok {
        return Err("guest memory is too small for the program".into());
    }
    let process = stack::Process {
        argv: &p.argv,
        envp: &p.envp,
        execfn: &p.execfn,
        user: p.user,
        random,
        interp_base,
    };
    let rsp = stack::build(&mut mem, (top - p.stack, top), &p.image, &process)?;

    let vcpu = vm.create_vcpu(0).map_err(kvm_err("create vCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
    let two_windows = phys_bits(&cpuid) >= (WINDOWS * WINDOW).ilog2() as u8;
    set_msrs(&vcpu, lstar)?;
    set_sregs(&vcpu, 0, 0, PML4_GPA)?;
    if !setup::percpu(&mut mem, 0, 1) {
        return Err("guest memory is too small for the program".into());
    }
    let regs = kvm_regs {
        rip: entry,
        rsp,
        rflags: 0x202,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("set registers"))?;
    let tsc_khz = vcpu.get_tsc_khz().unwrap_or(0);
    // Opened now, before the seccomp filter: the VMM cannot open anything later.
    let host = Host::open(&p.rootfs, &p.cwd, p.readonly)?;
    let machine = Arc::new(Machine {
        vm,
        cpuid,
        lstar,
        thread_start: entries.thread,
        kill_start: entries.kill,
        async_start: entries.async_,
        spawn_start: entries.spawn,
        oom_victims: AtomicU64::new(0),
        oom_kick: std::sync::OnceLock::new(),
        console_fg: Arc::clone(host.console_fg()),
        proc_cpu: (0..MAX_PROCS).map(|_| AtomicU64::new(0)).collect(),
        execs: Mutex::new((0..MAX_PROCS).map(|_| None).collect()),
        ring: OnceLock::new(),
        futexes: Futexes::default(),
        live: AtomicUsize::new(1),
        next_id: AtomicU64::new(1),
        spare: Mutex::new(Vec::new()),
        parked: Mutex::new(Vec::new()),
        reported: Mutex::new(BTreeSet::new()),
        views: Mutex::new(
            (0..WINDOWS)
                .map(|i| (i == 0).then(|| mem.alias()))
                .collect(),
        ),
        windows: std::array::from_fn(|p| AtomicU64::new(p as u64)),
        two_windows,
        mem,
        shared_low,
        slot_proc: Arc::new(Default::default()),
        user: p.user,
        stack: p.stack,
        pagemap: std::fs::File::open("/proc/self/pagemap").ok(),
        intr: Arc::new(crate::intr::Interrupts::new()?),
        started: AtomicBool::new(false),
        timers: Default::default(),
        patches: crate::patches::Patches::default(),
        kept: Mutex::new(vec![0; WINDOWS as usize]),
        images: Mutex::new(
            (0..WINDOWS)
                .map(|i| {
                    if i == 0 {
                        image_maps.clone()
                    } else {
                        Vec::new()
                    }
                })
                .collect(),
        ),
    });
    Ok(Vm {
        _kvm: kvm,
        machine,
        boot: vcpu,
        host: Some(host),
        tsc_khz,
    })
}

/// STAR, LSTAR (the guest kernel's entry) and FMASK.
pub fn set_msrs(vcpu: &VcpuFd, lstar: u64) -> Result<(), String> {
    let msr = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let msrs = Msrs::from_entries(&[
        msr(0xc000_0081, 0x0023_0010_0000_0000), // STAR
        msr(0xc000_0082, lstar),                 // LSTAR
        msr(0xc000_0084, 0),                     // FMASK
    ])
    .map_err(|e| format!("MSRs: {e:?}"))?;
    vcpu.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
    Ok(())
}

/// The guest-physical address width the CPU reports (CPUID 0x80000008 EAX[7:0]),
/// 36 when it does not say.
fn phys_bits(cpuid: &kvm_bindings::CpuId) -> u8 {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map_or(36, |e| (e.eax & 0xff) as u8)
}

/// Long mode, paging on, CPL3 code and data segments, GDT/IDT/TR in guest memory,
/// GS at per-CPU slot `slot`'s area, FS at `fs` (the thread's TLS), the page
/// tables at `cr3` (its process's).
pub fn set_sregs(vcpu: &VcpuFd, slot: u64, fs: u64, cr3: u64) -> Result<(), String> {
    // Every field is set below but those KVM keeps for itself (the APIC base, the
    // pending-interrupt bitmap, EFER's read-only bits), which are the same for
    // every vCPU of this VM: they come from the first vCPU's, so a new thread
    // costs no KVM_GET_SREGS (each vCPU ioctl is ≈10 µs here). If KVM refuses
    // them, this vCPU's own are read.
    static TEMPLATE: std::sync::OnceLock<kvm_bindings::kvm_sregs> = std::sync::OnceLock::new();
    let base = match TEMPLATE.get() {
        Some(t) => *t,
        None => {
            let s = vcpu.get_sregs().map_err(kvm_err("get sregs"))?;
            *TEMPLATE.get_or_init(|| s)
        }
    };
    match set_sregs_from(vcpu, base, slot, fs, cr3) {
        Ok(()) => Ok(()),
        Err(_) => {
            let own = vcpu.get_sregs().map_err(kvm_err("get sregs"))?;
            set_sregs_from(vcpu, own, slot, fs, cr3)
        }
    }
}

/// [`set_sregs`] with `s` as the fields it does not set.
fn set_sregs_from(
    vcpu: &VcpuFd,
    mut s: kvm_bindings::kvm_sregs,
    slot: u64,
    fs: u64,
    cr3: u64,
) -> Result<(), String> {
    let seg = |selector, type_, l, db| kvm_segment {
        base: 0,
        limit: 0xfffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db,
        s: 1,
        l,
        g: 1,
        ..Default::default()
    };
    s.cr0 = 0x8005_0033;
    s.cr3 = cr3;
    s.efer = 0xd01;
    s.cs = seg(0x33, 0xb, 1, 0);
    let ds = seg(0x2b, 0x3, 0, 1);
    (s.ss, s.ds, s.es, s.fs, s.gs) = (ds, ds, ds, ds, ds);
    s.gs.base = PERCPU_GPA + slot * PERCPU_SIZE;
    s.fs.base = fs;
    s.gdt.base = GDT_GPA;
    s.gdt.limit = setup::tss_selector(MAX_VCPUS) as u16 - 1;
    s.idt.base = IDT_GPA;
    s.idt.limit = 0xfff;
    s.tr = kvm_segment {
        base: TSS_GPA + slot * TSS_SIZE,
        limit: (TSS_SIZE - 1) as u32,
        selector: setup::tss_selector(slot) as u16,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    // The CR4 that KVM took last is tried first (each refused attempt is an
    // ioctl, ≈10 µs here).
    static CR4: AtomicU64 = AtomicU64::new(0x620); // PAE, OSFXSR, OSXMMEXCPT
    let first = CR4.load(Ordering::Relaxed);
    s.cr4 = first;
    if vcpu.set_sregs(&s).is_err() {
        s.cr4 = if first == 0x20 { 0x620 } else { 0x20 }; // 0x20: the recipe measured on this host
        vcpu.set_sregs(&s).map_err(kvm_err("set sregs"))?;
        CR4.store(s.cr4, Ordering::Relaxed);
    }
    Ok(())
}

/// Waits for one of `set`'s signals (blocked in every thread): the signal, and
/// whether the kernel sent it (si_code SI_KERNEL: a terminal's key or new size)
/// rather than a process (kill).
fn wait_signal(set: &SigSet) -> Option<(Signal, bool)> {
    // SAFETY: an all-zero siginfo_t is a valid value for the kernel to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset for the call's duration and `info` a live
    // siginfo_t it writes into.
    let n = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
    let sig = Signal::try_from(n).ok()?;
    Some((sig, info.si_code == libc::SI_KERNEL))
}

/// The signals the VMM passes to the guest, to its first process or the console's
/// foreground group (blocked in every VMM thread, taken by
/// [`Vm::forward_signals`]'s thread): all but those the kernel uses against the
/// VMM itself (faults, SIGSYS from its seccomp filter), SIGCHLD and the ones that
/// cannot be caught.
pub fn forwarded() -> SigSet {
    let mut set = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGABRT,
        Signal::SIGSYS,
        Signal::SIGCHLD,
        crate::intr::KICK,
    ] {
        set.remove(s);
    }
    set
}

impl Vm {
    /// Starts the thread that passes the signals of [`forwarded`] (blocked by the
    /// caller in every thread) to the guest: into the first process's mailbox
    /// (abi.rs, PI_HOSTSIG), waking its threads. Before `start` the VMM ends as
    /// the signal's default action would end it (or ignores it, for those whose
    /// default is to ignore). Call after confinement: the thread
    /// inherits the caller's seccomp filter.
    pub fn forward_signals(&self) -> Result<(), String> {
        let m = Arc::clone(&self.machine);
        // No thread name: naming a thread is a prctl, which the filter refuses.
        std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || loop {
                let Some((sig, from_terminal)) = wait_signal(&forwarded()) else {
                    continue;
                };
                if !m.started.load(Ordering::SeqCst) {
                    // No guest yet: the signal's default action, on the VMM.
                    let ignored = matches!(
                        sig,
                        Signal::SIGWINCH
                            | Signal::SIGURG
                            | Signal::SIGCONT
                            | Signal::SIGTSTP
                            | Signal::SIGTTIN
                            | Signal::SIGTTOU
                    );
                    if !ignored {
                        std::process::exit(128 + sig as i32);
                    }
                    continue;
                }
                let n = sig as u64;
                // The terminal's own signals (the kernel sent them: a key, a new
                // size) go to its foreground group, as Linux's tty does; a kill
                // (`hyperjail kill`, the engine) goes to the first process.
                let tty = matches!(
                    sig,
                    Signal::SIGINT | Signal::SIGQUIT | Signal::SIGTSTP | Signal::SIGWINCH
                );
                if tty && from_terminal {
                    m.post_terminal_signal(n);
                } else {
                    m.post_host_signal(0, n);
                }
            })
            .map(|_| ())
            .map_err(|e| format!("signal thread: {e}"))
    }

    /// Starts the OOM killer's thread on `w` (oom.rs). Call after confinement.
    pub fn watch_memory(&self, w: crate::oom::Watch) -> Result<(), String> {
        crate::oom::start(Arc::clone(&self.machine), w)
    }

    /// Serves `listener` (the control socket) on a thread of its own: `exec`,
    /// `ps`, `kill` (spawn.rs). Call after confinement.
    pub fn serve_control(&self, listener: std::os::unix::net::UnixListener) -> Result<(), String> {
        crate::spawn::serve(Arc::clone(&self.machine), listener)
    }

    /// Starts the ring thread that serves the guest's forwarded calls; `setup` runs
    /// on it first (per-thread confinement). Call once, before [`Vm::run`]. Returns
    /// the ring thread's id (see [`crate::confine::with_ring`]).
    pub fn start_ring(
        &mut self,
        setup: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Result<i32, String> {
        let host = self
            .host
            .take()
            .ok_or("the ring thread was already started")?;
        let kicker = ring::start(
            &self.machine.mem,
            host,
            Arc::clone(&self.machine.slot_proc),
            Arc::clone(&self.machine.intr),
            setup,
        )?;
        let tid = kicker.ring_tid();
        self.machine
            .ring
            .set(kicker)
            .map_err(|_| "the ring thread was already started".to_string())?;
        Ok(tid)
    }

    /// Runs the first thread; ends the VMM when the guest exits or crashes. When that
    /// thread exits while others run on, this thread waits for the last of them to
    /// end the VMM.
    pub fn run(&mut self) -> ! {
        let mut mem = self.machine.mem.alias();
        setup::set_clocks(&mut mem, self.tsc_khz);
        self.machine.started.store(true, Ordering::SeqCst);
        self.machine
            .intr
            .set_thread(0, Some(nix::sys::pthread::pthread_self()), 0);
        let mut ctx = vcpu::Ctx {
            slot: 0,
            proc: 0,
            mem: self.machine.mem.alias(),
        };
        let end = vcpu::run(&self.machine, &mut self.boot, &mut ctx);
        vcpu::finish(&self.machine, 0, None, end);
        loop {
            std::thread::park();
        }
    }
}
