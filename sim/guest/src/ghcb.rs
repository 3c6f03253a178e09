//! This vCPU's channel to the hypervisor: `sev::guest::GhcbChannel` (the GHCB MSR, the GHCB page
//! and the #VC core's per-CPU state, one lock for all three), and what the bring-up found out,
//! for the checks.
//!
//! The GHCB is a 4 KiB page in .bss, shared with the simulator through the launch tables'
//! shared alias. Its private view is never used, except by the check that proves the simulator
//! refuses a GHCB written there (`HeldChannel::private_ghcb`).
//!
//! Bring-up ([`establish`]) follows the GHCB specification: a CPUID through the MSR protocol
//! (the early #VC path), SEV information and protocol negotiation (version 2, or 1 from a
//! version 1 hypervisor: `checks::ghcb_v1`), then the GPA in the GHCB MSR. Every failure terminates with its reason through
//! the MSR protocol, which works at any time.

use handoff::launch::{SHARED_ALIAS, SIM_C_BIT};
use sev::guest::{GhcbChannel, GhcbPage, HeldChannel};
use sev::msr_protocol::SevInfo;
use sev::termination::TerminationReason;

/// The boot vCPU's channel (the APs never raise #VC and talk through GHCBs of their own).
pub static CHANNEL: GhcbChannel = {
    static PAGE: GhcbPage = GhcbPage::new();
    // SAFETY: PAGE is declared here, so this channel is its only user; it is in the image,
    // below 1 GiB, which the launch tables map identity and private, and decrypted at
    // SHARED_ALIAS + GPA; the channel serves the boot vCPU, at CPL 0 in an SEV-ES guest, where
    // everything else that touches the GHCB MSR goes through it.
    unsafe { GhcbChannel::new(&PAGE, SHARED_ALIAS) }
};

static SEV_INFO: spin::Once<SevInfo> = spin::Once::new();
static EARLY_SEV_CPUID: spin::Once<[u32; 4]> = spin::Once::new();

/// The GHCB's guest-physical address (its identity-mapped address).
pub fn gpa() -> u64 {
    CHANNEL.gpa()
}

/// Runs `f` with the channel (`GhcbChannel::with`: a second user terminates the run).
pub fn with<R>(f: impl FnOnce(&mut HeldChannel<'_>) -> R) -> R {
    CHANNEL.with(f)
}

/// Whether printing can work now: #VCs go through the GHCB, and nobody holds the channel (a
/// print would raise a #VC that needs it).
pub fn can_print() -> bool {
    CHANNEL.can_print()
}

/// Terminates the run (never returns). Its callers run where the GHCB is not usable (before
/// registration, or with the channel held), so the request goes through the MSR protocol.
pub fn terminate(reason: TerminationReason) -> ! {
    CHANNEL.terminate(reason)
}

/// Brings the GHCB up (see the module docs) and returns the negotiated SEV information.
/// Call once, after the IDT and the decoder exist and before anything but CPUID raises #VC.
pub fn establish() -> SevInfo {
    let up = CHANNEL
        .establish(SIM_C_BIT as u8)
        .unwrap_or_else(|r| terminate(r));
    EARLY_SEV_CPUID.call_once(|| up.sev_cpuid);
    *SEV_INFO.call_once(|| up.info)
}

/// The SEV information negotiated at boot.
pub fn sev_info() -> Option<SevInfo> {
    SEV_INFO.get().copied()
}

/// CPUID 0x8000001F as the early #VC path (MSR protocol) answered it at boot.
pub fn early_sev_cpuid() -> Option<[u32; 4]> {
    EARLY_SEV_CPUID.get().copied()
}
