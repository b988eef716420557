//! Guest memory as the VMM sees one process's address space: an anonymous
//! MAP_NORESERVE mapping whose first [`LOW`](crate::abi::LOW) bytes are the memory
//! every process shares (a memfd mapped MAP_SHARED into each process's view), so a
//! guest address means the same bytes here as in that process. Every access from
//! the VMM goes through bounds-checked methods, because guest-supplied addresses and
//! lengths are hostile.

use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

/// PAGEMAP_SCAN's request (`struct pm_scan_arg`, linux/fs.h, Linux 6.7).
#[repr(C)]
#[derive(Debug, Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// One run of pages PAGEMAP_SCAN reports (`struct page_region`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// The mapping itself, shared by the VMM's threads (the vCPU loop and the ring
/// thread); unmapped when the last [`GuestMem`] goes.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this process until Drop; every access
// goes through GuestMem's bounds-checked methods.
unsafe impl Send for Mapping {}
// SAFETY: as above; concurrent access is the guest's own memory changing under a
// thread, which only ever changes bytes the guest owns (see `slice`).
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in `GuestMem::new`; no slice
        // into it can outlive the last GuestMem, which holds this Arc.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// The guest's RAM as seen by the VMM.
#[derive(Debug)]
pub struct GuestMem {
    map: Arc<Mapping>,
    ptr: NonNull<u8>,
    len: usize,
    /// Addresses below this are refused ([`GuestMem::user`]: a guest program's
    /// pointers must not reach the guest kernel's memory).
    floor: u64,
}

// SAFETY: see Mapping; the raw pointer is a copy of the Arc'd mapping's.
unsafe impl Send for GuestMem {}
// SAFETY: through `&GuestMem` there are only reads (copies), atomics and shared
// slices of guest memory, which the guest may change at any time anyway (see
// `slice`); writes need `&mut`, and each thread writes through its own alias.
unsafe impl Sync for GuestMem {}

impl GuestMem {
    /// Maps `len` bytes of zeroed memory; pages cost nothing until touched.
    pub fn new(len: usize) -> nix::Result<GuestMem> {
        let n = NonZeroUsize::new(len).ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses: it
        // aliases nothing in this process.
        let p = unsafe {
            mmap_anonymous(
                None,
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }?;
        let ptr = p.cast();
        Ok(GuestMem {
            map: Arc::new(Mapping { ptr, len }),
            ptr,
            len,
            floor: 0,
        })
    }

    /// A process's view: `len` bytes whose first `low` are the shared memory in
    /// `shared` (a memfd at least `low` long), the rest private and zeroed.
    pub fn with_shared_low(
        len: usize,
        shared: BorrowedFd<'_>,
        low: usize,
    ) -> nix::Result<GuestMem> {
        let m = GuestMem::new(len)?;
        let n = NonZeroUsize::new(low.min(len)).ok_or(nix::errno::Errno::EINVAL)?;
        // SAFETY: MAP_FIXED over the start of the mapping just made, which nothing
        // else refers to yet; the memfd mapping stays inside it and is unmapped with
        // it (munmap of the whole range in Mapping::drop).
        unsafe {
            mmap(
                Some(NonZeroUsize::new(m.host_addr() as usize).ok_or(nix::errno::Errno::EINVAL)?),
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                shared,
                0,
            )
        }?;
        Ok(m)
    }

    /// Drops the private contents from `from` to the end: they read as zero again
    /// and their host memory is given back (a process's exit or execve); file
    /// mappings there (see [`GuestMem::map_file`]) are replaced by zeroed memory.
    pub fn discard(&self, from: u64) -> bool {
        let from = from.next_multiple_of(0x1000);
        self.zero_range(from, (self.len as u64).saturating_sub(from))
    }

    /// Makes [gpa, gpa+len) fresh zeroed memory, whatever was mapped there (a file
    /// mapping goes); `gpa` page-aligned and the range above [`LOW`](crate::abi::LOW)
    /// and inside guest memory, else false and nothing changes.
    pub fn zero_range(&self, gpa: u64, len: u64) -> bool {
        if gpa % 0x1000 != 0 || gpa < crate::abi::LOW || self.range(gpa, len).is_none() {
            return false;
        }
        let Some(n) = NonZeroUsize::new(len.next_multiple_of(0x1000) as usize) else {
            return true;
        };
        let Some(at) = NonZeroUsize::new(self.ptr.as_ptr() as usize + gpa as usize) else {
            return false;
        };
        // SAFETY: MAP_FIXED over a page-aligned range inside this mapping (the
        // mapping's length is a multiple of the page size), above the shared low
        // memory; nothing in the VMM holds a reference into it across this call
        // (slices borrow a GuestMem of a process that is not running), and it stays
        // mapped (fresh zeroed memory), so later accesses stay valid.
        unsafe {
            mmap_anonymous(
                Some(at),
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE | MapFlags::MAP_FIXED,
            )
        }
        .is_ok()
    }

    /// Gives back the host memory of the private contents from `from` to the end
    /// while the mapping stays as it is (MADV_DONTNEED: anonymous pages read as
    /// zero again, a file mapping's as the file): the OOM killer's way to free a
    /// victim that may still be running. Safe however the guest uses the range: it
    /// stays mapped, only its contents change, as the guest itself may change them.
    pub fn release(&self, from: u64) -> bool {
        let from = from.next_multiple_of(0x1000);
        self.release_range(from, (self.len as u64).saturating_sub(from))
    }

    /// [`GuestMem::release`] of [gpa, gpa+len) (`gpa` page-aligned, the range
    /// inside guest memory, else false and nothing changes).
    pub fn release_range(&self, gpa: u64, len: u64) -> bool {
        if gpa % 0x1000 != 0 || self.range(gpa, len).is_none() {
            return false;
        }
        let n = len.next_multiple_of(0x1000) as usize;
        if n == 0 {
            return true;
        }
        // SAFETY: [gpa, gpa+n) is page-aligned and inside this mapping (its length
        // is a multiple of the page size); MADV_DONTNEED leaves it mapped, so every
        // pointer into it stays valid.
        unsafe {
            nix::sys::mman::madvise(
                self.ptr.add(gpa as usize).cast(),
                n,
                nix::sys::mman::MmapAdvise::MADV_DONTNEED,
            )
        }
        .is_ok()
    }

    /// The runs of pages in [from, to) that hold data of their own: private pages
    /// present or swapped out (not a file's page, not the shared zero page), as
    /// [start, end) guest addresses, in order. One PAGEMAP_SCAN ioctl on the VMM's
    /// `pagemap` per 64 runs, which walks only the page tables there are. None when
    /// the kernel cannot say (PAGEMAP_SCAN came in Linux 6.7) or the range is not
    /// inside guest memory.
    pub fn private_runs(&self, pagemap: &File, from: u64, to: u64) -> Option<Vec<(u64, u64)>> {
        let (from, to) = (from & !0xfff, to.next_multiple_of(0x1000));
        self.range(from, to.checked_sub(from)?)?;
        let base = self.ptr.as_ptr() as u64;
        let mut regions = [PageRegion::default(); 64];
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = base + from;
        while at < base + to {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: at,
                end: base + to,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
                category_mask: PAGE_IS_FILE | PAGE_IS_PFNZERO,
                category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                ..PmScanArg::default()
            };
            // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len` regions
            // into `regions` (both live, exclusively borrowed, of the kernel's
            // layout) and `arg.walk_end`; it only reads the page tables of the range.
            let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
            let n = usize::try_from(n).ok()?.min(regions.len());
            for r in &regions[..n] {
                let (s, e) = (r.start.checked_sub(base)?, r.end.checked_sub(base)?);
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => out.push((s, e)),
                }
            }
            if arg.walk_end <= at {
                return None;
            }
            at = arg.walk_end;
        }
        Some(out)
    }

    /// Maps `len` bytes of `file` from `offset` at `gpa`, private (copy on write):
    /// a program's segments share the host's page cache instead of being copied.
    /// `gpa` and `offset` must be page-aligned and the range above [`LOW`] inside
    /// guest memory; false (nothing changed) otherwise.
    pub fn map_file(&self, gpa: u64, len: u64, file: BorrowedFd<'_>, offset: u64) -> bool {
        let ok = gpa % 0x1000 == 0
            && offset % 0x1000 == 0
            && gpa >= crate::abi::LOW
            && self.range(gpa, len).is_some();
        let (Some(at), Some(n), Ok(off)) = (
            NonZeroUsize::new(self.ptr.as_ptr() as usize + gpa as usize),
            NonZeroUsize::new(len as usize),
            i64::try_from(offset),
        ) else {
            return false;
        };
        // SAFETY: MAP_FIXED over a page-aligned range inside this mapping, above the
        // shared low memory (checked above); it stays mapped, so later accesses stay
        // valid, and only guest bytes change.
        ok && unsafe {
            mmap(
                Some(at),
                n,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED,
                file,
                off,
            )
        }
        .is_ok()
    }

    /// A second handle on the same memory, for another VMM thread.
    pub fn alias(&self) -> GuestMem {
        GuestMem {
            map: Arc::clone(&self.map),
            ptr: self.ptr,
            len: self.len,
            floor: self.floor,
        }
    }

    /// A handle for a guest program's pointers: the shared low memory (the guest
    /// kernel's, below [`LOW`](crate::abi::LOW)) is out of bounds through it.
    pub fn user(&self) -> GuestMem {
        GuestMem {
            floor: crate::abi::LOW,
            ..self.alias()
        }
    }

    /// A handle on all of guest memory (the VMM's own structures in low memory).
    pub fn whole(&self) -> GuestMem {
        GuestMem {
            floor: 0,
            ..self.alias()
        }
    }

    /// The u64 at `gpa` as an atomic, for words shared with the running guest (the
    /// ring's counters and flags); None when out of bounds or not 8-aligned.
    pub fn atomic_u64(&self, gpa: u64) -> Option<&AtomicU64> {
        if gpa % 8 != 0 {
            return None;
        }
        let off = self.range(gpa, 8)?;
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the memory
        // lives as long as self; AtomicU64 has the layout of u64, and every access to
        // such a shared word from the VMM is atomic.
        Some(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }

    /// The u32 at `gpa` as an atomic (a futex word); None when out of bounds or not
    /// 4-aligned.
    pub fn atomic_u32(&self, gpa: u64) -> Option<&AtomicU32> {
        if gpa % 4 != 0 {
            return None;
        }
        let off = self.range(gpa, 4)?;
        // SAFETY: as in `atomic_u64`, for 4 bytes, 4-aligned.
        Some(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) })
    }

    /// Size in bytes (the end of guest RAM as a GPA).
    pub fn size(&self) -> u64 {
        self.len as u64
    }

    /// Host address of GPA 0 (for the memslot).
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Offset of [gpa, gpa+n) if it lies inside guest RAM.
    fn range(&self, gpa: u64, n: u64) -> Option<usize> {
        let end = gpa.checked_add(n)?;
        (gpa >= self.floor && end <= self.len as u64).then_some(gpa as usize)
    }

    /// Guest bytes [gpa, gpa+n), or None when out of bounds.
    pub fn slice(&self, gpa: u64, n: u64) -> Option<&[u8]> {
        let off = self.range(gpa, n)?;
        // SAFETY: [off, off+n) is inside the mapping, which lives as long as self. The
        // guest may run meanwhile (the ring thread serves it while its vCPU runs): the
        // ring hands a request's buffers to the VMM until it completes, and a hostile
        // guest that changes them anyway only changes its own bytes; the VMM reads
        // each request word once and keeps nothing it computed from guest memory.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), n as usize) })
    }

    /// Guest bytes [gpa, gpa+n), writable, or None when out of bounds.
    pub fn slice_mut(&mut self, gpa: u64, n: u64) -> Option<&mut [u8]> {
        let off = self.range(gpa, n)?;
        // SAFETY: as in `slice`; `&mut self` makes this the only live reference.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(off), n as usize) })
    }

    /// Copies `data` to `gpa`; false (nothing written) when out of bounds.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        match self.slice_mut(gpa, data.len() as u64) {
            Some(s) => {
                s.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Writes a little-endian u64; false when out of bounds.
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> bool {
        self.write(gpa, &v.to_le_bytes())
    }

    /// The u64 at `off` in process slot `p`'s block (PI_*), read atomically in the
    /// guest kernel's memory whatever this handle's floor; 0 if out of range.
    pub fn proc_word(&self, p: u64, off: u64) -> u64 {
        use crate::abi::{PROC_INFO_GPA, PROC_INFO_SIZE};
        self.whole()
            .atomic_u64(PROC_INFO_GPA + p * PROC_INFO_SIZE + off)
            .map_or(0, |w| w.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The pid of the process in slot `p`, if the slot holds one that has a pid.
    pub fn guest_pid(&self, p: u64) -> Option<u64> {
        use crate::abi::{PI_BUSY, PI_PID};
        let pid = self.proc_word(p, PI_PID);
        (self.proc_word(p, PI_BUSY) != 0 && pid != 0).then_some(pid)
    }

    /// The slots of the live guest processes in process group `pgid`.
    pub fn group_slots(&self, pgid: u64) -> impl Iterator<Item = u64> + Clone + '_ {
        (0..crate::abi::MAX_PROCS).filter(move |&p| {
            self.guest_pid(p).is_some() && self.proc_word(p, crate::abi::PI_PGID) == pgid
        })
    }

    /// Reads a little-endian u64, or None when out of bounds.
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        let s = self.slice(gpa, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Some(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let mut m = GuestMem::new(0x2000).expect("mmap");
        assert!(m.write_u64(0x1ff8, 7));
        assert_eq!(m.read_u64(0x1ff8), Some(7));
        assert!(!m.write_u64(0x1ffc, 1));
        assert!(m.read_u64(u64::MAX - 3).is_none());
        assert!(m.slice(0x1000, u64::MAX).is_none());
        assert!(m.slice(0x2000, 0).is_some());
    }

    /// PAGEMAP_SCAN names the written pages as runs, leaves out pages only read
    /// (the shared zero page) and a file mapping's unwritten pages, and a page
    /// given back or zero-mapped leaves its run.
    #[test]
    fn private_runs_are_the_written_pages() {
        use crate::abi::LOW;
        let pagemap = File::open("/proc/self/pagemap").expect("pagemap");
        let mut m = GuestMem::new((LOW + 0x40000) as usize).expect("mmap");
        let Some(none) = m.private_runs(&pagemap, LOW, m.size()) else {
            println!("SKIP private_runs_are_the_written_pages: no PAGEMAP_SCAN (Linux < 6.7)");
            return;
        };
        assert_eq!(none, []);
        let file = std::env::current_exe().expect("this test's binary");
        let file = File::open(file).expect("open");
        assert!(m.map_file(LOW + 0x20000, 0x4000, std::os::fd::AsFd::as_fd(&file), 0));
        for page in [0, 1, 2, 5, 0x21] {
            assert!(m.write(LOW + page * 0x1000, &[1]));
        }
        // Read only: an anonymous page (the zero page) and a file page.
        assert_eq!(m.slice(LOW + 0x8000, 1), Some(&[0u8][..]));
        std::hint::black_box(m.slice(LOW + 0x22000, 1));
        let runs = m.private_runs(&pagemap, LOW, m.size()).expect("scan");
        let at = |p: u64| LOW + p * 0x1000;
        assert_eq!(runs, [(at(0), at(3)), (at(5), at(6)), (at(0x21), at(0x22))]);
        assert!(m.release_range(at(1), 0x1000));
        assert!(m.zero_range(at(0x20), 0x4000));
        let runs = m.private_runs(&pagemap, LOW, m.size()).expect("scan");
        assert_eq!(runs, [(at(0), at(1)), (at(2), at(3)), (at(5), at(6))]);
        assert_eq!(m.slice(at(1), 1), Some(&[0u8][..]));
    }
}
