//! The interrupted context saved by `x86::interrupts`' entry stubs, as the #VC core reads and
//! writes it.

use crate::vc::{Gpr, RegisterFrame};
use x86::interrupts::InterruptFrame;

/// The saved frame of the interrupted context, with its FS and GS bases (the stubs do not save
/// them; the #VC core asks only for FS- or GS-prefixed operands).
pub struct InterruptRegs<'a> {
    frame: &'a mut InterruptFrame,
    fs_base: u64,
    gs_base: u64,
}

impl<'a> InterruptRegs<'a> {
    /// `frame` with the interrupted context's FS and GS bases (a guest that never loads them
    /// passes the launch state's 0).
    pub fn new(frame: &'a mut InterruptFrame, fs_base: u64, gs_base: u64) -> Self {
        Self {
            frame,
            fs_base,
            gs_base,
        }
    }
}

impl RegisterFrame for InterruptRegs<'_> {
    fn gpr(&self, r: Gpr) -> u64 {
        let f = &*self.frame;
        match r {
            Gpr::Rax => f.rax,
            Gpr::Rcx => f.rcx,
            Gpr::Rdx => f.rdx,
            Gpr::Rbx => f.rbx,
            Gpr::Rsp => f.rsp,
            Gpr::Rbp => f.rbp,
            Gpr::Rsi => f.rsi,
            Gpr::Rdi => f.rdi,
            Gpr::R8 => f.r8,
            Gpr::R9 => f.r9,
            Gpr::R10 => f.r10,
            Gpr::R11 => f.r11,
            Gpr::R12 => f.r12,
            Gpr::R13 => f.r13,
            Gpr::R14 => f.r14,
            Gpr::R15 => f.r15,
        }
    }

    fn set_gpr(&mut self, r: Gpr, value: u64) {
        let f = &mut *self.frame;
        let slot = match r {
            Gpr::Rax => &mut f.rax,
            Gpr::Rcx => &mut f.rcx,
            Gpr::Rdx => &mut f.rdx,
            Gpr::Rbx => &mut f.rbx,
            Gpr::Rsp => &mut f.rsp,
            Gpr::Rbp => &mut f.rbp,
            Gpr::Rsi => &mut f.rsi,
            Gpr::Rdi => &mut f.rdi,
            Gpr::R8 => &mut f.r8,
            Gpr::R9 => &mut f.r9,
            Gpr::R10 => &mut f.r10,
            Gpr::R11 => &mut f.r11,
            Gpr::R12 => &mut f.r12,
            Gpr::R13 => &mut f.r13,
            Gpr::R14 => &mut f.r14,
            Gpr::R15 => &mut f.r15,
        };
        *slot = value;
    }

    fn rip(&self) -> u64 {
        self.frame.rip
    }

    fn rflags(&self) -> u64 {
        self.frame.rflags
    }

    fn cpl(&self) -> u8 {
        (self.frame.cs & 3) as u8
    }

    fn fs_base(&self) -> u64 {
        self.fs_base
    }

    fn gs_base(&self) -> u64 {
        self.gs_base
    }
}
