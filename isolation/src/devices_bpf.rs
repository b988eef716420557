//! The cgroup v2 device controller: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's v2 cgroup directory.
//!
//! cgroup v2 has no `devices.allow`/`devices.deny` files; the kernel instead runs every
//! `BPF_CGROUP_DEVICE` program attached to the cgroup (and its ancestors) on each device
//! open and mknod, and refuses with `EPERM` unless all of them return 1.
//!
//! The rules are the v1-style lines we already generate for `devices.allow` and
//! `devices.deny` ([`rules_from_lines`]). [`program`] turns them into a filter with the
//! semantics of runc's device filter: the **last** matching rule decides (the program
//! tests the rules in reverse order and returns on the first match), and a device no
//! rule matches is denied, unless a catch-all rule (`a *:* rwm`) says otherwise — every
//! rule before a catch-all is dead and the catch-all becomes the default.
//!
//! Access matching follows the kernel's v1 devices controller: an allow rule matches a
//! request only if it grants *all* the requested access bits (`rw` is not allowed by a
//! rule granting `r`), a deny rule matches if it names *any* of them (`rw` is refused by
//! a rule denying `w`). runc tests deny rules for a superset too, which lets an
//! `O_RDWR` open through a deny rule that only names `w`; we do not.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::{Error, Result};

/// `BPF_DEVCG_ACC_MKNOD`: the `m` access bit.
pub const ACC_MKNOD: u8 = 1;
/// `BPF_DEVCG_ACC_READ`: the `r` access bit.
pub const ACC_READ: u8 = 2;
/// `BPF_DEVCG_ACC_WRITE`: the `w` access bit.
pub const ACC_WRITE: u8 = 4;
/// All three access bits, `rwm`.
pub const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// `BPF_DEVCG_DEV_BLOCK`: the device type of a block device in the program context.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`: the device type of a character device in the program context.
pub const DEV_CHAR: u32 = 2;

/// One device rule, as a line of `devices.allow` (`allow`) or `devices.deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Allow (true) or deny the matching accesses.
    pub allow: bool,
    /// `'c'`, `'b'`, or `None` for every type (`a`). Any other type (`'p'`) matches no
    /// device: the device controller never sees FIFOs.
    pub kind: Option<char>,
    /// Major number, `None` for `*`.
    pub major: Option<u32>,
    /// Minor number, `None` for `*`.
    pub minor: Option<u32>,
    /// Access bits: [`ACC_READ`], [`ACC_WRITE`], [`ACC_MKNOD`].
    pub access: u8,
}

impl Rule {
    /// Whether the rule matches every request (`a *:* rwm`).
    fn is_catch_all(&self) -> bool {
        self.kind.is_none()
            && self.major.is_none()
            && self.minor.is_none()
            && self.access & ACC_ALL == ACC_ALL
    }
}

/// Parses v1 device rule lines — `(true, "c 1:3 rwm")` for `devices.allow`,
/// `(false, "a *:* rwm")` for `devices.deny` — in order. `a` alone means `a *:* rwm`,
/// as in v1.
pub fn rules_from_lines(lines: &[(bool, String)]) -> Result<Vec<Rule>> {
    lines
        .iter()
        .map(|(allow, line)| parse_line(*allow, line))
        .collect()
}

fn parse_line(allow: bool, line: &str) -> Result<Rule> {
    let bad = |why: &str| Error::Invalid(format!("device rule {line:?}: {why}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let kind = match fields.first().copied() {
        Some("a") => None,
        Some("c") => Some('c'),
        Some("b") => Some('b'),
        Some("p") => Some('p'),
        Some(_) => return Err(bad("type must be a, c, b or p")),
        None => return Err(bad("empty")),
    };
    if fields.len() == 1 && kind.is_none() {
        return Ok(Rule {
            allow,
            kind,
            major: None,
            minor: None,
            access: ACC_ALL,
        });
    }
    let [_, numbers, access] = fields[..] else {
        return Err(bad("expected TYPE MAJOR:MINOR ACCESS"));
    };
    let (major, minor) = numbers
        .split_once(':')
        .ok_or_else(|| bad("expected MAJOR:MINOR"))?;
    let number = |s: &str| -> Result<Option<u32>> {
        if s == "*" {
            return Ok(None);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("device number must be a decimal or *"));
        }
        s.parse()
            .map(Some)
            .map_err(|_| bad("device number out of range"))
    };
    let (major, minor) = (number(major)?, number(minor)?);
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(bad("access must be made of r, w, m")),
        };
    }
    Ok(Rule {
        allow,
        kind,
        major,
        minor,
        access: bits,
    })
}

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn` (libc has none):
/// `code`, then `dst_reg` in the low and `src_reg` in the high nibble of `regs`
/// (little-endian bitfields), a signed jump offset and a signed immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class | operation | source.
    pub code: u8,
    /// `dst_reg | src_reg << 4`.
    pub regs: u8,
    /// Jump offset, relative to the next instruction; memory offset for loads.
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

// Opcodes we emit: class | op | source (linux/bpf_common.h, linux/bpf.h).
/// `BPF_LDX | BPF_MEM | BPF_W`: `dst = *(u32 *)(src + off)`.
pub const LDX_W: u8 = 0x61;
/// `BPF_ALU | BPF_AND | BPF_K`: `dst = (u32)dst & imm`.
pub const AND32_K: u8 = 0x54;
/// `BPF_ALU | BPF_RSH | BPF_K`: `dst = (u32)dst >> imm`.
pub const RSH32_K: u8 = 0x74;
/// `BPF_ALU | BPF_MOV | BPF_K`: `dst = (u32)imm`.
pub const MOV32_K: u8 = 0xb4;
/// `BPF_ALU | BPF_MOV | BPF_X`: `dst = (u32)src`.
pub const MOV32_X: u8 = 0xbc;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `if dst == imm goto +off`.
pub const JEQ_K: u8 = 0x15;
/// `BPF_JMP | BPF_JNE | BPF_K`: `if dst != imm goto +off`.
pub const JNE_K: u8 = 0x55;
/// `BPF_JMP | BPF_JNE | BPF_X`: `if dst != src goto +off`.
pub const JNE_X: u8 = 0x5d;
/// `BPF_JMP | BPF_EXIT`: return r0.
pub const EXIT: u8 = 0x95;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// Generates the device filter for `rules` (in the order they were written: later rules
/// override earlier ones). Pure; see the module documentation for the semantics.
///
/// Program shape: 6 instructions load the context (`struct bpf_cgroup_dev_ctx`:
/// `u32 access_type` = access << 16 | type, `u32 major`, `u32 minor`) into r2 = type,
/// r3 = access, r4 = major, r5 = minor; then one block per live rule, last rule first,
/// each a chain of "goto next block unless it matches" followed by `r0 = allow; exit`;
/// then `r0 = default; exit`. Rules that cannot match a device (type `p`, no access
/// bits) get no block; a catch-all rule becomes the default and ends the scan.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut out = vec![
        insn(LDX_W, R2, R1, 0, 0),
        insn(AND32_K, R2, 0, 0, 0xffff),
        insn(LDX_W, R3, R1, 0, 0),
        insn(RSH32_K, R3, 0, 0, 16),
        insn(LDX_W, R4, R1, 4, 0),
        insn(LDX_W, R5, R1, 8, 0),
    ];
    let mut default_allow = false;
    for rule in rules.iter().rev() {
        if rule.is_catch_all() {
            default_allow = rule.allow;
            break;
        }
        out.extend(block(rule));
    }
    out.push(insn(MOV32_K, R0, 0, 0, i32::from(default_allow)));
    out.push(insn(EXIT, 0, 0, 0, 0));
    out
}

/// The instructions of one rule, or nothing when it cannot match any device. Jumps
/// with offset `i16::MAX` are placeholders for "the next block", fixed up at the end.
fn block(rule: &Rule) -> Vec<Insn> {
    const NEXT: i16 = i16::MAX;
    let access = rule.access & ACC_ALL;
    if access == 0 {
        return Vec::new();
    }
    let mut b = Vec::with_capacity(10);
    match rule.kind {
        None | Some('a') => {}
        Some('c') => b.push(insn(JNE_K, R2, 0, NEXT, DEV_CHAR as i32)),
        Some('b') => b.push(insn(JNE_K, R2, 0, NEXT, DEV_BLOCK as i32)),
        Some(_) => return Vec::new(),
    }
    // A request always has at least one bit, so an rwm rule matches any access.
    if access != ACC_ALL {
        b.push(insn(MOV32_X, R1, R3, 0, 0));
        if rule.allow {
            // Allow only if every requested bit is granted: (r3 & access) == r3.
            b.push(insn(AND32_K, R1, 0, 0, i32::from(access)));
            b.push(insn(JNE_X, R1, R3, NEXT, 0));
        } else {
            // Deny if any requested bit is named: (r3 & access) != 0.
            b.push(insn(AND32_K, R1, 0, 0, i32::from(access)));
            b.push(insn(JEQ_K, R1, 0, NEXT, 0));
        }
    }
    for (reg, n) in [(R4, rule.major), (R5, rule.minor)] {
        let Some(n) = n else { continue };
        match i32::try_from(n) {
            Ok(imm) => b.push(insn(JNE_K, reg, 0, NEXT, imm)),
            // JNE with an immediate compares with the sign-extended imm, so a value above
            // i32::MAX goes through r1 (mov32 zero-extends): same bits, as an i32.
            Err(_) => {
                b.push(insn(MOV32_K, R1, 0, 0, n as i32));
                b.push(insn(JNE_X, reg, R1, NEXT, 0));
            }
        }
    }
    b.push(insn(MOV32_K, R0, 0, 0, i32::from(rule.allow)));
    b.push(insn(EXIT, 0, 0, 0, 0));
    let len = b.len();
    for (i, ins) in b.iter_mut().enumerate() {
        if ins.off == NEXT {
            // The next block starts right after this one; offsets count from i + 1.
            ins.off = (len - i - 1) as i16;
        }
    }
    b
}

// bpf(2) commands, program and attach types and flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`; the
/// kernel treats the fields after it as zero. Every field is naturally aligned and the
/// struct has no padding (checked below), so `Default` leaves every byte zero, as the
/// kernel requires of unused fields.
#[repr(C, align(8))]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 72);

/// The `BPF_PROG_ATTACH` member of `union bpf_attr`, up to `replace_bpf_fd`. No padding.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const _: () = assert!(std::mem::size_of::<ProgAttachAttr>() == 20);

/// bpf(2). Returns the non-negative result or the errno.
///
/// # Safety
///
/// `attr` must be the `bpf_attr` member `cmd` expects, and every pointer stored in it
/// must point to memory valid (and, for output buffers, writable) for the length it is
/// given, for the duration of the call.
unsafe fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::result::Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a live, exclusively borrowed `T` of `size_of::<T>()` bytes; the
    // caller guarantees it is the layout `cmd` expects and that its pointers are valid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// Loads `insns` as a device program; returns its fd.
fn load(insns: &[Insn]) -> Result<OwnedFd> {
    const LICENSE: &[u8] = b"Apache\0";
    let mut name = [0u8; 16];
    name[..10].copy_from_slice(b"hj_devices");
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| Error::Invalid(format!("device filter of {} insns", insns.len())))?;
    let try_load = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name,
            ..Default::default()
        };
        // SAFETY: `attr` is the BPF_PROG_LOAD layout; `insns` (insn_cnt `Insn`s, the
        // kernel's bpf_insn layout), the NUL-terminated license and the log buffer
        // (log_size writable bytes, or none with log_level 0) all outlive the call.
        let fd = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }?;
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
        Ok::<_, Errno>(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    };
    // Load without a log first, as the log costs verifier time; on failure load again
    // with one to tell why.
    match try_load(&mut []) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 1 << 20];
            let (errno, log) = match try_load(&mut log) {
                Ok(fd) => return Ok(fd),
                Err(e) => (e, log),
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let text = text.trim();
            // The end of the log says why; keep the message bounded.
            let tail = &text[text.len() - tail_len(text, 4096)..];
            let source = if errno == Errno::ENOSPC { first } else { errno };
            Err(Error::sys(
                format!(
                    "bpf(BPF_PROG_LOAD) device filter of {} insns, verifier log: {}",
                    insns.len(),
                    if tail.is_empty() { "(empty)" } else { tail }
                ),
                source,
            ))
        }
    }
}

/// The byte length of the last at most `max` bytes of `s` that start on a char boundary.
fn tail_len(s: &str, max: usize) -> usize {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s.len() - start
}

/// Loads the device filter for `rules` and attaches it to the cgroup v2 directory
/// `cgroup_v2_dir` (`BPF_CGROUP_DEVICE`, `BPF_F_ALLOW_MULTI`: it adds to, and cannot
/// widen, what the filters of ancestors allow). The attachment holds the program; it
/// goes away with the cgroup.
pub fn attach(cgroup_v2_dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&program(rules))?;
    let dir = open(
        cgroup_v2_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::path("open", cgroup_v2_dir, e))?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: `attr` is the BPF_PROG_ATTACH layout and holds no pointers; both fds are
    // open for the duration of the call.
    unsafe { sys_bpf(BPF_PROG_ATTACH, &mut attr) }
        .map_err(|e| Error::path("bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)", cgroup_v2_dir, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lines: &[(bool, &str)]) -> Vec<Rule> {
        let lines: Vec<(bool, String)> = lines.iter().map(|(a, l)| (*a, l.to_string())).collect();
        rules_from_lines(&lines).expect("rules")
    }

    /// The rules the runtime generates for a default container (runc's defaults).
    fn default_container() -> Vec<Rule> {
        rules(&[
            (false, "a *:* rwm"),
            (true, "c *:* m"),
            (true, "b *:* m"),
            (true, "c 1:3 rwm"),
            (true, "c 1:5 rwm"),
            (true, "c 1:7 rwm"),
            (true, "c 1:8 rwm"),
            (true, "c 1:9 rwm"),
            (true, "c 5:0 rwm"),
            (true, "c 5:1 rwm"),
            (true, "c 5:2 rwm"),
            (true, "c 136:* rwm"),
            (true, "c 10:200 rwm"),
        ])
    }

    /// Runs `prog` on a `bpf_cgroup_dev_ctx`: a minimal interpreter for the opcodes
    /// [`program`] emits, strict about everything else (the verifier's rules: forward
    /// jumps only, in bounds, loads only from the context, ends in exit).
    fn run(prog: &[Insn], typ: u32, major: u32, minor: u32, access: u32) -> u64 {
        const CTX: u64 = 0x1000;
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        r[1] = CTX;
        let mut pc = 0usize;
        loop {
            let i = prog.get(pc).copied().expect("pc in bounds");
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let imm = i.imm as i64 as u64;
            let jump = |cond: bool| {
                if cond {
                    assert!(i.off >= 0, "backward jump at {pc}");
                    pc + 1 + i.off as usize
                } else {
                    pc + 1
                }
            };
            pc = match i.code {
                LDX_W => {
                    let addr = r[src].wrapping_add(i.off as i64 as u64);
                    assert!(
                        (CTX..CTX + 12).contains(&addr) && addr % 4 == 0,
                        "load outside the context at {pc}"
                    );
                    r[dst] = u64::from(ctx[((addr - CTX) / 4) as usize]);
                    pc + 1
                }
                AND32_K => {
                    r[dst] = u64::from(r[dst] as u32 & i.imm as u32);
                    pc + 1
                }
                RSH32_K => {
                    r[dst] = u64::from((r[dst] as u32) >> i.imm);
                    pc + 1
                }
                MOV32_K => {
                    r[dst] = u64::from(i.imm as u32);
                    pc + 1
                }
                MOV32_X => {
                    r[dst] = u64::from(r[src] as u32);
                    pc + 1
                }
                JEQ_K => jump(r[dst] == imm),
                JNE_K => jump(r[dst] != imm),
                JNE_X => jump(r[dst] != r[src]),
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x} at {pc}"),
            };
        }
    }

    /// The rule semantics, stated directly: the last rule that matches decides; deny
    /// when none does.
    fn expected(rules: &[Rule], typ: u32, major: u32, minor: u32, access: u8) -> bool {
        for r in rules.iter().rev() {
            let kind_ok = match r.kind {
                None => true,
                Some('c') => typ == DEV_CHAR,
                Some('b') => typ == DEV_BLOCK,
                Some(_) => false,
            };
            let access_ok = if r.allow {
                access & !r.access == 0
            } else {
                access & r.access != 0
            };
            if kind_ok
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
                && access_ok
            {
                return r.allow;
            }
        }
        false
    }

    fn allowed(prog: &[Insn], typ: u32, major: u32, minor: u32, access: u8) -> bool {
        match run(prog, typ, major, minor, u32::from(access)) {
            0 => false,
            1 => true,
            v => panic!("program returned {v}"),
        }
    }

    /// Compares the program with [`expected`] on every type, a spread of numbers and
    /// every non-empty access.
    fn check_exhaustive(rules: &[Rule]) {
        let prog = program(rules);
        for typ in [DEV_BLOCK, DEV_CHAR] {
            for major in [0, 1, 5, 8, 10, 136, 4095, 0x7fff_ffff, 0xffff_ffff] {
                for minor in [0, 1, 3, 5, 7, 200, 0xf_ffff, 0xffff_ffff] {
                    for access in 1..=ACC_ALL {
                        assert_eq!(
                            allowed(&prog, typ, major, minor, access),
                            expected(rules, typ, major, minor, access),
                            "rules {rules:?} type {typ} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn devices_bpf_parse() {
        let r = rules(&[
            (false, "a *:* rwm"),
            (true, "c 1:3 rwm"),
            (true, "b 8:* r"),
            (false, "c *:5 wm"),
            (true, "a"),
            (true, "p 0:0 r"),
        ]);
        assert_eq!(
            r[0],
            Rule {
                allow: false,
                kind: None,
                major: None,
                minor: None,
                access: ACC_ALL
            }
        );
        assert_eq!(
            r[1],
            Rule {
                allow: true,
                kind: Some('c'),
                major: Some(1),
                minor: Some(3),
                access: ACC_ALL
            }
        );
        assert_eq!(
            r[2],
            Rule {
                allow: true,
                kind: Some('b'),
                major: Some(8),
                minor: None,
                access: ACC_READ
            }
        );
        assert_eq!(
            r[3],
            Rule {
                allow: false,
                kind: Some('c'),
                major: None,
                minor: Some(5),
                access: ACC_WRITE | ACC_MKNOD
            }
        );
        assert!(r[4].is_catch_all() && r[4].allow);
        assert_eq!(r[5].kind, Some('p'));
        for bad in [
            "",
            "x 1:3 rwm",
            "c 1:3",
            "c 1-3 rwm",
            "c 1:3 rwx",
            "c -1:3 rwm",
            "c 1:4294967296 r",
            "c 1:3 rwm extra",
            "c",
        ] {
            assert!(
                rules_from_lines(&[(true, bad.to_string())]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn devices_bpf_shape() {
        // No rules: the prologue (6), then deny.
        let p = program(&[]);
        assert_eq!(p.len(), 8);
        assert_eq!(p[6], insn(MOV32_K, R0, 0, 0, 0));
        assert_eq!(p[7], insn(EXIT, 0, 0, 0, 0));
        assert_eq!(p[0], insn(LDX_W, R2, R1, 0, 0));
        assert_eq!(p[3], insn(RSH32_K, R3, 0, 0, 16));
        assert_eq!(p[5], insn(LDX_W, R5, R1, 8, 0));

        // Allow all: no rule blocks, default allow.
        let p = program(&rules(&[(true, "a *:* rwm")]));
        assert_eq!(p.len(), 8);
        assert_eq!(p[6], insn(MOV32_K, R0, 0, 0, 1));

        // Deny all, then one full rule: type, major, minor, return (5 insns).
        let p = program(&rules(&[(false, "a *:* rwm"), (true, "c 1:3 rwm")]));
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(
            &p[6..11],
            &[
                insn(JNE_K, R2, 0, 4, DEV_CHAR as i32),
                insn(JNE_K, R4, 0, 3, 1),
                insn(JNE_K, R5, 0, 2, 3),
                insn(MOV32_K, R0, 0, 0, 1),
                insn(EXIT, 0, 0, 0, 0),
            ]
        );
        assert_eq!(p[11], insn(MOV32_K, R0, 0, 0, 0));

        // Partial access adds three insns; a wildcard drops its compare; the last
        // rule comes first.
        let p = program(&rules(&[
            (false, "a *:* rwm"),
            (true, "b 8:* r"),
            (false, "c *:* w"),
        ]));
        assert_eq!(p.len(), 6 + 6 + 7 + 2);
        assert_eq!(
            &p[6..12],
            &[
                insn(JNE_K, R2, 0, 5, DEV_CHAR as i32),
                insn(MOV32_X, R1, R3, 0, 0),
                insn(AND32_K, R1, 0, 0, ACC_WRITE as i32),
                insn(JEQ_K, R1, 0, 2, 0),
                insn(MOV32_K, R0, 0, 0, 0),
                insn(EXIT, 0, 0, 0, 0),
            ]
        );
        assert_eq!(p[12], insn(JNE_K, R2, 0, 6, DEV_BLOCK as i32));
        assert_eq!(p[15], insn(JNE_X, R1, R3, 3, 0));
        assert_eq!(p[16], insn(JNE_K, R4, 0, 2, 8));

        // Rules before the last catch-all are dead; unmatchable rules get no block.
        let p = program(&rules(&[
            (true, "c 1:3 rwm"),
            (true, "a *:* rwm"),
            (false, "p 1:1 rwm"),
            (false, "c 1:5 rwm"),
        ]));
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p[11], insn(MOV32_K, R0, 0, 0, 1));
        let huge = Rule {
            allow: true,
            kind: Some('c'),
            major: Some(u32::MAX),
            minor: None,
            access: ACC_ALL,
        };
        let p = program(&[huge]);
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p[7], insn(MOV32_K, R1, 0, 0, -1));
        assert_eq!(p[8], insn(JNE_X, R4, R1, 2, 0));

        // The default container: 11 rules, all forward jumps within the program.
        let p = program(&default_container());
        assert_eq!(p.len(), 6 + 2 * 6 + 9 * 5 + 4 + 2);
        for (i, ins) in p.iter().enumerate() {
            if matches!(ins.code, JEQ_K | JNE_K | JNE_X) {
                assert!(ins.off > 0 && i + 1 + (ins.off as usize) < p.len());
            }
        }
        assert_eq!(p.last(), Some(&insn(EXIT, 0, 0, 0, 0)));
    }

    #[test]
    fn devices_bpf_semantics() {
        let p = program(&default_container());
        // /dev/null, /dev/zero, /dev/tty: anything.
        assert!(allowed(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(allowed(&p, DEV_CHAR, 1, 5, ACC_ALL));
        assert!(allowed(&p, DEV_CHAR, 5, 0, ACC_WRITE));
        assert!(allowed(&p, DEV_CHAR, 136, 42, ACC_READ));
        // /dev/sda: mknod only. /dev/mem (1:1): mknod only.
        assert!(allowed(&p, DEV_BLOCK, 8, 0, ACC_MKNOD));
        assert!(!allowed(&p, DEV_BLOCK, 8, 0, ACC_READ));
        assert!(!allowed(&p, DEV_CHAR, 1, 1, ACC_READ));
        assert!(!allowed(&p, DEV_CHAR, 1, 1, ACC_READ | ACC_MKNOD));
        assert!(allowed(&p, DEV_CHAR, 1, 1, ACC_MKNOD));

        // The last matching rule wins, both ways.
        let r = rules(&[(true, "a *:* rwm"), (false, "c 1:3 w"), (true, "c 1:3 rw")]);
        let p = program(&r);
        assert!(allowed(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(allowed(&p, DEV_CHAR, 1, 3, ACC_MKNOD));
        let r = rules(&[(true, "a *:* rwm"), (true, "c 1:3 rw"), (false, "c 1:3 w")]);
        let p = program(&r);
        assert!(allowed(&p, DEV_CHAR, 1, 3, ACC_READ));
        assert!(!allowed(&p, DEV_CHAR, 1, 3, ACC_WRITE));
        // A deny naming part of the request refuses it (O_RDWR through "deny w").
        assert!(!allowed(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(allowed(&p, DEV_BLOCK, 1, 3, ACC_WRITE));
        // An allow must grant all of it.
        let p = program(&rules(&[(true, "c 1:5 r")]));
        assert!(allowed(&p, DEV_CHAR, 1, 5, ACC_READ));
        assert!(!allowed(&p, DEV_CHAR, 1, 5, ACC_READ | ACC_WRITE));
        assert!(!allowed(&p, DEV_BLOCK, 1, 5, ACC_READ));
        // Deny by default, even with no rules at all.
        assert!(!allowed(&program(&[]), DEV_CHAR, 1, 3, ACC_READ));

        for set in [
            default_container(),
            rules(&[(true, "a *:* rwm")]),
            rules(&[(false, "a *:* rwm")]),
            rules(&[(true, "a *:* rwm"), (false, "b *:* rw"), (true, "b 8:0 r")]),
            rules(&[(true, "a *:* r"), (false, "c 1:* w"), (true, "a 1:5 rwm")]),
            rules(&[
                (true, "c 1:3 rwm"),
                (false, "a *:* rwm"),
                (true, "c *:3 m"),
                (false, "a 1:3 rm"),
                (true, "p 1:3 rwm"),
                (true, "b 4095:1048575 wm"),
            ]),
            vec![Rule {
                allow: true,
                kind: None,
                major: Some(0xffff_ffff),
                minor: None,
                access: ACC_ALL,
            }],
        ] {
            check_exhaustive(&set);
        }
    }

    // --- The real thing: needs root and a cgroup2 mount. ---

    fn cgroup2_mount() -> Option<&'static Path> {
        ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| {
                nix::sys::statfs::statfs(*p)
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            })
    }

    /// Removes the cgroup directory however the test ends.
    struct CgroupDir(std::path::PathBuf);

    impl Drop for CgroupDir {
        fn drop(&mut self) {
            for _ in 0..50 {
                match std::fs::remove_dir(&self.0) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    _ => return,
                }
            }
        }
    }

    #[test]
    fn devices_bpf_load_error_has_log() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: devices_bpf_load_error_has_log needs root");
            return;
        }
        // No exit: the verifier refuses it and says why.
        let err = load(&[insn(MOV32_K, R0, 0, 0, 1)]).expect_err("loaded a program without exit");
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(
            msg.contains("verifier log: ") && !msg.contains("(empty)"),
            "{msg}"
        );
    }

    #[test]
    fn devices_bpf_attach_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: devices_bpf_attach_root needs root");
            return;
        }
        let Some(mount) = cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 at /sys/fs/cgroup/unified or /sys/fs/cgroup");
            return;
        };
        let dir = CgroupDir(mount.join(format!("hyperjail-devbpf-test-{}", std::process::id())));
        std::fs::create_dir(&dir.0).expect("mkdir cgroup");
        let r = rules(&[(false, "a *:* rwm"), (true, "c 1:3 rwm"), (true, "c 1:5 r")]);
        attach(&dir.0, &r).expect("attach");

        // Everything the child touches is prepared before fork: it only makes syscalls.
        let procs = std::ffi::CString::new(
            dir.0
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("path");
        // SAFETY: the child makes only async-signal-safe calls (open, write, close,
        // _exit) on memory prepared before the fork, and never returns.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain syscalls on NUL-terminated strings that outlive them.
                unsafe {
                    let mut code = 0;
                    let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(1);
                    }
                    libc::close(fd);
                    let errno = || *libc::__errno_location();
                    let try_open = |path: &[u8], flags| {
                        let fd = libc::open(path.as_ptr().cast(), flags);
                        if fd >= 0 {
                            libc::close(fd);
                            0
                        } else {
                            errno()
                        }
                    };
                    if try_open(b"/dev/null\0", libc::O_WRONLY) != 0 {
                        code |= 2;
                    }
                    if try_open(b"/dev/zero\0", libc::O_RDONLY) != 0 {
                        code |= 4;
                    }
                    if try_open(b"/dev/zero\0", libc::O_WRONLY) != libc::EPERM {
                        code |= 8;
                    }
                    if try_open(b"/dev/full\0", libc::O_RDONLY) != libc::EPERM {
                        code |= 16;
                    }
                    libc::_exit(code);
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                let nix::sys::wait::WaitStatus::Exited(_, code) = status else {
                    panic!("child: {status:?}");
                };
                let mut failures = Vec::new();
                for (bit, what) in [
                    (1, "joining the cgroup failed"),
                    (2, "open /dev/null O_WRONLY was refused"),
                    (4, "open /dev/zero O_RDONLY was refused"),
                    (8, "open /dev/zero O_WRONLY did not fail with EPERM"),
                    (16, "open /dev/full O_RDONLY did not fail with EPERM"),
                ] {
                    if code & bit != 0 {
                        failures.push(what);
                    }
                }
                assert!(failures.is_empty(), "exit {code}: {failures:?}");
            }
        }
    }
}
