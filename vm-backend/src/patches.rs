//! Syscall-site rewrites carried from one process to the next that runs the same
//! program. The guest kernel rewrites a `syscall` site the first time it traps
//! there (guest `patch.rs`) and logs the rewrite (abi.rs, [`PATCH_LOG_GPA`]). When
//! the process's image goes (exit, execve), the VMM keeps the rewrites that lie in
//! its program segments, per file and place; when it loads that program at the same
//! place again, it makes them in the new image before it runs. So a shell running
//! the same commands again does not pay a trap and a copy-on-write of a code page
//! per site and process (≈15 µs each on this host).
//!
//! A rewrite is made again only in the same file (device, inode, size, change and
//! modification times), mapped at the same guest address from the same offset, and
//! only where the bytes are still the ones it replaced, followed by `syscall`: the
//! jump it writes leads to a trampoline of the guest kernel, which keeps every
//! trampoline it made for the life of the VM.

use crate::abi::*;
use crate::mem::GuestMem;
use crate::setup::Mapped;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most programs (file and place) whose rewrites are kept.
const MAX_SETS: usize = 256;
/// Most rewrites kept per program (the guest kernel has 2048 trampolines in all).
const MAX_PER_SET: usize = 2048;
/// The `syscall` instruction.
const SYSCALL: [u8; 2] = [0x0f, 0x05];

/// What makes two opens of a program the same file with the same contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    /// The identity of `file`, or None when it cannot be had.
    pub fn of(file: &std::fs::File) -> Option<FileId> {
        let st = nix::sys::stat::fstat(file).ok()?;
        Some(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        })
    }
}

/// One rewrite: `len` bytes at `site` were `old` and became `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rewrite {
    site: u64,
    len: usize,
    old: [u8; 8],
    new: [u8; 8],
}

impl Rewrite {
    /// Whether it is what the guest kernel writes: a jump (e9 rel32) into the
    /// kernel (where its trampolines are) over a 5 to 7 byte instruction, int3s
    /// after it.
    fn is_a_jump_in(&self) -> bool {
        if !(5..=7).contains(&self.len) || self.new[0] != 0xe9 {
            return false;
        }
        let rel = i32::from_le_bytes([self.new[1], self.new[2], self.new[3], self.new[4]]);
        let to = self
            .site
            .checked_add(5)
            .and_then(|n| n.checked_add_signed(i64::from(rel)));
        to.is_some_and(|t| (KERNEL_GPA..KERNEL_GPA + KERNEL_MAX).contains(&t))
            && self.new[5..self.len].iter().all(|&b| b == 0xcc)
    }
}

/// A program segment: its file, guest address and file offset.
type Key = (FileId, u64, u64);

/// The rewrites kept, per program segment.
#[derive(Debug, Default)]
pub struct Patches {
    sets: Mutex<HashMap<Key, Vec<Rewrite>>>,
}

impl Patches {
    /// Takes process slot `proc`'s log (in `low`, the shared low memory) and keeps
    /// the rewrites that lie in one of `maps` (its image's segments); the log is
    /// left empty. When [`MAX_SETS`] programs are kept, a new one makes them all go.
    pub fn harvest(&self, low: &GuestMem, proc: u64, maps: &[Mapped]) {
        if proc >= MAX_PROCS {
            return;
        }
        let base = PATCH_LOG_GPA + proc * PATCH_LOG_SIZE;
        let n = low.read_u64(base + PL_COUNT).unwrap_or(0).min(PL_MAX);
        if n == 0 {
            return;
        }
        let records: Vec<Rewrite> = (0..n)
            .map(|i| {
                let rec = base + PL_RECORDS + i * PL_RECORD_SIZE;
                let word = |off| low.read_u64(rec + off).unwrap_or(0);
                Rewrite {
                    site: word(0),
                    len: word(8).min(8) as usize,
                    old: word(16).to_le_bytes(),
                    new: word(24).to_le_bytes(),
                }
            })
            .collect();
        let mut low = low.alias();
        low.write_u64(base + PL_COUNT, 0);
        let Ok(mut sets) = self.sets.lock() else {
            return;
        };
        for r in records.into_iter().filter(Rewrite::is_a_jump_in) {
            // The site, its instruction and the `syscall` after it, inside a segment.
            let Some(m) = maps.iter().find(|m| {
                r.site.checked_sub(m.gpa).is_some_and(|at| {
                    (r.len as u64 + 2)
                        .checked_add(at)
                        .is_some_and(|end| end <= m.len)
                })
            }) else {
                continue;
            };
            let Some(id) = m.id else { continue };
            let key = (id, m.gpa, m.offset);
            if !sets.contains_key(&key) && sets.len() >= MAX_SETS {
                // Full: start afresh rather than keep only the first programs seen.
                sets.clear();
            }
            let set = sets.entry(key).or_default();
            if set.len() < MAX_PER_SET && !set.iter().any(|k| k.site == r.site) {
                set.push(r);
            }
        }
    }

    /// Makes the kept rewrites of `maps` (a new image's segments, just mapped) in
    /// `mem`, where the bytes are still the ones each replaced. Returns how many.
    pub fn replay(&self, mem: &mut GuestMem, maps: &[Mapped]) -> usize {
        let Ok(sets) = self.sets.lock() else {
            return 0;
        };
        let mut made = 0;
        for m in maps {
            let Some(set) = m.id.and_then(|id| sets.get(&(id, m.gpa, m.offset))) else {
                continue;
            };
            for r in set {
                let whole = r.len as u64 + 2;
                let same = mem
                    .slice(r.site, whole)
                    .is_some_and(|b| b[..r.len] == r.old[..r.len] && b[r.len..] == SYSCALL);
                if same && mem.write(r.site, &r.new[..r.len]) {
                    made += 1;
                }
            }
        }
        made
    }

    /// Empties process slot `proc`'s log without keeping what it holds (a forked
    /// child's rewrites are its own from the fork on).
    pub fn clear_log(low: &GuestMem, proc: u64) {
        if proc < MAX_PROCS {
            let mut low = low.alias();
            low.write_u64(PATCH_LOG_GPA + proc * PATCH_LOG_SIZE + PL_COUNT, 0);
        }
    }
}
