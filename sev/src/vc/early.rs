//! #VC before a GHCB exists: only CPUID can be emulated, through the MSR
//! protocol (one round trip per output register; ECX and XCR0 cannot be
//! passed, so only leaves that ignore them are answered). Under SNP the
//! CPUID page answers instead and the hypervisor is never asked.
//!
//! The answers are checked the way Linux's early handler does, so that a
//! hypervisor cannot steer the stage into believing SEV is off (scenario 10):
//! the extended range must reach 0x8000001F and that leaf must report SEV.

use super::{Fault, Gpr, InsnFetch, RegisterFrame, VcOutcome, insn};
use crate::cpuid::{SnpCpuidTable, hides_sev, is_indexed_leaf};
use crate::exit_code::ExitCode;
use crate::msr_protocol::{self, GhcbMsr};
use crate::termination::GuestReason;

/// Handles a #VC taken before GHCB registration. Anything but a plain
/// `0F A2` CPUID terminates.
pub fn handle_vc_early<R, M, G>(
    exit_code: u64,
    regs: &mut R,
    mem: &mut M,
    msr: &mut G,
    cpuid_page: Option<&SnpCpuidTable>,
) -> VcOutcome
where
    R: RegisterFrame + ?Sized,
    M: InsnFetch + ?Sized,
    G: GhcbMsr + ?Sized,
{
    match early(exit_code, regs, mem, msr, cpuid_page) {
        Ok(o) => o,
        Err(Fault::Exception(e)) => VcOutcome::Exception(e),
        Err(Fault::Terminate(r)) => {
            log::error!("early #VC {exit_code:#x}: {r:?}");
            VcOutcome::Terminate(r.into())
        }
    }
}

fn early<R, M, G>(
    exit_code: u64,
    regs: &mut R,
    mem: &mut M,
    msr: &mut G,
    cpuid_page: Option<&SnpCpuidTable>,
) -> Result<VcOutcome, Fault>
where
    R: RegisterFrame + ?Sized,
    M: InsnFetch + ?Sized,
    G: GhcbMsr + ?Sized,
{
    if regs.cpl() != 0 {
        return Err(Fault::Terminate(GuestReason::UserModeVc));
    }
    if exit_code != ExitCode::Cpuid as u64 {
        return Err(Fault::Terminate(GuestReason::UnsupportedExit));
    }
    let bytes = insn::fetch(regs, mem)?;
    if !bytes.starts_with(&[0x0f, 0xa2]) {
        return Err(insn::mismatch());
    }
    let leaf = regs.gpr(Gpr::Rax) as u32;
    let subleaf = regs.gpr(Gpr::Rcx) as u32;
    let out = match cpuid_page {
        Some(page) => page.lookup(leaf, subleaf, 1, 0).unwrap_or([0; 4]),
        None => {
            if is_indexed_leaf(leaf) && subleaf != 0 {
                // The MSR protocol has no ECX: the answer would be for
                // subleaf 0, which is not what was asked.
                return Err(Fault::Terminate(GuestReason::UnsupportedExit));
            }
            msr_protocol::cpuid(msr, leaf).map_err(|e| Fault::Terminate(e.reason()))?
        }
    };
    if hides_sev(leaf, out) {
        return Err(Fault::Terminate(GuestReason::CpuidLies));
    }
    for (r, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx]
        .into_iter()
        .zip(out)
    {
        regs.set_gpr(r, v as u64);
    }
    Ok(VcOutcome::Advance(2))
}
