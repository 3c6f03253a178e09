//! A vCPU's channel to the hypervisor: the GHCB MSR, the GHCB page and the #VC core's per-CPU
//! state behind one lock, its bring-up, and the #VC handler that uses it.
//!
//! A guest on the launch page tables keeps its GHCB in a page of its image. The launch tables
//! map the image identity (GVA == GPA) and private, so the GHCB's GPA is its own address; guest
//! and hypervisor share it through the launch tables' shared alias window, `SHARED_ALIAS + GPA`,
//! where the C-bit is clear. The simulator's test guest and the stage's IGVM entry each keep one
//! [`GhcbChannel`] in a static for the vCPU that raises #VC (their APs never do).
//!
//! One lock covers the MSR, the page and the per-CPU state because a request in flight spans
//! all three: a second user while one is active (a #VC inside the #VC handler, a fault while a
//! caller holds the channel) would destroy it, so it terminates the guest instead.

use core::cell::UnsafeCell;

use x86::interrupts::{InterruptFrame, fatal};

use super::{InterruptRegs, LaunchTables, VcNext, check_sev_cpuid, dispatch_vc, register_ghcb};
use crate::ghcb::Ghcb;
use crate::hw::{GhcbMsrRecord, HwGhcb, HwGhcbMsr};
use crate::msr_protocol::{self, SevInfo};
use crate::termination::{GuestReason, TerminationReason};
use crate::vc::{VcConfig, VcPerCpu};

/// The page a [`GhcbChannel`] uses as its GHCB. A static of its own, apart from the channel,
/// so that it stays in `.bss` (the channel's state is not all zeroes, and would pull the whole
/// page into the image file with it). Reached only through the one channel built on it.
#[repr(transparent)]
pub struct GhcbPage(UnsafeCell<Ghcb>);

// SAFETY: the page is only reached through the `GhcbChannel` it was given to (its contract
// excludes a second one), which hands out references under its lock.
unsafe impl Sync for GhcbPage {}

impl Default for GhcbPage {
    fn default() -> Self {
        Self::new()
    }
}

impl GhcbPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(Ghcb::new()))
    }
}

/// What the lock guards besides the page and the MSR.
struct State {
    /// The GHCB GPA is registered and in the GHCB MSR: #VCs go through the GHCB.
    registered: bool,
    cpu: VcPerCpu,
}

/// The GHCB channel of one vCPU (see the module docs).
pub struct GhcbChannel {
    page: &'static GhcbPage,
    /// Where the launch tables map all memory decrypted: the GHCB's shared view is at
    /// `shared_alias + GPA`.
    shared_alias: u64,
    state: spin::Mutex<State>,
    /// What the GHCB MSR holds, as far as this vCPU's transports know: the GHCB GPA is written
    /// once, not before every VMGEXIT (each write is an exit). Outside the lock because
    /// [`terminate`](Self::terminate) needs it while someone may hold the lock.
    record: GhcbMsrRecord,
}

/// What [`GhcbChannel::establish`] found out.
#[derive(Clone, Copy, Debug)]
pub struct Established {
    /// The negotiated SEV information.
    pub info: SevInfo,
    /// CPUID 0x8000001F as the early #VC path (MSR protocol) answered it, EAX, EBX, ECX, EDX.
    pub sev_cpuid: [u32; 4],
}

/// Exclusive use of the GHCB MSR, the GHCB and the #VC core's per-CPU state while a
/// [`GhcbChannel::with`] closure runs.
pub struct HeldChannel<'a> {
    pub msr: HwGhcbMsr<'a>,
    /// The GHCB through its shared view; `None` before registration.
    pub ghcb: Option<HwGhcb<'a>>,
    pub cpu: &'a mut VcPerCpu,
    page: &'a GhcbPage,
    record: &'a GhcbMsrRecord,
}

impl HeldChannel<'_> {
    /// The GHCB through its private (encrypted) view: what a hypervisor only ever reads as
    /// ciphertext. For checks that the hypervisor refuses a GHCB written there; nothing else
    /// uses it.
    pub fn private_ghcb(&mut self) -> HwGhcb<'_> {
        let gpa = self.page.0.get() as u64;
        // SAFETY: the page is 4 KiB, aligned and identity-mapped private (`GhcbChannel::new`);
        // the channel lock, held by whoever has `self` (borrowed mutably here, so its shared
        // view is not in use meanwhile), makes this the only reference to it; CPL 0 in an
        // SEV-ES guest with the GPA registered.
        unsafe { HwGhcb::new(&mut *self.page.0.get(), gpa, self.record) }
    }
}

impl GhcbChannel {
    /// A channel on `page`, not yet registered ([`establish`](Self::establish) does that).
    ///
    /// # Safety
    /// `page` is used by this channel only; the caller's page tables map it identity (its
    /// address is its GPA) and `shared_alias + GPA` maps it decrypted; the channel serves one
    /// vCPU, running at CPL 0 in an SEV-ES guest, and nothing else on that vCPU uses the GHCB
    /// MSR. The launch tables of `handoff::launch` do the mapping part for an image below 1 GiB.
    pub const unsafe fn new(page: &'static GhcbPage, shared_alias: u64) -> Self {
        Self {
            page,
            shared_alias,
            state: spin::Mutex::new(State {
                registered: false,
                cpu: VcPerCpu::new(),
            }),
            record: GhcbMsrRecord::new(),
        }
    }

    /// The GHCB's guest-physical address (its identity-mapped address).
    pub fn gpa(&self) -> u64 {
        self.page.0.get() as u64
    }

    /// The GHCB's shared view.
    fn shared_view(&self) -> *mut Ghcb {
        (self.shared_alias + self.gpa()) as *mut Ghcb
    }

    /// The GHCB MSR.
    fn msr(&self) -> HwGhcbMsr<'_> {
        // SAFETY: CPL 0 in an SEV-ES guest, the channel's own record (`new`'s contract). Every
        // caller holds the lock, or terminates: whoever else may hold the MSR never runs again.
        unsafe { HwGhcbMsr::new(&self.record) }
    }

    /// The registered GHCB through its shared view. Only with the lock held and the GPA
    /// registered.
    fn shared_ghcb(&self) -> HwGhcb<'_> {
        // SAFETY: the shared alias maps the page decrypted at its GPA (`new`'s contract), which
        // is registered and in the GHCB MSR; the caller holds the lock, which makes this the
        // only reference to the page and the only user of the MSR.
        unsafe { HwGhcb::new(&mut *self.shared_view(), self.gpa(), &self.record) }
    }

    /// Brings the GHCB up for page tables whose C-bit is at `c_bit`, as the GHCB specification
    /// orders it: CPUID 0x8000001F through the early #VC path, checked against SEV_STATUS;
    /// protocol negotiation (version 2); GHCB GPA registration, then the GPA in the GHCB MSR.
    /// Call once, after the IDT routes #VC to [`handle_vc`](Self::handle_vc) and the #VC
    /// core's decoder exists. Fails with the reason to terminate with.
    pub fn establish(&self, c_bit: u8) -> Result<Established, TerminationReason> {
        let sev_cpuid = check_sev_cpuid(c_bit)?;
        let mut state = self.state.lock();
        let info = register_ghcb(&mut self.msr(), self.gpa(), c_bit)?;
        state.registered = true;
        Ok(Established { info, sev_cpuid })
    }

    /// Whether the GHCB is up and free: a print (port I/O, a #VC) can work now.
    pub fn can_print(&self) -> bool {
        self.state.try_lock().is_some_and(|s| s.registered)
    }

    /// Asks the hypervisor to terminate the guest with `reason` (never returns): through the
    /// GHCB when it is up and free, else through the MSR protocol, which works at any time.
    pub fn terminate(&self, reason: TerminationReason) -> ! {
        if let Some(state) = self.state.try_lock()
            && state.registered
        {
            // The lock stays held until the guest ends.
            crate::nae::terminate(&mut self.shared_ghcb(), reason)
        }
        msr_protocol::terminate(&mut self.msr(), reason)
    }

    /// Runs `f` with the channel held. A second user while one is active terminates the guest
    /// (see the module docs).
    pub fn with<R>(&self, f: impl FnOnce(&mut HeldChannel<'_>) -> R) -> R {
        let Some(mut state) = self.state.try_lock() else {
            self.terminate(GuestReason::NestedVc.into())
        };
        let State { registered, cpu } = &mut *state;
        let mut held = HeldChannel {
            msr: self.msr(),
            ghcb: registered.then(|| self.shared_ghcb()),
            cpu,
            page: self.page,
            record: &self.record,
        };
        f(&mut held)
    }

    /// Handles one #VC (vector 29) of this channel's vCPU with the interrupted `frame`: CPUID
    /// through the MSR protocol before the GHCB exists, everything the #VC core emulates
    /// afterwards ([`dispatch_vc`]), on the launch page tables `tables`. The guest never loads
    /// FS or GS bases (the launch state's 0 holds). An exception the core asks for is not
    /// expected by either guest: it is reported as `{prefix}#VC exit code .. at RIP .. raised
    /// ..`, after the channel is released, and ends the run with the register dump (`fatal`).
    pub fn handle_vc(
        &self,
        frame: &mut InterruptFrame,
        tables: &LaunchTables,
        cfg: &VcConfig<'_>,
        prefix: &str,
    ) {
        let exit_code = frame.error_code;
        let next = self.with(|ch| {
            let mut regs = InterruptRegs::new(frame, 0, 0);
            dispatch_vc(
                exit_code,
                &mut regs,
                &mut tables.memory(),
                &mut ch.msr,
                ch.ghcb.as_mut(),
                ch.cpu,
                cfg,
            )
        });
        match next {
            VcNext::Resume(n) => frame.rip += n,
            VcNext::Raise(e) => {
                x86::serial::force_unlock();
                x86::serial_println!(
                    "{prefix}#VC exit code {exit_code:#x} at RIP {:#x} raised {e:?}",
                    frame.rip
                );
                fatal(frame)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PAGE: GhcbPage = GhcbPage::new();
    // SAFETY: the test only looks at the channel's state; it never reaches the GHCB MSR or the
    // page (nothing here reads or writes either).
    static CHANNEL: GhcbChannel = unsafe { GhcbChannel::new(&PAGE, 1 << 40) };

    #[test]
    fn unregistered_channel_has_no_ghcb_and_cannot_print() {
        assert_eq!(CHANNEL.gpa(), PAGE.0.get() as u64);
        assert_eq!(CHANNEL.gpa() % 4096, 0);
        assert_eq!(CHANNEL.shared_view() as u64, (1 << 40) + CHANNEL.gpa());
        assert!(!CHANNEL.can_print());
        let held_can_print = CHANNEL.with(|ch| {
            assert!(ch.ghcb.is_none());
            CHANNEL.can_print()
        });
        assert!(!held_can_print);
    }
}
