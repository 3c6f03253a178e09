//! VMMCALL: a #VC with exit code 0x81, forwarded through the GHCB's VMMCALL event. A test
//! hypercall the simulator knows answers the same through the instruction as through the event
//! sent directly; a function it does not know comes back as the simulator's error value, never
//! as a result.

use handoff::sim_hypercall::{NMI_COMPLETES, NMI_COUNTER, PREFIX, UNKNOWN_FUNCTION};
use sev::exit_code::ExitCode;
use sev::ghcb::{GhcbField, GhcbTransport};
use sev::nae::{self, NaeError};

use super::{Outcome, one_vc};
use crate::ghcb;
use sev::guest::vmmcall as call;

/// A function number with the simulator's prefix that `handoff::sim_hypercall` does not define.
const UNDEFINED: u64 = PREFIX | 0xff_ffff;

/// The VMMCALL event sent without the instruction (RAX, CPL and RBX in; RAX out).
fn event<T: GhcbTransport + ?Sized>(t: &mut T, rax: u64, rbx: u64) -> Result<u64, NaeError> {
    let s = nae::call(
        t,
        ExitCode::Vmmcall,
        0,
        0,
        &[
            (GhcbField::Rax, rax),
            (GhcbField::Cpl, 0),
            (GhcbField::Rbx, rbx),
        ],
    )?;
    Ok(s.require(GhcbField::Rax)?)
}

pub fn vmmcall() -> Outcome {
    let by_insn = one_vc("VMMCALL NMI_COUNTER", ExitCode::Vmmcall, || {
        call(NMI_COUNTER, NMI_COMPLETES)
    })?;
    let by_event = ghcb::with(|ch| {
        ch.ghcb
            .as_mut()
            .map(|t| event(t, NMI_COUNTER, NMI_COMPLETES))
    })
    .ok_or("no GHCB registered")?
    .map_err(|e| alloc::format!("NMI_COUNTER as an event: {e:?}"))?;
    ensure!(
        by_insn == by_event,
        "NMI_COUNTER: {by_insn} through VMMCALL, {by_event} through the event"
    );
    let unknown = one_vc(
        "VMMCALL of an undefined function",
        ExitCode::Vmmcall,
        || call(UNDEFINED, 0),
    )?;
    ensure!(
        unknown == UNKNOWN_FUNCTION,
        "undefined function {UNDEFINED:#x} answered with RAX = {unknown:#x}, expected the error {UNKNOWN_FUNCTION:#x}"
    );
    Ok(())
}
