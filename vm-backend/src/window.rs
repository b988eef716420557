//! A process slot's window between two processes. An ended process's window is
//! kept as it is, within a budget the ended processes share, instead of being
//! given back: its program's file mappings and its pages stay, and the slot's next
//! process (usually the next child a shell forks, then the program that child
//! execs) takes over the mappings that are the same and gets everything else
//! fresh. KVM's shadow page tables map each guest page to the host page behind it,
//! and an entry lives as long as that host page stays where it is: a program's
//! code that stays mapped, and the pages a fork writes over in place, cost the new
//! process no shadow-paging fault (≈3 µs each on this host), and the slot no
//! unmapping at the exit and no page allocation at the fork.
//!
//! Which pages hold data of their own comes from PAGEMAP_SCAN (Linux 6.7); without
//! it, a window is given back whole at every exit and execve, as before.

use crate::abi::{LOW, MAX_PROCS, PAGE};
use crate::mem::GuestMem;
use crate::setup::Mapped;
use crate::vcpu::Machine;

/// Most pages the ended processes' windows keep together: 1/16 of guest memory,
/// at most 8 MiB.
fn budget(m: &Machine) -> u64 {
    (m.mem.size() / 16).min(8 << 20) / PAGE
}

/// Takes window `w` for a process: from here the OOM killer leaves it alone (see
/// [`drop_kept`]), and what it holds no longer counts against the budget.
pub fn claim(m: &Machine, w: u64) {
    if let Ok(mut kept) = m.kept.lock() {
        if let Some(k) = kept.get_mut(w as usize) {
            *k = 0;
        }
    }
}

/// Which of process slot `p`'s two windows a process whose program mappings are
/// `want` goes to: the one whose last process left more of them in place; when
/// even, the current one, but for an execve from a window that holds none of
/// them, which goes to the other, so that what the current one holds (the
/// program exec'ing, for its slot's next fork) stays there (a shell's children
/// that exec another program then find both programs in place). The first
/// process stays in window 0, whose addresses are the guest's physical ones.
pub fn choose(m: &Machine, p: u64, want: &[Mapped], exec: bool) -> u64 {
    let current = m.window(p);
    if p == 0 || p >= MAX_PROCS || !m.two_windows {
        return current;
    }
    let other = if current == p { p + MAX_PROCS } else { p };
    let Ok(images) = m.images.lock() else {
        return current;
    };
    let kept = |w: u64| {
        images.get(w as usize).map_or(0, |left| {
            left.iter()
                .filter(|l| want.iter().any(|x| x.same_as(l)))
                .count()
        })
    };
    let (here, there) = (kept(current), kept(other));
    let held = images.get(current as usize).is_some_and(|i| !i.is_empty());
    if there > here || (exec && here == 0 && held) {
        other
    } else {
        current
    }
}

/// Readies window `p`'s memory `mem` for a new process whose program mappings are
/// `want`: mappings left there that are not wanted become zeroed memory, and every
/// page with data of its own reads as zero again, or as its file (see [`refresh`]),
/// unless `written` says the caller writes that page next. Returns
/// the mappings of `want` already in place; the caller maps the others. Without
/// PAGEMAP_SCAN the whole window is given back and none is in place. None when
/// the window could not be made ready.
pub fn clear(
    m: &Machine,
    p: u64,
    mem: &mut GuestMem,
    want: &[Mapped],
    written: &dyn Fn(u64) -> bool,
) -> Option<Vec<Mapped>> {
    claim(m, p);
    let left = m
        .images
        .lock()
        .ok()
        .map(|mut i| i.get_mut(p as usize).map(std::mem::take))?
        .unwrap_or_default();
    let Some(pagemap) = m.pagemap.as_ref() else {
        return mem.discard(LOW).then(Vec::new);
    };
    // Adjacent mappings that go (a program's text and data) go in one mmap.
    let (in_place, mut gone): (Vec<Mapped>, Vec<Mapped>) = left
        .into_iter()
        .partition(|l| want.iter().any(|w| w.same_as(l)));
    gone.sort_unstable_by_key(|g| g.gpa);
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for g in gone {
        let end = g.gpa + g.len.next_multiple_of(PAGE);
        match spans.last_mut() {
            Some(last) if last.1 == g.gpa => last.1 = end,
            _ => spans.push((g.gpa, end)),
        }
    }
    // Not over a mapping that stays (a crafted ELF's segments may overlap).
    let stay: Vec<(u64, u64)> = in_place
        .iter()
        .map(|k| (k.gpa, k.gpa + k.len.next_multiple_of(PAGE)))
        .collect();
    for (start, end) in subtract(spans, &stay) {
        if !mem.zero_range(start, end - start) {
            return None;
        }
    }
    let Some(runs) = mem.private_runs(pagemap, LOW, mem.size()) else {
        return mem.discard(LOW).then(Vec::new);
    };
    for (start, end) in runs {
        let mut at = start;
        while at < end {
            if written(at) {
                at += PAGE;
                continue;
            }
            let from = at;
            while at < end && !written(at) {
                at += PAGE;
            }
            if !refresh(mem, from, at, &in_place) {
                return None;
            }
        }
    }
    Some(in_place)
}

/// The parts of the sorted, disjoint `spans` outside every range in `cut`.
fn subtract(spans: Vec<(u64, u64)>, cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = spans;
    for &(cs, ce) in cut {
        out = out
            .into_iter()
            .flat_map(|(s, e)| {
                let left = (s < cs.min(e)).then(|| (s, cs.min(e)));
                let right = (ce.max(s) < e).then(|| (ce.max(s), e));
                left.into_iter().chain(right)
            })
            .collect();
    }
    out
}

/// Runs of stale pages longer than this are given back (MADV_DONTNEED); shorter
/// ones are written over in place, which keeps their shadow-page entries and
/// costs less than the madvise's TLB shootdown.
const REFRESH_PAGES: u64 = 32;

/// Makes the stale pages [from, to) of a window read as a fresh process's would:
/// the file's bytes inside a mapping in `in_place`, zeros elsewhere.
fn refresh(mem: &mut GuestMem, from: u64, to: u64, in_place: &[Mapped]) -> bool {
    use std::os::unix::fs::FileExt;
    if to - from > REFRESH_PAGES * PAGE {
        return mem.release_range(from, to - from);
    }
    for at in (from..to).step_by(PAGE as usize) {
        let Some(page) = mem.slice_mut(at, PAGE) else {
            return false;
        };
        let mut filled = 0;
        if let Some(k) = in_place
            .iter()
            .find(|k| (k.gpa..k.gpa + k.len).contains(&at))
        {
            let off = k.offset + (at - k.gpa);
            while filled < page.len() {
                match k.file.read_at(&mut page[filled..], off + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
        page[filled..].fill(0);
    }
    true
}

/// When the process in window `p` ends or moves to its slot's other window:
/// keeps the window (`mem`) as it is for a later process (its mappings stay in
/// `Machine::images`) when its pages fit in what the budget has left, else gives
/// it all back.
pub fn retire(m: &Machine, p: u64, mem: &GuestMem) {
    let pages = m
        .pagemap
        .as_ref()
        .and_then(|f| mem.private_runs(f, LOW, mem.size()))
        .map(|runs| runs.iter().map(|(s, e)| (e - s) / PAGE).sum::<u64>());
    if let (Some(n), Ok(mut kept)) = (pages, m.kept.lock()) {
        let others: u64 = kept
            .iter()
            .enumerate()
            .filter(|&(i, _)| i as u64 != p)
            .map(|(_, k)| k)
            .sum();
        if let Some(k) = kept.get_mut(p as usize) {
            *k = 0;
            if others + n <= budget(m) {
                *k = n;
                return;
            }
        }
    }
    give_back(m, p, mem);
}

/// Gives window `p` (`mem`) back whole: nothing of it is kept or mapped.
pub fn give_back(m: &Machine, p: u64, mem: &GuestMem) {
    if let Ok(mut i) = m.images.lock() {
        if let Some(i) = i.get_mut(p as usize) {
            i.clear();
        }
    }
    mem.discard(LOW);
}

/// [`give_back`], for a window that may still be kept (a process that could not
/// start).
pub fn forget(m: &Machine, p: u64, mem: &GuestMem) {
    claim(m, p);
    give_back(m, p, mem);
}

/// Gives back every window an ended process left (the OOM killer's first resort);
/// whether there was any.
pub fn drop_kept(m: &Machine) -> bool {
    let Ok(mut kept) = m.kept.lock() else {
        return false;
    };
    let mut any = false;
    for (p, k) in kept.iter_mut().enumerate().skip(1) {
        let view = m.window_view(p as u64);
        if *k > 0 && view.host_addr() != m.mem.host_addr() {
            // Under the lock: a fork into this slot waits in `clear` until it is done.
            give_back(m, p as u64, &view);
            *k = 0;
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::subtract;

    #[test]
    fn subtract_keeps_what_no_cut_covers() {
        let spans = vec![(0x1000, 0x5000), (0x8000, 0x9000)];
        assert_eq!(subtract(spans.clone(), &[]), spans);
        assert_eq!(
            subtract(spans.clone(), &[(0x2000, 0x3000)]),
            [(0x1000, 0x2000), (0x3000, 0x5000), (0x8000, 0x9000)]
        );
        assert_eq!(subtract(spans.clone(), &[(0, 0x8800)]), [(0x8800, 0x9000)]);
        assert_eq!(subtract(spans, &[(0x1000, 0x5000), (0x8000, 0x10000)]), []);
    }
}
