//! Checks and describes the program the guest runs: a static x86-64 Linux ELF.

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

/// Parses and validates `file` (named `name` in messages). Static PIE executables are
/// loaded at [`USER_MIN`]; fixed-address ones must lie at or above it.
///
/// `file` is the start of the file (enough for the ELF and program headers; a table
/// beyond it is reported as malformed) and `len` the file's whole length, which the
/// segments must lie in.
pub fn parse(name: &str, file: &[u8], len: u64) -> Result<Image, String> {
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
        3 => USER_MIN,
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
    };
    let mut phdr = None;
    for i in 0..phnum as usize {
        let p = phoff as usize + 56 * i;
        let (ty, offset, vaddr) = (u32_at(file, p), u64_at(file, p + 8), u64_at(file, p + 16));
        let (filesz, memsz) = (u64_at(file, p + 32), u64_at(file, p + 40));
        match ty {
            PT_INTERP => {
                return Err(format!(
                    "{name} is dynamically linked; not yet supported in the VM backend"
                ))
            }
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
        assert!(parse("p", &header(2, 62), 100).is_err());
        let img = parse("p", &header(2, 62), 4096).expect("valid");
        assert_eq!(img.entry, 0x401000);
        assert_eq!(img.phdr, 0x400040);
        assert_eq!(img.end, 0x402000);
    }

    #[test]
    fn rejections() {
        assert!(parse("p", b"#!/bin/sh\n", 10)
            .unwrap_err()
            .contains("not an ELF"));
        assert!(parse("p", &header(2, 3), 4096)
            .unwrap_err()
            .contains("x86-64"));
        let mut dynamic = header(2, 62);
        dynamic[56..58].copy_from_slice(&2u16.to_le_bytes());
        dynamic[120..124].copy_from_slice(&3u32.to_le_bytes());
        assert!(parse("p", &dynamic, dynamic.len() as u64)
            .unwrap_err()
            .contains("dynamically linked"));
        let mut short = header(2, 62);
        short.truncate(100);
        assert!(parse("p", &short, short.len() as u64).is_err());
    }
}
