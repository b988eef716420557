//! The blob header and the system-call entries. Both run at CPL3 on this host: they
//! switch to the kernel stack, save the registers Linux preserves and the user's
//! FPU/SSE state, call `hj_syscall`, restore, and return without `sysret`
//! (`popfq; jmp *%rcx`, native at CPL3). `hj_syscall_entry` (LSTAR) is reached by
//! the `syscall` instruction, which exits to KVM on this host; `hj_fast_entry` by a
//! `jmp` from a rewritten site (patch.rs), with rcx = return address and the flags
//! pushed in place of r11 (no `mov` changes them); `hj_async_entry` by the VMM's
//! redirection of a vCPU stopped in user code (its rip and rflags take rcx's and
//! r11's places, which are kept in the per-CPU area). The kernel stack, the saved
//! user rsp and which entry was taken live in the vCPU's per-CPU area, whose
//! address is the vCPU's GS base (set by the VMM; user code uses FS for its TLS).

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.hj_header,"ax"
    .globl hj_header
hj_header:
    .ascii "HJGUEST1"
    .quad hj_syscall_entry
    .quad hj_thread_start
    .quad hj_kill_start
    .quad hj_async_entry
    .quad hj_spawn_start

    .text
    .globl hj_kill_start
hj_kill_start:
    mov %gs:8, %rsp
    call hj_killed

    .text
    .globl hj_spawn_start
hj_spawn_start:
    mov %gs:8, %rsp
    call hj_spawned
    mov %rax, %rsp
    xor %eax, %eax
    xor %ebx, %ebx
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %edi, %edi
    xor %ebp, %ebp
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    xor %r12d, %r12d
    xor %r13d, %r13d
    xor %r14d, %r14d
    xor %r15d, %r15d
    jmp hj_thread_start

    .text
    .globl hj_thread_start
hj_thread_start:
    # A vCPU the VMM reuses still holds its last thread's FPU/SSE registers: they
    # are cleared here (x87 registers zero and empty, XMM zero; no general
    # register or flag changes), then the control words are loaded.
    fninit
    fldz
    fldz
    fldz
    fldz
    fldz
    fldz
    fldz
    fldz
    fninit
    pxor %xmm0, %xmm0
    pxor %xmm1, %xmm1
    pxor %xmm2, %xmm2
    pxor %xmm3, %xmm3
    pxor %xmm4, %xmm4
    pxor %xmm5, %xmm5
    pxor %xmm6, %xmm6
    pxor %xmm7, %xmm7
    pxor %xmm8, %xmm8
    pxor %xmm9, %xmm9
    pxor %xmm10, %xmm10
    pxor %xmm11, %xmm11
    pxor %xmm12, %xmm12
    pxor %xmm13, %xmm13
    pxor %xmm14, %xmm14
    pxor %xmm15, %xmm15
    ldmxcsr %gs:64
    fldcw %gs:72
    jmp *%gs:80

    .text
    .globl hj_fast_entry
hj_fast_entry:
    mov %rsp, %gs:0
    mov %gs:8, %rsp
    movq $0, %gs:16
    pushfq
    jmp hj_entry_common

    .globl hj_async_entry
hj_async_entry:
    mov %rcx, %gs:152
    mov %r11, %gs:160
    movq $1, %gs:144
    movq $2, %gs:16
    push %gs:136
    mov %gs:128, %rcx
    jmp hj_entry_common

    .globl hj_syscall_entry
hj_syscall_entry:
    mov %rsp, %gs:0
    mov %gs:8, %rsp
    movq $1, %gs:16
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
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    sub $520, %rsp
    fxsave64 (%rsp)
    cld
    lea 520(%rsp), %rdi
    call hj_syscall
hj_exit_common:
    fxrstor64 (%rsp)
    add $520, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    add $8, %rsp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %r10
    pop %r8
    pop %r9
    pop %rcx
    cmpq $0, %gs:144
    jne 1f
    mov (%rsp), %r11
    popfq
    mov %gs:0, %rsp
    jmp *%rcx
1:
    mov %rcx, %gs:168
    movq $0, %gs:144
    popfq
    mov %gs:152, %rcx
    mov %gs:160, %r11
    mov %gs:0, %rsp
    jmp *%gs:168
"#,
    options(att_syntax)
);

/// The registers saved by the entry, in stack order (all of the user's general
/// registers: a new thread starts from a copy of them).
#[repr(C)]
pub struct Frame {
    /// Callee-saved registers.
    pub r15: u64,
    /// Callee-saved.
    pub r14: u64,
    /// Callee-saved.
    pub r13: u64,
    /// Callee-saved.
    pub r12: u64,
    /// Callee-saved.
    pub rbp: u64,
    /// Callee-saved.
    pub rbx: u64,
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

/// How the kernel was entered this time.
pub enum Entry {
    /// A system call from a rewritten site (`jmp` to `hj_fast_entry`).
    Fast,
    /// A system call through the `syscall` instruction.
    Trapped,
    /// The async entry: no system call, a signal to take.
    Async,
}

/// How the kernel was entered (PC_TRAPPED, set by each entry).
pub fn how() -> Entry {
    match crate::percpu::get(crate::abi::PC_TRAPPED) {
        0 => Entry::Fast,
        1 => Entry::Trapped,
        _ => Entry::Async,
    }
}
