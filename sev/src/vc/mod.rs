//! The #VC emulation core.
//!
//! A stage's #VC handler calls [`handle_vc`] with the #VC error code (the
//! exit code) and its implementations of the small traits below; the core
//! decodes the instruction at RIP with iced-x86, checks that it is one that
//! can cause this exit code, emulates it through the GHCB and returns a
//! [`VcOutcome`]. The core never touches RIP itself and allocates nothing.
//!
//! Hostile hypervisor defences applied here: #VC from CPL 3 is refused
//! (CVE-2023-46813); the decoded instruction must match the exit code (WeSee,
//! CVE-2024-25742); MMIO targets are translated by a page walk that refuses
//! encrypted and user mappings; replies are validated by [`crate::nae`].
//!
//! Only 64-bit code is decoded: both of our stages run in long mode.
//!
//! A stage's #VC handler, in outline:
//!
//! ```text
//! boot:  sev::vc::init_decoder();               // after the heap exists
//! #VC:   let use_ = nesting.enter()?;           // else terminate(NestedVc)
//!        if use_ == GhcbUse::Nested { backup.copy_from(ghcb) }
//!        let mut t = unsafe { HwGhcb::new(ghcb, ghcb_gpa, &msr_record) };
//!        match handle_vc(error_code, frame, &mut walker, &mut t, &mut per_cpu, &cfg) {
//!            VcOutcome::Advance(n) => frame.rip += n,
//!            VcOutcome::Repeat => {}
//!            VcOutcome::Exception(e) => raise e in the interrupted context,
//!            VcOutcome::Terminate(r) => sev::nae::terminate(&mut t, r),
//!        }
//!        restore the backup if nested; nesting.exit();
//! ```

mod cpuid;
mod early;
mod insn;
mod ioio;
mod misc;
mod mmio;
mod nesting;
mod register_file;

pub use cpuid::CpuidCache;
pub use early::handle_vc_early;
pub use nesting::{GhcbNesting, GhcbUse};
pub use register_file::RegisterFile;

use iced_x86::Code;

use crate::cpuid::SnpCpuidTable;
use crate::exception::Exception;
use crate::exit_code::ExitCode;
use crate::ghcb::{GhcbField, GhcbTransport};
use crate::nae::NaeError;
use crate::termination::{GuestReason, TerminationReason};

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// A general-purpose register, numbered as in the x86 encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// All registers in encoding order.
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The GHCB field carrying this register (RSP has none).
    pub fn ghcb_field(self) -> Option<GhcbField> {
        use GhcbField as F;
        Some(match self {
            Gpr::Rax => F::Rax,
            Gpr::Rcx => F::Rcx,
            Gpr::Rdx => F::Rdx,
            Gpr::Rbx => F::Rbx,
            Gpr::Rsp => return None,
            Gpr::Rbp => F::Rbp,
            Gpr::Rsi => F::Rsi,
            Gpr::Rdi => F::Rdi,
            Gpr::R8 => F::R8,
            Gpr::R9 => F::R9,
            Gpr::R10 => F::R10,
            Gpr::R11 => F::R11,
            Gpr::R12 => F::R12,
            Gpr::R13 => F::R13,
            Gpr::R14 => F::R14,
            Gpr::R15 => F::R15,
        })
    }
}

/// RFLAGS.DF: string instructions walk downwards.
pub const RFLAGS_DF: u64 = 1 << 10;

/// The interrupted context's registers (the #VC stack frame plus the
/// registers the entry stub saved).
pub trait RegisterFrame {
    fn gpr(&self, r: Gpr) -> u64;
    fn set_gpr(&mut self, r: Gpr, value: u64);
    fn rip(&self) -> u64;
    fn rflags(&self) -> u64;
    /// CPL of the interrupted code (CS.RPL of the frame).
    fn cpl(&self) -> u8;
    /// FS base, for FS-prefixed memory operands.
    fn fs_base(&self) -> u64;
    /// GS base, for GS-prefixed memory operands.
    fn gs_base(&self) -> u64;
}

/// A page fault to forward: linear address (CR2) and error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    pub address: u64,
    pub error_code: u32,
}

/// Reads instruction bytes at RIP.
pub trait InsnFetch {
    /// Copies up to [`MAX_INSN_LEN`] bytes starting at `rip` into `buf` and
    /// returns how many were readable; stops early at an unmapped page. An
    /// error means not even the first byte could be read.
    fn fetch(&mut self, rip: u64, buf: &mut [u8; MAX_INSN_LEN]) -> Result<usize, PageFault>;
}

/// What the guest page tables say about a linear address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Guest-physical address of the byte (C-bit removed).
    pub gpa: u64,
    /// The mapping has the C-bit set (private memory).
    pub encrypted: bool,
    /// The mapping is user-accessible.
    pub user: bool,
    pub writable: bool,
}

/// Walks the current guest page tables.
pub trait PageWalk {
    /// The mapping of `va`, or `None` if it is not present.
    fn translate(&mut self, va: u64) -> Option<Mapping>;
}

/// Ordinary (non-MMIO) memory access with the interrupted context's
/// privileges, for the memory side of INS/OUTS and MOVS.
pub trait GuestMemory {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), PageFault>;
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), PageFault>;
}

/// Registers a VMMCALL hypercall passes besides RAX (and CPL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallRegs {
    /// Sent to the hypervisor.
    pub inputs: &'static [Gpr],
    /// Returned by the hypervisor; each must carry its valid bit.
    pub outputs: &'static [Gpr],
}

/// The hypercall ABI a guest speaks: which registers a VMMCALL with a given
/// RAX uses. `None` makes VMMCALL raise #UD, as on a machine without a
/// hypervisor interface.
pub trait HypercallAbi {
    fn registers(&self, rax: u64) -> Option<HypercallRegs>;
}

/// No hypercalls: VMMCALL raises #UD.
pub struct NoHypercalls;

impl HypercallAbi for NoHypercalls {
    fn registers(&self, _rax: u64) -> Option<HypercallRegs> {
        None
    }
}

/// DR7 value after reset.
pub const DR7_RESET: u64 = 0x400;

/// Per-CPU #VC state: the CPUID cache, the DR7 the guest last wrote (the
/// hypervisor cannot be asked: DR7 is in the encrypted VMSA), and XCR0 as
/// the CPUID protocol wants it.
#[derive(Clone, Debug)]
pub struct VcPerCpu {
    cpuid: CpuidCache,
    dr7: u64,
    xcr0: u64,
}

impl Default for VcPerCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl VcPerCpu {
    pub const fn new() -> Self {
        Self {
            cpuid: CpuidCache::new(),
            dr7: DR7_RESET,
            xcr0: 1,
        }
    }

    /// DR7 as last written by the guest.
    pub fn dr7(&self) -> u64 {
        self.dr7
    }

    /// XCR0 as sent with CPUID requests.
    pub fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// Call after XSETBV (and with 1 while CR4.OSXSAVE is clear): CPUID leaf
    /// 0xD depends on it. Also drops cached CPUID results, since leaf 1's
    /// OSXSAVE bit follows CR4.
    pub fn set_xcr0(&mut self, xcr0: u64) {
        self.xcr0 = xcr0;
        self.cpuid.clear();
    }

    /// Drops cached CPUID results (after changing CR4.OSXSAVE, say).
    pub fn invalidate_cpuid_cache(&mut self) {
        self.cpuid.clear();
    }
}

/// Read-only configuration of the core.
pub struct VcConfig<'a> {
    /// Under SNP: the validated CPUID page. When present, CPUID is answered
    /// from it only and never from the hypervisor.
    pub cpuid_page: Option<&'a SnpCpuidTable>,
    pub hypercalls: &'a dyn HypercallAbi,
}

/// What the #VC handler must do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcOutcome {
    /// Emulated: advance RIP by this many bytes and return.
    Advance(u8),
    /// Part of a REP string instruction was emulated and the registers were
    /// updated: return without moving RIP so the rest runs (and faults) again.
    Repeat,
    /// Raise this exception in the interrupted context instead.
    Exception(Exception),
    /// Terminate the guest with this reason.
    Terminate(TerminationReason),
}

/// Internal failure of an emulation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Exception(Exception),
    Terminate(GuestReason),
}

impl From<NaeError> for Fault {
    fn from(e: NaeError) -> Self {
        match e {
            NaeError::Exception(x) => Fault::Exception(x),
            other => Fault::Terminate(other.reason()),
        }
    }
}

impl From<PageFault> for Fault {
    fn from(p: PageFault) -> Self {
        Fault::Exception(Exception::Pf {
            address: p.address,
            error_code: p.error_code,
        })
    }
}

pub(crate) type Step = Result<VcOutcome, Fault>;

/// Builds iced-x86's decoder tables. iced allocates them on the heap the
/// first time an instruction is decoded; call this once at boot, after the
/// heap exists and before the first #VC can happen, so that the #VC path
/// itself never allocates (an allocation inside #VC could deadlock on the
/// allocator lock held by the interrupted code).
pub fn init_decoder() {
    insn::warm_up();
}

/// Handles one #VC. `exit_code` is the #VC error code.
pub fn handle_vc<R, M, T>(
    exit_code: u64,
    regs: &mut R,
    mem: &mut M,
    ghcb: &mut T,
    cpu: &mut VcPerCpu,
    cfg: &VcConfig<'_>,
) -> VcOutcome
where
    R: RegisterFrame + ?Sized,
    M: InsnFetch + PageWalk + GuestMemory + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let step = if regs.cpl() != 0 {
        Err(Fault::Terminate(GuestReason::UserModeVc))
    } else {
        dispatch(exit_code, regs, mem, ghcb, cpu, cfg)
    };
    match step {
        Ok(o) => o,
        Err(Fault::Exception(e)) => VcOutcome::Exception(e),
        Err(Fault::Terminate(r)) => {
            log::error!(
                "#VC exit code {exit_code:#x} at RIP {:#x}: {r:?}",
                regs.rip()
            );
            VcOutcome::Terminate(r.into())
        }
    }
}

fn dispatch<R, M, T>(
    exit_code: u64,
    regs: &mut R,
    mem: &mut M,
    ghcb: &mut T,
    cpu: &mut VcPerCpu,
    cfg: &VcConfig<'_>,
) -> Step
where
    R: RegisterFrame + ?Sized,
    M: InsnFetch + PageWalk + GuestMemory + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let exit =
        ExitCode::from_raw(exit_code).ok_or(Fault::Terminate(GuestReason::UnsupportedExit))?;
    match exit {
        // Exception intercepts carry no instruction to emulate.
        ExitCode::ExceptionDb => return Err(Fault::Exception(Exception::Db)),
        ExitCode::ExceptionAc => return Err(Fault::Exception(Exception::Ac)),
        ExitCode::Cpuid
        | ExitCode::Npf
        | ExitCode::Ioio
        | ExitCode::Msr
        | ExitCode::Rdtsc
        | ExitCode::Rdtscp
        | ExitCode::Rdpmc
        | ExitCode::ReadDr7
        | ExitCode::WriteDr7
        | ExitCode::Wbinvd
        | ExitCode::Invd
        | ExitCode::Monitor
        | ExitCode::Mwait
        | ExitCode::Vmmcall => {}
        // VMGEXIT-only codes never arrive as a #VC error code.
        _ => return Err(Fault::Terminate(GuestReason::UnsupportedExit)),
    }
    let bytes = insn::fetch(regs, mem)?;
    // CPUID is the hottest #VC: its plain two-byte form (0F A2, nothing else
    // can start with those bytes at RIP) skips the general decoder.
    if exit == ExitCode::Cpuid && bytes.starts_with(&[0x0f, 0xa2]) {
        return cpuid::emulate(2, regs, ghcb, cpu, cfg);
    }
    let i = insn::decode(&bytes)?;
    match exit {
        ExitCode::Cpuid => {
            if i.code() != Code::Cpuid {
                return Err(insn::mismatch());
            }
            cpuid::emulate(i.len() as u8, regs, ghcb, cpu, cfg)
        }
        ExitCode::Npf => mmio::emulate(&i, regs, mem, ghcb),
        ExitCode::Ioio => ioio::emulate(&i, regs, mem, ghcb),
        ExitCode::Msr => misc::msr(&i, regs, ghcb),
        ExitCode::Rdtsc | ExitCode::Rdtscp => misc::rdtsc(exit, &i, regs, ghcb),
        ExitCode::Rdpmc => misc::rdpmc(&i, regs, ghcb),
        ExitCode::ReadDr7 => misc::read_dr7(&i, regs, cpu),
        ExitCode::WriteDr7 => misc::write_dr7(&i, regs, ghcb, cpu),
        ExitCode::Wbinvd => misc::wbinvd(&i, ghcb),
        ExitCode::Invd => misc::invd(&i),
        ExitCode::Monitor => misc::monitor(&i, regs, ghcb),
        ExitCode::Mwait => misc::mwait(&i, regs, ghcb),
        ExitCode::Vmmcall => misc::vmmcall(&i, regs, ghcb, cfg.hypercalls),
        _ => Err(Fault::Terminate(GuestReason::UnsupportedExit)),
    }
}
