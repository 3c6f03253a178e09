//! The register-only NAE events: MSR, RDTSC(P), RDPMC, DR7, WBINVD, INVD,
//! MONITOR(X), MWAIT(X) and VMMCALL.

use iced_x86::{Code, Instruction, Mnemonic, Register};

use super::insn::{mismatch, reg_operand};
use super::{Fault, Gpr, HypercallAbi, RegisterFrame, Step, VcOutcome, VcPerCpu};
use crate::exception::Exception;
use crate::exit_code::ExitCode;
use crate::ghcb::{GhcbField, GhcbTransport};
use crate::nae::{self, NaeError};
use crate::termination::GuestReason;

fn advance(i: &Instruction) -> Step {
    Ok(VcOutcome::Advance(i.len() as u8))
}

fn set_edx_eax<R: RegisterFrame + ?Sized>(regs: &mut R, v: u64) {
    regs.set_gpr(Gpr::Rax, v & 0xffff_ffff);
    regs.set_gpr(Gpr::Rdx, v >> 32);
}

pub(super) fn msr<R, T>(i: &Instruction, regs: &mut R, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let ecx = regs.gpr(Gpr::Rcx) as u32;
    match i.code() {
        Code::Rdmsr => {
            let v = nae::rdmsr(ghcb, ecx)?;
            set_edx_eax(regs, v);
        }
        Code::Wrmsr => {
            let v = (regs.gpr(Gpr::Rdx) & 0xffff_ffff) << 32 | regs.gpr(Gpr::Rax) & 0xffff_ffff;
            nae::wrmsr(ghcb, ecx, v)?;
        }
        _ => return Err(mismatch()),
    }
    advance(i)
}

pub(super) fn rdtsc<R, T>(exit: ExitCode, i: &Instruction, regs: &mut R, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    match (exit, i.code()) {
        (ExitCode::Rdtsc, Code::Rdtsc) => set_edx_eax(regs, nae::rdtsc(ghcb)?),
        (ExitCode::Rdtscp, Code::Rdtscp) => {
            let (tsc, aux) = nae::rdtscp(ghcb)?;
            set_edx_eax(regs, tsc);
            regs.set_gpr(Gpr::Rcx, aux as u64);
        }
        _ => return Err(mismatch()),
    }
    advance(i)
}

pub(super) fn rdpmc<R, T>(i: &Instruction, regs: &mut R, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    if i.code() != Code::Rdpmc {
        return Err(mismatch());
    }
    let v = nae::rdpmc(ghcb, regs.gpr(Gpr::Rcx) as u32)?;
    set_edx_eax(regs, v);
    advance(i)
}

/// MOV r64, DR7: answered from the per-CPU copy; the hypervisor never sees
/// the real DR7 of an SEV-ES guest, so asking it would only invite a lie.
pub(super) fn read_dr7<R>(i: &Instruction, regs: &mut R, cpu: &VcPerCpu) -> Step
where
    R: RegisterFrame + ?Sized,
{
    if i.code() != Code::Mov_r64_dr || i.op1_register() != Register::DR7 {
        return Err(mismatch());
    }
    let dst = reg_operand(i.op0_register()).ok_or_else(mismatch)?;
    regs.set_gpr(dst.gpr, cpu.dr7);
    advance(i)
}

/// MOV DR7, r64: bits 63:32 must be zero (#GP otherwise, as on hardware).
pub(super) fn write_dr7<R, T>(
    i: &Instruction,
    regs: &mut R,
    ghcb: &mut T,
    cpu: &mut VcPerCpu,
) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    if i.code() != Code::Mov_dr_r64 || i.op0_register() != Register::DR7 {
        return Err(mismatch());
    }
    let src = reg_operand(i.op1_register()).ok_or_else(mismatch)?;
    let v = regs.gpr(src.gpr);
    if v >> 32 != 0 {
        return Err(Fault::Exception(Exception::Gp(0)));
    }
    nae::write_dr7(ghcb, v)?;
    cpu.dr7 = v;
    advance(i)
}

pub(super) fn wbinvd<T>(i: &Instruction, ghcb: &mut T) -> Step
where
    T: GhcbTransport + ?Sized,
{
    if i.code() != Code::Wbinvd {
        return Err(mismatch());
    }
    nae::wbinvd(ghcb)?;
    advance(i)
}

/// INVD would drop dirty cache lines of encrypted memory: never emulated.
pub(super) fn invd(i: &Instruction) -> Step {
    if i.code() != Code::Invd {
        return Err(mismatch());
    }
    Err(Fault::Terminate(GuestReason::InvdRefused))
}

pub(super) fn monitor<R, T>(i: &Instruction, regs: &mut R, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    if !matches!(i.mnemonic(), Mnemonic::Monitor | Mnemonic::Monitorx) {
        return Err(mismatch());
    }
    nae::monitor(
        ghcb,
        regs.gpr(Gpr::Rax),
        regs.gpr(Gpr::Rcx) as u32,
        regs.gpr(Gpr::Rdx) as u32,
    )?;
    advance(i)
}

pub(super) fn mwait<R, T>(i: &Instruction, regs: &mut R, ghcb: &mut T) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    if !matches!(i.mnemonic(), Mnemonic::Mwait | Mnemonic::Mwaitx) {
        return Err(mismatch());
    }
    nae::mwait(ghcb, regs.gpr(Gpr::Rax) as u32, regs.gpr(Gpr::Rcx) as u32)?;
    advance(i)
}

/// Most registers one hypercall may pass (all GPRs but RSP).
const MAX_HYPERCALL_REGS: usize = 15;

pub(super) fn vmmcall<R, T>(
    i: &Instruction,
    regs: &mut R,
    ghcb: &mut T,
    abi: &dyn HypercallAbi,
) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    if i.code() != Code::Vmmcall {
        return Err(mismatch());
    }
    let rax = regs.gpr(Gpr::Rax);
    let Some(hc) = abi.registers(rax) else {
        return Err(Fault::Exception(Exception::Ud));
    };
    let mut inputs = [(GhcbField::Rax, 0u64); MAX_HYPERCALL_REGS + 2];
    inputs[0] = (GhcbField::Rax, rax);
    inputs[1] = (GhcbField::Cpl, regs.cpl() as u64);
    let mut n = 2;
    for r in hc.inputs.iter().filter(|r| **r != Gpr::Rax) {
        let Some(f) = r.ghcb_field() else { continue };
        if n == inputs.len() {
            break;
        }
        inputs[n] = (f, regs.gpr(*r));
        n += 1;
    }
    let s = nae::call(ghcb, ExitCode::Vmmcall, 0, 0, &inputs[..n])?;
    // Validate every output before writing any register back.
    let mut outputs = [(Gpr::Rax, 0u64); MAX_HYPERCALL_REGS + 1];
    outputs[0] = (Gpr::Rax, s.require(GhcbField::Rax).map_err(NaeError::from)?);
    let mut m = 1;
    for r in hc.outputs.iter().filter(|r| **r != Gpr::Rax) {
        let Some(f) = r.ghcb_field() else { continue };
        if m == outputs.len() {
            break;
        }
        outputs[m] = (*r, s.require(f).map_err(NaeError::from)?);
        m += 1;
    }
    for &(r, v) in &outputs[..m] {
        regs.set_gpr(r, v);
    }
    advance(i)
}
