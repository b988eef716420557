//! The contract between the VMM and the built-in guest kernel: the guest-physical
//! memory layout, the boot-info page, the request block and the MMIO doorbells.
//!
//! This file is compiled twice: into the VMM (this crate) and into the guest kernel
//! (`guest/main.rs` includes it with `#[path]`), so it holds only constants.
//! Guest virtual addresses equal guest-physical ones (identity paging).

#![allow(dead_code)]

/// Size of a page.
pub const PAGE: u64 = 0x1000;
/// Size of a large page.
pub const HUGE: u64 = 0x20_0000;

/// PML4 page.
pub const PML4_GPA: u64 = 0x1000;
/// PDPT page (covers the low 512 GiB).
pub const PDPT_GPA: u64 = 0x2000;
/// Page table of the first 2 MiB (4 KiB pages, page 0 not present).
pub const PT0_GPA: u64 = 0x3000;
/// First of four page directories (one per GiB below 4 GiB).
pub const PD_GPA: u64 = 0x4000;
/// GDT.
pub const GDT_GPA: u64 = 0x8000;
/// 64-bit TSSes, one per vCPU slot, [`TSS_SIZE`] bytes each (RSP0 for IDT events:
/// the slot's fault stack). Slot `i`'s descriptor is GDT selector `0x40 + 16 * i`.
pub const TSS_GPA: u64 = 0x8200;
/// Size of one TSS.
pub const TSS_SIZE: u64 = 0x68;
/// IDT (256 gates).
pub const IDT_GPA: u64 = 0x9000;
/// CPL0 stubs the IDT gates point to, [`STUB_SIZE`] bytes each.
pub const STUBS_GPA: u64 = 0xa000;
/// Size of one IDT stub.
pub const STUB_SIZE: u64 = 32;
/// Boot-info page written by the VMM, read by the guest kernel.
pub const BOOT_INFO_GPA: u64 = 0xe000;
/// Top of slot 0's CPL0 stack for IDT events (its TSS.RSP0); slot `i`'s is
/// [`FAULT_STACK_SIZE`] `* i` below.
pub const FAULT_STACK_TOP: u64 = 0x2_0000;
/// Size of one slot's fault stack.
pub const FAULT_STACK_SIZE: u64 = 0x1000;
/// Where the guest kernel blob is loaded (and linked).
pub const KERNEL_GPA: u64 = 0x10_0000;
/// Room for the kernel image, data and bss (link.ld checks it).
pub const KERNEL_MAX: u64 = 0x8_0000;
/// Lowest address a user ELF segment may use.
pub const USER_MIN: u64 = 0x40_0000;
/// Largest guest memory (everything above is MMIO space).
pub const RAM_MAX: u64 = 0xc000_0000;

/// Base of the MMIO doorbells (a GPA outside guest RAM: writes exit to the VMM).
pub const MMIO_BASE: u64 = 0xd000_0000;
/// Doorbell: value = exit status of the guest program (exit_group).
pub const MMIO_EXIT: u64 = MMIO_BASE + 0x08;
/// Doorbell: value = number of a system call the guest does not implement.
pub const MMIO_UNSUPPORTED: u64 = MMIO_BASE + 0x10;
/// Doorbell written by the CPL0 IDT stubs: value = vector.
pub const MMIO_FAULT: u64 = MMIO_BASE + 0x18;
/// Doorbell: the guest kernel panicked; value = line number.
pub const MMIO_PANIC: u64 = MMIO_BASE + 0x20;
/// Doorbell: the guest posted a request while the VMM's ring thread sleeps; the
/// vCPU thread performs it and wakes the ring thread (ring.rs explains why not an
/// ioeventfd). Rung only when the ring's idle flag is set.
pub const MMIO_KICK: u64 = MMIO_BASE + 0x28;
/// Doorbell: the guest stops spinning for a completion (value: the request count it
/// waits for); the vCPU thread returns once every posted request has completed.
pub const MMIO_WAIT: u64 = MMIO_BASE + 0x30;

/// Magic at offset 0 of the kernel blob; the syscall entry's address follows it,
/// then the thread entry's, then the kill entry's (a faulting process's vCPU is
/// restarted there, rdi = the signal), then the async entry's (a vCPU stopped in
/// user code with a signal to take continues there; see [`PC_ASYNC_RIP`]), then the
/// spawn entry's (a process `hyperjail exec` starts: rdi = its entry point, rsi =
/// its stack; [`PC_PROC`] and [`PC_KSTACK_TOP`] set by the VMM).
pub const KERNEL_MAGIC: u64 = u64::from_le_bytes(*b"HJGUEST1");
/// Magic of the boot-info page.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"HJBOOT01");

/// Boot-info offsets (all u64 unless said otherwise).
pub const BI_MAGIC: u64 = 0;
/// End of guest RAM.
pub const BI_RAM_END: u64 = 8;
/// ns = (tsc - boot_tsc) * mult >> 32.
pub const BI_TSC_MULT: u64 = 32;
/// TSC when the clock bases were read.
pub const BI_BOOT_TSC: u64 = 40;
/// CLOCK_REALTIME in ns at `boot_tsc`.
pub const BI_REALTIME_NS: u64 = 48;
/// CLOCK_MONOTONIC in ns at `boot_tsc`.
pub const BI_MONOTONIC_NS: u64 = 56;
/// Two u64 of seed for getrandom.
pub const BI_SEED: u64 = 64;
/// process.user.uid (u64).
pub const BI_UID: u64 = 80;
/// process.user.gid (u64).
pub const BI_GID: u64 = 88;
/// CPUs the domain may use (the VMM's affinity when the VM is built), 1..=64:
/// sched_getaffinity and sysinfo report it.
pub const BI_NCPUS: u64 = 96;
/// Host name, NUL-terminated, 65 bytes.
pub const BI_HOSTNAME: u64 = 0x100;
/// Working directory, NUL-terminated, [`BI_CWD_LEN`] bytes.
pub const BI_CWD: u64 = 0x200;
/// Room for the working directory (with its NUL).
pub const BI_CWD_LEN: u64 = 0x400;

/// Most vCPUs (guest threads at once) a VM runs.
pub const MAX_VCPUS: u64 = 16;

/// Processes. The low [`LOW`] bytes of guest memory (kernel, tables, rings,
/// per-CPU areas) are one memory shared by every address space at the same
/// addresses. The user part of process slot `p`'s address space, VA [`LOW`] to the
/// end of RAM, is GPA `p * WINDOW + VA` (slot 0, the first process: identity), each
/// window a memslot of its own, mapped by the process's own page tables.
pub const LOW: u64 = HUGE;
/// Most processes at once.
pub const MAX_PROCS: u64 = 16;
/// Distance between two windows in guest-physical space.
pub const WINDOW: u64 = 1 << 32;
/// Windows: two per process slot, `p` and `p + MAX_PROCS`. A process uses one at
/// a time; execve may move it to the other, where the slot's last process there
/// left the same program (see the VMM's window.rs): KVM's shadow page tables of
/// both stay warm while the slot's processes alternate between two programs.
pub const WINDOWS: u64 = 2 * MAX_PROCS;
/// Page tables of window `w` (1..MAX_PROCS): PML4, PDPT and four page
/// directories, [`PROC_PT_SIZE`] bytes from `PROC_PT_GPA + w * PROC_PT_SIZE`
/// ([`PROC_PT2_GPA`] for the second window of each slot). Window 0 uses the boot
/// tables at [`PML4_GPA`].
pub const PROC_PT_GPA: u64 = 0x7_0000 - PROC_PT_SIZE;
/// Page tables of window `MAX_PROCS + i`: `PROC_PT2_GPA + i * PROC_PT_SIZE`
/// (after the kernel's [`KERNEL_MAX`]).
pub const PROC_PT2_GPA: u64 = KERNEL_GPA + KERNEL_MAX;
/// Size of one process's page tables.
pub const PROC_PT_SIZE: u64 = 6 * PAGE;
/// Per-process blocks written by the VMM (at start and at execve), read by the
/// guest kernel: `PROC_INFO_GPA + p * PROC_INFO_SIZE`, PI_* offsets.
pub const PROC_INFO_GPA: u64 = 0xd_0000;
/// Size of one process block.
pub const PROC_INFO_SIZE: u64 = 0x800;
/// Per-process logs of syscall-site rewrites (guest patch.rs), one of
/// [`PATCH_LOG_SIZE`] bytes at `PATCH_LOG_GPA + p * PATCH_LOG_SIZE`: the count of
/// records at [`PL_COUNT`], then up to [`PL_MAX`] records of [`PL_RECORD_SIZE`]
/// bytes from [`PL_RECORDS`] (site address, length of the moved instruction, its
/// bytes, the bytes written over it). The guest kernel appends; the VMM reads and
/// empties the log when the process's image goes (exit, execve) and makes the same
/// rewrites in the next image of the same program (see `patches.rs`).
pub const PATCH_LOG_GPA: u64 = 0xd_8000;
/// Size of one process's patch log.
pub const PATCH_LOG_SIZE: u64 = 0x1000;
/// Offset of the record count in a patch log.
pub const PL_COUNT: u64 = 0;
/// Offset of the first record.
pub const PL_RECORDS: u64 = 32;
/// Bytes per record: site (u64), length (u64), old bytes (8), new bytes (8).
pub const PL_RECORD_SIZE: u64 = 32;
/// Most records in one log.
pub const PL_MAX: u64 = (PATCH_LOG_SIZE - PL_RECORDS) / PL_RECORD_SIZE;
/// Bumped by the VMM when the process's image changes (execve): the guest kernel
/// then starts its memory bookkeeping afresh.
pub const PI_GEN: u64 = 0;
/// Non-zero while the process slot is taken (the guest kernel takes and frees it;
/// it frees it once the VMM has released the process's memory and files).
pub const PI_BUSY: u64 = 8;
/// First byte of the heap (brk).
pub const PI_BRK_START: u64 = 16;
/// Bottom of the stack region: anonymous mmap grows down from here.
pub const PI_MMAP_TOP: u64 = 24;
/// Path of the program (readlink of /proc/self/exe), NUL-terminated.
pub const PI_EXE: u64 = 0x100;
/// Room for the program path (with its NUL).
pub const PI_EXE_LEN: u64 = 0x400;
/// The process's arguments, each NUL-terminated (/proc/self/cmdline), cut at
/// [`PI_CMDLINE_LEN`] bytes; the length is the u64 at [`PI_CMDLINE_SIZE`].
pub const PI_CMDLINE: u64 = 0x500;
/// Room for the arguments.
pub const PI_CMDLINE_LEN: u64 = 0x300;
/// Bytes of [`PI_CMDLINE`] used.
pub const PI_CMDLINE_SIZE: u64 = 32;
/// Signals the VMM's timers raised for the process (SIGALRM of `alarm`/
/// `setitimer`), a bit per signal; taken by its threads.
pub const PI_TIMER_SIG: u64 = 40;
/// Signals sent to the process from the host, a bit per signal (bit n-1 for signal
/// n): `hyperjail kill` sets the first process's, `kill --all` every process's, an
/// `exec` proxy its own process's; taken by its threads.
pub const PI_HOSTSIG: u64 = 48;
/// The process's pid (0 while it has none), kept by the guest kernel: what
/// `hyperjail ps` lists.
pub const PI_PID: u64 = 56;
/// Its parent's pid (0: started from the host, the first process and `exec`'s).
pub const PI_PPID: u64 = 64;
/// Its process group, kept by the guest kernel: the VMM gives a terminal's
/// SIGINT, SIGQUIT, SIGTSTP and SIGWINCH to the console's foreground group.
pub const PI_PGID: u64 = 72;
/// Its session, kept by the guest kernel: the console's job control applies to
/// the first process's session (1), the one whose controlling terminal it is.
pub const PI_SID: u64 = 80;
/// Doorbell: the process the VMM started for `hyperjail exec` (on this vCPU) runs;
/// value = its pid.
pub const MMIO_SPAWNED: u64 = MMIO_BASE + 0x80;
/// Doorbell: the CPU time of the calling thread (value 0) or of its process (1),
/// in ns, which the VMM writes to the per-CPU word [`PC_CPUTIME`]: its vCPU
/// threads' host CPU time (clock_getres, CLOCK_*_CPUTIME_ID).
pub const MMIO_CPUTIME: u64 = MMIO_BASE + 0x88;

/// Doorbell: the process's interval timers (alarm, setitimer, getitimer); value
/// = GPA of an itimer block (IT_*).
pub const MMIO_ITIMER: u64 = MMIO_BASE + 0x78;
/// Itimer block: 0 reads the timer, 1 sets it.
pub const IT_OP: u64 = 0;
/// The new expiry, ns from now (0: disarm).
pub const IT_VALUE: u64 = 8;
/// The new period in ns (0: one shot).
pub const IT_INTERVAL: u64 = 16;
/// Result: ns left on the timer before the call (0: it was not armed).
pub const IT_RET: u64 = 24;
/// Which timer: 0 ITIMER_REAL (wall time, SIGALRM), 1 ITIMER_VIRTUAL (SIGVTALRM)
/// and 2 ITIMER_PROF (SIGPROF), both on the process's CPU time (its vCPU threads'
/// host CPU time, which does not split user from system time).
pub const IT_WHICH: u64 = 32;

/// A request only the guest kernel makes (never a program: numbers from 512 on are
/// not forwarded): a read-only file with the bytes at a (kernel) address and length,
/// installed in the caller's fd table (args: address, length, O_CLOEXEC flag);
/// /proc's files are made so.
pub const HJ_BUFFER_FILE: u64 = 1000;
/// The thread's alternate signal stack (sigaltstack): base, size (0: none) and
/// SS_AUTODISARM (the flag bit as Linux has it, or 0).
pub const PC_ALT_SP: u64 = 176;
/// See [`PC_ALT_SP`].
pub const PC_ALT_SIZE: u64 = 184;
/// See [`PC_ALT_SP`].
pub const PC_ALT_FLAGS: u64 = 192;
/// The answer to [`MMIO_CPUTIME`], in ns; also the process's CPU time after
/// [`MMIO_PROC_EXIT`].
pub const PC_CPUTIME: u64 = 200;
/// Work the VMM does when this vCPU is released ([`MMIO_THREAD_EXIT`]), so that a
/// process's end costs one exit rather than one per step: the vCPU slots to
/// interrupt (bit mask, as [`MMIO_INTERRUPT`] each).
pub const PC_END_INTR: u64 = 208;
/// See [`PC_END_INTR`]: the process slots whose child-event word to wake (bit
/// mask; every waiter, as FUTEX_WAKE).
pub const PC_END_WAKE: u64 = 216;
/// See [`PC_END_INTR`]: the guest kernel's address of the child-event words (a
/// u32 per process slot).
pub const PC_END_EVENTS: u64 = 224;

/// Per-CPU areas, one per vCPU slot, [`PERCPU_SIZE`] bytes each; a vCPU's GS base
/// is its area's address. The kernel stack fills the area above [`PC_STACK_BOTTOM`].
pub const PERCPU_GPA: u64 = 0x3_0000;
/// Size of one per-CPU area.
pub const PERCPU_SIZE: u64 = 0x4000;
/// The user's rsp, saved by the syscall entry.
pub const PC_USER_RSP: u64 = 0;
/// Top of this vCPU's kernel stack (written by whoever starts the vCPU).
pub const PC_KSTACK_TOP: u64 = 8;
/// How the kernel was entered: 0 a rewritten site, 1 the `syscall` instruction,
/// 2 the async entry (no system call).
pub const PC_TRAPPED: u64 = 16;
/// The thread id running on this vCPU.
pub const PC_TID: u64 = 24;
/// clear_child_tid of that thread (0: none).
pub const PC_CLEAR_TID: u64 = 32;
/// Requests this vCPU posted on its ring.
pub const PC_POSTED: u64 = 40;
/// Non-zero while the slot is taken; the VMM clears it once the vCPU that ran a
/// thread which exited has stopped.
pub const PC_BUSY: u64 = 48;
/// A word that stays 0: sleeps are futex waits on it with a timeout.
pub const PC_SLEEP: u64 = 56;
/// A new thread's MXCSR, x87 control word and user rip: the VMM starts its vCPU at
/// the kernel's thread entry (blob header, third word), which clears the FPU/SSE
/// registers (a vCPU is reused from thread to thread), loads the first two and
/// jumps to the third (KVM_SET_FPU does not reach the vCPU on this host).
pub const PC_MXCSR: u64 = 64;
/// See [`PC_MXCSR`].
pub const PC_FCW: u64 = 72;
/// See [`PC_MXCSR`].
pub const PC_START_RIP: u64 = 80;
/// The process slot of the thread on this vCPU.
pub const PC_PROC: u64 = 88;
/// The thread's blocked signals.
pub const PC_SIGMASK: u64 = 96;
/// Signals pending for this thread only (tgkill).
pub const PC_SIGPEND: u64 = 104;
/// The mask rt_sigsuspend replaced, restored by the handler's return.
pub const PC_SAVED_MASK: u64 = 112;
/// 1 while [`PC_SAVED_MASK`] holds a mask.
pub const PC_MASK_SAVED: u64 = 120;
/// Where the user was when the VMM stopped its vCPU to deliver a signal (the async
/// entry, blob header's fourth word; its rsp goes to [`PC_USER_RSP`]).
pub const PC_ASYNC_RIP: u64 = 128;
/// Its rflags then.
pub const PC_ASYNC_FLAGS: u64 = 136;
/// 1 when the way back to the user must restore rcx and r11 too (from
/// [`PC_RET_RCX`], [`PC_RET_R11`]) and jump through [`PC_RET_RIP`]: after an async
/// entry or rt_sigreturn.
pub const PC_FULL_RET: u64 = 144;
/// See [`PC_FULL_RET`].
pub const PC_RET_RCX: u64 = 152;
/// See [`PC_FULL_RET`].
pub const PC_RET_R11: u64 = 160;
/// See [`PC_FULL_RET`].
pub const PC_RET_RIP: u64 = 168;
/// A block for requests the vCPU thread performs (futex, clone): see FX_*, CL_*.
pub const PC_BLOCK: u64 = 0x100;
/// Lowest address of the kernel stack.
pub const PC_STACK_BOTTOM: u64 = 0x400;

/// Doorbell: futex wait or wake; value = GPA of a futex block (FX_*).
pub const MMIO_FUTEX: u64 = MMIO_BASE + 0x38;
/// Doorbell: start a thread on a new vCPU; value = GPA of a clone block (CL_*).
pub const MMIO_CLONE: u64 = MMIO_BASE + 0x40;
/// Doorbell: the thread on this vCPU exited; value = its exit status (the
/// process's, if it was the last thread). The VMM first does the work in
/// [`PC_END_INTR`], [`PC_END_WAKE`] and [`PC_END_EVENTS`] (and clears them).
pub const MMIO_THREAD_EXIT: u64 = MMIO_BASE + 0x48;

/// Doorbell: the forwarded request at GPA `value` (this vCPU's ring slot) was
/// answered [`RQ_BLOCKED`]: the vCPU thread waits for it with no lock held and
/// performs it again; its result is then in the block.
pub const MMIO_BLOCK: u64 = MMIO_BASE + 0x50;
/// A forwarded request's result when the call would wait (the kernel's
/// ERESTARTSYS, never a system call's result): the guest rings [`MMIO_BLOCK`].
pub const RQ_BLOCKED: u64 = (-512i64) as u64;
/// A forwarded read's result when the caller reads the console from outside its
/// foreground group (never a system call's result): the guest kernel sends its
/// group SIGTTIN and answers EINTR (or EIO), as Linux's job control does.
pub const RQ_TTIN: u64 = (-513i64) as u64;

/// Futex block: operation (FUTEX_WAIT, FUTEX_WAKE, ... without the private flag).
pub const FX_OP: u64 = 0;
/// The futex word's guest address.
pub const FX_ADDR: u64 = 8;
/// The expected value (wait) or the number to wake (wake).
pub const FX_VAL: u64 = 16;
/// Timeout in ns, u64::MAX for none.
pub const FX_TIMEOUT: u64 = 24;
/// 1 when the timeout is an absolute CLOCK_MONOTONIC time, 0 when relative.
pub const FX_ABSOLUTE: u64 = 32;
/// Result (Linux return value).
pub const FX_RET: u64 = 40;

/// Clone block: the new thread's general registers in KVM's order (rax, rbx, rcx,
/// rdx, rsi, rdi, rsp, rbp, r8..r15).
pub const CL_REGS: u64 = 0;
// 128: unused (the thread's rip is in its per-CPU area, PC_START_RIP).
/// Its rflags.
pub const CL_RFLAGS: u64 = 136;
/// Its FS base (TLS).
pub const CL_FS: u64 = 144;
/// The per-CPU slot (0..MAX_VCPUS) the guest kernel prepared for it.
pub const CL_SLOT: u64 = 152;
/// Result: 0, or a negative errno.
pub const CL_RET: u64 = 160;
/// fork only: the child's process slot (prepared by the guest kernel).
pub const CL_PROC: u64 = 168;
/// fork only: where the child's tid goes in the child's memory (0: nowhere).
pub const CL_CTID: u64 = 176;
/// fork only: the child's tid.
pub const CL_TID: u64 = 184;
/// fork only: the user ranges to copy, as (start, end) pairs ([`CL_NRANGES`]).
pub const CL_RANGES: u64 = 192;
/// Number of ranges in a fork block.
pub const CL_NRANGES: u64 = 4;

/// Doorbell: fork the process on this vCPU; value = GPA of a clone block with the
/// CL_PROC/CL_CTID/CL_TID/CL_RANGES fields filled.
pub const MMIO_FORK: u64 = MMIO_BASE + 0x58;
/// Doorbell: execve; value = GPA of an exec block (EX_*).
pub const MMIO_EXEC: u64 = MMIO_BASE + 0x60;
/// Doorbell: the process on this vCPU ended; value = its wait status. The VMM
/// writes the process's CPU time to [`PC_CPUTIME`], releases its memory and files
/// and returns (the guest kernel then frees the slot).
pub const MMIO_PROC_EXIT: u64 = MMIO_BASE + 0x68;

/// Doorbell: wake the thread on per-CPU slot `value` from a wait (futex, sleep,
/// a blocked call): it has a signal to take. A wait that starts after the doorbell
/// (before the thread took the signal) ends at once.
pub const MMIO_INTERRUPT: u64 = MMIO_BASE + 0x70;

/// Exec block: the path (a guest pointer in the calling process).
pub const EX_PATH: u64 = 0;
/// argv (a guest pointer to a NULL-terminated array).
pub const EX_ARGV: u64 = 8;
/// envp.
pub const EX_ENVP: u64 = 16;
/// Result: 0 (the process has a new image) or a negative errno.
pub const EX_RET: u64 = 24;
/// On success: the new image's first rip.
pub const EX_RIP: u64 = 32;
/// On success: its first rsp.
pub const EX_RSP: u64 = 40;
/// Non-zero: only check that the execve would get past the point of no return
/// (the file, its format, its loader, the memory it needs, the arguments) and
/// change nothing; EX_RET says how it went. A process with several threads asks
/// first, as its other threads end only once the execve cannot fail any more.
pub const EX_CHECK: u64 = 48;

/// The forwarding rings (Xen's split-driver model), one page per vCPU slot (ring
/// `i` at `RING_GPA + i * PAGE`): the guest kernel posts
/// forwarded system calls into slots and bumps `req_prod`; the VMM's ring thread
/// performs them in order and bumps `rsp_prod`. Counters are free-running u64s; slot
/// `n % RING_SLOTS` holds request `n`. A request block is [`RQ_SIZE`] bytes.
pub const RING_GPA: u64 = 0x2_0000;
/// Number of slots.
pub const RING_SLOTS: u64 = 32;
/// Requests posted (written by the guest).
pub const RG_REQ_PROD: u64 = 0;
/// Requests completed (written by the VMM), on its own cache line.
pub const RG_RSP_PROD: u64 = 0x40;
/// Non-zero while the ring thread sleeps: the guest must ring [`MMIO_KICK`]
/// (virtio's notification suppression, in one flag). Only ring 0's flag is used:
/// one thread serves all rings.
pub const RG_VMM_IDLE: u64 = 0x80;
/// First slot.
pub const RG_SLOTS: u64 = 0x100;

/// Request block offsets: system call number.
pub const RQ_NR: u64 = 0;
/// Six arguments.
pub const RQ_ARGS: u64 = 8;
/// Result (a Linux return value: negative errno on failure).
pub const RQ_RET: u64 = 56;
/// Size of the request block.
pub const RQ_SIZE: u64 = 64;
