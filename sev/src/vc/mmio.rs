//! MMIO emulation for NPF #VCs: every MOV form Linux emulates (register and
//! immediate stores, loads, MOV moffs, MOVZX/MOVSX) and MOVS, which is split
//! into a read and a write with each side going to MMIO or to private memory
//! depending on its mapping.
//!
//! Every MMIO target is translated by a page walk: not present gives #PF,
//! a user or encrypted (C-bit) mapping terminates (emulating an access to
//! private memory would let the hypervisor read or forge it), a store to a
//! read-only mapping gives #PF. Accesses crossing a page are refused.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::insn::{
    RegOperand, has_memory_operand, linear_address, mismatch, read_reg, reg_operand, size_mask,
    string_address_mask, write_reg,
};
use super::{Fault, Gpr, GuestMemory, PageWalk, RFLAGS_DF, RegisterFrame, Step, VcOutcome};
use crate::exception::{Exception, PF_PRESENT, PF_WRITE};
use crate::ghcb::GhcbTransport;
use crate::nae;
use crate::termination::GuestReason;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Extend {
    None,
    Zero,
    Sign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Load `size` bytes into `dst`, extended as given.
    Read {
        dst: RegOperand,
        size: u8,
        extend: Extend,
    },
    /// Store the low `size` bytes of `value`.
    Write { value: u64, size: u8 },
    /// One element of MOVS.
    Movs { size: u8 },
}

fn unsupported() -> Fault {
    Fault::Terminate(GuestReason::UnsupportedMmio)
}

fn classify<R: RegisterFrame + ?Sized>(i: &Instruction, regs: &R) -> Result<Op, Fault> {
    let size = i.memory_size().size() as u8;
    match i.code() {
        Code::Movsb_m8_m8 | Code::Movsw_m16_m16 | Code::Movsd_m32_m32 | Code::Movsq_m64_m64 => {
            return Ok(Op::Movs { size });
        }
        _ => {}
    }
    let extend = match i.mnemonic() {
        Mnemonic::Mov => Extend::None,
        Mnemonic::Movzx => Extend::Zero,
        Mnemonic::Movsx => Extend::Sign,
        _ if has_memory_operand(i) => return Err(unsupported()),
        _ => return Err(mismatch()),
    };
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(if has_memory_operand(i) {
            unsupported()
        } else {
            mismatch()
        });
    }
    match (i.op0_kind(), i.op1_kind()) {
        (OpKind::Register, OpKind::Memory) => {
            // MOV to a segment or control register is not a GPR load.
            let dst = reg_operand(i.op0_register()).ok_or_else(unsupported)?;
            Ok(Op::Read { dst, size, extend })
        }
        (OpKind::Memory, OpKind::Register) if extend == Extend::None => {
            let src = reg_operand(i.op1_register()).ok_or_else(unsupported)?;
            Ok(Op::Write {
                value: read_reg(regs, src),
                size,
            })
        }
        (
            OpKind::Memory,
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate32to64,
        ) if extend == Extend::None => Ok(Op::Write {
            value: i.immediate(1),
            size,
        }),
        _ => Err(mismatch()),
    }
}

/// Translates an MMIO target and applies the refusal rules.
fn mmio_gpa<M: PageWalk + ?Sized>(
    mem: &mut M,
    va: u64,
    size: u8,
    write: bool,
) -> Result<u64, Fault> {
    if (va & 0xfff) + size as u64 > 0x1000 {
        return Err(unsupported());
    }
    let wbit = if write { PF_WRITE } else { 0 };
    let m = mem.translate(va).ok_or(Fault::Exception(Exception::Pf {
        address: va,
        error_code: wbit,
    }))?;
    if m.user {
        return Err(Fault::Terminate(GuestReason::MmioUserMapping));
    }
    if m.encrypted {
        return Err(Fault::Terminate(GuestReason::MmioEncrypted));
    }
    if write && !m.writable {
        return Err(Fault::Exception(Exception::Pf {
            address: va,
            error_code: PF_PRESENT | PF_WRITE,
        }));
    }
    Ok(m.gpa)
}

fn extend(value: u64, from: u8, how: Extend) -> u64 {
    match how {
        Extend::Sign => {
            let shift = 64 - 8 * from as u32;
            (((value << shift) as i64) >> shift) as u64
        }
        Extend::None | Extend::Zero => value & size_mask(from),
    }
}

pub(super) fn emulate<R, M, T>(i: &Instruction, regs: &mut R, mem: &mut M, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    M: PageWalk + GuestMemory + ?Sized,
    T: GhcbTransport + ?Sized,
{
    match classify(i, regs)? {
        Op::Read {
            dst,
            size,
            extend: how,
        } => {
            let va = linear_address(i, 1, regs)?;
            let gpa = mmio_gpa(mem, va, size, false)?;
            let mut buf = [0u8; 8];
            nae::mmio_read(ghcb, gpa, &mut buf[..size as usize])?;
            write_reg(regs, dst, extend(u64::from_le_bytes(buf), size, how));
        }
        Op::Write { value, size } => {
            let va = linear_address(i, 0, regs)?;
            let gpa = mmio_gpa(mem, va, size, true)?;
            nae::mmio_write(ghcb, gpa, &value.to_le_bytes()[..size as usize])?;
        }
        Op::Movs { size } => return movs(i, size, regs, mem, ghcb),
    }
    Ok(VcOutcome::Advance(i.len() as u8))
}

/// Where one side of a MOVS goes.
enum Side {
    Mmio(u64),
    Memory,
}

fn movs_side<M: PageWalk + ?Sized>(
    mem: &mut M,
    va: u64,
    size: u8,
    write: bool,
) -> Result<Side, Fault> {
    let wbit = if write { PF_WRITE } else { 0 };
    let m = mem.translate(va).ok_or(Fault::Exception(Exception::Pf {
        address: va,
        error_code: wbit,
    }))?;
    if m.encrypted && !m.user {
        // Check the private side before any device access, so a fault
        // cannot come after the device has seen a read with side effects.
        if write && !m.writable {
            return Err(Fault::Exception(Exception::Pf {
                address: va,
                error_code: PF_PRESENT | PF_WRITE,
            }));
        }
        Ok(Side::Memory)
    } else {
        mmio_gpa(mem, va, size, write).map(Side::Mmio)
    }
}

/// One element of (REP) MOVS per #VC, like Linux: the REP continues by
/// re-executing the instruction.
fn movs<R, M, T>(i: &Instruction, size: u8, regs: &mut R, mem: &mut M, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    M: PageWalk + GuestMemory + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let amask = string_address_mask(i);
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    let count = regs.gpr(Gpr::Rcx) & amask;
    if rep && count == 0 {
        return Ok(VcOutcome::Advance(i.len() as u8));
    }
    let src = linear_address(i, 1, regs)?;
    let dst = linear_address(i, 0, regs)?;
    let src_side = movs_side(mem, src, size, false)?;
    let dst_side = movs_side(mem, dst, size, true)?;
    if matches!((&src_side, &dst_side), (Side::Memory, Side::Memory)) {
        // An NPF cannot come from private memory on both sides.
        return Err(mismatch());
    }
    let mut buf = [0u8; 8];
    let data = &mut buf[..size as usize];
    match src_side {
        Side::Mmio(gpa) => nae::mmio_read(ghcb, gpa, data)?,
        Side::Memory => mem.read(src, data)?,
    }
    match dst_side {
        Side::Mmio(gpa) => nae::mmio_write(ghcb, gpa, data)?,
        Side::Memory => mem.write(dst, data)?,
    }
    let step = if regs.rflags() & RFLAGS_DF != 0 {
        (size as u64).wrapping_neg()
    } else {
        size as u64
    };
    for r in [Gpr::Rsi, Gpr::Rdi] {
        let v = regs.gpr(r).wrapping_add(step) & amask;
        regs.set_gpr(r, v);
    }
    if rep {
        let left = count - 1;
        regs.set_gpr(Gpr::Rcx, left);
        if left != 0 {
            return Ok(VcOutcome::Repeat);
        }
    }
    Ok(VcOutcome::Advance(i.len() as u8))
}
