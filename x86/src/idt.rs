//! The IDT: 256 interrupt gates, every one on an IST stack.
//!
//! The precompiled `core` uses the red zone, so the CPU must never push an interrupt frame
//! onto the interrupted stack: every gate names an IST slot ([`ist_for`]), and the entry stubs
//! of [`crate::interrupts`] decide where the handler then runs. One IDT can serve every CPU (the
//! IST slot numbers are the same everywhere; each CPU's TSS gives its own stacks).

use crate::gdt::{KERNEL_CODE, ist};
use core::arch::asm;

/// Number of vectors.
pub const VECTORS: usize = 256;

/// Vector numbers with their own handling in the entry path.
pub mod vector {
    pub const DIVIDE_ERROR: u8 = 0;
    pub const DEBUG: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BREAKPOINT: u8 = 3;
    pub const INVALID_OPCODE: u8 = 6;
    pub const DOUBLE_FAULT: u8 = 8;
    pub const GENERAL_PROTECTION: u8 = 13;
    pub const PAGE_FAULT: u8 = 14;
    pub const MACHINE_CHECK: u8 = 18;
    pub const VMM_COMMUNICATION: u8 = 29;
}

/// Whether the CPU pushes an error code for exception `vector` (#DF, #TS, #NP, #SS, #GP, #PF,
/// #AC, #CP, #VC, #SX). The entry stubs push a dummy 0 for every other vector.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// The IST slot vector `vector`'s gate uses: NMI, #DF and #MC have their own stacks and stay
/// there; everything else enters on the general one and leaves it at once.
pub const fn ist_for(vector: u8) -> u8 {
    match vector {
        vector::NMI => ist::NMI,
        vector::DOUBLE_FAULT => ist::DOUBLE_FAULT,
        vector::MACHINE_CHECK => ist::MACHINE_CHECK,
        _ => ist::GENERAL,
    }
}

/// A 16-byte IDT gate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Gate {
    low: u64,
    high: u64,
}

impl Gate {
    /// A present, DPL-0, 64-bit interrupt gate (IF cleared on entry) to `handler` in `selector`,
    /// switching to IST slot `ist` (1..=7).
    pub const fn interrupt(handler: u64, selector: u16, ist: u8) -> Self {
        const TYPE_INTERRUPT_GATE: u64 = 0xe;
        const PRESENT: u64 = 1 << 15;
        let type_attr = (TYPE_INTERRUPT_GATE << 8) | PRESENT | (ist as u64 & 0x7);
        Self {
            low: (handler & 0xffff)
                | (selector as u64) << 16
                | type_attr << 32
                | ((handler >> 16) & 0xffff) << 48,
            high: handler >> 32,
        }
    }

    /// The handler address.
    pub const fn handler(&self) -> u64 {
        (self.low & 0xffff) | ((self.low >> 48) << 16) | (self.high << 32)
    }

    /// The IST slot.
    pub const fn ist(&self) -> u8 {
        ((self.low >> 32) & 0x7) as u8
    }
}

/// The table of all 256 gates.
#[derive(Debug)]
#[repr(C, align(16))]
pub struct Idt([Gate; VECTORS]);

impl Idt {
    /// An IDT whose gate `n` is an interrupt gate to `stub(n)` on IST slot [`ist_for`]`(n)`.
    pub fn new(stub: impl Fn(u8) -> u64) -> Self {
        Self(core::array::from_fn(|n| {
            let n = n as u8;
            Gate::interrupt(stub(n), KERNEL_CODE, ist_for(n))
        }))
    }

    /// Gate `vector`.
    pub fn gate(&self, vector: u8) -> &Gate {
        &self.0[usize::from(vector)]
    }

    /// Makes this the running CPU's IDT.
    ///
    /// # Safety
    /// The running CPU has loaded a GDT with [`KERNEL_CODE`] and a TSS whose IST slots point at
    /// usable stacks (see [`crate::gdt::Gdt::load`]); the handlers are the entry stubs.
    pub unsafe fn load(&'static self) {
        // SAFETY: the IDT is 'static and its gates lead to the entry stubs (caller's contract).
        unsafe { load_gates(&self.0) };
    }
}

/// Makes `gates` (vectors 0 to `gates.len() - 1`; a higher vector raises #GP) the running
/// CPU's IDT.
///
/// # Safety
/// Every gate leads to a handler for its vector, in a code segment of the loaded GDT, on a
/// stack its IST slot (if any) names in the loaded TSS.
pub unsafe fn load_gates(gates: &'static [Gate]) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (size_of_val(gates) - 1) as u16,
        base: gates.as_ptr() as u64,
    };
    // SAFETY: the gates are 'static and usable (caller's contract).
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_encoding() {
        let g = Gate::interrupt(0xffff_8000_1234_5678, 0x08, 4);
        // offset 0..16, selector, IST 4, type 0xE present DPL0, offset 16..32, offset 32..64.
        assert_eq!(g.low, 0x1234_8e04_0008_5678);
        assert_eq!(g.high, 0xffff_8000);
        assert_eq!(g.handler(), 0xffff_8000_1234_5678);
        assert_eq!(g.ist(), 4);
        assert_eq!(size_of::<Gate>(), 16);
        assert_eq!(size_of::<Idt>(), 4096);
    }

    #[test]
    fn every_gate_is_on_an_ist_stack() {
        let idt = Idt::new(|n| 0x1000 + 16 * u64::from(n));
        for v in 0..=255u8 {
            let g = idt.gate(v);
            assert_eq!(g.handler(), 0x1000 + 16 * u64::from(v));
            assert_ne!(g.ist(), 0, "vector {v} without IST");
        }
        assert_eq!(idt.gate(2).ist(), ist::NMI);
        assert_eq!(idt.gate(8).ist(), ist::DOUBLE_FAULT);
        assert_eq!(idt.gate(18).ist(), ist::MACHINE_CHECK);
        assert_eq!(idt.gate(14).ist(), ist::GENERAL);
    }

    #[test]
    fn error_code_vectors() {
        let with: Vec<u8> = (0..=255).filter(|&v| has_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    }
}
