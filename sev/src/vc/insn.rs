//! Instruction fetch and decode for the #VC core, and operand helpers that
//! map iced-x86 registers onto the [`RegisterFrame`].

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, OpKind, Register};

use super::{Fault, Gpr, InsnFetch, MAX_INSN_LEN, RegisterFrame};
use crate::exception::{Exception, PF_FETCH};
use crate::termination::GuestReason;

/// The bytes at RIP.
pub(crate) struct Fetched {
    pub rip: u64,
    pub buf: [u8; MAX_INSN_LEN],
    pub len: usize,
}

impl Fetched {
    /// Whether the instruction is exactly `bytes` (no prefixes).
    pub fn starts_with(&self, bytes: &[u8]) -> bool {
        self.buf[..self.len].starts_with(bytes)
    }
}

/// Reads up to [`MAX_INSN_LEN`] bytes at RIP.
pub(crate) fn fetch<R, M>(regs: &R, mem: &mut M) -> Result<Fetched, Fault>
where
    R: RegisterFrame + ?Sized,
    M: InsnFetch + ?Sized,
{
    let rip = regs.rip();
    let mut buf = [0u8; MAX_INSN_LEN];
    let len = mem.fetch(rip, &mut buf)?.min(MAX_INSN_LEN);
    Ok(Fetched { rip, buf, len })
}

/// Decodes fetched bytes (64-bit mode).
pub(crate) fn decode(f: &Fetched) -> Result<Instruction, Fault> {
    let (rip, buf, n) = (f.rip, &f.buf, f.len);
    let mut d = Decoder::with_ip(64, &buf[..n], rip, DecoderOptions::NONE);
    let i = d.decode();
    if i.is_invalid() {
        return Err(
            if d.last_error() == DecoderError::NoMoreBytes && n < MAX_INSN_LEN {
                // The instruction continues on a page that could not be read.
                Fault::Exception(Exception::Pf {
                    address: rip.wrapping_add(n as u64),
                    error_code: PF_FETCH,
                })
            } else {
                Fault::Terminate(GuestReason::DecodeFailed)
            },
        );
    }
    Ok(i)
}

/// Decodes one instruction so iced builds its lazily allocated tables.
pub(crate) fn warm_up() {
    let mut d = Decoder::with_ip(64, &[0x0f, 0xa2], 0, DecoderOptions::NONE);
    let i = d.decode();
    debug_assert_eq!(i.code(), iced_x86::Code::Cpuid);
}

/// Width of a register operand in bytes, and where it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegOperand {
    pub gpr: Gpr,
    pub size: u8,
    /// AH/CH/DH/BH: bits 15:8.
    pub high8: bool,
}

/// Maps an iced general-purpose register; `None` for anything else.
pub(crate) fn reg_operand(r: Register) -> Option<RegOperand> {
    let (size, high8, idx) = if r.is_gpr64() {
        (8, false, r as u32 - Register::RAX as u32)
    } else if r.is_gpr32() {
        (4, false, r as u32 - Register::EAX as u32)
    } else if r.is_gpr16() {
        (2, false, r as u32 - Register::AX as u32)
    } else if r.is_gpr8() {
        match r {
            Register::AH | Register::CH | Register::DH | Register::BH => {
                (1, true, r as u32 - Register::AH as u32)
            }
            Register::AL | Register::CL | Register::DL | Register::BL => {
                (1, false, r as u32 - Register::AL as u32)
            }
            // SPL..R15L follow AH..BH in iced's numbering.
            _ => (1, false, r as u32 - Register::SPL as u32 + 4),
        }
    } else {
        return None;
    };
    Some(RegOperand {
        gpr: Gpr::ALL[idx as usize & 15],
        size,
        high8,
    })
}

/// Mask of the low `size` bytes.
pub(crate) fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Reads a register operand's value, zero-extended.
pub(crate) fn read_reg<R: RegisterFrame + ?Sized>(regs: &R, op: RegOperand) -> u64 {
    let v = regs.gpr(op.gpr);
    if op.high8 {
        v >> 8 & 0xff
    } else {
        v & size_mask(op.size)
    }
}

/// Writes a register operand with x86 semantics: 32-bit writes zero-extend,
/// 8- and 16-bit writes keep the other bits.
pub(crate) fn write_reg<R: RegisterFrame + ?Sized>(regs: &mut R, op: RegOperand, value: u64) {
    let old = regs.gpr(op.gpr);
    let new = match (op.size, op.high8) {
        (1, true) => old & !0xff00 | (value & 0xff) << 8,
        (8, _) => value,
        (4, _) => value & 0xffff_ffff,
        (size, _) => old & !size_mask(size) | value & size_mask(size),
    };
    regs.set_gpr(op.gpr, new);
}

/// Value of any register iced asks for while computing an address.
fn address_reg<R: RegisterFrame + ?Sized>(regs: &R, r: Register) -> Option<u64> {
    match r {
        Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
        Register::FS => Some(regs.fs_base()),
        Register::GS => Some(regs.gs_base()),
        _ => reg_operand(r).map(|op| read_reg(regs, op)),
    }
}

/// Linear address of memory operand `op` (segment base included).
pub(crate) fn linear_address<R: RegisterFrame + ?Sized>(
    i: &Instruction,
    op: u32,
    regs: &R,
) -> Result<u64, Fault> {
    i.virtual_address(op, 0, |r, _, _| address_reg(regs, r))
        .ok_or(Fault::Terminate(GuestReason::DecodeFailed))
}

/// Whether any operand is in memory.
pub(crate) fn has_memory_operand(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| {
        matches!(
            i.op_kind(n),
            OpKind::Memory
                | OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemorySegDI
                | OpKind::MemorySegEDI
                | OpKind::MemorySegRDI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

/// Address-size mask of a string instruction (from its ES:rDI or seg:rSI
/// operand kind): 32-bit with a 0x67 prefix, else 64-bit.
pub(crate) fn string_address_mask(i: &Instruction) -> u64 {
    let a32 = (0..i.op_count()).any(|n| {
        matches!(
            i.op_kind(n),
            OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI
        )
    });
    if a32 { 0xffff_ffff } else { u64::MAX }
}

/// The instruction mismatches the exit code.
pub(crate) fn mismatch() -> Fault {
    Fault::Terminate(GuestReason::ExitCodeMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_mapping() {
        let m = |r| reg_operand(r).unwrap();
        assert_eq!(m(Register::R13D).gpr, Gpr::R13);
        assert_eq!(m(Register::R13D).size, 4);
        assert_eq!(m(Register::SIL).gpr, Gpr::Rsi);
        assert_eq!(m(Register::R15L).gpr, Gpr::R15);
        assert_eq!(m(Register::SPL).gpr, Gpr::Rsp);
        assert!(m(Register::BH).high8);
        assert_eq!(m(Register::BH).gpr, Gpr::Rbx);
        assert_eq!(m(Register::R9W).gpr, Gpr::R9);
        assert_eq!(m(Register::RDI).size, 8);
        assert_eq!(reg_operand(Register::ES), None);
        assert_eq!(reg_operand(Register::XMM0), None);
    }
}
