//! The kernel under SEV-ES (launched from IGVM, `BootInfo::sev_es`): a GHCB and #VC handling
//! per CPU, through the `sev::guest` pieces the stage's IGVM entry uses too, and the AP jump
//! table that starts and parks application processors.
//!
//! The kernel brings each CPU's GHCB up itself, once it runs on its own page tables: those map
//! the GHCB pages ([`PAGES`], in the kernel's `.bss`, one per possible CPU) shared, identity (so
//! a page's shared view is its own address: a shared alias of 0), and every other RAM page
//! private (`crate::memory`). On the boot CPU, from loading its IDT until then, nothing raises
//! #VC (no port I/O, no MSR or CPUID, no MMIO: the logger is not up yet), and a #VC that did
//! arrive would go through the MSR protocol, which serves CPUID only. Registering the kernel's
//! GHCB GPA replaces the stage's registration (the GHCB MSR protocol allows a new GPA at any
//! time).
//!
//! A #VC finds its CPU's channel through the per-CPU data (`crate::percpu::try_current`); before
//! a CPU installed its per-CPU data only the boot CPU can raise #VC (an AP installs it before
//! anything that exits: `crate::smp`), so such a #VC is the boot CPU's ([`channel`]).
//!
//! The NMI handler sends NMI_COMPLETE through the same channel ([`nmi_complete`]), borrowing
//! the GHCB when the NMI interrupted the #VC handler mid-request (`GhcbChannel`'s backup page).

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use sev::ghcb::GhcbField;
use sev::guest::{ApJumpTable, GhcbChannel, GhcbPage, LaunchTables, ParkMode};
use sev::hv_features::HvFeatures;
use sev::msr_protocol::GhcbVersion;
use sev::termination::TerminationReason;
use sev::vc::GhcbUse;
use sev::vc::VcConfig;
use x86::interrupts::InterruptFrame;

/// The most CPUs the kernel runs under SEV-ES: as many as a launch has vCPUs.
pub const MAX_CPUS: usize = handoff::launch::MAX_VCPUS as usize;

/// The GHCB page (and its backup) of each CPU, by per-CPU index.
static PAGES: [GhcbPage; MAX_CPUS] = [const { GhcbPage::new() }; MAX_CPUS];

/// Each CPU's channel to the hypervisor, on its page of [`PAGES`].
static CHANNELS: [GhcbChannel; MAX_CPUS] = {
    let mut c = [const { MaybeUninit::<GhcbChannel>::uninit() }; MAX_CPUS];
    let mut i = 0;
    while i < MAX_CPUS {
        // SAFETY: PAGES[i] is used by this channel only. The kernel's page tables map its first
        // page identity and shared (`crate::memory::init` maps every `ghcb_pages()` page without
        // the C-bit), so its shared view is at `0 + GPA`, and its backup page identity and
        // private (all RAM); the channel serves the CPU with per-CPU index i, at CPL 0 in an
        // SEV-ES guest, where nothing else touches that CPU's GHCB MSR but the AP jump table's
        // parking code, after which the CPU calls `after_reset_hold` (`init_ap`).
        c[i] = MaybeUninit::new(unsafe { GhcbChannel::new(&PAGES[i], 0) });
        i += 1;
    }
    // SAFETY: every element was initialised above; MaybeUninit<T> has T's layout.
    unsafe {
        core::mem::transmute::<[MaybeUninit<GhcbChannel>; MAX_CPUS], [GhcbChannel; MAX_CPUS]>(c)
    }
};

/// The kernel's page tables as the #VC core walks them (identity, C-bit in table pointers and
/// private leaves, permissions in the leaves: the layout `sev::guest::LaunchTables` reads).
static TABLES: LaunchTables = LaunchTables::new();

/// Set once the boot CPU runs under SEV-ES ([`enter`]): #VC is served, failures terminate
/// through the GHCB.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Per CPU, the exit code of the #VC it is handling, [`NO_VC`] when none: tells the NMI
/// handler which request it interrupted.
static VC_IN_PROGRESS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NO_VC) }; MAX_CPUS];

/// The C-bit position, for the APs' GHCB bring-up.
static C_BIT: AtomicU64 = AtomicU64::new(0);

/// [`VC_IN_PROGRESS`] outside the #VC handler (no SVM exit code has all bits set).
const NO_VC: u64 = u64::MAX;

/// Whether the kernel runs under SEV-ES.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// The GHCB pages' addresses (their GPAs): `crate::memory` maps them shared.
pub fn ghcb_pages() -> impl Iterator<Item = u64> {
    CHANNELS.iter().map(GhcbChannel::gpa)
}

/// The running CPU's per-CPU index: 0 before it installed its per-CPU data (only the boot CPU
/// raises #VC then, see the module docs).
fn cpu_index() -> usize {
    crate::percpu::try_current().map_or(0, |c| c.index)
}

/// The running CPU's channel.
fn channel() -> &'static GhcbChannel {
    &CHANNELS[cpu_index()]
}

/// The boot CPU's GHCB page (its GPA), for the log.
pub fn boot_ghcb_page() -> u64 {
    CHANNELS[0].gpa()
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
    C_BIT.store(u64::from(position), Ordering::Release);
    TABLES.init(position);
    sev::vc::init_decoder();
    match CHANNELS[0].establish(position as u8) {
        Ok(e) => {
            if let Some(f) = e.hv_features {
                HV_FEATURES.call_once(|| f);
            }
        }
        Err(r) => terminate(r),
    }
}

/// What HV_FEATURES offered on the boot CPU (checked against what the kernel needs by
/// `GhcbChannel::establish`), for the log; never set under GHCB protocol version 1.
static HV_FEATURES: spin::Once<HvFeatures> = spin::Once::new();

/// The hypervisor features the boot CPU's GHCB bring-up was offered: `None` under GHCB
/// protocol version 1, which has no HV_FEATURES.
pub fn hv_features() -> Option<HvFeatures> {
    HV_FEATURES.get().copied()
}

/// The GHCB protocol version the boot CPU negotiated (the APs negotiate the same with the same
/// hypervisor, each on its own channel); `None` before [`init`] or without SEV-ES. What the
/// kernel can ask of the hypervisor depends on it: under version 1 no AP Reset Hold, hence no
/// CPU offline (`crate::smp`).
pub fn ghcb_version() -> Option<GhcbVersion> {
    CHANNELS[0].protocol_version()
}

/// Brings up the GHCB of the running AP, whose per-CPU data (index `index`) is installed: the
/// first time through `GhcbChannel::establish`, after a park in AP Reset Hold by telling the
/// channel that the parking code used the GHCB MSR. Failures terminate the guest.
pub fn init_ap(index: usize) {
    let Some(ch) = CHANNELS.get(index) else {
        terminate(sev::termination::GuestReason::LaunchParameters.into())
    };
    if ch.registered() {
        ch.after_reset_hold();
    } else if let Err(r) = ch.establish(C_BIT.load(Ordering::Acquire) as u8) {
        terminate(r)
    }
}

/// Installs the AP jump table at `gpa` (reserved by the stage, below 4 GiB) with `reset_vector`
/// (CS, IP) and registers it with the hypervisor (AP_JUMP_TABLE). Call after [`init`] and
/// before starting any AP: the launch's APs park on it. It parks in AP Reset Hold when the
/// negotiated GHCB protocol has it (version 2); under version 1 it passes straight through to
/// the reset vector (`ParkMode`), which is why the reset vector is written first.
pub fn install_ap_jump_table(
    gpa: u64,
    reset_vector: (u16, u16),
) -> Result<ApJumpTable, ApJumpTableError> {
    let version = ghcb_version().ok_or(ApJumpTableError::Refused(
        sev::termination::GuestReason::GhcbRegistration.into(),
    ))?;
    // SAFETY: the stage reserved the page for this (bootloader memory, identity-mapped private
    // by the kernel's tables) and no AP has been started, so none runs from it.
    let table = unsafe { ApJumpTable::install(gpa, ParkMode::for_version(version)) }
        .map_err(|_| ApJumpTableError::BadPage(gpa))?;
    table.set_reset_vector(reset_vector.0, reset_vector.1);
    nae_request(|ghcb| sev::nae::ap_jump_table_set(ghcb, gpa))
        .map_err(ApJumpTableError::Refused)?;
    Ok(table)
}

/// Runs the NAE request `f` through the running CPU's GHCB; what the hypervisor refused, or a
/// GHCB that is not up yet, comes back as the reason to give up with.
fn nae_request<R>(
    f: impl FnOnce(&mut sev::hw::HwGhcb<'_>) -> Result<R, sev::nae::NaeError>,
) -> Result<R, TerminationReason> {
    channel().with(|ch| match ch.ghcb.as_mut() {
        Some(ghcb) => f(ghcb).map_err(|e| TerminationReason::from(e.reason())),
        None => Err(sev::termination::GuestReason::GhcbRegistration.into()),
    })
}

/// The AP jump table the firmware registered (AP_JUMP_TABLE GET; 0 when none was): under an
/// SEV-ES firmware (OVMF) its APs park there and wake through its reset vector. The hypervisor
/// answers: the caller checks the page before writing to it.
pub fn firmware_ap_jump_table() -> Result<u64, ApJumpTableError> {
    nae_request(|ghcb| sev::nae::ap_jump_table_get(ghcb)).map_err(ApJumpTableError::Refused)
}

/// Why the AP jump table could not be set up.
#[derive(Clone, Copy, Debug)]
pub enum ApJumpTableError {
    /// The stage named no usable page.
    BadPage(u64),
    /// The hypervisor refused AP_JUMP_TABLE.
    Refused(TerminationReason),
}

impl core::fmt::Display for ApJumpTableError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Self::BadPage(gpa) => write!(f, "no usable AP jump table page (got {gpa:#x})"),
            Self::Refused(r) => write!(f, "AP_JUMP_TABLE refused ({r:?})"),
        }
    }
}

/// Handles a #VC of the running CPU. A #DB the hypervisor intercepted (exit code 0x41) comes
/// back from the channel as the exception to raise and goes to the kernel's #DB handler, after
/// the channel and this #VC's request are done with (`crate::interrupts::debug`); any other
/// exception the #VC core asks for ends the run (the kernel expects none).
pub fn handle_vc(frame: &mut InterruptFrame) {
    let cfg = VcConfig {
        cpuid_page: None,
        // VMMCALLs with the SEV-ES simulator's prefix go to the hypervisor (the NMI tests use
        // them); any other VMMCALL raises #UD.
        hypercalls: &sev::guest::SimHypercalls,
    };
    let cpu = cpu_index();
    let outer = VC_IN_PROGRESS[cpu].swap(frame.error_code, Ordering::AcqRel);
    let raised = CHANNELS[cpu].handle_vc(frame, &TABLES, &cfg);
    VC_IN_PROGRESS[cpu].store(outer, Ordering::Release);
    match raised {
        None => {}
        Some(sev::exception::Exception::Db) => {
            crate::interrupts::debug(frame, crate::interrupts::DebugVia::Vc)
        }
        Some(e) => CHANNELS[cpu].raised_fatal(frame, e, "kernel: "),
    }
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
    let cpu = cpu_index();
    let vc = VC_IN_PROGRESS[cpu].load(Ordering::Acquire);
    match CHANNELS[cpu].nmi_complete() {
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
    let ch = channel();
    ch.with(|_| {
        let field = ch.gpa() + GhcbField::SwExitCode.offset() as u64;
        // SAFETY: an aligned u64 inside the GHCB page, which the kernel maps identity (shared);
        // the channel is held, so no request is in flight; volatile because the hypervisor
        // writes the page.
        unsafe { core::ptr::read_volatile(field as *const u64) }
    })
}

/// Whether the running CPU's GHCB is up, so that a print (port I/O, a #VC) can work: before
/// it, only CPUID is served and the print's #VC would terminate the guest.
pub fn can_print() -> bool {
    channel().registered()
}

/// Asks the hypervisor to end the guest with `reason` (through the GHCB when it is up).
pub fn terminate(reason: TerminationReason) -> ! {
    channel().terminate(reason)
}
