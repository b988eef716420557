//! The program's initial stack as Linux builds it: argc, argv, envp and the auxiliary
//! vector, with the strings and AT_RANDOM bytes above them.

use crate::elf::Image;
use crate::mem::GuestMem;

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_EXECFN: u64 = 31;

/// What the stack carries besides the image's addresses.
#[derive(Debug)]
pub struct Process<'a> {
    /// argv.
    pub argv: &'a [String],
    /// envp.
    pub envp: &'a [String],
    /// AT_EXECFN.
    pub execfn: &'a str,
    /// AT_UID/AT_EUID, AT_GID/AT_EGID.
    pub user: (u32, u32),
    /// AT_RANDOM bytes.
    pub random: [u8; 16],
    /// AT_BASE: where the program's loader was placed (0: statically linked).
    pub interp_base: u64,
}

/// Builds the stack below `top` (and not below `floor`); returns the initial rsp.
pub fn build(
    mem: &mut GuestMem,
    (floor, top): (u64, u64),
    img: &Image,
    p: &Process<'_>,
) -> Result<u64, String> {
    let (argv, envp, execfn, random) = (p.argv, p.envp, p.execfn, p.random);
    let (uid, gid) = (u64::from(p.user.0), u64::from(p.user.1));
    let too_big = || "the process's arguments and environment do not fit the stack".to_string();
    let mut sp = top;
    let mut push = |mem: &mut GuestMem, bytes: &[u8]| -> Result<u64, String> {
        sp = sp
            .checked_sub(bytes.len() as u64)
            .filter(|&s| s >= floor)
            .ok_or_else(too_big)?;
        if mem.write(sp, bytes) {
            Ok(sp)
        } else {
            Err(too_big())
        }
    };
    let random_at = push(mem, &random)?;
    let platform = push(mem, b"x86_64\0")?;
    let cstr = |s: &str| -> Result<Vec<u8>, String> {
        if s.contains('\0') {
            return Err(format!("process argument or env {s:?} contains a NUL byte"));
        }
        Ok([s.as_bytes(), b"\0"].concat())
    };
    let execfn_at = push(mem, &cstr(execfn)?)?;
    let mut env_at = Vec::new();
    for e in envp {
        env_at.push(push(mem, &cstr(e)?)?);
    }
    let mut arg_at = Vec::new();
    for a in argv {
        arg_at.push(push(mem, &cstr(a)?)?);
    }
    let aux: [(u64, u64); 17] = [
        (AT_PHDR, img.phdr),
        (AT_PHENT, 56),
        (AT_PHNUM, img.phnum),
        (AT_PAGESZ, 4096),
        (AT_BASE, p.interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, img.entry),
        (AT_UID, uid),
        (AT_EUID, uid),
        (AT_GID, gid),
        (AT_EGID, gid),
        (AT_SECURE, 0),
        (AT_HWCAP, 0),
        (AT_CLKTCK, 100),
        (AT_RANDOM, random_at),
        (AT_PLATFORM, platform),
        (AT_EXECFN, execfn_at),
    ];
    let mut words = vec![argv.len() as u64];
    words.extend(&arg_at);
    words.push(0);
    words.extend(&env_at);
    words.push(0);
    for (k, v) in aux {
        words.extend([k, v]);
    }
    words.extend([AT_NULL, 0]);
    // rsp must be 16-byte aligned at the entry point, pointing at argc.
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let start = (sp & !15)
        .checked_sub(bytes.len() as u64)
        .map(|s| s & !15)
        .filter(|&s| s >= floor)
        .ok_or_else(too_big)?;
    if !mem.write(start, &bytes) {
        return Err(too_big());
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut m = GuestMem::new(0x10000).expect("mmap");
        let img = Image {
            entry: 0x401000,
            phdr: 0x400040,
            phnum: 4,
            segments: Vec::new(),
            end: 0,
            base: 0,
            interp: None,
        };
        let args = ["echo".to_string(), "hi".to_string()];
        let env = ["A=1".to_string()];
        let proc_ = |argv, execfn| Process {
            argv,
            envp: &env,
            execfn,
            user: (0, 0),
            random: [7; 16],
            interp_base: 0,
        };
        let sp = build(&mut m, (0x8000, 0x10000), &img, &proc_(&args, "/bin/echo")).expect("fits");
        assert_eq!(sp % 16, 0);
        assert_eq!(m.read_u64(sp), Some(2));
        let argv0 = m.read_u64(sp + 8).expect("argv0");
        assert_eq!(m.slice(argv0, 5), Some(&b"echo\0"[..]));
        assert_eq!(m.read_u64(sp + 24), Some(0));
        let env0 = m.read_u64(sp + 32).expect("env0");
        assert_eq!(m.slice(env0, 4), Some(&b"A=1\0"[..]));
        assert_eq!(m.read_u64(sp + 48), Some(AT_PHDR));
        assert!(build(&mut m, (0xff00, 0x10000), &img, &proc_(&args, "x")).is_err());
        let nul = ["a\0b".to_string()];
        assert!(build(&mut m, (0x8000, 0x10000), &img, &proc_(&nul, "x")).is_err());
    }
}
