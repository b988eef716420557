//! Guest memory: one anonymous MAP_NORESERVE mapping, registered as memslot 0 at
//! GPA 0. Every access from the VMM goes through bounds-checked methods, because
//! guest-supplied addresses and lengths are hostile.

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
use std::ptr::NonNull;

/// The guest's RAM as seen by the VMM.
#[derive(Debug)]
pub struct GuestMem {
    ptr: NonNull<u8>,
    len: usize,
}

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
        Ok(GuestMem { ptr: p.cast(), len })
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
        (end <= self.len as u64).then_some(gpa as usize)
    }

    /// Guest bytes [gpa, gpa+n), or None when out of bounds.
    pub fn slice(&self, gpa: u64, n: u64) -> Option<&[u8]> {
        let off = self.range(gpa, n)?;
        // SAFETY: [off, off+n) is inside the mapping, which lives as long as self; the
        // vCPU is stopped while the VMM looks at guest memory (one thread runs both).
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

    /// Reads a little-endian u64, or None when out of bounds.
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        let s = self.slice(gpa, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Some(u64::from_le_bytes(b))
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in `new`; no slice into it can
        // outlive self.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
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
}
