//! Guest-side glue for a guest launched from an IGVM file on the launch page tables
//! (`handoff::launch`): what the simulator's test guest and the decompressor stage's IGVM entry
//! need alike, so that both run one implementation.
//!
//! - [`check_sev_cpuid`] and [`register_ghcb`]: the GHCB bring-up sequence of the GHCB
//!   specification (CPUID 0x8000001F through the early #VC path, SEV information and protocol
//!   negotiation, the GHCB's GPA in the GHCB MSR),
//! - [`dispatch_vc`]: one #VC, early (MSR protocol, CPUID only) or through the GHCB, ending in a
//!   termination request when the core refuses,
//! - [`InterruptRegs`]: the interrupted context of `x86::interrupts` as the #VC core sees it,
//! - [`LaunchTables`] / [`LaunchMemory`]: guest memory through the launch page tables,
//! - [`DecoderHeap`]: the static heap the #VC core's decoder needs,
//! - [`GhcbChannel`]: a vCPU's GHCB MSR, GHCB page and #VC state behind one lock, their
//!   bring-up, and the #VC handler over all of the above,
//! - [`SimHypercalls`], [`vmmcall`]: the SEV-ES simulator's test hypercalls,
//! - [`plan`], [`leaves`], [`take_over`]: the decisions of a guest that starts under the
//!   firmware's SEV-ES (the stage's EFI entry) and takes #VC and the GHCB over from it,
//! - [`igvm_entry!`](crate::igvm_entry): the naked entry point that gives each vCPU its stack,
//! - [`ApJumpTable`]: the AP jump table page and the code that parks an AP there (AP Reset Hold,
//!   or under GHCB protocol version 1 none: [`ParkMode`]).
//!
//! Only with the `guest` feature (it brings in the `x86` crate), on x86-64.

mod ap_jump_table;
mod channel;
mod efi;
mod entry;
mod heap;
mod memory;
mod regs;
mod sim_hypercall;

pub use ap_jump_table::{ApJumpTable, JumpTableError, ParkMode};
pub use channel::{Established, GhcbChannel, GhcbPage, HeldChannel};
pub use efi::{
    Detected, Leaf, Plan, Refusal, SevEsPlan, Step, TakeoverError, TakeoverSteps, leaves, plan,
    take_over,
};
#[doc(hidden)]
pub use entry::size_of_static;
pub use heap::DecoderHeap;
pub use memory::{LaunchMemory, LaunchTables};
pub use regs::InterruptRegs;
pub use sim_hypercall::{SimHypercalls, vmmcall, vmmcall3};

use crate::cpuid::{SEV_CPUID_LEAF, SevCpuid};
use crate::exception::Exception;
use crate::ghcb::GhcbTransport;
use crate::msr_protocol::{self, GhcbMsr, SevInfo};
use crate::sev_status::{SEV_STATUS_MSR, SevStatus};
use crate::termination::{GuestReason, TerminationReason, settle};
use crate::vc::{
    GuestMemory, InsnFetch, PageWalk, RegisterFrame, VcConfig, VcOutcome, VcPerCpu, handle_vc,
    handle_vc_early,
};

/// Runs CPUID 0x8000001F (a #VC: call after the IDT routes #VC to [`dispatch_vc`], before the
/// GHCB exists this goes through the MSR protocol) and checks it against SEV_STATUS and the
/// C-bit position `c_bit` the guest's page tables use. Returns the leaf as EAX, EBX, ECX, EDX.
pub fn check_sev_cpuid(c_bit: u8) -> Result<[u32; 4], TerminationReason> {
    let r = x86::msr::cpuid(SEV_CPUID_LEAF, 0);
    let regs = [r.eax, r.ebx, r.ecx, r.edx];
    // SAFETY: SEV_STATUS exists in every SEV guest and is read without an exit.
    let status = SevStatus::from_msr(unsafe { x86::msr::rdmsr(SEV_STATUS_MSR) });
    SevCpuid::from_regs(regs)
        .check(status, Some(c_bit))
        .map_err(|_| GuestReason::CpuidLies)?;
    Ok(regs)
}

/// Negotiates the GHCB protocol (the highest version in both the hypervisor's range and
/// `msr_protocol::GhcbVersion`'s: version 1 hypervisors are served too, see
/// `msr_protocol::check_sev_info`), checks that the hypervisor's C-bit position is `c_bit`, and
/// leaves the GHCB's GPA `gpa` in the GHCB MSR: from then on #VCs go through the GHCB. Returns
/// the negotiated information. No GHCB GPA
/// Registration request: that (like the preferred-GPA request) is an SEV-SNP request, which KVM
/// answers by terminating an SEV-ES guest, and so does the simulator; an SEV-ES hypervisor
/// takes the GHCB at whatever GPA the MSR holds at each VMGEXIT.
pub fn register_ghcb<M: GhcbMsr + ?Sized>(
    msr: &mut M,
    gpa: u64,
    c_bit: u8,
) -> Result<SevInfo, TerminationReason> {
    let info = msr_protocol::negotiate(msr).map_err(|e| TerminationReason::from(e.reason()))?;
    if info.cbit != c_bit {
        return Err(GuestReason::CpuidLies.into());
    }
    msr.write(gpa);
    Ok(info)
}

/// What a #VC handler does after [`dispatch_vc`], once it has released its GHCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcNext {
    /// Advance RIP by this many bytes (0: a REP string instruction continues) and return.
    Resume(u64),
    /// The core asks for this exception in the interrupted context.
    Raise(Exception),
}

/// Handles one #VC with exit code `exit_code`: through the MSR protocol (CPUID only) while
/// `ghcb` is `None`, else through the GHCB. A refusal of the core terminates the guest with
/// the core's reason, through the GHCB when there is one, else the MSR protocol.
pub fn dispatch_vc<R, M, G, T>(
    exit_code: u64,
    regs: &mut R,
    mem: &mut M,
    msr: &mut G,
    ghcb: Option<&mut T>,
    cpu: &mut VcPerCpu,
    cfg: &VcConfig<'_>,
) -> VcNext
where
    R: RegisterFrame + ?Sized,
    M: InsnFetch + PageWalk + GuestMemory + ?Sized,
    G: GhcbMsr + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let outcome = match ghcb {
        None => handle_vc_early(exit_code, regs, mem, msr, cfg.cpuid_page),
        Some(t) => match handle_vc(exit_code, regs, mem, t, cpu, cfg) {
            VcOutcome::Terminate(r) => crate::nae::terminate(t, settle(r)),
            other => other,
        },
    };
    match outcome {
        VcOutcome::Advance(n) => VcNext::Resume(u64::from(n)),
        VcOutcome::Repeat => VcNext::Resume(0),
        VcOutcome::Exception(e) => VcNext::Raise(e),
        VcOutcome::Terminate(r) => msr_protocol::terminate(msr, settle(r)),
    }
}
