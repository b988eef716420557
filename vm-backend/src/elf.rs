//! Checks and describes the program the guest runs: an x86-64 Linux ELF executable,
//! static or dynamically linked (then its PT_INTERP names the loader to run first).

use crate::abi::USER_MIN;

/// A loadable segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest address (load base included).
    pub vaddr: u64,
    /// File offset of its contents.
    pub offset: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zero).
    pub memsz: u64,
}

/// What the loader and the auxiliary vector need from an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Entry point (load base included).
    pub entry: u64,
    /// Guest address of the program headers (AT_PHDR).
    pub phdr: u64,
    /// Number of program headers (AT_PHNUM).
    pub phnum: u64,
    /// PT_LOAD segments.
    pub segments: Vec<Segment>,
    /// First byte after the highest segment.
    pub end: u64,
    /// Where an ET_DYN file was placed (0 for a fixed-address one): AT_BASE of a
    /// loader.
    pub base: u64,
    /// PT_INTERP: the path of the program's loader (dynamic linking).
    pub interp: Option<String>,
}

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;

fn u16_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 2)
        .map_or(0, |s| u64::from(u16::from_le_bytes([s[0], s[1]])))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// Parses and validates `file` (named `name` in messages). Position-independent files
/// (ET_DYN: PIE executables, loaders) are placed at `dyn_base`; fixed-address ones
/// must lie at or above [`USER_MIN`].
///
/// `file` is the start of the file (enough for the ELF and program headers and
/// PT_INTERP's path; a table beyond it is reported as malformed) and `len` the
/// file's whole length, which the segments must lie in.
pub fn parse(name: &str, file: &[u8], len: u64, dyn_base: u64) -> Result<Image, String> {
    if file.len() < 64 || &file[..4] != b"\x7fELF" {
        return Err(format!("{name} is not an ELF executable"));
    }
    if file[4] != 2 || file[5] != 1 || u16_at(file, 18) != 62 {
        return Err(format!(
            "{name} is not an x86-64 executable (ELF class {}, machine {})",
            file[4],
            u16_at(file, 18)
        ));
    }
    let base = match u16_at(file, 16) {
        2 => 0,
        3 => dyn_base,
        t => return Err(format!("{name} is not an executable (ELF type {t})")),
    };
    let phoff = u64_at(file, 32);
    let (phentsize, phnum) = (u16_at(file, 54), u16_at(file, 56));
    let table_end = phnum
        .checked_mul(56)
        .and_then(|n| n.checked_add(phoff))
        .filter(|&e| e <= file.len() as u64);
    if phentsize != 56 || phnum == 0 || table_end.is_none() {
        return Err(format!("{name}: malformed ELF program headers"));
    }
    let mut img = Image {
        entry: 0,
        phdr: 0,
        phnum,
        segments: Vec::new(),
        end: 0,
        base,
        interp: None,
    };
    let mut phdr = None;
    for i in 0..phnum as usize {
        let p = phoff as usize + 56 * i;
        let (ty, offset, vaddr) = (u32_at(file, p), u64_at(file, p + 8), u64_at(file, p + 16));
        let (filesz, memsz) = (u64_at(file, p + 32), u64_at(file, p + 40));
        match ty {
            PT_INTERP => img.interp = Some(interp_path(name, file, offset, filesz)?),
            PT_PHDR => phdr = Some(vaddr.wrapping_add(base)),
            PT_LOAD => {
                let in_file = offset.checked_add(filesz).is_some_and(|e| e <= len);
                let vaddr = vaddr.checked_add(base);
                let end = vaddr.and_then(|v| v.checked_add(memsz));
                match (in_file && filesz <= memsz, vaddr, end) {
                    (true, Some(vaddr), Some(end)) if vaddr >= USER_MIN => {
                        if phdr.is_none() && offset <= phoff && phoff - offset < filesz {
                            phdr = Some(vaddr + (phoff - offset));
                        }
                        img.end = img.end.max(end);
                        img.segments.push(Segment {
                            vaddr,
                            offset,
                            filesz,
                            memsz,
                        });
                    }
                    _ => {
                        return Err(format!(
                            "{name}: ELF segment {i} is malformed or below {USER_MIN:#x}"
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    if img.segments.is_empty() {
        return Err(format!("{name}: ELF has no loadable segment"));
    }
    img.entry = u64_at(file, 24).wrapping_add(base);
    img.phdr = phdr.unwrap_or(0);
    Ok(img)
}

/// Parses `program`'s loader (its PT_INTERP file `path`, named `execfn`'s loader in
/// messages) and places it at the first 2 MiB boundary above the program; a loader
/// that names a loader itself is refused.
pub fn parse_loader(
    execfn: &str,
    program: &Image,
    path: &str,
    file: &[u8],
    len: u64,
) -> Result<Image, String> {
    let base = program
        .end
        .checked_next_multiple_of(crate::abi::HUGE)
        .ok_or_else(|| format!("{execfn}: no room for its loader"))?;
    let img = parse(path, file, len, base)?;
    if img.interp.is_some() {
        return Err(format!(
            "{path}, the loader of {execfn}, names a loader itself"
        ));
    }
    Ok(img)
}

/// The NUL-terminated path PT_INTERP points at.
fn interp_path(name: &str, file: &[u8], offset: u64, filesz: u64) -> Result<String, String> {
    let bytes = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(filesz).ok())
        .and_then(|(o, n)| file.get(o..o.checked_add(n)?))
        .and_then(|b| b.split_last())
        .filter(|(nul, path)| **nul == 0 && !path.is_empty() && !path.contains(&0))
        .map(|(_, path)| path);
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::to_string)
        .ok_or_else(|| format!("{name}: malformed ELF interpreter path (PT_INTERP)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u16, machine: u16) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56 * 2];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&ty.to_le_bytes());
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        // PT_LOAD at 0x400000, whole file, 0x2000 in memory.
        f[64..68].copy_from_slice(&1u32.to_le_bytes());
        f[80..88].copy_from_slice(&0x400000u64.to_le_bytes());
        let len = f.len() as u64;
        f[96..104].copy_from_slice(&len.to_le_bytes());
        f[104..112].copy_from_slice(&0x2000u64.to_le_bytes());
        f
    }

    #[test]
    fn static_executable() {
        // A segment past the file's end (the header bytes are only its start).
        assert!(parse("p", &header(2, 62), 100, USER_MIN).is_err());
        let img = parse("p", &header(2, 62), 4096, USER_MIN).expect("valid");
        assert_eq!(img.entry, 0x401000);
        assert_eq!(img.phdr, 0x400040);
        assert_eq!(img.end, 0x402000);
        assert_eq!((img.base, img.interp), (0, None));
    }

    /// `header` with a second program header, PT_INTERP, naming `path` (stored
    /// after the table, `filesz` bytes of it counted).
    fn dynamic(path: &[u8], filesz: u64) -> Vec<u8> {
        let mut f = header(3, 62);
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        f[120..124].copy_from_slice(&3u32.to_le_bytes());
        let off = f.len() as u64;
        f[128..136].copy_from_slice(&off.to_le_bytes());
        f[152..160].copy_from_slice(&filesz.to_le_bytes());
        f.extend_from_slice(path);
        f
    }

    #[test]
    fn dynamically_linked() {
        let f = dynamic(b"/lib64/ld.so\0", 13);
        let img = parse("p", &f, 4096, 0x80_0000).expect("valid");
        assert_eq!(img.interp.as_deref(), Some("/lib64/ld.so"));
        // ET_DYN: every address moved by the base.
        assert_eq!((img.base, img.entry), (0x80_0000, 0xc01000));
        assert_eq!(img.segments[0].vaddr, 0xc00000);
        // No NUL, an inner NUL, empty, or past the bytes read.
        for (path, n) in [
            (&b"/lib64/ld.so"[..], 12),
            (b"/a\0b\0", 5),
            (b"\0", 1),
            (b"/x\0", 99),
        ] {
            let err = parse("p", &dynamic(path, n), 4096, 0x80_0000).unwrap_err();
            assert!(err.contains("interpreter"), "{err}");
        }
    }

    #[test]
    fn rejections() {
        assert!(parse("p", b"#!/bin/sh\n", 10, USER_MIN)
            .unwrap_err()
            .contains("not an ELF"));
        assert!(parse("p", &header(2, 3), 4096, USER_MIN)
            .unwrap_err()
            .contains("x86-64"));
        let mut low = header(2, 62);
        low[80..88].copy_from_slice(&0x1000u64.to_le_bytes());
        assert!(parse("p", &low, 4096, USER_MIN)
            .unwrap_err()
            .contains("below"));
        let mut short = header(2, 62);
        short.truncate(100);
        assert!(parse("p", &short, short.len() as u64, USER_MIN).is_err());
    }
}
