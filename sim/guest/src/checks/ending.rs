//! Checks selected by name only that end the run themselves: termination requests (the
//! simulator exits with status 37 and prints the reason), INVD (which the #VC core refuses by
//! terminating) and an interrupt injected on #VC (which the guest refuses the same way), where
//! returning means failing.

use core::arch::asm;
use sev::msr_protocol;
use sev::nae;
use sev::termination::{GuestReason, REASON_SET_GUEST, TerminationReason};

use super::Outcome;
use crate::ghcb;

/// The reason code of this guest's own termination requests (reason set 1), far above the codes
/// `GuestReason` defines so the two never meet: the MSR-protocol request.
pub const TERMINATE_MSR_CODE: u8 = 0xa5;
/// As [`TERMINATE_MSR_CODE`], for the GHCB TERM_REQUEST event.
pub const TERMINATE_GHCB_CODE: u8 = 0xa6;

/// Termination through the GHCB MSR protocol.
pub fn terminate() -> Outcome {
    x86::serial_println!(
        "simguest: requesting termination through the MSR protocol: reason set {REASON_SET_GUEST}, code {TERMINATE_MSR_CODE:#x}"
    );
    let reason = TerminationReason::new(REASON_SET_GUEST, TERMINATE_MSR_CODE);
    ghcb::with(|ch| msr_protocol::terminate(&mut ch.msr, reason))
}

/// Termination through the GHCB's TERM_REQUEST event.
pub fn terminate_ghcb() -> Outcome {
    x86::serial_println!(
        "simguest: requesting termination through the GHCB: reason set {REASON_SET_GUEST}, code {TERMINATE_GHCB_CODE:#x}"
    );
    let reason = TerminationReason::new(REASON_SET_GUEST, TERMINATE_GHCB_CODE);
    ghcb::with(|ch| match ch.ghcb.as_mut() {
        Some(t) => nae::terminate(t, reason),
        None => Err("no GHCB registered".into()),
    })
}

/// INVD would drop dirty lines of encrypted memory: the #VC core terminates instead.
pub fn invd() -> Outcome {
    x86::serial_println!(
        "simguest: INVD, which the #VC core refuses: reason set {REASON_SET_GUEST}, code {:#x}",
        GuestReason::InvdRefused as u8
    );
    // SAFETY: INVD raises #VC under SEV-ES, and the #VC core terminates rather than emulate it;
    // were it executed, this guest keeps nothing in the caches it would miss.
    unsafe { asm!("invd", options(nostack, preserves_flags)) };
    Err("INVD returned".into())
}

/// The simulator injects an external interrupt on #VC (test hypercall `INJECT_INTERRUPT`, right
/// after the hypercall's VMGEXIT): its frame lacks the error code a #VC pushes, and the guest
/// terminates instead of taking the interrupted RIP for an exit code.
pub fn injected_vc() -> Outcome {
    use handoff::sim_hypercall::INJECT_INTERRUPT;
    x86::serial_println!(
        "simguest: an interrupt on #VC, which the guest refuses: reason set {REASON_SET_GUEST}, code {:#x}",
        GuestReason::MissingErrorCode as u8
    );
    let rax = sev::guest::vmmcall(
        INJECT_INTERRUPT,
        u64::from(x86::idt::vector::VMM_COMMUNICATION),
    );
    Err(alloc::format!(
        "the guest resumed after the interrupt (hypercall RAX {rax:#x})"
    ))
}
