//! The kernel under SEV-ES (launched from IGVM, `BootInfo::sev_es`): its own GHCB and #VC
//! handling, through the `sev::guest` pieces the stage's IGVM entry uses too.
//!
//! The kernel brings its GHCB up itself, once it runs on its own page tables: those map the
//! GHCB page ([`GHCB_PAGE`], in the kernel's `.bss`) shared, identity (so its shared view is its
//! own address: a shared alias of 0), and every other RAM page private
//! (`crate::memory`). From loading its IDT until then, nothing in the kernel raises #VC (no
//! port I/O, no MSR or CPUID, no MMIO: the logger is not up yet), and a #VC that did arrive
//! would go through the MSR protocol, which serves CPUID only. Registering the kernel's GHCB GPA
//! replaces the stage's registration (the GHCB MSR protocol allows a new GPA at any time).
//!
//! The NMI handler sends NMI_COMPLETE through the same channel ([`nmi_complete`]), borrowing
//! the GHCB when the NMI interrupted the #VC handler mid-request (`GhcbChannel`'s backup page).
//!
//! One channel serves the boot CPU; the APs are not started (SMP under SEV-ES, with a
//! channel per CPU, is the next step of issue 5).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sev::ghcb::GhcbField;
use sev::guest::{GhcbChannel, GhcbPage, LaunchTables};
use sev::termination::TerminationReason;
use sev::vc::GhcbUse;
use sev::vc::{NoHypercalls, VcConfig};
use x86::interrupts::InterruptFrame;

/// The boot CPU's GHCB page.
static GHCB_PAGE: GhcbPage = GhcbPage::new();

/// The boot CPU's channel to the hypervisor.
static GHCB: GhcbChannel = {
    // SAFETY: GHCB_PAGE is used by this channel only. The kernel's page tables map its first
    // page identity and shared (`crate::memory::init` maps `ghcb_page()` without the C-bit), so
    // its shared view is at `0 + GPA`, and its backup page identity and private (all RAM); the channel serves the boot CPU at CPL 0 in an SEV-ES guest, where
    // nothing else touches the GHCB MSR (the APs are not started).
    unsafe { GhcbChannel::new(&GHCB_PAGE, 0) }
};

/// The kernel's page tables as the #VC core walks them (identity, C-bit in table pointers and
/// private leaves, permissions in the leaves: the layout `sev::guest::LaunchTables` reads).
static TABLES: LaunchTables = LaunchTables::new();

/// Set once the boot CPU runs under SEV-ES ([`enter`]): #VC is served, failures terminate
/// through the GHCB.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The exit code of the #VC the boot CPU is handling, [`NO_VC`] when none: tells the NMI
/// handler which request it interrupted.
static VC_IN_PROGRESS: AtomicU64 = AtomicU64::new(NO_VC);

/// [`VC_IN_PROGRESS`] outside the #VC handler (no SVM exit code has all bits set).
const NO_VC: u64 = u64::MAX;

/// Whether the kernel runs under SEV-ES.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// The GHCB page's address (its GPA): `crate::memory` maps it shared.
pub fn ghcb_page() -> u64 {
    GHCB.gpa()
}

/// Marks the kernel as running under SEV-ES: from now on #VC goes to [`handle_vc`]. Call right
/// after loading the IDT, before anything can raise #VC.
pub fn enter() {
    ACTIVE.store(true, Ordering::Release);
}

/// Brings the GHCB up on the kernel's own tables, whose C-bit is `c_bit` (a mask): the #VC
/// core's decoder (needs the heap), then `GhcbChannel::establish`. Call after `crate::memory`
/// switched to the kernel's tables and the heap exists; failures terminate the guest.
pub fn init(c_bit: u64) {
    if !c_bit.is_power_of_two() {
        terminate(sev::termination::GuestReason::LaunchParameters.into());
    }
    let position = c_bit.trailing_zeros();
    TABLES.init(position);
    sev::vc::init_decoder();
    if let Err(r) = GHCB.establish(position as u8) {
        terminate(r)
    }
}

/// Handles a #VC of the boot CPU.
pub fn handle_vc(frame: &mut InterruptFrame) {
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &NoHypercalls,
    };
    let outer = VC_IN_PROGRESS.swap(frame.error_code, Ordering::AcqRel);
    GHCB.handle_vc(frame, &TABLES, &cfg, "kernel: ");
    VC_IN_PROGRESS.store(outer, Ordering::Release);
}

/// What [`nmi_complete`] found.
#[derive(Clone, Copy, Debug)]
pub struct NmiCompleted {
    /// The exit code of the #VC the NMI interrupted, if it interrupted the #VC handler.
    pub interrupted_vc: Option<u64>,
    /// The NMI borrowed the GHCB from that #VC handler in the middle of its request (saved
    /// into the backup page and restored afterwards).
    pub borrowed: bool,
}

/// Sends NMI_COMPLETE for the NMI being handled: the last thing the NMI handler does before
/// its IRET, else the hypervisor delivers no further NMI. Works when the NMI interrupted the
/// #VC handler, which may hold the GHCB (`GhcbChannel::nmi_complete`); failures terminate.
pub fn nmi_complete() -> NmiCompleted {
    let vc = VC_IN_PROGRESS.load(Ordering::Acquire);
    match GHCB.nmi_complete() {
        Ok(u) => NmiCompleted {
            interrupted_vc: (vc != NO_VC).then_some(vc),
            borrowed: u == GhcbUse::Nested,
        },
        Err(r) => terminate(r),
    }
}

/// The SW_EXITCODE field of the GHCB page as it stands, whatever the valid bitmap says (a
/// reply clears the bitmap; the field keeps the last request's exit code). For the `nmi` test:
/// right after an NMI borrowed the GHCB from the #VC handler, the page must hold that
/// handler's request again, not NMI_COMPLETE.
pub fn ghcb_exit_code() -> u64 {
    GHCB.with(|_| {
        let field = GHCB.gpa() + GhcbField::SwExitCode.offset() as u64;
        // SAFETY: an aligned u64 inside the GHCB page, which the kernel maps identity (shared);
        // the channel is held, so no request is in flight; volatile because the hypervisor
        // writes the page.
        unsafe { core::ptr::read_volatile(field as *const u64) }
    })
}

/// Asks the hypervisor to end the guest with `reason` (through the GHCB when it is up).
pub fn terminate(reason: TerminationReason) -> ! {
    GHCB.terminate(reason)
}
