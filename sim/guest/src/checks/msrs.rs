//! MSRs: SEV_STATUS and the GHCB MSR are read (and the GHCB MSR written) without an exit; any
//! other MSR access is a #VC with exit code 0x7C answered through the GHCB.

use sev::exit_code::ExitCode;
use sev::msr_protocol::{GHCB_MSR, MsrRequest};
use sev::sev_status::{SEV_STATUS_MSR, SevStatus};
use x86::msr::{IA32_TSC_AUX, rdmsr, wrmsr};

use super::{Outcome, no_vc, one_vc};
use crate::ghcb;

/// SEV_STATUS reads SEV | SEV-ES, no more (the simulator offers neither SNP nor any SEV
/// feature), and never exits.
pub fn sev_status() -> Outcome {
    // SAFETY: SEV_STATUS exists in every SEV guest; reading it has no side effects.
    let v = no_vc("RDMSR SEV_STATUS", || unsafe { rdmsr(SEV_STATUS_MSR) })?;
    let expected = SevStatus::SEV | SevStatus::SEV_ES;
    ensure!(
        v == expected.bits(),
        "SEV_STATUS = {v:#x}, expected {:#x} ({expected:?})",
        expected.bits()
    );
    Ok(())
}

/// The GHCB MSR is a plain per-vCPU register: it holds the registered GHCB GPA, and a value
/// written to it reads back, all without an exit.
pub fn ghcb_msr() -> Outcome {
    let gpa = ghcb::gpa();
    // SAFETY: the GHCB MSR exists in every SEV-ES guest; reading it has no side effects.
    let v = no_vc("RDMSR GHCB", || unsafe { rdmsr(GHCB_MSR) })?;
    ensure!(
        v == gpa,
        "GHCB MSR = {v:#x}, expected the GHCB GPA {gpa:#x}"
    );
    // An MSR-protocol request value that is never sent: only the register is exercised.
    let probe = MsrRequest::SevInfo.encode();
    let (back, restored) = no_vc("WRMSR/RDMSR GHCB", || {
        // SAFETY: no VMGEXIT happens between the two writes (no #VC is taken here), so nobody
        // acts on the probe value; the GPA is back in the MSR before this returns, which keeps
        // the channel's record of the MSR (the GPA, or nothing) true.
        unsafe {
            wrmsr(GHCB_MSR, probe);
            let back = rdmsr(GHCB_MSR);
            wrmsr(GHCB_MSR, gpa);
            (back, rdmsr(GHCB_MSR))
        }
    })?;
    ensure!(
        back == probe,
        "wrote {probe:#x} to the GHCB MSR, read back {back:#x}"
    );
    ensure!(
        restored == gpa,
        "wrote the GHCB GPA {gpa:#x} back, read {restored:#x}"
    );
    Ok(())
}

/// RDMSR/WRMSR of TSC_AUX go through the GHCB: two values of ours read back, then the original
/// value is restored.
pub fn msr() -> Outcome {
    // SAFETY: TSC_AUX exists (RDTSCP is part of the CPU model); reading it is harmless.
    let rd = || unsafe { rdmsr(IA32_TSC_AUX) };
    let original = one_vc("RDMSR TSC_AUX", ExitCode::Msr, rd)?;
    for value in [0x5a5a_0001, 0x0000_a5a5, original] {
        // SAFETY: TSC_AUX only feeds RDTSCP's ECX; its upper half must be (and is) zero.
        one_vc("WRMSR TSC_AUX", ExitCode::Msr, || unsafe {
            wrmsr(IA32_TSC_AUX, value)
        })?;
        let back = one_vc("RDMSR TSC_AUX", ExitCode::Msr, rd)?;
        ensure!(
            back == value,
            "wrote {value:#x} to TSC_AUX, read back {back:#x}"
        );
    }
    Ok(())
}
