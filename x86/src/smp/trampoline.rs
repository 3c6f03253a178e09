//! The application processors' start-up code: real mode -> 32-bit protected mode -> long mode
//! -> `arrive(arg, entry, &arrived)` (in [`super`]) on a stack of its own.
//!
//! The code is position independent: the boot CPU copies it to a page below 1 MiB and sends
//! SIPI with that page's number, so the AP starts at CS = page << 8, IP = 0. The code finds its
//! linear base from CS, fills in the GDT pointer and the two far-jump targets itself, and reads
//! everything else from the [`Params`] block the boot CPU patched at offset 8. It executes no
//! CPUID or RDMSR (under SEV-ES those would need a #VC handler that does not exist yet): the
//! EFER value and the argument come from memory. One AP at a time runs this code, since the
//! parameters are per AP.

/// What the boot CPU writes into the copied page before each SIPI, at [`PARAMS_OFFSET`].
/// The assembly below reads the fields at fixed offsets: keep the order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Page-table root; the code loads its low half in 32-bit mode, so the table must be
    /// below 4 GiB, and the whole value once in 64-bit mode.
    pub cr3: u64,
    /// EFER to load: LME, and NXE when the page tables use NX.
    pub efer: u64,
    /// Initial RSP, 16-byte aligned.
    pub stack_top: u64,
    /// `extern "C" fn(arg: u64) -> !`, passed on to `arrive`.
    pub entry: u64,
    pub arg: u64,
    /// `super::arrive`, called with (arg, entry, &arrived).
    pub arrive: u64,
    /// 0 when written; set to 1 by `arrive` once the AP no longer needs the page's parameters.
    pub arrived: u64,
    /// 0 when written; the first CPU through the trampoline swaps in 1 before it takes the
    /// stack. Any later CPU on the same parameters (one a hostile hypervisor woke without a
    /// start-up IPI of ours: under SEV-ES it can wake a parked AP at any time) finds 1 and
    /// stops there, so no stack ever has two CPUs on it.
    pub claimed: u64,
}

/// Offset of [`Params`] in the code: after a 2-byte jump, aligned to 8.
pub const PARAMS_OFFSET: usize = 8;

// The offsets the assembly uses (`.Lap_params + N`) and the eight quads it reserves.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(Params, cr3) == 0 && offset_of!(Params, efer) == 8);
    assert!(offset_of!(Params, stack_top) == 16 && offset_of!(Params, entry) == 24);
    assert!(offset_of!(Params, arg) == 32 && offset_of!(Params, arrive) == 40);
    assert!(offset_of!(Params, arrived) == 48 && offset_of!(Params, claimed) == 56);
    assert!(size_of::<Params>() == 8 * 8);
};

// CR4 in the trampoline: PAE | OSFXSR | OSXMMEXCPT. CR0 for long mode: PG | WP | NE | ET | MP |
// PE (EM clear), so the SSE code of the precompiled core runs on the AP.
core::arch::global_asm!(
    r#"
    .pushsection .text.ap_trampoline, "ax"
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    /* jmp short, encoded by hand so that it is 2 bytes and the parameters land at 8 */
    .byte 0xeb, .Lap_real - ap_trampoline_start - 2
    .balign 8
.Lap_params:
    .quad 0, 0, 0, 0, 0, 0, 0, 0
.Lap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
.Lap_gdtr:
    .word 31
    .long 0
.Lap_far32:
    .long 0
    .word 0x08
.Lap_far64:
    .long 0
    .word 0x18

.Lap_real:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    xorl %ebx, %ebx
    movw %ax, %bx
    shll $4, %ebx
    leal (.Lap_gdt - ap_trampoline_start)(%ebx), %eax
    movl %eax, (.Lap_gdtr + 2 - ap_trampoline_start)
    leal (.Lap_prot - ap_trampoline_start)(%ebx), %eax
    movl %eax, (.Lap_far32 - ap_trampoline_start)
    leal (.Lap_long - ap_trampoline_start)(%ebx), %eax
    movl %eax, (.Lap_far64 - ap_trampoline_start)
    lgdtl (.Lap_gdtr - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *(.Lap_far32 - ap_trampoline_start)

    .code32
.Lap_prot:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0x620, %eax
    movl %eax, %cr4
    movl (.Lap_params - ap_trampoline_start)(%ebx), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    movl (.Lap_params + 8 - ap_trampoline_start)(%ebx), %eax
    movl (.Lap_params + 12 - ap_trampoline_start)(%ebx), %edx
    wrmsr
    movl $0x80010033, %eax
    movl %eax, %cr0
    ljmpl *(.Lap_far64 - ap_trampoline_start)(%ebx)

    .code64
.Lap_long:
    movl %ebx, %ebx
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* CR3 again, whole: 32-bit code loaded only its low half (an SEV C-bit is above it). */
    movq (.Lap_params - ap_trampoline_start)(%rbx), %rax
    movq %rax, %cr3
    /* Claim the parameters; a CPU that finds them claimed stops here, stackless. */
    movl $1, %eax
    xchgq %rax, (.Lap_params + 56 - ap_trampoline_start)(%rbx)
    testq %rax, %rax
    jnz .Lap_taken
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movq (.Lap_params + 16 - ap_trampoline_start)(%rbx), %rsp
    movq (.Lap_params + 32 - ap_trampoline_start)(%rbx), %rdi
    movq (.Lap_params + 24 - ap_trampoline_start)(%rbx), %rsi
    leaq (.Lap_params + 48 - ap_trampoline_start)(%rbx), %rdx
    xorl %ebp, %ebp
    callq *(.Lap_params + 40 - ap_trampoline_start)(%rbx)
    ud2
.Lap_taken:
    cli
    hlt
    jmp .Lap_taken
    .global ap_trampoline_end
ap_trampoline_end:
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The code bytes to copy to the start-up page.
pub fn code() -> &'static [u8] {
    let start = &raw const ap_trampoline_start;
    let end = &raw const ap_trampoline_end;
    // SAFETY: both symbols delimit the assembly above, in the program's text, which is mapped
    // and never written.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}
