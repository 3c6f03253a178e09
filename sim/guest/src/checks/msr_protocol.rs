//! The GHCB MSR protocol after boot: SEV information, CPUID one register at a time (equal to
//! the GHCB's answer for the same leaf) and hypervisor features. Every request restores the
//! GHCB GPA in the MSR afterwards. (GHCB GPA registration is an SEV-SNP request, which ends an
//! SEV-ES guest's run: `faults::ghcb_registration`.)

use handoff::launch::SIM_C_BIT;
use sev::cpuid::SEV_CPUID_LEAF;
use sev::msr_protocol::{self, GhcbMsr};
use sev::nae;

use super::Outcome;
use crate::ghcb;

/// Leaves compared between the two CPUID paths (none of them depends on ECX or XCR0, which the
/// MSR protocol cannot carry).
const LEAVES: [u32; 4] = [0, 1, 0x8000_0000, SEV_CPUID_LEAF];

pub fn msr_protocol() -> Outcome {
    let gpa = ghcb::gpa();
    ghcb::with(|ch| {
        let info = msr_protocol::negotiate(&mut ch.msr)
            .map_err(|e| alloc::format!("SEV information: {e:?}"))?;
        ensure!(
            u32::from(info.cbit) == SIM_C_BIT,
            "SEV information names C-bit {}, expected {SIM_C_BIT}",
            info.cbit
        );
        ensure!(
            Some(info) == ghcb::sev_info(),
            "SEV information {info:?} differs from the boot answer {:?}",
            ghcb::sev_info()
        );
        let Some(t) = ch.ghcb.as_mut() else {
            return Err("no GHCB registered".into());
        };
        for leaf in LEAVES {
            let by_msr = msr_protocol::cpuid(&mut ch.msr, leaf)
                .map_err(|e| alloc::format!("CPUID {leaf:#x} through the MSR protocol: {e:?}"))?;
            let by_ghcb = nae::cpuid(t, leaf, 0, 1)
                .map_err(|e| alloc::format!("CPUID {leaf:#x} through the GHCB: {e:?}"))?;
            ensure!(
                by_msr == by_ghcb,
                "CPUID {leaf:#x}: MSR protocol {by_msr:#x?}, GHCB {by_ghcb:#x?}"
            );
        }
        msr_protocol::hv_features(&mut ch.msr)
            .map_err(|e| alloc::format!("hypervisor features: {e:?}"))?;
        let now = ch.msr.read();
        ensure!(
            now == gpa,
            "GHCB MSR = {now:#x} after the requests, expected the GHCB GPA {gpa:#x}"
        );
        Ok(())
    })
}
