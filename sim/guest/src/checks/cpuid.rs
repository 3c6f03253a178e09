//! CPUID: a #VC with exit code 0x72 answered through the GHCB, with what an SEV-ES guest must
//! see: an AMD CPU whose leaf 0x8000001F reports SEV and SEV-ES and the simulator's C-bit, the
//! same answer the MSR protocol gave at boot.

use handoff::launch::SIM_C_BIT;
use sev::cpuid::{SEV_CPUID_LEAF, SevCpuid, SevCpuidFeatures};
use sev::exit_code::ExitCode;
use x86::msr::CpuidResult;

use super::{Outcome, one_vc};
use crate::ghcb;

fn leaf(leaf: u32) -> Result<CpuidResult, alloc::string::String> {
    one_vc("CPUID", ExitCode::Cpuid, || x86::msr::cpuid(leaf, 0))
}

pub fn cpuid() -> Outcome {
    let v = leaf(0)?;
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&v.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&v.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&v.ecx.to_le_bytes());
    ensure!(
        &vendor == b"AuthenticAMD",
        "vendor {:?}, expected AuthenticAMD",
        core::str::from_utf8(&vendor).unwrap_or("(not UTF-8)")
    );
    let max_extended = leaf(0x8000_0000)?.eax;
    ensure!(
        max_extended >= SEV_CPUID_LEAF,
        "extended leaves end at {max_extended:#x}, before {SEV_CPUID_LEAF:#x}"
    );
    let r = leaf(SEV_CPUID_LEAF)?;
    let regs = [r.eax, r.ebx, r.ecx, r.edx];
    let sev = SevCpuid::from_regs(regs);
    let needed = SevCpuidFeatures::SEV | SevCpuidFeatures::SEV_ES;
    ensure!(
        sev.features.contains(needed),
        "CPUID {SEV_CPUID_LEAF:#x} EAX = {:#x} lacks SEV or SEV-ES",
        r.eax
    );
    ensure!(
        u32::from(sev.cbit) == SIM_C_BIT,
        "C-bit {} in CPUID {SEV_CPUID_LEAF:#x} EBX, expected {SIM_C_BIT}",
        sev.cbit
    );
    let early = ghcb::early_sev_cpuid().ok_or("no MSR-protocol answer recorded at boot")?;
    ensure!(
        early == regs,
        "through the GHCB {regs:#x?}, through the MSR protocol at boot {early:#x?}"
    );
    Ok(())
}
