//! Interrupt and exception entry: 256 stubs, one register frame, one Rust dispatch function.
//!
//! # Why every gate is on an IST stack
//! The precompiled `core` uses the red zone (128 bytes below RSP that leaf functions use without
//! moving RSP). A CPU that pushes an interrupt frame onto the interrupted stack would overwrite
//! it, so every gate of the [`Idt`] names an IST slot and the CPU always pushes onto a known-good
//! stack ([`crate::gdt::ist`]).
//!
//! # Nesting
//! An IST stack is reused from its top each time its vector fires, so a second exception on the
//! same IST while the first still uses it would destroy the first frame. Hence two kinds of
//! entry:
//!
//! - **Moving** (every vector but NMI, #DF and #MC): when the interrupted code ran at CPL 0, the
//!   stub copies the hardware frame (and the vector and error code) from the general IST stack to
//!   the interrupted stack, 16-byte aligned below `RSP - 128` (below the red zone), and continues
//!   there. The general IST stack is free again after a handful of instructions, so a handler may
//!   fault (#PF, #UD, a #VC for port I/O, int3) and nest as deeply as its stack allows; each
//!   nested frame lands below the previous one's red zone.
//! - **Staying** (NMI, #DF, #MC): these run on their own IST stacks. NMIs and machine checks can
//!   arrive at any instruction, including inside a moving stub before it left the general IST
//!   stack, and a #DF may be caused by the very stack a moving stub would switch to.
//!
//! A fault *inside* the copy (the interrupted stack is unmapped: a stack overflow) re-enters on
//! the general IST stack and overwrites the frame being copied; the stub recognises that case by
//! the faulting RIP, stays on the IST stack, and `dispatch` reports it as fatal instead of
//! calling the handler.
//!
//! Still open for later work: an NMI handler that itself takes an exception re-enables NMIs with
//! that exception's IRETQ, and a second NMI would then reuse the NMI IST stack; the NMI handler
//! must be written as Linux's is (or never fault) before NMIs are used.
//!
//! # The frame
//! Each stub pushes a dummy error code where the CPU pushes none and the vector, then the common
//! path saves all 15 general registers and CR2 (before anything can fault again), saves the SSE
//! state with `fxsave64` into a 16-byte aligned area below the frame, clears DF and calls
//! `dispatch` with a `&mut` [`InterruptFrame`]. A handler may change the frame (e.g. advance
//! RIP past an instruction); the stub restores SSE state and registers from it and returns with
//! IRETQ. The handler itself is registered per binary with [`set_handler`].
//!
//! FXSAVE covers x87, MMX and XMM0-15, everything the binaries use: they are built for the
//! baseline x86-64 target (SSE2, no AVX), so no YMM/ZMM state exists to be clobbered.

use crate::idt::{Idt, vector};
use core::fmt;

/// Stride between the entry stubs: each is padded to 16 bytes.
const STUB_STRIDE: u64 = 16;

/// What the entry stubs save, lowest address first: the saved CR2 and general registers, then
/// what the stub pushed (vector, error code), then the hardware frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InterruptFrame {
    /// CR2 at entry (the faulting address of a #PF; meaningless for other vectors).
    pub cr2: u64,
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Mnemonic and name of exception `vector` (0..32), or `None` for external interrupts.
pub const fn exception_name(vector: u64) -> Option<(&'static str, &'static str)> {
    Some(match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("#CSO", "coprocessor segment overrun"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point error"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        28 => ("#HV", "hypervisor injection"),
        29 => ("#VC", "VMM communication"),
        30 => ("#SX", "security exception"),
        15 | 22..=27 | 31 => ("#RES", "reserved"),
        _ => return None,
    })
}

/// The register dump printed for an unexpected exception: a first line starting with
/// `EXCEPTION <mnemonic>` (or `INTERRUPT` for vectors from 32), then one `NAME=value` per
/// register.
impl fmt::Display for InterruptFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match exception_name(self.vector) {
            Some((mnemonic, name)) => {
                write!(f, "EXCEPTION {mnemonic} ({name}, vector {})", self.vector)?
            }
            None => write!(f, "INTERRUPT vector {}", self.vector)?,
        }
        writeln!(f, " error code {:#x}", self.error_code)?;
        let rows: [[(&str, u64); 4]; 6] = [
            [
                ("CR2", self.cr2),
                ("RIP", self.rip),
                ("RSP", self.rsp),
                ("RFLAGS", self.rflags),
            ],
            [
                ("CS", self.cs),
                ("SS", self.ss),
                ("RAX", self.rax),
                ("RBX", self.rbx),
            ],
            [
                ("RCX", self.rcx),
                ("RDX", self.rdx),
                ("RSI", self.rsi),
                ("RDI", self.rdi),
            ],
            [
                ("RBP", self.rbp),
                ("R8", self.r8),
                ("R9", self.r9),
                ("R10", self.r10),
            ],
            [
                ("R11", self.r11),
                ("R12", self.r12),
                ("R13", self.r13),
                ("R14", self.r14),
            ],
            [("R15", self.r15), ("", 0), ("", 0), ("", 0)],
        ];
        for (i, row) in rows.iter().enumerate() {
            for (j, (name, value)) in row.iter().filter(|(n, _)| !n.is_empty()).enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{name}={value:#018x}")?;
            }
            if i + 1 < rows.len() {
                f.write_str("\n")?;
            }
        }
        Ok(())
    }
}

/// The function each binary registers to handle every interrupt and exception. It returns to
/// resume the interrupted code (with any changes it made to the frame), or calls [`fatal`].
pub type Handler = fn(&mut InterruptFrame);

static HANDLER: spin::Once<Handler> = spin::Once::new();

/// Registers the binary's handler (the first registration wins; later calls change nothing).
pub fn set_handler(handler: Handler) {
    HANDLER.call_once(|| handler);
}

/// Prints the register dump of an exception nobody handles and ends the run with a failure:
/// QEMU's debug exit (status 35), then halting for good on anything else. Never returns, never
/// exits with success.
pub fn fatal(frame: &InterruptFrame) -> ! {
    crate::serial::force_unlock();
    crate::serial_println!("{frame}");
    crate::qemu::debug_exit(crate::qemu::ExitStatus::Failure);
    crate::qemu::halt_forever()
}

/// An IDT whose 256 gates lead to the entry stubs (for a caller that keeps its own; most use
/// [`load_idt`]).
pub fn idt() -> Idt {
    let stubs = stubs_address();
    Idt::new(|n| stubs + u64::from(n) * STUB_STRIDE)
}

/// The binary's one IDT, shared by all its CPUs: 256 gates to the entry stubs.
static IDT: spin::Once<Idt> = spin::Once::new();

/// Loads the IDT (built on first use) on the running CPU.
///
/// # Safety
/// The running CPU has loaded its own GDT and TSS ([`crate::gdt::Gdt::load`]), with IST stacks
/// no other CPU uses.
pub unsafe fn load_idt() {
    let idt = IDT.call_once(idt);
    // SAFETY: the gates lead to the entry stubs; the caller loaded GDT and TSS.
    unsafe { idt.load() };
}

/// The address of vector 0's stub.
fn stubs_address() -> u64 {
    let a;
    // SAFETY: computes an address, touches nothing.
    unsafe {
        core::arch::asm!("lea {}, [rip + x86_interrupt_stubs]", out(reg) a, options(pure, nomem, nostack, preserves_flags))
    };
    a
}

/// The range of RIPs in which a moving stub writes to the interrupted stack.
fn move_window() -> (u64, u64) {
    let (start, end);
    // SAFETY: computes addresses, touches nothing.
    unsafe {
        core::arch::asm!(
            "lea {}, [rip + x86_interrupt_move_window]",
            "lea {}, [rip + x86_interrupt_move_window_end]",
            out(reg) start, out(reg) end,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    (start, end)
}

/// Called by every entry stub with the saved frame.
extern "C" fn dispatch(frame: &mut InterruptFrame) {
    let (start, end) = move_window();
    let staying = matches!(
        frame.vector as u8,
        vector::NMI | vector::DOUBLE_FAULT | vector::MACHINE_CHECK
    );
    if !staying && (start..end).contains(&frame.rip) {
        crate::serial::force_unlock();
        crate::serial_println!(
            "fault while moving an interrupt frame to the interrupted stack (stack overflow?)"
        );
        fatal(frame);
    }
    match HANDLER.get() {
        Some(handler) => handler(frame),
        None => fatal(frame),
    }
}

// The entry stubs. Each is 16 bytes: `push 0` (2 bytes, only where the CPU pushes no error
// code), `push imm32` vector (5 bytes, so vectors >= 128 are not sign-extended) and a jump to the
// moving or staying path. The error-code list must match `idt::has_error_code`, and the staying
// list `idt::ist_for` (both checked by the tests below, which read the assembled bytes).
core::arch::global_asm!(
    ".pushsection .text.x86_interrupt_entry, \"ax\", @progbits",
    ".balign 16",
    ".globl x86_interrupt_stubs",
    ".hidden x86_interrupt_stubs",
    "x86_interrupt_stubs:",
    ".set x86_vec, 0",
    ".rept 256",
    ".balign 16",
    ".if (x86_vec == 8) || (x86_vec == 10) || (x86_vec == 11) || (x86_vec == 12) || (x86_vec == 13) || (x86_vec == 14) || (x86_vec == 17) || (x86_vec == 21) || (x86_vec == 29) || (x86_vec == 30)",
    ".else",
    ".byte 0x6a, 0x00",
    ".endif",
    ".byte 0x68",
    ".long x86_vec",
    ".if (x86_vec == 2) || (x86_vec == 8) || (x86_vec == 18)",
    "jmp x86_interrupt_stay",
    ".else",
    "jmp x86_interrupt_move",
    ".endif",
    ".set x86_vec, x86_vec + 1",
    ".endr",
    "",
    // Moving path. Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS; after the two pushes
    // below everything is 16 bytes further up.
    ".balign 16",
    "x86_interrupt_move:",
    "push rax",
    "push rcx",
    // Interrupted at CPL 3: that stack is not ours to write (the binaries never run CPL 3).
    "test byte ptr [rsp + 40], 3",
    "jnz .Lx86_stay_here",
    // A fault inside the copy below: stay on the IST stack (dispatch reports it).
    "mov rax, [rsp + 32]",
    "lea rcx, [rip + x86_interrupt_move_window]",
    "cmp rax, rcx",
    "jb .Lx86_do_move",
    "lea rcx, [rip + x86_interrupt_move_window_end]",
    "cmp rax, rcx",
    "jb .Lx86_stay_here",
    ".Lx86_do_move:",
    "mov rax, [rsp + 56]",
    "sub rax, 128",
    "and rax, -16",
    "sub rax, 72",
    "x86_interrupt_move_window:",
    "mov rcx, [rsp]",
    "mov [rax], rcx",
    "mov rcx, [rsp + 8]",
    "mov [rax + 8], rcx",
    "mov rcx, [rsp + 16]",
    "mov [rax + 16], rcx",
    "mov rcx, [rsp + 24]",
    "mov [rax + 24], rcx",
    "mov rcx, [rsp + 32]",
    "mov [rax + 32], rcx",
    "mov rcx, [rsp + 40]",
    "mov [rax + 40], rcx",
    "mov rcx, [rsp + 48]",
    "mov [rax + 48], rcx",
    "mov rcx, [rsp + 56]",
    "mov [rax + 56], rcx",
    "mov rcx, [rsp + 64]",
    "mov [rax + 64], rcx",
    "mov rsp, rax",
    "x86_interrupt_move_window_end:",
    ".Lx86_stay_here:",
    "pop rcx",
    "pop rax",
    // Common path: save everything, call dispatch, restore, return.
    "x86_interrupt_stay:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rax, cr2",
    "push rax",
    "mov rbx, rsp",
    "sub rsp, 512",
    "and rsp, -16",
    "fxsave64 [rsp]",
    "mov rdi, rbx",
    "cld",
    "call {dispatch}",
    "fxrstor64 [rsp]",
    "mov rsp, rbx",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    ".popsection",
    dispatch = sym dispatch,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdt::ist;
    use crate::idt::{has_error_code, ist_for};

    /// The first bytes of vector `v`'s stub, as assembled into this test binary.
    fn stub(v: u8) -> [u8; 16] {
        let p = (stubs_address() + u64::from(v) * STUB_STRIDE) as *const [u8; 16];
        // SAFETY: the stubs are 256 * 16 bytes of code in this binary's text, readable.
        unsafe { p.read() }
    }

    #[test]
    fn stubs_push_dummy_error_code_and_vector() {
        for v in 0..=255u8 {
            let s = stub(v);
            let push_vector = if has_error_code(v) {
                &s[..5]
            } else {
                assert_eq!(s[..2], [0x6a, 0x00], "vector {v}: dummy error code");
                &s[2..7]
            };
            assert_eq!(push_vector[0], 0x68, "vector {v}: push imm32");
            assert_eq!(
                u32::from_le_bytes(push_vector[1..5].try_into().unwrap()),
                u32::from(v)
            );
        }
    }

    #[test]
    fn only_nmi_df_mc_stay() {
        let target = |v: u8| {
            let s = stub(v);
            let at = if has_error_code(v) { 5 } else { 7 };
            let base = stubs_address() + u64::from(v) * STUB_STRIDE + at as u64;
            match s[at] {
                0xeb => base + 2 + (s[at + 1] as i8) as u64,
                0xe9 => base
                    .wrapping_add(5)
                    .wrapping_add(i32::from_le_bytes(s[at + 1..at + 5].try_into().unwrap()) as u64),
                op => panic!("vector {v}: not a jmp ({op:#x})"),
            }
        };
        let moving = target(0);
        let staying = target(2);
        assert_ne!(moving, staying);
        for v in 0..=255u8 {
            let expected = if ist_for(v) == ist::GENERAL {
                moving
            } else {
                staying
            };
            assert_eq!(target(v), expected, "vector {v}");
        }
    }

    #[test]
    fn frame_layout_matches_stub() {
        // 16 saved values (CR2 + 15 GPRs) below the vector, then the 7 the stub jumps with.
        assert_eq!(core::mem::offset_of!(InterruptFrame, vector), 16 * 8);
        assert_eq!(core::mem::offset_of!(InterruptFrame, ss), 22 * 8);
        assert_eq!(size_of::<InterruptFrame>(), 23 * 8);
    }

    #[test]
    fn dump_names_everything() {
        let frame = InterruptFrame {
            vector: 14,
            error_code: 2,
            cr2: 0x7fff_dead_b000,
            r15: 0x1515,
            rip: 0xabc,
            ..Default::default()
        };
        let text = format!("{frame}");
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with("EXCEPTION #PF (page fault, vector 14)"),
            "{first}"
        );
        assert!(text.contains("CR2=0x00007fffdeadb000"), "{text}");
        assert!(text.contains("R15=0x0000000000001515"), "{text}");
        for reg in [
            "RIP", "RSP", "RFLAGS", "CS", "SS", "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP",
            "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15",
        ] {
            assert!(text.contains(&format!("{reg}=0x")), "{reg} missing: {text}");
        }
        let irq = InterruptFrame {
            vector: 0x40,
            ..Default::default()
        };
        assert!(format!("{irq}").starts_with("INTERRUPT vector 64"));
    }
}
