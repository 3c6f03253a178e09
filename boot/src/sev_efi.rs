//! The EFI entry under the firmware's SEV-ES (OVMF with an SEV-ES guest policy on a real AMD
//! host): the stage takes #VC handling and the GHCB over from the firmware at
//! ExitBootServices. The decisions are `sev::guest`'s ([`plan`](sev::guest::plan),
//! [`leaves`](sev::guest::leaves), [`take_over`]), host-tested there; this module performs
//! them. The simulator cannot run OVMF yet, so this path has not run end to end: its pieces are
//! the ones the IGVM entry runs on the simulator (`GhcbChannel`, the #VC core), and its order
//! and decisions are unit-tested.
//!
//! 1. [`detect`], first thing in `_start`, while the firmware's #VC handler serves CPUID and
//!    RDMSR: CPUID 0x80000000 / 0x8000001F and SEV_STATUS, checked against each other. SEV-ES
//!    gives a plan with its C-bit; SEV-SNP, SEV without SEV-ES and a CPUID that contradicts
//!    SEV_STATUS stop the stage here with a console line (the firmware still prints) and, where
//!    there is a GHCB MSR, a termination request with a reason of its own.
//! 2. [`prepare`], still under boot services: the heap and the #VC core's decoder tables (so
//!    that no #VC ever allocates), and a page below 4 GiB for the kernel's AP jump table.
//! 3. At ExitBootServices ([`take_over`]), in the order `sev::guest::take_over` enforces: the
//!    stage's GDT/IDT, whose #VC gate leads to [`handle_vc`] (nothing between ExitBootServices
//!    and this raises #VC: no console, no CPUID, no MSR, no MMIO); the GHCB page ([`GHCB`], in
//!    the stage's `.bss`, which the firmware's tables map private) flushed from the caches
//!    through that private mapping (CLFLUSH); the stage's own tables (`crate::idmap`), with
//!    the C-bit on private memory and not on MMIO and the GHCB page, which is shared at its
//!    identity address (no alias window on this path: the channel's shared alias is 0, as in
//!    the kernel), CR3 loaded and the GHCB page's old translation invalidated (INVLPG); the
//!    first #VC, CPUID 0x8000001F through the MSR protocol, checked against SEV_STATUS and the
//!    plan; protocol negotiation (version 2, or 1 from a version 1 hypervisor) and the GHCB's
//!    GPA in the GHCB MSR, without a GHCB GPA registration request (KVM terminates an SEV-ES
//!    guest that is not SNP when it sends one; Linux registers only under SNP). From then on
//!    every #VC (IOIO for the console, CPUID, MSR, MMIO) goes through the GHCB, including
//!    those of code that runs on the #PF-driven identity map.
//! 4. The `BootInfo` gets SEV_STATUS, the C-bit and a vCPU count of 0 (the firmware's ACPI
//!    tables list the CPUs), and the kernel starts as on the IGVM path.
//!
//! Between ExitBootServices and the GHCB's GPA in the MSR nothing can print: a failure there
//! ends in a termination request through the MSR protocol with the step's reason. A #VC while
//! the stage believes there is no SEV means CPUID hid SEV-ES (a #VC exists only under SEV-ES):
//! it terminates with `CpuidLies`.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};
use handoff::bootinfo::BootInfo;
use sev::guest::{
    GhcbChannel, GhcbPage, LaunchTables, Plan, SevEsPlan, TakeoverSteps, check_sev_cpuid,
};
use sev::msr_protocol::SevInfo;
use sev::termination::{GuestReason, TerminationReason};
use sev::vc::{NoHypercalls, VcConfig};
use x86::interrupts::InterruptFrame;
use x86::paging::PAGE_4K;
use x86::serial_println;

use crate::idmap::{Encryption, IdmapError};

/// Where the stage is in taking #VC over (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// No SEV: nothing here is in use.
    Plain = 0,
    /// SEV-ES, the firmware's #VC handler in charge: printing works.
    Firmware = 1,
    /// SEV-ES, the stage's #VC handler on the MSR protocol: CPUID only, no printing.
    Early = 2,
    /// SEV-ES, #VC through the stage's GHCB.
    Ghcb = 3,
}

static PHASE: AtomicU8 = AtomicU8::new(Phase::Plain as u8);

fn phase() -> Phase {
    match PHASE.load(Ordering::Acquire) {
        1 => Phase::Firmware,
        2 => Phase::Early,
        3 => Phase::Ghcb,
        _ => Phase::Plain,
    }
}

fn set_phase(p: Phase) {
    PHASE.store(p as u8, Ordering::Release);
}

/// The stage's channel to the hypervisor on this path: the GHCB MSR, the GHCB page and the
/// #VC core's state. Only the boot CPU runs the stage.
static GHCB: GhcbChannel = {
    static PAGE: GhcbPage = GhcbPage::new();
    // SAFETY: PAGE is declared here, so this channel is its only user. It lies in the stage
    // image, identity-mapped by the stage's tables, which map its first page shared (the
    // `Encryption` that `take_over` gives `crate::idmap`) and its backup page private, so its
    // shared view is its own address (a shared alias of 0). The channel serves the boot CPU at
    // CPL 0 in an SEV-ES guest; once ExitBootServices has returned, the firmware, the only
    // other user of the GHCB MSR, never runs again.
    unsafe { GhcbChannel::new(&PAGE, 0) }
};

/// The live page tables as the #VC core walks them: the firmware's until the stage's own are
/// loaded, then those (both identity maps with the C-bit in their entries; the stage's code is
/// mapped in both, so what the walker caches about RIP's page stays true across the switch).
static TABLES: LaunchTables = LaunchTables::new();

/// Whether the stage runs under SEV-ES through its EFI entry.
pub fn active() -> bool {
    phase() != Phase::Plain
}

/// Whether a console line can go out now: always without SEV and under the firmware, through
/// the GHCB once it is registered and free, never in between.
pub fn can_print() -> bool {
    match phase() {
        Phase::Plain | Phase::Firmware => true,
        Phase::Early => false,
        Phase::Ghcb => GHCB.can_print(),
    }
}

/// Step 1 (see the module docs): the SEV-ES plan, `None` without SEV. A refusal ends the run
/// here.
pub fn detect() -> Option<SevEsPlan> {
    let detected = sev::guest::Detected::read();
    match sev::guest::plan(&detected) {
        Plan::Plain => None,
        Plan::SevEs(plan) => {
            set_phase(Phase::Firmware);
            serial_println!(
                "stage: SEV-ES (SEV_STATUS {:#x}, C-bit {}): taking #VC and the GHCB over from \
                 the firmware at ExitBootServices",
                plan.sev_status,
                plan.c_bit
            );
            Some(plan)
        }
        Plan::Refuse(refusal) => {
            serial_println!("stage: error: {refusal}");
            match refusal.termination() {
                Some(reason) => GHCB.terminate(reason),
                None => crate::exit_failure(),
            }
        }
    }
}

/// Step 2: what the takeover needs from boot services: the decoder heap, and the AP jump
/// table page for the kernel, into `info`.
pub fn prepare(fw: &efi::Firmware, info: &mut BootInfo) -> Result<(), efi::EfiError> {
    crate::igvm::HEAP.init();
    sev::vc::init_decoder();
    info.ap_jump_table = fw.allocate_pages(1, efi::Placement::Below(0xffff_ffff))?;
    Ok(())
}

/// Step 3, right after ExitBootServices: the takeover, then the SEV fields of `info`. The
/// stage's tables map `image` (physical start, end) and what `crate::idmap::init` maps besides.
/// Failures terminate.
pub fn take_over(plan: &SevEsPlan, info: &mut BootInfo, image: (u64, u64)) {
    let mut steps = Steps {
        plan,
        info,
        image,
        idmap_error: None,
    };
    if let Err(e) = sev::guest::take_over(&mut steps, plan) {
        match steps.idmap_error {
            Some(idmap) => fail(e.reason, format_args!("{idmap}")),
            None => fail(
                e.reason,
                format_args!("taking #VC over: {:?} failed", e.step),
            ),
        }
    }
    info.sev_status = plan.sev_status;
    info.c_bit = plan.c_bit_mask();
    info.vp_count = 0;
}

/// The takeover's steps on this machine.
struct Steps<'a> {
    plan: &'a SevEsPlan,
    info: &'a mut BootInfo,
    image: (u64, u64),
    /// Why the stage's tables could not be built, for the console line after the fact.
    idmap_error: Option<IdmapError>,
}

impl TakeoverSteps for Steps<'_> {
    fn install_idt(&mut self) {
        set_phase(Phase::Early);
        crate::interrupts::init();
        TABLES.init(u32::from(self.plan.c_bit));
    }

    fn flush_ghcb_page(&mut self) {
        // Smaller than any x86-64 cache line, so no line is missed whatever the CPU's size
        // (which only CPUID, a hypervisor answer, would tell).
        const STRIDE: usize = 32;
        let page = GHCB.gpa();
        for offset in (0..PAGE_4K as usize).step_by(STRIDE) {
            // SAFETY: CLFLUSH of an address inside the GHCB page, which the live (firmware's)
            // tables map; it writes back and drops the line, changing no memory contents.
            unsafe {
                core::arch::asm!("clflush [{}]", in(reg) page + offset as u64, options(nostack))
            };
        }
        // SAFETY: a fence; orders the flushes before the table switch.
        unsafe { core::arch::asm!("mfence", options(nostack)) };
    }

    fn switch_tables(&mut self) -> Result<(), TerminationReason> {
        let encryption = Encryption {
            c_bit: self.plan.c_bit_mask(),
            shared_page: GHCB.gpa(),
        };
        if let Err(e) = crate::idmap::init(self.info, self.image, Some(encryption)) {
            self.idmap_error = Some(e);
            return Err(GuestReason::StageMemory.into());
        }
        // SAFETY: drops the TLB entry of the GHCB page, global or not, so that no translation
        // with the C-bit survives the CR3 load.
        unsafe {
            core::arch::asm!("invlpg [{}]", in(reg) GHCB.gpa(), options(nostack, preserves_flags))
        };
        TABLES.init(u32::from(self.plan.c_bit));
        Ok(())
    }

    fn check_cpuid(&mut self, c_bit: u8) -> Result<[u32; 4], TerminationReason> {
        check_sev_cpuid(c_bit)
    }

    fn register_ghcb(&mut self, c_bit: u8) -> Result<SevInfo, TerminationReason> {
        let info = GHCB.register(c_bit)?;
        set_phase(Phase::Ghcb);
        Ok(info)
    }

    fn first_ghcb_use(&mut self, info: &SevInfo) {
        serial_println!(
            "stage: SEV-ES: #VC through the stage's GHCB at {:#x} (shared), GHCB protocol {} \
             of {}..={}, C-bit {}",
            GHCB.gpa(),
            info.version.number(),
            info.min,
            info.max,
            info.cbit
        );
    }
}

/// A #VC (vector 29) on the EFI path; one without its error code is an interrupt the
/// hypervisor injected (`InterruptFrame::lacks_its_error_code`).
pub fn handle_vc(frame: &mut InterruptFrame) {
    if frame.lacks_its_error_code() {
        fail(
            GuestReason::MissingErrorCode.into(),
            format_args!("#VC without its error code: an injected interrupt"),
        )
    }
    if phase() == Phase::Plain {
        GHCB.terminate(GuestReason::CpuidLies.into())
    }
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &NoHypercalls,
    };
    if let Some(e) = GHCB.handle_vc(frame, &TABLES, &cfg) {
        GHCB.raised_fatal(frame, e, "stage: ")
    }
}

/// An exception nobody handles under SEV-ES: the register dump when printing can work, then
/// termination.
pub fn fatal(frame: &InterruptFrame) -> ! {
    if can_print() {
        x86::serial::force_unlock();
        serial_println!("{frame}");
    }
    GHCB.terminate(GuestReason::UnexpectedException.into())
}

/// Prints `stage: error: {msg}` when printing can work, then terminates with `reason`.
pub fn fail(reason: TerminationReason, msg: fmt::Arguments) -> ! {
    if can_print() {
        x86::serial::force_unlock();
        serial_println!("stage: error: {msg}");
    }
    GHCB.terminate(reason)
}
