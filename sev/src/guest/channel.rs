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
//!
//! The one exception is a user that cannot wait and cannot be refused: the NMI handler, which
//! must send NMI_COMPLETE before its IRET (GHCB specification, "NMI Complete") and may have
//! interrupted the #VC handler in the middle of a request (a self-NMI arrives right after the
//! ICR write's VMGEXIT, inside the #VC handler). [`GhcbChannel::with_ghcb_interrupting`] serves
//! it as Linux does: it borrows the GHCB from the interrupted holder, saving the page into a
//! private backup page first and restoring it (and the GHCB MSR) afterwards
//! ([`GhcbNesting`]), one level deep. A #VC that user raises (the NMI handler's port I/O or
//! CPUID) is served the same way: [`GhcbChannel::handle_vc`] finding the channel held borrows
//! the GHCB, with a #VC core state of its own (the holder's is in use below it).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use x86::interrupts::InterruptFrame;

use super::{InterruptRegs, LaunchTables, VcNext, check_sev_cpuid, dispatch_vc, register_ghcb};
use crate::exception::Exception;
use crate::ghcb::Ghcb;
use crate::hv_features::{self, GuestKind, HvFeatures};
use crate::hw::{GhcbMsrRecord, HwGhcb, HwGhcbMsr};
use crate::msr_protocol::{self, GhcbMsr, GhcbVersion, SevInfo};
use crate::nae;
use crate::sev_status::{SEV_STATUS_MSR, SevStatus};
use crate::termination::{GuestReason, TerminationReason};
use crate::vc::{GhcbNesting, GhcbUse, VcConfig, VcPerCpu};

/// The page a [`GhcbChannel`] uses as its GHCB, followed by the page that backs it up while an
/// interrupting user borrows it ([`GhcbChannel::with_ghcb_interrupting`]). A static of its own,
/// apart from the channel, so that it stays in `.bss` (the channel's state is not all zeroes,
/// and would pull both pages into the image file with it). Reached only through the one channel
/// built on it. Only the first page is ever shared with the hypervisor: the backup is reached
/// through the private identity mapping.
#[repr(C)]
pub struct GhcbPage {
    page: UnsafeCell<Ghcb>,
    backup: UnsafeCell<Ghcb>,
}

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
        Self {
            page: UnsafeCell::new(Ghcb::new()),
            backup: UnsafeCell::new(Ghcb::new()),
        }
    }
}

/// A console line (`x86::serial`) goes through the #VC core's string I/O in one VMGEXIT only if
/// it fits the GHCB's shared buffer.
const _: () = assert!(x86::serial::LINE_CAPACITY <= crate::ghcb::SHARED_BUFFER_SIZE);

/// What the lock guards besides the page and the MSR.
struct State {
    cpu: VcPerCpu,
}

/// Why [`GhcbChannel::with_ghcb_interrupting`] could not serve its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptingUseError {
    /// No GHCB is registered yet: there is nothing to borrow.
    NotRegistered,
    /// The interrupted holder is itself an interrupting user: a second level of nesting is
    /// refused (see [`GhcbNesting`]).
    TooDeep,
}

impl From<InterruptingUseError> for TerminationReason {
    fn from(e: InterruptingUseError) -> Self {
        match e {
            InterruptingUseError::NotRegistered => GuestReason::GhcbRegistration.into(),
            InterruptingUseError::TooDeep => GuestReason::NestedVc.into(),
        }
    }
}

/// The GHCB channel of one vCPU (see the module docs).
pub struct GhcbChannel {
    page: &'static GhcbPage,
    /// The GHCB GPA is registered and in the GHCB MSR: #VCs go through the GHCB. Set once, under
    /// the lock; read without it by an interrupting user.
    registered: AtomicBool,
    /// The negotiated protocol version (`GhcbVersion::number`), 0 before registration. Stored
    /// before `registered` is set, so whoever sees that sees this.
    version: AtomicU16,
    /// Who uses the GHCB page right now: a [`with`](Self::with) holder (the outer user) and at
    /// most one interrupting user on top of it.
    nesting: GhcbNesting,
    /// Where the launch tables map all memory decrypted: the GHCB's shared view is at
    /// `shared_alias + GPA`.
    shared_alias: u64,
    state: spin::Mutex<State>,
    /// The #VC core's per-CPU state of a #VC that interrupted the holder of `state` (see
    /// [`handle_vc`](Self::handle_vc)); never waited for: at most one such #VC runs at a time.
    interrupting_cpu: spin::Mutex<VcPerCpu>,
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
    /// The hypervisor's features, checked against what this kind of guest needs
    /// ([`GhcbChannel::hv_features`]); `None` under protocol version 1, which has no
    /// HV_FEATURES (the check then takes none as offered).
    pub hv_features: Option<HvFeatures>,
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
    version: GhcbVersion,
}

impl HeldChannel<'_> {
    /// The GHCB through its private (encrypted) view: what a hypervisor only ever reads as
    /// ciphertext. For checks that the hypervisor refuses a GHCB written there; nothing else
    /// uses it.
    pub fn private_ghcb(&mut self) -> HwGhcb<'_> {
        let gpa = self.page.page.get() as u64;
        // SAFETY: the page is 4 KiB, aligned and identity-mapped private (`GhcbChannel::new`);
        // the channel lock, held by whoever has `self` (borrowed mutably here, so its shared
        // view is not in use meanwhile), makes this the only reference to it; CPL 0 in an
        // SEV-ES guest with the GPA registered.
        unsafe { HwGhcb::new(&mut *self.page.page.get(), gpa, self.record) }
            .with_version(self.version)
    }
}

impl GhcbChannel {
    /// A channel on `page`, not yet registered ([`establish`](Self::establish) does that).
    ///
    /// # Safety
    /// `page` is used by this channel only; the caller's page tables map both its pages
    /// identity (its address is its GPA), the backup page private, and `shared_alias + GPA`
    /// maps the GHCB page decrypted; the channel serves one vCPU, running at CPL 0 in an SEV-ES
    /// guest, and nothing else on that vCPU uses the GHCB MSR. The launch tables of
    /// `handoff::launch` do the mapping part for an image below 1 GiB.
    pub const unsafe fn new(page: &'static GhcbPage, shared_alias: u64) -> Self {
        Self {
            page,
            registered: AtomicBool::new(false),
            version: AtomicU16::new(0),
            nesting: GhcbNesting::new(),
            shared_alias,
            state: spin::Mutex::new(State {
                cpu: VcPerCpu::new(),
            }),
            interrupting_cpu: spin::Mutex::new(VcPerCpu::new()),
            record: GhcbMsrRecord::new(),
        }
    }

    /// The GHCB's guest-physical address (its identity-mapped address).
    pub fn gpa(&self) -> u64 {
        self.page.page.get() as u64
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
    /// registered, or by the interrupting user ([`with_ghcb_interrupting`]).
    ///
    /// [`with_ghcb_interrupting`]: Self::with_ghcb_interrupting
    fn shared_ghcb(&self) -> HwGhcb<'_> {
        // SAFETY: the shared alias maps the page decrypted at its GPA (`new`'s contract), which
        // is registered and in the GHCB MSR; the caller holds the lock, which makes this the
        // only reference to the page and the only user of the MSR.
        unsafe { HwGhcb::new(&mut *self.shared_view(), self.gpa(), &self.record) }
            .with_version(self.version())
    }

    /// The negotiated protocol version, for the GHCBs this channel hands out (registered
    /// ones only: the version is known by then).
    fn version(&self) -> GhcbVersion {
        self.protocol_version().unwrap_or(GhcbVersion::MAX)
    }

    /// The protocol version negotiated at registration; `None` before.
    pub fn protocol_version(&self) -> Option<GhcbVersion> {
        GhcbVersion::from_number(self.version.load(Ordering::Acquire))
    }

    /// Brings the GHCB up for page tables whose C-bit is at `c_bit`, as the GHCB specification
    /// orders it: CPUID 0x8000001F through the early #VC path, checked against SEV_STATUS;
    /// protocol negotiation (the highest version both sides speak); the GPA in the GHCB MSR;
    /// the hypervisor's features, which must include what the guest needs
    /// ([`hv_features`](Self::hv_features)). Call once, after the IDT routes #VC to
    /// [`handle_vc`](Self::handle_vc) and the #VC core's decoder exists. Fails with the reason
    /// to terminate with.
    pub fn establish(&self, c_bit: u8) -> Result<Established, TerminationReason> {
        let sev_cpuid = check_sev_cpuid(c_bit)?;
        let info = self.register(c_bit)?;
        let hv_features = self.hv_features()?;
        Ok(Established {
            info,
            sev_cpuid,
            hv_features,
        })
    }

    /// Asks the hypervisor for its features (HV_FEATURES through the MSR protocol, after
    /// [`register`](Self::register)) and checks them against what this guest needs, by its
    /// kind as SEV_STATUS says ([`hv_features::check`]). Under protocol version 1, which has
    /// no HV_FEATURES, nothing is asked (a version 1 hypervisor does not know the request):
    /// the check takes none as offered, and `None` comes back. Fails with the reason to
    /// terminate with: a response that is not an HV_FEATURES response (`MsrProtocol`), SNP
    /// features without SNP (`HvFeatures`), a feature the guest needs missing (the GHCB
    /// specification's `SnpUnsupported`; under version 1 whatever the guest needs at all).
    pub fn hv_features(&self) -> Result<Option<HvFeatures>, TerminationReason> {
        let version = self
            .protocol_version()
            .ok_or(TerminationReason::from(GuestReason::GhcbRegistration))?;
        // SAFETY: SEV_STATUS exists in every SEV guest and is read without an exit.
        let status = SevStatus::from_msr(unsafe { x86::msr::rdmsr(SEV_STATUS_MSR) });
        let offered = if version.has_hv_features() {
            let _state = self.state.lock();
            // The request leaves the MSR holding the GHCB GPA again.
            msr_protocol::hv_features(&mut self.msr())
                .map_err(|e| TerminationReason::from(e.reason()))?
        } else {
            log::debug!("GHCB protocol {}: no HV_FEATURES", version.number());
            HvFeatures::empty()
        };
        hv_features::check(GuestKind::of(status), offered).map_err(|e| {
            log::error!("hypervisor features {offered:?} refused: {e:?}");
            e.reason()
        })?;
        Ok(version.has_hv_features().then_some(offered))
    }

    /// The part of [`establish`](Self::establish) after the CPUID check, for a guest that
    /// runs that check itself: protocol negotiation, then the GHCB's GPA in the GHCB MSR
    /// ([`register_ghcb`]). From then on every GHCB request carries the negotiated version.
    ///
    /// From then on every port access is a #VC and a VMGEXIT: the console
    /// ([`x86::serial::use_string_output`]) sends each line with one string OUT, which the #VC
    /// core moves through the GHCB's shared buffer in one VMGEXIT.
    pub fn register(&self, c_bit: u8) -> Result<SevInfo, TerminationReason> {
        let state = self.state.lock();
        let info = register_ghcb(&mut self.msr(), self.gpa(), c_bit)?;
        self.version.store(info.version.number(), Ordering::Release);
        self.registered.store(true, Ordering::Release);
        drop(state);
        x86::serial::use_string_output();
        Ok(info)
    }

    /// Whether the GHCB GPA is registered (by [`establish`](Self::establish)).
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// For a vCPU back from AP Reset Hold, whose parking code used the GHCB MSR: the next
    /// request through the GHCB writes the GPA to the MSR again. The registration itself
    /// stays with the hypervisor.
    pub fn after_reset_hold(&self) {
        self.record.forget();
    }

    /// Whether the GHCB is up and free: a print (port I/O, a #VC) can work now.
    pub fn can_print(&self) -> bool {
        self.state.try_lock().is_some() && self.registered.load(Ordering::Acquire)
    }

    /// Asks the hypervisor to terminate the guest with `reason` (never returns): through the
    /// GHCB when it is up and free, else through the MSR protocol, which works at any time.
    pub fn terminate(&self, reason: TerminationReason) -> ! {
        let reason = crate::termination::settle(reason);
        if let Some(_state) = self.state.try_lock()
            && self.registered.load(Ordering::Acquire)
        {
            // The lock stays held until the guest ends.
            crate::nae::terminate(&mut self.shared_ghcb(), reason)
        }
        msr_protocol::terminate(&mut self.msr(), reason)
    }

    /// Ends the run with `reason`, after `line` on the console when printing can work
    /// ([`can_print`](Self::can_print): otherwise the print's #VC would end the run first, with
    /// its own reason).
    pub fn fail(&self, line: core::fmt::Arguments, reason: TerminationReason) -> ! {
        if self.can_print() {
            x86::serial::force_unlock();
            x86::serial_println!("{line}");
        }
        self.terminate(reason)
    }

    /// Runs `f` with the channel held. A second user while one is active terminates the guest
    /// (see the module docs).
    pub fn with<R>(&self, f: impl FnOnce(&mut HeldChannel<'_>) -> R) -> R {
        let Some(mut state) = self.state.try_lock() else {
            self.terminate(GuestReason::NestedVc.into())
        };
        // With the lock free, so is the page: an interrupting user that took the page without
        // the lock has returned before this context runs again.
        if self.nesting.enter() != Ok(GhcbUse::Outer) {
            self.terminate(GuestReason::NestedVc.into())
        }
        let registered = self.registered.load(Ordering::Acquire);
        let mut held = HeldChannel {
            msr: self.msr(),
            ghcb: registered.then(|| self.shared_ghcb()),
            cpu: &mut state.cpu,
            page: self.page,
            record: &self.record,
            version: self.version(),
        };
        let r = f(&mut held);
        self.nesting.exit();
        r
    }

    /// Runs `f` on the registered GHCB from a context that may have interrupted a user of this
    /// channel on this vCPU and cannot wait for it: the NMI handler (see the module docs).
    /// With the channel free, `f` holds it like [`with`](Self::with) would
    /// ([`GhcbUse::Outer`]). With the channel held, the holder is the context this one
    /// interrupted (the channel serves one vCPU), suspended until `f` returns: `f` borrows the
    /// GHCB page ([`GhcbUse::Nested`] when the holder was between its first and last touch of
    /// the page), which is saved into the backup page before and restored after, and the GHCB
    /// MSR, which is read before and written back after if the holder had something else in
    /// it (an MSR-protocol request or reply). `f` must not raise #VC: that #VC would be a third
    /// user of the GHCB page, which [`GhcbNesting`] refuses (the guest terminates).
    pub fn with_ghcb_interrupting<R>(
        &self,
        f: impl FnOnce(&mut HwGhcb<'_>, GhcbUse) -> R,
    ) -> Result<R, InterruptingUseError> {
        if !self.registered.load(Ordering::Acquire) {
            return Err(InterruptingUseError::NotRegistered);
        }
        if let Some(_state) = self.state.try_lock() {
            let u = self
                .nesting
                .enter()
                .map_err(|_| InterruptingUseError::TooDeep)?;
            let r = f(&mut self.shared_ghcb(), u);
            self.nesting.exit();
            return Ok(r);
        }
        // SAFETY: the lock holder is suspended below us on this vCPU and resumes only after we
        // return, so nothing else runs on the MSR meanwhile; CPL 0 in an SEV-ES guest, the
        // channel's own record (`new`'s contract).
        let mut msr = unsafe { HwGhcbMsr::new(&self.record) };
        let holders_msr = msr.read();
        // SAFETY: the shared view maps the registered page decrypted (`new`'s contract); the
        // backup page is this channel's, identity-mapped private, and touched by no one else.
        // The holder's references to the page are not used until we return (it is suspended
        // below us), and every access to the page is volatile, so it finds what it left there
        // once `with_ghcb` restored it.
        let (ghcb, backup) = unsafe { (&mut *self.shared_view(), &mut *self.page.backup.get()) };
        let gpa = self.gpa();
        let version = self.version();
        let r = self
            .nesting
            .with_ghcb(ghcb, backup, |page, u| {
                // SAFETY: as above; the GPA is registered and `msr.read` told the record what
                // the MSR holds, so the VMGEXIT writes the GPA first if it is not there.
                f(
                    &mut unsafe { HwGhcb::new(page, gpa, &self.record) }.with_version(version),
                    u,
                )
            })
            .map_err(|_| InterruptingUseError::TooDeep);
        if holders_msr != gpa {
            msr.write(holders_msr);
        }
        r
    }

    /// Sends NMI_COMPLETE (the NMI handler's last word before its IRET: until then the
    /// hypervisor holds back further NMIs), through [`with_ghcb_interrupting`]: it works also
    /// when the NMI interrupted the #VC handler mid-request. Tells which GHCB user it was. A
    /// refusal is logged here, after the GHCB was given back (the log line is a #VC of its own).
    ///
    /// [`with_ghcb_interrupting`]: Self::with_ghcb_interrupting
    pub fn nmi_complete(&self) -> Result<GhcbUse, TerminationReason> {
        let (sent, u) = self.with_ghcb_interrupting(|t, u| (nae::nmi_complete(t), u))?;
        sent.map_err(|e| {
            log::error!("NMI_COMPLETE refused: {e:?}");
            TerminationReason::from(e.reason())
        })?;
        Ok(u)
    }

    /// Handles one #VC (vector 29) of this channel's vCPU with the interrupted `frame`: CPUID
    /// through the MSR protocol before the GHCB exists, everything the #VC core emulates
    /// afterwards ([`dispatch_vc`]), on the launch page tables `tables`. The guest never loads
    /// FS or GS bases (the launch state's 0 holds).
    ///
    /// Returns the exception the core asks for in the interrupted context instead of an
    /// emulated instruction: an exception the hypervisor intercepted (#DB, #AC: exit codes
    /// 0x41, 0x51), or a fault of the instruction's emulation. It comes back after the channel
    /// was released, with `frame` where the #VC left it (RIP at the instruction, or after the
    /// trap for a #DB), so that the caller's handler for that exception may print, raise #VC
    /// and return to the interrupted code (Linux's `vc_handle_db_exception` -> `exc_debug`). A
    /// caller that expects none ends the run with [`raised_fatal`](Self::raised_fatal).
    ///
    /// With the channel held, the holder is code this #VC interrupted (through an NMI whose
    /// handler raised it: the channel serves one vCPU, and its holders do not raise #VC
    /// themselves): the #VC borrows the GHCB from it as [`with_ghcb_interrupting`] does, with
    /// the #VC core state kept for this case. A #VC inside that one terminates the guest.
    ///
    /// [`with_ghcb_interrupting`]: Self::with_ghcb_interrupting
    #[must_use = "an exception the #VC core asks for is raised, or ends the run"]
    pub fn handle_vc(
        &self,
        frame: &mut InterruptFrame,
        tables: &LaunchTables,
        cfg: &VcConfig<'_>,
    ) -> Option<Exception> {
        let exit_code = frame.error_code;
        // Held on this vCPU means held by the code below us, which cannot let go before we
        // return: the check and the use below do not race.
        let next = if self.state.is_locked() {
            let borrowed = self.with_ghcb_interrupting(|ghcb, _| {
                let Some(mut cpu) = self.interrupting_cpu.try_lock() else {
                    self.terminate(GuestReason::NestedVc.into())
                };
                let mut regs = InterruptRegs::new(frame, 0, 0);
                dispatch_vc(
                    exit_code,
                    &mut regs,
                    &mut tables.memory(),
                    &mut self.msr(),
                    Some(ghcb),
                    &mut cpu,
                    cfg,
                )
            });
            borrowed.unwrap_or_else(|e| self.terminate(e.into()))
        } else {
            self.with(|ch| {
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
            })
        };
        match next {
            VcNext::Resume(n) => {
                frame.rip += n;
                None
            }
            VcNext::Raise(e) => Some(e),
        }
    }

    /// Ends the run for exception `e`, which [`handle_vc`](Self::handle_vc) handed back with
    /// `frame` to a caller that expects none: `{prefix}#VC exit code .. at RIP .. raised ..`,
    /// the register dump, then a termination request (`UnexpectedException`), not the debug
    /// exit, a port write the hypervisor may ignore.
    pub fn raised_fatal(&self, frame: &InterruptFrame, e: Exception, prefix: &str) -> ! {
        x86::serial::force_unlock();
        x86::serial_println!(
            "{prefix}#VC exit code {:#x} at RIP {:#x} raised {e:?}\n{frame}",
            frame.error_code,
            frame.rip
        );
        self.terminate(GuestReason::UnexpectedException.into())
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
        assert_eq!(CHANNEL.gpa(), PAGE.page.get() as u64);
        assert_eq!(PAGE.backup.get() as u64, CHANNEL.gpa() + 4096);
        assert_eq!(CHANNEL.gpa() % 4096, 0);
        assert_eq!(CHANNEL.shared_view() as u64, (1 << 40) + CHANNEL.gpa());
        assert!(!CHANNEL.can_print());
        assert_eq!(CHANNEL.protocol_version(), None, "nothing negotiated yet");
        let held_can_print = CHANNEL.with(|ch| {
            assert!(ch.ghcb.is_none());
            CHANNEL.can_print()
        });
        assert!(!held_can_print);
        assert_eq!(
            CHANNEL.with_ghcb_interrupting(|_, u| u).err(),
            Some(InterruptingUseError::NotRegistered),
            "nothing to borrow before registration"
        );
    }
}
