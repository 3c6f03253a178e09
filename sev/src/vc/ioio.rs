//! Port I/O emulation: IN/OUT with immediate or DX port, and INS/OUTS with
//! or without REP. String forms are batched through the shared buffer: each
//! #VC moves as many elements as fit in the buffer and in the current page
//! of the memory operand, updates RCX/RSI/RDI, and returns
//! [`VcOutcome::Repeat`] until RCX reaches zero, so a huge REP count makes
//! steady progress without a long stay in the handler (scenario 13).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::insn::{
    linear_address, mismatch, read_reg, reg_operand, string_address_mask, write_reg,
};
use super::{Fault, Gpr, GuestMemory, PageWalk, RFLAGS_DF, RegisterFrame, Step, VcOutcome};
use crate::exception::{Exception, PF_PRESENT, PF_WRITE};
use crate::ghcb::{GhcbTransport, SHARED_BUFFER_SIZE};
use crate::ioio::{IoSegment, IoioInfo};
use crate::nae;

fn port<R: RegisterFrame + ?Sized>(i: &Instruction, op: u32, regs: &R) -> Result<u16, Fault> {
    match i.op_kind(op) {
        OpKind::Immediate8 => Ok(i.immediate8() as u16),
        OpKind::Register if i.op_register(op) == Register::DX => Ok(regs.gpr(Gpr::Rdx) as u16),
        _ => Err(mismatch()),
    }
}

fn segment(r: Register) -> IoSegment {
    match r {
        Register::CS => IoSegment::Cs,
        Register::SS => IoSegment::Ss,
        Register::ES => IoSegment::Es,
        Register::FS => IoSegment::Fs,
        Register::GS => IoSegment::Gs,
        _ => IoSegment::Ds,
    }
}

pub(super) fn emulate<R, M, T>(i: &Instruction, regs: &mut R, mem: &mut M, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    M: GuestMemory + PageWalk + ?Sized,
    T: GhcbTransport + ?Sized,
{
    match i.mnemonic() {
        Mnemonic::In | Mnemonic::Out => {
            let input = i.mnemonic() == Mnemonic::In;
            let (data_op, port_op) = if input { (0, 1) } else { (1, 0) };
            let reg = reg_operand(i.op_register(data_op))
                .filter(|r| r.gpr == Gpr::Rax && !r.high8 && r.size <= 4)
                .ok_or_else(mismatch)?;
            let port = port(i, port_op, regs)?;
            if input {
                let v = nae::io_in(ghcb, port, reg.size)?;
                write_reg(regs, reg, v as u64);
            } else {
                nae::io_out(ghcb, port, reg.size, read_reg(regs, reg) as u32)?;
            }
            Ok(VcOutcome::Advance(i.len() as u8))
        }
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => string(i, true, regs, mem, ghcb),
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => string(i, false, regs, mem, ghcb),
        _ => Err(mismatch()),
    }
}

/// Elements of `size` bytes at `va` walking up (or down with DF) that stay
/// in `va`'s page; at least 1.
fn elements_in_page(va: u64, size: u64, down: bool) -> u64 {
    let off = va & 0xfff;
    let n = if down {
        off / size + 1
    } else {
        (0x1000 - off) / size
    };
    n.max(1)
}

/// Reverses the order of `size`-byte elements in `buf` (DF=1: the buffer
/// holds elements in execution order, memory holds them descending).
fn reverse_elements(buf: &mut [u8], size: usize) {
    let n = buf.len() / size;
    for k in 0..n / 2 {
        for b in 0..size {
            buf.swap(k * size + b, (n - 1 - k) * size + b);
        }
    }
}

/// Checks that every page of `[lo, lo + len)` is mapped writable.
fn probe_writable<M: PageWalk + ?Sized>(mem: &mut M, lo: u64, len: u64) -> Result<(), Fault> {
    let last = lo.wrapping_add(len - 1);
    let mut page = lo & !0xfff;
    loop {
        let va = page.max(lo);
        match mem.translate(va) {
            None => {
                return Err(Fault::Exception(Exception::Pf {
                    address: va,
                    error_code: PF_WRITE,
                }));
            }
            Some(m) if !m.writable => {
                return Err(Fault::Exception(Exception::Pf {
                    address: va,
                    error_code: PF_PRESENT | PF_WRITE,
                }));
            }
            Some(_) => {}
        }
        if page == last & !0xfff {
            return Ok(());
        }
        page = page.wrapping_add(0x1000);
    }
}

fn string<R, M, T>(i: &Instruction, input: bool, regs: &mut R, mem: &mut M, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    M: GuestMemory + PageWalk + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let size = i.memory_size().size() as u64;
    if !matches!(size, 1 | 2 | 4) {
        return Err(mismatch());
    }
    // INS: op0 = ES:rDI, op1 = DX. OUTS: op0 = DX, op1 = seg:rSI.
    let (mem_op, port_op, index) = if input {
        (0, 1, Gpr::Rdi)
    } else {
        (1, 0, Gpr::Rsi)
    };
    let amask = string_address_mask(i);
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    let total = if rep { regs.gpr(Gpr::Rcx) & amask } else { 1 };
    if total == 0 {
        return Ok(VcOutcome::Advance(i.len() as u8));
    }
    let info = IoioInfo {
        port: port(i, port_op, regs)?,
        input,
        string: true,
        rep,
        size: size as u8,
        address_size: if amask == u64::MAX { 8 } else { 4 },
        segment: if input {
            IoSegment::Es
        } else {
            segment(i.memory_segment())
        },
    };
    let va = linear_address(i, mem_op, regs)?;
    let down = regs.rflags() & RFLAGS_DF != 0;
    let n = total
        .min(SHARED_BUFFER_SIZE as u64 / size)
        .min(elements_in_page(va, size, down));
    let len = (n * size) as usize;
    // Lowest address of the block the n elements occupy.
    let lo = if down {
        va.wrapping_sub((n - 1) * size)
    } else {
        va
    };
    let mut buf = [0u8; SHARED_BUFFER_SIZE];
    let data = &mut buf[..len];
    if input {
        // Probe the destination first: a fault after the hypervisor has
        // read the port would lose the device's data.
        probe_writable(mem, lo, len as u64)?;
        nae::io_string(ghcb, info, n, data)?;
        if down {
            reverse_elements(data, size as usize);
        }
        mem.write(lo, data)?;
    } else {
        mem.read(lo, data)?;
        if down {
            reverse_elements(data, size as usize);
        }
        nae::io_string(ghcb, info, n, data)?;
    }
    let moved = n * size;
    let idx = regs.gpr(index);
    let new = if down {
        idx.wrapping_sub(moved)
    } else {
        idx.wrapping_add(moved)
    };
    regs.set_gpr(index, new & amask);
    if rep {
        let left = total - n;
        regs.set_gpr(Gpr::Rcx, left);
        if left != 0 {
            return Ok(VcOutcome::Repeat);
        }
    }
    Ok(VcOutcome::Advance(i.len() as u8))
}
