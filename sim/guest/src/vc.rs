//! The #VC handler (vector 29). Before the GHCB is registered only CPUID can be handled, through
//! the GHCB MSR protocol (`sev::vc::handle_vc_early`); afterwards everything the #VC core
//! emulates goes through the GHCB (`sev::vc::handle_vc`). Whatever the core refuses terminates
//! the run with the core's reason: through the GHCB once it exists, else the MSR protocol.
//!
//! The handler records how many #VCs it took and the last error code, which is what the checks
//! assert on. It never prints (a print is port I/O, itself a #VC) except on its way to a fatal
//! exit, after it has released the channel.

use core::sync::atomic::{AtomicU64, Ordering};
use sev::exception::Exception;
use sev::vc::{Gpr, RegisterFrame, VcConfig, VcOutcome, handle_vc, handle_vc_early};
use x86::interrupts::{InterruptFrame, fatal};

use crate::ghcb;
use crate::hypercall::SimHypercalls;
use crate::memory::LaunchMemory;

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_ERROR: AtomicU64 = AtomicU64::new(0);

/// #VCs taken so far.
pub fn count() -> u64 {
    COUNT.load(Ordering::Acquire)
}

/// The error code (exit code) of the last #VC.
pub fn last_error() -> u64 {
    LAST_ERROR.load(Ordering::Acquire)
}

/// Handles one #VC: called by the interrupt dispatch with the saved frame.
pub fn handle(frame: &mut InterruptFrame) {
    let exit_code = frame.error_code;
    LAST_ERROR.store(exit_code, Ordering::Release);
    COUNT.fetch_add(1, Ordering::AcqRel);
    let next = ghcb::with(|ch| {
        let mut regs = Regs(frame);
        let mut mem = LaunchMemory::new();
        let outcome = match ch.ghcb.as_mut() {
            None => handle_vc_early(exit_code, &mut regs, &mut mem, &mut ch.msr, None),
            Some(t) => {
                let cfg = VcConfig {
                    cpuid_page: None,
                    hypercalls: &SimHypercalls,
                };
                handle_vc(exit_code, &mut regs, &mut mem, t, ch.cpu, &cfg)
            }
        };
        match outcome {
            VcOutcome::Advance(n) => Next::Resume(u64::from(n)),
            VcOutcome::Repeat => Next::Resume(0),
            VcOutcome::Exception(e) => Next::Raise(e),
            VcOutcome::Terminate(r) => match ch.ghcb.as_mut() {
                Some(t) => sev::nae::terminate(t, r),
                None => sev::msr_protocol::terminate(&mut ch.msr, r),
            },
        }
    });
    match next {
        Next::Resume(n) => frame.rip += n,
        Next::Raise(e) => {
            // No check expects an exception from a #VC: report where and which, then the dump.
            x86::serial::force_unlock();
            x86::serial_println!(
                "#VC exit code {exit_code:#x} at RIP {:#x} raised {e:?}",
                frame.rip
            );
            fatal(frame)
        }
    }
}

/// What the handler does once it has released the channel.
enum Next {
    /// Advance RIP by this many bytes (0: a REP string instruction continues) and return.
    Resume(u64),
    /// The core asks for an exception in the interrupted context.
    Raise(Exception),
}

/// The interrupted context's registers as the #VC core reads and writes them.
struct Regs<'a>(&'a mut InterruptFrame);

impl RegisterFrame for Regs<'_> {
    fn gpr(&self, r: Gpr) -> u64 {
        let f = &*self.0;
        match r {
            Gpr::Rax => f.rax,
            Gpr::Rcx => f.rcx,
            Gpr::Rdx => f.rdx,
            Gpr::Rbx => f.rbx,
            Gpr::Rsp => f.rsp,
            Gpr::Rbp => f.rbp,
            Gpr::Rsi => f.rsi,
            Gpr::Rdi => f.rdi,
            Gpr::R8 => f.r8,
            Gpr::R9 => f.r9,
            Gpr::R10 => f.r10,
            Gpr::R11 => f.r11,
            Gpr::R12 => f.r12,
            Gpr::R13 => f.r13,
            Gpr::R14 => f.r14,
            Gpr::R15 => f.r15,
        }
    }

    fn set_gpr(&mut self, r: Gpr, value: u64) {
        let f = &mut *self.0;
        let slot = match r {
            Gpr::Rax => &mut f.rax,
            Gpr::Rcx => &mut f.rcx,
            Gpr::Rdx => &mut f.rdx,
            Gpr::Rbx => &mut f.rbx,
            Gpr::Rsp => &mut f.rsp,
            Gpr::Rbp => &mut f.rbp,
            Gpr::Rsi => &mut f.rsi,
            Gpr::Rdi => &mut f.rdi,
            Gpr::R8 => &mut f.r8,
            Gpr::R9 => &mut f.r9,
            Gpr::R10 => &mut f.r10,
            Gpr::R11 => &mut f.r11,
            Gpr::R12 => &mut f.r12,
            Gpr::R13 => &mut f.r13,
            Gpr::R14 => &mut f.r14,
            Gpr::R15 => &mut f.r15,
        };
        *slot = value;
    }

    fn rip(&self) -> u64 {
        self.0.rip
    }

    fn rflags(&self) -> u64 {
        self.0.rflags
    }

    fn cpl(&self) -> u8 {
        (self.0.cs & 3) as u8
    }

    /// This guest never loads an FS base (the launch state has it at 0) and never uses an FS
    /// prefix; the core asks only for FS-prefixed operands.
    fn fs_base(&self) -> u64 {
        0
    }

    /// As for FS: never loaded, never used.
    fn gs_base(&self) -> u64 {
        0
    }
}
