//! This vCPU's channel to the hypervisor: the GHCB MSR, the GHCB page and the #VC core's
//! per-CPU state, one lock for all three.
//!
//! The GHCB is a 4 KiB page in .bss. The launch tables map the image identity (GVA == GPA) and
//! private, so its GPA is its own address; the guest and the hypervisor share it through the
//! launch tables' shared alias, `SHARED_ALIAS + GPA`, where the C-bit is clear. Its private view
//! is never used, except by the check that proves the simulator refuses a GHCB written there.
//!
//! Bring-up ([`establish`], through `sev::guest`) follows the GHCB specification: a CPUID
//! through the MSR protocol (the early #VC path), SEV information with protocol version 2 in
//! range, GHCB GPA registration, then the GPA in the GHCB MSR. Every failure terminates with its reason through
//! the MSR protocol, which works at any time.

use handoff::launch::{SHARED_ALIAS, SIM_C_BIT};
use sev::ghcb::Ghcb;
use sev::hw::{GhcbMsrRecord, HwGhcb, HwGhcbMsr};
use sev::msr_protocol::{self, SevInfo};
use sev::termination::{GuestReason, TerminationReason};
use sev::vc::VcPerCpu;

/// The GHCB page. Only reached through raw pointers: its shared view at `SHARED_ALIAS + GPA`
/// for every request, its private view in `Channel::private_ghcb`.
static mut PAGE: Ghcb = Ghcb::new();

struct State {
    /// The GHCB GPA is registered and in the GHCB MSR: #VCs go through the GHCB.
    registered: bool,
    cpu: VcPerCpu,
}

static STATE: spin::Mutex<State> = spin::Mutex::new(State {
    registered: false,
    cpu: VcPerCpu::new(),
});

/// What the GHCB MSR holds, as far as this (only) vCPU's transports know: the GHCB GPA is
/// written once, not before every VMGEXIT (each write is an exit under the simulator). Outside
/// the lock because [`terminate`] needs it too.
static MSR_RECORD: GhcbMsrRecord = GhcbMsrRecord::new();

static SEV_INFO: spin::Once<SevInfo> = spin::Once::new();
static EARLY_SEV_CPUID: spin::Once<[u32; 4]> = spin::Once::new();

/// The GHCB's guest-physical address (its identity-mapped address).
pub fn gpa() -> u64 {
    (&raw const PAGE) as u64
}

/// The GHCB's shared view.
fn shared_view() -> *mut Ghcb {
    (SHARED_ALIAS + gpa()) as *mut Ghcb
}

/// Exclusive use of the GHCB MSR, the GHCB and the #VC core's per-CPU state while a
/// [`with`] closure runs.
pub struct Channel<'a> {
    pub msr: HwGhcbMsr<'a>,
    /// The GHCB through its shared view; `None` before registration.
    pub ghcb: Option<HwGhcb<'a>>,
    pub cpu: &'a mut VcPerCpu,
}

impl Channel<'_> {
    /// The GHCB through its private (encrypted) view: what a hypervisor never gets to read.
    pub fn private_ghcb(&mut self) -> HwGhcb<'_> {
        let page = &raw mut PAGE;
        // SAFETY: PAGE is 4 KiB, aligned and identity-mapped private; the channel lock (held by
        // whoever has `self`) makes this the only reference to it; CPL 0 in an SEV-ES guest
        // with the GPA registered.
        unsafe { HwGhcb::new(&mut *page, gpa(), &MSR_RECORD) }
    }
}

/// Runs `f` with the channel. A second user while one is active (a #VC inside the #VC handler,
/// a fault while a check holds the channel) terminates the run: the GHCB holds a request in
/// flight that a nested user would destroy.
pub fn with<R>(f: impl FnOnce(&mut Channel<'_>) -> R) -> R {
    let Some(mut state) = STATE.try_lock() else {
        terminate(GuestReason::NestedVc.into())
    };
    let State { registered, cpu } = &mut *state;
    let ghcb = registered.then(|| {
        // SAFETY: the shared alias maps the GHCB's page (it is below 1 GiB) decrypted at its
        // GPA, which is registered and in the GHCB MSR; the lock makes this the only reference.
        unsafe { HwGhcb::new(&mut *shared_view(), gpa(), &MSR_RECORD) }
    });
    let mut channel = Channel {
        // SAFETY: CPL 0 in an SEV-ES guest; the lock makes this the only GHCB MSR user.
        msr: unsafe { HwGhcbMsr::new(&MSR_RECORD) },
        ghcb,
        cpu,
    };
    f(&mut channel)
}

/// Whether printing can work now: #VCs go through the GHCB, and nobody holds the channel (a
/// print would raise a #VC that needs it).
pub fn can_print() -> bool {
    STATE.try_lock().is_some_and(|s| s.registered)
}

/// Terminates the run through the MSR protocol (never returns).
pub fn terminate(reason: TerminationReason) -> ! {
    // SAFETY: CPL 0 in an SEV-ES guest. Whoever else may hold the GHCB MSR never runs again:
    // the termination request is repeated forever.
    let mut msr = unsafe { HwGhcbMsr::new(&MSR_RECORD) };
    msr_protocol::terminate(&mut msr, reason)
}

/// Brings the GHCB up (see the module docs) and returns the negotiated SEV information.
/// Call once, after the IDT and the decoder exist and before anything but CPUID raises #VC.
pub fn establish() -> SevInfo {
    let c_bit = SIM_C_BIT as u8;
    let early = sev::guest::check_sev_cpuid(c_bit).unwrap_or_else(|r| terminate(r));
    EARLY_SEV_CPUID.call_once(|| early);
    let mut state = STATE.lock();
    // SAFETY: CPL 0 in an SEV-ES guest; the lock makes this the only GHCB MSR user.
    let mut msr = unsafe { HwGhcbMsr::new(&MSR_RECORD) };
    let info = sev::guest::register_ghcb(&mut msr, gpa(), c_bit).unwrap_or_else(|r| terminate(r));
    state.registered = true;
    *SEV_INFO.call_once(|| info)
}

/// The SEV information negotiated at boot.
pub fn sev_info() -> Option<SevInfo> {
    SEV_INFO.get().copied()
}

/// CPUID 0x8000001F as the early #VC path (MSR protocol) answered it at boot.
pub fn early_sev_cpuid() -> Option<[u32; 4]> {
    EARLY_SEV_CPUID.get().copied()
}
