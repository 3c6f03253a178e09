//! The simulator's test hypercalls (`handoff::sim_hypercall`): the ABI the #VC core needs to
//! forward a VMMCALL (which registers go out and come back), and the VMMCALL instruction
//! itself, which raises #VC 0x81.

use handoff::sim_hypercall::{PREFIX, PREFIX_MASK};
use sev::vc::{Gpr, HypercallAbi, HypercallRegs};

/// The simulator's hypercall ABI as this guest speaks it: any function with the simulator's
/// prefix (RAX) is forwarded with RBX as its input, and the result comes back in RAX (always
/// sent and returned by the core); the simulator answers functions it does not define with
/// [`handoff::sim_hypercall::UNKNOWN_FUNCTION`]. A VMMCALL without the prefix raises #UD without asking the hypervisor,
/// as on a machine without a hypercall interface.
pub struct SimHypercalls;

impl HypercallAbi for SimHypercalls {
    fn registers(&self, rax: u64) -> Option<HypercallRegs> {
        (rax & PREFIX_MASK == PREFIX).then_some(HypercallRegs {
            inputs: &[Gpr::Rbx],
            outputs: &[],
        })
    }
}

/// Executes VMMCALL with `function` in RAX and `input` in RBX; returns RAX.
pub fn vmmcall(function: u64, input: u64) -> u64 {
    let rax;
    // SAFETY: VMMCALL raises #VC, which the #VC core emulates through the GHCB, writing back
    // only RAX. RBX cannot be named as an operand (LLVM reserves it), so it is swapped in and
    // out around the instruction.
    unsafe {
        core::arch::asm!(
            "xchg {input}, rbx",
            "vmmcall",
            "xchg {input}, rbx",
            input = inout(reg) input => _,
            inout("rax") function => rax,
            options(nostack),
        )
    };
    rax
}
