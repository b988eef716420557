//! The blob header and the system-call entries. Both run at CPL3 on this host: they
//! switch to the kernel stack, save the registers Linux preserves and the user's
//! FPU/SSE state, call `hj_syscall`, restore, and return without `sysret`
//! (`popfq; jmp *%rcx`, native at CPL3). `hj_syscall_entry` (LSTAR) is reached by
//! the `syscall` instruction, which exits to KVM on this host; `hj_fast_entry` by a
//! `jmp` from a rewritten site (patch.rs), with rcx = return address and the flags
//! pushed in place of r11 (none of `mov`, `lea` changes them). `hj_trapped` says
//! which entry was taken.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.hj_header,"ax"
    .globl hj_header
hj_header:
    .ascii "HJGUEST1"
    .quad hj_syscall_entry

    .section .bss
    .balign 16
hj_user_rsp:
    .quad 0
    .balign 16
hj_kstack:
    .space 65536
hj_kstack_top:

    .globl hj_trapped
hj_trapped:
    .byte 0

    .text
    .globl hj_fast_entry
hj_fast_entry:
    mov %rsp, hj_user_rsp(%rip)
    lea hj_kstack_top(%rip), %rsp
    movb $0, hj_trapped(%rip)
    pushfq
    jmp hj_entry_common

    .globl hj_syscall_entry
hj_syscall_entry:
    mov %rsp, hj_user_rsp(%rip)
    lea hj_kstack_top(%rip), %rsp
    movb $1, hj_trapped(%rip)
    push %r11
hj_entry_common:
    push %rcx
    push %r9
    push %r8
    push %r10
    push %rdx
    push %rsi
    push %rdi
    push %rax
    sub $520, %rsp
    fxsave64 (%rsp)
    cld
    lea 520(%rsp), %rdi
    call hj_syscall
    fxrstor64 (%rsp)
    add $528, %rsp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %r10
    pop %r8
    pop %r9
    pop %rcx
    mov (%rsp), %r11
    popfq
    mov hj_user_rsp(%rip), %rsp
    jmp *%rcx
"#,
    options(att_syntax)
);

/// The registers saved by the entry, in stack order.
#[repr(C)]
pub struct Frame {
    /// System call number.
    pub rax: u64,
    /// Argument 0.
    pub rdi: u64,
    /// Argument 1.
    pub rsi: u64,
    /// Argument 2.
    pub rdx: u64,
    /// Argument 3.
    pub r10: u64,
    /// Argument 4.
    pub r8: u64,
    /// Argument 5.
    pub r9: u64,
    /// User rip.
    pub rcx: u64,
    /// User rflags.
    pub r11: u64,
}

extern "C" {
    static hj_trapped: u8;
}

/// Whether the current system call came through the `syscall` instruction (and
/// not through a rewritten site).
pub fn trapped() -> bool {
    // SAFETY: a byte of kernel data written only by the entries, before this runs.
    unsafe { core::ptr::addr_of!(hj_trapped).read_volatile() != 0 }
}
