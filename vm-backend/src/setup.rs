//! Fills guest memory before the first instruction: identity page tables (U=1 at
//! every level, as this host's KVM needs), GDT/TSS/IDT with CPL0 fault stubs, the
//! guest kernel, the program's segments and the boot-info page.

use crate::abi::*;
use crate::elf::Image;
use crate::mem::GuestMem;

const P_RW_U: u64 = 0x7;
const HUGE_PAGE: u64 = 0x80;

/// The embedded guest kernel (built by build.rs from `guest/`).
pub static KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hj-guest.bin"));

/// The guest kernel's entry points (abi.rs, KERNEL_MAGIC).
#[derive(Debug, Clone, Copy)]
pub struct Entries {
    /// The system-call entry (LSTAR).
    pub syscall: u64,
    /// A new thread's vCPU starts here.
    pub thread: u64,
    /// A faulting process's vCPU restarts here.
    pub kill: u64,
    /// A vCPU kicked in user code continues here.
    pub async_: u64,
    /// A process `hyperjail exec` starts begins here.
    pub spawn: u64,
}

/// Copies the guest kernel to `KERNEL_GPA`; returns its entry points.
pub fn load_kernel(mem: &mut GuestMem) -> Result<Entries, String> {
    let ok = KERNEL.len() >= 48
        && KERNEL.len() as u64 <= KERNEL_MAX
        && KERNEL[..8] == KERNEL_MAGIC.to_le_bytes();
    if !ok || !mem.write(KERNEL_GPA, KERNEL) {
        return Err("the embedded guest kernel is malformed".into());
    }
    let word = |off| {
        mem.read_u64(KERNEL_GPA + off)
            .ok_or_else(|| "the embedded guest kernel is malformed".to_string())
    };
    Ok(Entries {
        syscall: word(8)?,
        thread: word(16)?,
        kill: word(24)?,
        async_: word(32)?,
        spawn: word(40)?,
    })
}

/// Identity-maps guest RAM (page 0 left out, 4 KiB pages below 2 MiB, 2 MiB pages
/// above) and the MMIO doorbell page.
pub fn page_tables(mem: &mut GuestMem) -> bool {
    let mut ok = mem.write_u64(PML4_GPA, PDPT_GPA | P_RW_U);
    for gib in 0..4 {
        ok &= mem.write_u64(PDPT_GPA + 8 * gib, (PD_GPA + PAGE * gib) | P_RW_U);
    }
    ok &= mem.write_u64(PD_GPA, PT0_GPA | P_RW_U);
    for i in 1..512 {
        ok &= mem.write_u64(PT0_GPA + 8 * i, (i * PAGE) | P_RW_U);
    }
    let mut pa = HUGE;
    while pa + HUGE <= mem.size() {
        ok &= mem.write_u64(PD_GPA + 8 * (pa / HUGE), pa | P_RW_U | HUGE_PAGE);
        pa += HUGE;
    }
    ok && mem.write_u64(
        PD_GPA + 8 * (MMIO_BASE / HUGE),
        MMIO_BASE | P_RW_U | HUGE_PAGE,
    )
}

/// Page tables of window `w` (1..WINDOWS): the shared low 2 MiB as in every
/// address space, the user part mapped to the window, the MMIO doorbells. Returns
/// the PML4's address (the CR3 of a process there), or None when `w` is out of
/// range or RAM is larger than the four page directories cover.
pub fn proc_tables(mem: &mut GuestMem, w: u64) -> Option<u64> {
    if w == 0 || w >= WINDOWS || mem.size() > 4 << 30 {
        return None;
    }
    let base = crate::vcpu::cr3(w);
    let (pdpt, pd) = (base + PAGE, base + 2 * PAGE);
    let mut ok = mem.write_u64(base, pdpt | P_RW_U);
    for gib in 0..4 {
        ok &= mem.write_u64(pdpt + 8 * gib, (pd + PAGE * gib) | P_RW_U);
    }
    ok &= mem.write_u64(pd, PT0_GPA | P_RW_U);
    let mut va = LOW;
    while va + HUGE <= mem.size() {
        ok &= mem.write_u64(pd + 8 * (va / HUGE), (w * WINDOW + va) | P_RW_U | HUGE_PAGE);
        va += HUGE;
    }
    ok &= mem.write_u64(pd + 8 * (MMIO_BASE / HUGE), MMIO_BASE | P_RW_U | HUGE_PAGE);
    ok.then_some(base)
}

/// What the guest kernel needs to know of a process's image (its PI_* block).
#[derive(Debug)]
pub struct ProcInfo<'a> {
    /// First byte of the heap.
    pub brk_start: u64,
    /// Bottom of the stack region.
    pub mmap_top: u64,
    /// readlink("/proc/self/exe").
    pub exe: &'a str,
    /// Its arguments (/proc/self/cmdline).
    pub argv: &'a [String],
}

/// Writes process slot `p`'s block for a new image (bumping its generation).
pub fn proc_info(mem: &mut GuestMem, p: u64, info: &ProcInfo<'_>) -> bool {
    let b = PROC_INFO_GPA + p * PROC_INFO_SIZE;
    let exe: Vec<u8> = info
        .exe
        .bytes()
        .take(PI_EXE_LEN as usize - 1)
        .chain([0])
        .collect();
    let gen = mem.read_u64(b + PI_GEN).unwrap_or(0).wrapping_add(1);
    let mut cmdline: Vec<u8> = info
        .argv
        .iter()
        .flat_map(|a| a.bytes().chain([0]))
        .collect();
    cmdline.truncate(PI_CMDLINE_LEN as usize);
    p < MAX_PROCS
        && mem.write(b + PI_CMDLINE, &cmdline)
        && mem.write_u64(b + PI_CMDLINE_SIZE, cmdline.len() as u64)
        && mem.write_u64(b + PI_BRK_START, info.brk_start)
        && mem.write_u64(b + PI_MMAP_TOP, info.mmap_top)
        && mem.write(b + PI_EXE, &exe)
        && mem.write_u64(b + PI_BUSY, 1)
        && mem.write_u64(b + PI_GEN, gen)
}

/// GDT selector of slot `slot`'s TSS.
pub const fn tss_selector(slot: u64) -> u64 {
    0x40 + 16 * slot
}

// The GDT (with a TSS descriptor per slot) ends before the TSSes, which end before
// the IDT.
const _: () = assert!(
    GDT_GPA + tss_selector(MAX_VCPUS) <= TSS_GPA && TSS_GPA + MAX_VCPUS * TSS_SIZE <= IDT_GPA
);

/// GDT with the host's selectors and a TSS per vCPU slot whose RSP0 is the slot's
/// fault stack (so faults on two vCPUs at once do not share a stack), and an IDT
/// whose every gate (DPL3) leads to a CPL0 stub that reports its vector to the VMM.
pub fn descriptors(mem: &mut GuestMem) -> bool {
    let gdt: [u64; 8] = [
        0,
        0,
        0x00af_9b00_0000_ffff, // 0x10 kernel CS
        0x00cf_9300_0000_ffff, // 0x18 kernel DS
        0x00cf_fb00_0000_ffff, // 0x23 user32 CS
        0x00cf_f300_0000_ffff, // 0x2b user DS
        0x00af_fb00_0000_ffff, // 0x33 user CS64
        0,
    ];
    let mut ok = true;
    for (i, d) in gdt.iter().enumerate() {
        ok &= mem.write_u64(GDT_GPA + 8 * i as u64, *d);
    }
    for slot in 0..MAX_VCPUS {
        let t = TSS_GPA + slot * TSS_SIZE;
        let d = GDT_GPA + tss_selector(slot);
        let lo =
            (TSS_SIZE - 1) | ((t & 0xff_ffff) << 16) | (0x89 << 40) | (((t >> 24) & 0xff) << 56);
        ok &= mem.write_u64(d, lo) && mem.write_u64(d + 8, t >> 32);
        let rsp0 = FAULT_STACK_TOP - slot * FAULT_STACK_SIZE;
        ok &= mem.write(t + 4, &rsp0.to_le_bytes());
        ok &= mem.write(t + 0x66, &(TSS_SIZE as u16).to_le_bytes());
    }
    for v in 0..256u64 {
        let h = STUBS_GPA + v * STUB_SIZE;
        let lo = (h & 0xffff) | (0x10 << 16) | (0xee << 40) | (((h >> 16) & 0xffff) << 48);
        ok &= mem.write_u64(IDT_GPA + 16 * v, lo) && mem.write_u64(IDT_GPA + 16 * v + 8, h >> 32);
        // mov $v, %eax; movabs %rax, MMIO_FAULT; 1: hlt; jmp 1b
        let mut stub = vec![0xb8];
        stub.extend_from_slice(&(v as u32).to_le_bytes());
        stub.extend_from_slice(&[0x48, 0xa3]);
        stub.extend_from_slice(&MMIO_FAULT.to_le_bytes());
        stub.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
        ok &= mem.write(h, &stub);
    }
    ok
}

/// A program segment mapped from its file (see [`GuestMem::map_file`]); a fork maps
/// it again in the child.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// Guest address (page-aligned).
    pub gpa: u64,
    /// Bytes mapped.
    pub len: u64,
    /// The file.
    pub file: std::sync::Arc<std::fs::File>,
    /// File offset (page-aligned).
    pub offset: u64,
    /// The file's identity, under which syscall-site rewrites in the segment are
    /// kept ([`crate::patches`]); None when fstat failed.
    pub id: Option<crate::patches::FileId>,
}

impl Mapped {
    /// Whether `other` maps the same bytes of the same file at the same place (so
    /// a mapping left in a process slot can serve as this one).
    pub fn same_as(&self, other: &Mapped) -> bool {
        (self.gpa, self.len, self.offset) == (other.gpa, other.len, other.offset)
            && self.id.is_some()
            && self.id == other.id
    }
}

/// One step of loading a program (see [`plan_program`]).
#[derive(Debug)]
pub enum Part {
    /// Segments mapped from the file as one (read instead when that fails), and
    /// the bytes past the last one's file part to the end of its page, zeroed
    /// when it has bss (as Linux's loader does: loaders put their first
    /// allocations there).
    Map(Mapped, Vec<crate::elf::Segment>, Option<(u64, u64)>),
    /// A segment whose address and offset disagree modulo the page size: read
    /// from the file.
    Read(std::sync::Arc<std::fs::File>, crate::elf::Segment),
}

/// Puts the program's segments into guest memory: [`plan_program`], then
/// [`load_parts`] with nothing mapped yet. Returns the mappings made.
pub fn load_program(
    mem: &mut GuestMem,
    img: &Image,
    file: &std::sync::Arc<std::fs::File>,
) -> Result<Vec<Mapped>, String> {
    load_parts(mem, plan_program(img, file), &[])
}

/// How the program's segments go into guest memory: mapped private from the file
/// when their address and offset agree modulo the page size (as linkers make
/// them), else read. Segments that follow on in both the file and memory (the
/// header, text and read-only data of a usual executable) are one mapping: each
/// mmap over guest memory costs a TLB shootdown and a KVM invalidation (≈10 µs
/// here), and a fork maps them all again.
pub fn plan_program(img: &Image, file: &std::sync::Arc<std::fs::File>) -> Vec<Part> {
    let mut parts = Vec::new();
    let id = crate::patches::FileId::of(file);
    // The run of segments being joined: (guest start, end, file offset), and the
    // segments in it.
    let mut run: Option<(u64, u64, u64)> = None;
    let mut segs: Vec<crate::elf::Segment> = Vec::new();
    let close = |run: Option<(u64, u64, u64)>, segs: &mut Vec<_>, parts: &mut Vec<Part>| {
        let Some((start, end, offset)) = run else {
            return;
        };
        let tail = segs
            .last()
            .filter(|s: &&crate::elf::Segment| s.memsz > s.filesz)
            .map(|s| {
                let tail = s.vaddr + s.filesz;
                (tail, tail.next_multiple_of(PAGE) - tail)
            });
        let map = Mapped {
            gpa: start,
            len: end - start,
            file: std::sync::Arc::clone(file),
            offset,
            id,
        };
        parts.push(Part::Map(map, std::mem::take(segs), tail));
    };
    for s in &img.segments {
        if s.filesz == 0 {
            continue;
        }
        if s.offset % PAGE != s.vaddr % PAGE {
            close(run.take(), &mut segs, &mut parts);
            parts.push(Part::Read(std::sync::Arc::clone(file), s.clone()));
            continue;
        }
        let start = s.vaddr & !(PAGE - 1);
        let end = (s.vaddr + s.filesz).next_multiple_of(PAGE);
        // offset ≥ vaddr % PAGE: they agree modulo the page size.
        let off = s.offset - (s.vaddr - start);
        // A segment with bss ends its run: the zeroed tail must not be mapped over.
        let joins = run.is_some_and(|(rs, re, ro)| {
            start.wrapping_sub(off) == rs.wrapping_sub(ro)
                && (rs..=re).contains(&start)
                && segs.last().is_none_or(|l| l.memsz == l.filesz)
        });
        match (&mut run, joins) {
            (Some(r), true) => r.1 = r.1.max(end),
            _ => {
                close(run.take(), &mut segs, &mut parts);
                run = Some((start, end, off));
            }
        }
        segs.push(s.clone());
    }
    close(run, &mut segs, &mut parts);
    parts
}

/// Carries out `parts` in `mem`: maps each mapping not already `in_place` (a
/// process slot's window keeps the last program's where they are the same; see
/// [`Mapped::same_as`]), reads what cannot be mapped, zeroes the bss tails.
/// Returns the mappings.
pub fn load_parts(
    mem: &mut GuestMem,
    parts: Vec<Part>,
    in_place: &[Mapped],
) -> Result<Vec<Mapped>, String> {
    use std::os::fd::AsFd;
    let mut maps = Vec::new();
    for part in parts {
        let (map, segs, tail) = match part {
            Part::Read(file, s) => {
                read_segment(mem, &file, &s)?;
                continue;
            }
            Part::Map(map, segs, tail) => (map, segs, tail),
        };
        let placed = in_place.iter().any(|k| k.same_as(&map))
            || mem.map_file(map.gpa, map.len, map.file.as_fd(), map.offset);
        if !placed {
            for s in &segs {
                read_segment(mem, &map.file, s)?;
            }
            continue;
        }
        if let Some((at, n)) = tail {
            mem.slice_mut(at, n).ok_or_else(too_small)?.fill(0);
        }
        maps.push(map);
    }
    Ok(maps)
}

/// Copies a segment's file part into guest memory.
fn read_segment(
    mem: &mut GuestMem,
    file: &std::fs::File,
    s: &crate::elf::Segment,
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let dst = mem.slice_mut(s.vaddr, s.filesz).ok_or_else(too_small)?;
    file.read_exact_at(dst, s.offset)
        .map_err(|e| format!("read the program: {e}"))
}

fn too_small() -> String {
    "guest memory is too small for the program".to_string()
}

/// Prepares per-CPU slot `slot` for a thread `tid` that starts on a fresh kernel
/// stack (the first thread's; the guest kernel prepares the others itself).
pub fn percpu(mem: &mut GuestMem, slot: u64, tid: u64) -> bool {
    let area = PERCPU_GPA + slot * PERCPU_SIZE;
    slot < MAX_VCPUS
        && mem.write_u64(area + PC_KSTACK_TOP, area + PERCPU_SIZE)
        && mem.write_u64(area + PC_TID, tid)
        && mem.write_u64(area + PC_BUSY, 1)
}

/// What the boot-info page carries besides the clocks.
#[derive(Debug)]
pub struct BootInfo<'a> {
    /// getrandom seed.
    pub seed: [u64; 2],
    /// process.user (uid, gid).
    pub user: (u32, u32),
    /// uname nodename.
    pub hostname: &'a str,
    /// getcwd.
    pub cwd: &'a str,
    /// CPUs the domain may use.
    pub ncpus: u64,
}

/// Writes the boot-info page (clocks are set at `start` by [`set_clocks`]).
pub fn boot_info(mem: &mut GuestMem, b: &BootInfo<'_>) -> bool {
    let g = BOOT_INFO_GPA;
    let host: Vec<u8> = b.hostname.bytes().take(64).collect();
    let cwd: Vec<u8> = b.cwd.bytes().take(BI_CWD_LEN as usize - 1).collect();
    mem.write_u64(g + BI_MAGIC, BOOT_MAGIC)
        && mem.write_u64(g + BI_RAM_END, mem.size())
        && mem.write_u64(g + BI_SEED, b.seed[0])
        && mem.write_u64(g + BI_SEED + 8, b.seed[1])
        && mem.write_u64(g + BI_UID, u64::from(b.user.0))
        && mem.write_u64(g + BI_GID, u64::from(b.user.1))
        && mem.write_u64(g + BI_NCPUS, b.ncpus.clamp(1, 64))
        && mem.write(g + BI_HOSTNAME, &host)
        && mem.write(g + BI_CWD, &cwd)
}

/// Sets the guest's clock bases: the TSC now and the host clocks now, and the
/// TSC-to-ns multiplier from the TSC frequency in kHz.
pub fn set_clocks(mem: &mut GuestMem, tsc_khz: u32) -> bool {
    let mult = (1_000_000u64 << 32) / u64::from(tsc_khz.max(1));
    let ns = |c| {
        nix::time::clock_gettime(c)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0)
    };
    let real = ns(nix::time::ClockId::CLOCK_REALTIME);
    let mono = ns(nix::time::ClockId::CLOCK_MONOTONIC);
    // SAFETY: rdtsc only reads the time-stamp counter.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let g = BOOT_INFO_GPA;
    mem.write_u64(g + BI_TSC_MULT, mult)
        && mem.write_u64(g + BI_BOOT_TSC, tsc)
        && mem.write_u64(g + BI_REALTIME_NS, real)
        && mem.write_u64(g + BI_MONOTONIC_NS, mono)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tables_and_descriptors() {
        let mut m = GuestMem::new(4 << 20).expect("mmap");
        assert!(page_tables(&mut m) && descriptors(&mut m));
        assert_eq!(m.read_u64(PML4_GPA), Some(PDPT_GPA | 7));
        // Page 0 stays unmapped; page 1 is identity-mapped, user, writable.
        assert_eq!(m.read_u64(PT0_GPA), Some(0));
        assert_eq!(m.read_u64(PT0_GPA + 8), Some(PAGE | 7));
        // 2 MiB..4 MiB is one large page; nothing above guest RAM but the doorbells.
        assert_eq!(m.read_u64(PD_GPA + 8), Some(HUGE | 0x87));
        assert_eq!(m.read_u64(PD_GPA + 16), Some(0));
        let mmio_pde = PD_GPA + 8 * (MMIO_BASE / HUGE);
        assert_eq!(m.read_u64(mmio_pde), Some(MMIO_BASE | 0x87));
        // Every IDT gate is a DPL3 interrupt gate to its stub.
        let gate = m.read_u64(IDT_GPA + 16 * 14).expect("gate 14");
        assert_eq!((gate >> 40) & 0xff, 0xee);
        assert_eq!(m.read_u64(TSS_GPA + 4), Some(FAULT_STACK_TOP));
        let last = MAX_VCPUS - 1;
        assert_eq!(
            m.read_u64(TSS_GPA + last * TSS_SIZE + 4),
            Some(FAULT_STACK_TOP - last * FAULT_STACK_SIZE)
        );
        assert!(load_kernel(&mut m).is_ok_and(|e| {
            [e.syscall, e.thread, e.kill, e.async_, e.spawn]
                .iter()
                .all(|&x| x > KERNEL_GPA && x < KERNEL_GPA + KERNEL_MAX)
        }));
    }

    /// The header, text and read-only data of a usual executable (one file offset
    /// to address delta, following on) are one mapping; data (another delta) and
    /// a segment that is not page-congruent (read) are apart; every byte is the
    /// file's and a bss tail is zero.
    #[test]
    fn segments_that_follow_on_are_one_mapping() {
        use crate::elf::Segment;
        let dir = std::env::temp_dir().join(format!("hj-segments-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("prog");
        let bytes: Vec<u8> = (0..0x8000u32).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&path, &bytes).expect("write the program");
        let file = std::sync::Arc::new(std::fs::File::open(&path).expect("open"));
        let seg = |vaddr, offset, filesz, memsz| Segment {
            vaddr,
            offset,
            filesz,
            memsz,
        };
        let base = USER_MIN;
        let img = Image {
            entry: base,
            phdr: base + 64,
            phnum: 4,
            segments: vec![
                seg(base, 0, 0x800, 0x800),
                seg(base + 0x1000, 0x1000, 0x2100, 0x2100),
                seg(base + 0x3100, 0x3100, 0x500, 0x500),
                seg(base + 0x5800, 0x4800, 0x900, 0x2000),
                seg(base + 0x9010, 0x7000, 0x20, 0x20),
            ],
            end: base + 0xa000,
            base: 0,
            interp: None,
        };
        let mut mem = GuestMem::new(16 << 20).expect("mmap");
        let maps = load_program(&mut mem, &img, &file).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        let spans: Vec<(u64, u64, u64)> = maps.iter().map(|m| (m.gpa, m.len, m.offset)).collect();
        assert_eq!(
            spans,
            [(base, 0x4000, 0), (base + 0x5000, 0x2000, 0x4000)],
            "the first three segments as one mapping, the data apart, the last read"
        );
        for s in &img.segments {
            let got = mem.slice(s.vaddr, s.filesz).expect("segment bytes");
            let want = &bytes[s.offset as usize..(s.offset + s.filesz) as usize];
            assert_eq!(got, want, "segment at {:#x}", s.vaddr);
        }
        let tail = base + 0x5800 + 0x900;
        let zero = mem.slice(tail, 0x7000 - 0x6100).expect("bss tail");
        assert!(
            zero.iter().all(|&b| b == 0),
            "the bss tail of the data page"
        );
    }
}
