//! Guest processes, the VMM's half: each process slot has its own window of
//! guest-physical memory (a memslot) and page tables, so `fork` is a copy of the
//! parent's used memory into the child's window and a vCPU started on the child's
//! page tables; `execve` loads a new image into the calling process's window; a
//! process's exit closes its files and leaves its window to the slot's next
//! process, which keeps what is the same and gets the rest fresh (see
//! [`crate::window`]). The guest kernel keeps the process table (pids, parents,
//! exit statuses, waits).

use crate::abi::*;
use crate::elf;
use crate::files::{read_path, AT_FDCWD, PATH_MAX};
use crate::mem::GuestMem;
use crate::setup;
use crate::stack;
use crate::vcpu::{self, Ctx, Machine};
use crate::window;
use kvm_bindings::kvm_userspace_memory_region;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most bytes of arguments and environment together (Linux's ARG_MAX default).
const ARG_MAX: usize = 2 << 20;
/// Longest single argument or environment string (MAX_ARG_STRLEN).
const ARG_STRLEN: usize = 128 << 10;
/// Most arguments plus environment strings.
const ARG_COUNT: usize = 0x10000;
/// Heap room a new image needs at least, above itself.
const MIN_HEAP: u64 = 1 << 20;
/// Bytes read from the start of a program to parse it: the first page, where a
/// usual ELF keeps its program headers and interpreter path; up to [`HEAD`] when
/// the parser needs more.
const FIRST: u64 = 4 << 10;
/// See [`FIRST`].
const HEAD: u64 = 64 << 10;
/// A failure after the old image was dropped: the process cannot go on (the guest
/// kernel ends it with SIGSEGV, as Linux does).
pub const EXEC_LOST: i64 = -4095;

/// Window `w`'s view of memory, made (with its memslot) at first use.
pub(crate) fn view(m: &Machine, w: u64) -> Result<GuestMem, i64> {
    let mut views = m.views.lock().map_err(|_| -(Errno::EAGAIN as i64))?;
    let slot = views.get_mut(w as usize).ok_or(-(Errno::EINVAL as i64))?;
    if let Some(v) = slot {
        return Ok(v.alias());
    }
    let ram = m.mem.size();
    let v = GuestMem::with_shared_low(ram as usize, m.shared_low.as_fd(), LOW as usize)
        .map_err(|e| -(e as i64))?;
    let region = kvm_userspace_memory_region {
        slot: 1 + w as u32,
        guest_phys_addr: w * WINDOW + LOW,
        memory_size: ram - LOW,
        userspace_addr: v.host_addr() + LOW,
        flags: 0,
    };
    // The window's page tables, once: they map the same window every time.
    setup::proc_tables(&mut m.mem.alias(), w).ok_or(-(Errno::EINVAL as i64))?;
    // SAFETY: the region is the private part of `v`, which is kept in `m.views`
    // for as long as the Machine (and so the VM) lives: it is never removed.
    unsafe { m.vm.set_user_memory_region(region) }.map_err(|e| -(e.errno() as i64))?;
    let alias = v.alias();
    *slot = Some(v);
    Ok(alias)
}

/// Whether each page of [start, end) of `mem` holds data of its own: present and
/// not a page of a file (or swapped out), from the VMM's /proc/self/pagemap; None
/// when it cannot be read. A file page that was never written needs no copy: the
/// child maps the same file.
fn used_pages(pagemap: &std::fs::File, mem: &GuestMem, start: u64, end: u64) -> Option<Vec<bool>> {
    let pages = ((end - start) / PAGE) as usize;
    let mut raw = vec![0u8; 8 * pages];
    let at = (mem.host_addr() + start) / PAGE * 8;
    pagemap.read_exact_at(&mut raw, at).ok()?;
    Some(
        raw.chunks_exact(8)
            .map(|e| {
                let v = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
                let (present, swapped, file) = (v >> 63 & 1, v >> 62 & 1, v >> 61 & 1);
                swapped == 1 || (present == 1 && file == 0)
            })
            .collect(),
    )
}

/// Whether a page is all zeros.
fn zero_page(p: &[u8]) -> bool {
    p.chunks_exact(8)
        .all(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) == 0)
}

/// The pages of `ranges` in `from` that a fork copies, as sorted, disjoint runs
/// [start, end): those with data of their own (PAGEMAP_SCAN, or the pagemap read
/// page by page on kernels before 6.7), or, without a pagemap, those not all zeros
/// (the child's fresh memory reads as zero elsewhere, its file mappings as the
/// file).
fn used_runs(
    pagemap: Option<&std::fs::File>,
    from: &GuestMem,
    ranges: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    let ranges: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(start, end)| {
            let start = start.max(LOW) & !(PAGE - 1);
            (
                start,
                end.min(from.size()).next_multiple_of(PAGE).min(from.size()),
            )
        })
        .filter(|(start, end)| start < end)
        .collect();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    // One scan across them all: the page tables between are few or none.
    let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
    let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    if let Some(all) = pagemap.and_then(|f| from.private_runs(f, lo, hi)) {
        for (s, e) in all {
            for &(a, b) in &ranges {
                if s.max(a) < e.min(b) {
                    runs.push((s.max(a), e.min(b)));
                }
            }
        }
    } else {
        for &(start, end) in &ranges {
            let used = pagemap.and_then(|f| used_pages(f, from, start, end));
            for (i, at) in (start..end).step_by(PAGE as usize).enumerate() {
                let copy = match &used {
                    Some(u) => u.get(i).copied().unwrap_or(true),
                    None => from.slice(at, PAGE).is_some_and(|p| !zero_page(p)),
                };
                if copy {
                    runs.push((at, at + PAGE));
                }
            }
        }
    }
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, e) in runs {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// Whether the sorted, disjoint `runs` hold page `gpa`.
fn covers(runs: &[(u64, u64)], gpa: u64) -> bool {
    let i = runs.partition_point(|&(s, _)| s <= gpa);
    i > 0 && gpa < runs[i - 1].1
}

/// MMIO_FORK: starts the child the fork block at `blk` describes; writes 0 or a
/// negative errno to its CL_RET.
pub fn fork(m: &Arc<Machine>, ctx: &Ctx, blk: u64) {
    let ret = fork_inner(m, ctx, blk).map_or_else(|e| e, |()| 0);
    if let Some(w) = m.mem.atomic_u64(blk.wrapping_add(CL_RET)) {
        w.store(ret as u64, Ordering::SeqCst);
    }
}

fn fork_inner(m: &Arc<Machine>, ctx: &Ctx, blk: u64) -> Result<(), i64> {
    let einval = -(Errno::EINVAL as i64);
    let word = |off| m.mem.read_u64(blk.wrapping_add(off)).ok_or(einval);
    let (child, ctid, tid) = (word(CL_PROC)?, word(CL_CTID)?, word(CL_TID)?);
    if child == 0 || child >= MAX_PROCS || child == ctx.proc {
        return Err(einval);
    }
    let mut start = vcpu::read_start(m, blk)?;
    start.proc = child;
    let mut ranges = Vec::new();
    for i in 0..CL_NRANGES {
        ranges.push((word(CL_RANGES + 16 * i)?, word(CL_RANGES + 16 * i + 8)?));
    }
    // A child starts with no timer (its slot's last process may have had one),
    // and no CPU time.
    m.timers.clear(child);
    if let Some(c) = m.proc_cpu.get(child as usize) {
        c.store(0, Ordering::SeqCst);
    }
    m.oom_victims.fetch_and(!(1 << child), Ordering::SeqCst);
    crate::patches::Patches::clear_log(&m.mem, child);
    if ctid != 0 && (ctid < LOW || ctid.checked_add(4).is_none_or(|e| e > m.mem.size())) {
        return Err(-(Errno::EFAULT as i64));
    }
    // The child's window (of its slot's two, the one whose last process left
    // more of the parent's program) keeps what is the same as the parent's
    // (crate::window); on any failure below it is given back.
    let maps = m
        .images
        .lock()
        .map(|i| i[m.window(ctx.proc) as usize].clone())
        .unwrap_or_default();
    let w = window::choose(m, child, &maps, false);
    let mut to = view(m, w)?;
    m.windows[child as usize].store(w, Ordering::SeqCst);
    let undo = |to: &GuestMem| window::give_back(m, w, to);
    let runs = used_runs(m.pagemap.as_ref(), &ctx.mem, &ranges);
    let Some(in_place) = window::clear(m, w, &mut to, &maps, &|gpa| covers(&runs, gpa)) else {
        undo(&to);
        return Err(-(Errno::ENOMEM as i64));
    };
    for s in maps
        .iter()
        .filter(|s| !in_place.iter().any(|k| k.same_as(s)))
    {
        if !to.map_file(s.gpa, s.len, s.file.as_fd(), s.offset) {
            undo(&to);
            return Err(-(Errno::ENOMEM as i64));
        }
    }
    if let Ok(mut i) = m.images.lock() {
        i[w as usize] = maps;
    }
    for &(start, end) in &runs {
        if let Some(src) = ctx.mem.slice(start, end - start) {
            to.write(start, src);
        }
    }
    if ctid != 0 && !to.user().write(ctid, &(tid as u32).to_le_bytes()) {
        undo(&to);
        return Err(-(Errno::EFAULT as i64));
    }
    let Some(ring) = m.ring.get() else {
        undo(&to);
        return Err(einval);
    };
    let (parent, alias) = (ctx.proc, to.alias());
    let shared = ring.with_host(|h, views| {
        h.fork_files(parent, child);
        views[child as usize] = Some(alias.user());
    });
    if shared.is_none() {
        undo(&to);
        return Err(einval);
    }
    vcpu::launch(m, start).inspect_err(|_| {
        ring.with_host(|h, _| h.drop_files(child));
        undo(&to);
    })
}

/// MMIO_PROC_EXIT: the process on this vCPU ended with wait status `status`; its
/// memory is given back and its files closed (the guest kernel then frees its
/// slot), and an `exec` that started it is told the status.
pub fn exit(m: &Machine, ctx: &Ctx, status: u64) {
    if ctx.proc == 0 {
        return;
    }
    crate::spawn::ended(m, ctx.proc, status);
    m.oom_victims.fetch_and(!(1 << ctx.proc), Ordering::SeqCst);
    let w = m.window(ctx.proc);
    if let Ok(i) = m.images.lock() {
        m.patches.harvest(&m.mem, ctx.proc, &i[w as usize]);
    }
    m.timers.clear(ctx.proc);
    if let Some(r) = m.ring.get() {
        r.with_host(|h, _| h.drop_files(ctx.proc));
    }
    window::retire(m, w, &ctx.mem);
}

/// A NUL-terminated string array (argv, envp) from the process's memory.
fn strings(mem: &GuestMem, at: u64, total: &mut usize) -> Result<Vec<String>, i64> {
    let mut v = Vec::new();
    if at == 0 {
        return Ok(v);
    }
    for i in 0.. {
        let p = mem.read_u64(at + 8 * i).ok_or(-(Errno::EFAULT as i64))?;
        if p == 0 {
            break;
        }
        if v.len() >= ARG_COUNT {
            return Err(-(Errno::E2BIG as i64));
        }
        let s = c_string(mem, p, ARG_STRLEN)?;
        *total += s.len() + 1 + 8;
        if *total > ARG_MAX {
            return Err(-(Errno::E2BIG as i64));
        }
        v.push(String::from_utf8_lossy(&s).into_owned());
    }
    Ok(v)
}

/// The NUL-terminated string at `at`, at most `max` bytes long.
fn c_string(mem: &GuestMem, at: u64, max: usize) -> Result<Vec<u8>, i64> {
    let mut s = Vec::new();
    loop {
        let b = mem
            .slice(at + s.len() as u64, 1)
            .ok_or(-(Errno::EFAULT as i64))?[0];
        if b == 0 {
            return Ok(s);
        }
        if s.len() >= max {
            return Err(-(Errno::E2BIG as i64));
        }
        s.push(b);
    }
}

/// A program file opened in the rootfs, with its start and length.
struct Program {
    file: Arc<std::fs::File>,
    head: Vec<u8>,
    len: u64,
}

/// Opens `abs` (an absolute guest path) in the rootfs for execution.
fn open_program(m: &Machine, proc: u64, abs: &[u8], need_exec: bool) -> Result<Program, i64> {
    let ring = m.ring.get().ok_or(-(Errno::EINVAL as i64))?;
    let fd: OwnedFd = ring
        .with_host(|h, _| {
            h.set_current(proc);
            h.resolve(abs, OFlag::O_RDONLY | OFlag::O_CLOEXEC, 0)
        })
        .ok_or(-(Errno::EINVAL as i64))?
        .map_err(|e| -(e as i64))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| -(e as i64))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || (need_exec && st.st_mode & 0o111 == 0) {
        return Err(-(Errno::EACCES as i64));
    }
    let file = Arc::new(std::fs::File::from(fd));
    let mut p = Program {
        file,
        head: Vec::new(),
        len: st.st_size as u64,
    };
    p.read_head(FIRST)?;
    Ok(p)
}

impl Program {
    /// Reads its first `n` bytes (at most its length) into `head`.
    fn read_head(&mut self, n: u64) -> Result<(), i64> {
        self.head = vec![0u8; self.len.min(n) as usize];
        self.file
            .read_exact_at(&mut self.head, 0)
            .map_err(|e| -(e.raw_os_error().unwrap_or(libc::EIO) as i64))
    }

    /// `parse` of its first page, or of its first [`HEAD`] bytes when that is not
    /// enough (or not an ELF the parser takes); `errno` when neither is.
    fn parse<T, E>(
        &mut self,
        errno: Errno,
        parse: impl Fn(&[u8], u64) -> Result<T, E>,
    ) -> Result<T, i64> {
        if let Ok(v) = parse(&self.head, self.len) {
            return Ok(v);
        }
        if self.head.len() as u64 >= self.len.min(HEAD) {
            return Err(-(errno as i64));
        }
        self.read_head(HEAD)?;
        parse(&self.head, self.len).map_err(|_| -(errno as i64))
    }
}

/// MMIO_EXEC: replaces the calling process's image; writes EX_RET (and EX_RIP,
/// EX_RSP on success).
pub fn exec(m: &Arc<Machine>, ctx: &mut Ctx, blk: u64) {
    let mut low = m.mem.alias();
    match exec_inner(m, ctx, blk) {
        Ok((rip, rsp)) => {
            low.write_u64(blk.wrapping_add(EX_RIP), rip);
            low.write_u64(blk.wrapping_add(EX_RSP), rsp);
            low.write_u64(blk.wrapping_add(EX_RET), 0);
        }
        Err(e) => {
            low.write_u64(blk.wrapping_add(EX_RET), e as u64);
        }
    }
}

fn exec_inner(m: &Machine, ctx: &mut Ctx, blk: u64) -> Result<(u64, u64), i64> {
    let efault = -(Errno::EFAULT as i64);
    let word = |off| m.mem.read_u64(blk.wrapping_add(off)).ok_or(efault);
    let (path_at, argv_at, envp_at) = (word(EX_PATH)?, word(EX_ARGV)?, word(EX_ENVP)?);
    let user = ctx.mem.user();
    let path = read_path(&user, path_at).map_err(|e| -(e as i64))?;
    if path.is_empty() {
        return Err(-(Errno::ENOENT as i64));
    }
    let mut total = 0;
    let argv = strings(&user, argv_at, &mut total)?;
    let envp = strings(&user, envp_at, &mut total)?;
    let info = PROC_INFO_GPA + ctx.proc * PROC_INFO_SIZE;
    let abs: Vec<u8> = if path == b"/proc/self/exe" {
        c_string(&m.mem, info + PI_EXE, PATH_MAX)?
    } else {
        let ring = m.ring.get().ok_or(-(Errno::EINVAL as i64))?;
        ring.with_host(|h, _| {
            h.set_current(ctx.proc);
            h.absolute(AT_FDCWD as u32 as u64, &path)
        })
        .ok_or(-(Errno::EINVAL as i64))?
        .map_err(|e| -(e as i64))?
    };
    let check = word(EX_CHECK)? != 0;
    load(m, ctx.proc, &mut ctx.mem, &abs, &argv, &envp, check)
}

/// Loads the program at `abs` (an absolute guest path) into process slot `proc`'s
/// memory `mem`, with a new stack of `argv` and `envp`: what execve and `exec`'s
/// new process share. Returns the entry point and the stack pointer; errors are
/// negative errnos, [`EXEC_LOST`] once the old image is gone. With `check`, it
/// stops before the old image goes and returns (0, 0).
pub fn load(
    m: &Machine,
    proc: u64,
    mem: &mut GuestMem,
    abs: &[u8],
    argv: &[String],
    envp: &[String],
    check: bool,
) -> Result<(u64, u64), i64> {
    let name = String::from_utf8_lossy(abs).into_owned();
    let mut prog = open_program(m, proc, abs, true)?;
    let image = prog.parse(Errno::ENOEXEC, |h, len| elf::parse(&name, h, len, USER_MIN))?;
    let interp = match &image.interp {
        Some(path) => {
            let mut p = open_program(m, proc, path.as_bytes(), false)?;
            let img = p.parse(Errno::ELIBBAD, |h, len| {
                elf::parse_loader(&name, &image, path, h, len)
            })?;
            Some((p, img))
        }
        None => None,
    };
    let ram = mem.size();
    let end = interp.as_ref().map_or(image.end, |(_, i)| i.end);
    if end.saturating_add(MIN_HEAP).saturating_add(m.stack) > ram {
        return Err(-(Errno::ENOMEM as i64));
    }
    if check {
        return Ok((0, 0));
    }
    // The point of no return: the old image goes (its rewrites are kept), but
    // what of it is the same as the new one stays in place, and the process moves
    // to its slot's other window when that holds more of the new one, leaving the
    // old window as it is for a later process (crate::window).
    let old = m.window(proc);
    if let Ok(i) = m.images.lock() {
        m.patches.harvest(&m.mem, proc, &i[old as usize]);
    }
    let mut parts = setup::plan_program(&image, &prog.file);
    if let Some((p, img)) = &interp {
        parts.extend(setup::plan_program(img, &p.file));
    }
    let want: Vec<setup::Mapped> = parts
        .iter()
        .filter_map(|p| match p {
            setup::Part::Map(m, ..) => Some(m.clone()),
            setup::Part::Read(..) => None,
        })
        .collect();
    let w = window::choose(m, proc, &want, true);
    if w != old {
        // What can fail first; then the move, all at once.
        let new = view(m, w).map_err(|_| EXEC_LOST)?;
        let user = new.user();
        m.ring
            .get()
            .and_then(|r| r.with_host(|_, views| views[proc as usize] = Some(user)))
            .ok_or(EXEC_LOST)?;
        m.windows[proc as usize].store(w, Ordering::SeqCst);
        window::claim(m, w);
        window::retire(m, old, mem);
        *mem = new;
    }
    // A window half made ready is given back whole: what it holds is no longer
    // known (its mappings are out of `images`).
    let loaded = window::clear(m, w, mem, &want, &|_| false)
        .and_then(|in_place| setup::load_parts(mem, parts, &in_place).ok());
    let Some(maps) = loaded else {
        window::give_back(m, w, mem);
        return Err(EXEC_LOST);
    };
    let lost = |_| EXEC_LOST;
    m.patches.replay(mem, &maps);
    if let Ok(mut i) = m.images.lock() {
        i[w as usize] = maps;
    }
    let (entry, interp_base) = match &interp {
        Some((_, img)) => (img.entry, img.base),
        None => (image.entry, 0),
    };
    let mut random = [0u8; 16];
    let _ = getrandom(&mut random);
    let process = stack::Process {
        argv,
        envp,
        execfn: &name,
        user: m.user,
        random,
        interp_base,
    };
    let rsp = stack::build(mem, (ram - m.stack, ram), &image, &process).map_err(lost)?;
    let mut low = m.mem.alias();
    let ok = setup::proc_info(
        &mut low,
        proc,
        &setup::ProcInfo {
            brk_start: (end + PAGE - 1) & !(PAGE - 1),
            mmap_top: ram - m.stack,
            exe: &name,
            argv,
        },
    );
    if !ok {
        return Err(EXEC_LOST);
    }
    if let Some(r) = m.ring.get() {
        r.with_host(|h, _| h.exec_files(proc));
    }
    Ok((entry, rsp))
}

/// AT_RANDOM bytes (the getrandom system call: the VMM can open nothing by now).
fn getrandom(buf: &mut [u8]) -> bool {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    n == buf.len() as isize
}
