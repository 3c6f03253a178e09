//! The SEV-ES simulator's test hypercalls (`handoff::sim_hypercall`) as a guest makes them: the
//! ABI the #VC core needs to forward a VMMCALL (which registers go out and come back), and the
//! VMMCALL instruction itself, which raises #VC 0x81. Shared by the simulator's test guest and
//! the kernel's tests.

use crate::vc::{Gpr, HypercallAbi, HypercallRegs};
use handoff::sim_hypercall::{PREFIX, PREFIX_MASK};

/// The simulator's hypercall ABI: any function with the simulator's prefix (RAX) is forwarded
/// with RBX, RCX and RDX as its inputs, and the result comes back in RAX (always sent and
/// returned by the core); the simulator answers functions it does not define with
/// [`handoff::sim_hypercall::UNKNOWN_FUNCTION`], and a real hypervisor with an error of its own.
/// A VMMCALL without the prefix raises #UD without asking the hypervisor, as on a machine
/// without a hypercall interface.
pub struct SimHypercalls;

impl HypercallAbi for SimHypercalls {
    fn registers(&self, rax: u64) -> Option<HypercallRegs> {
        (rax & PREFIX_MASK == PREFIX).then_some(HypercallRegs {
            inputs: &[Gpr::Rbx, Gpr::Rcx, Gpr::Rdx],
            outputs: &[],
        })
    }
}

/// Executes VMMCALL with `function` in RAX and `input` in RBX; returns RAX.
pub fn vmmcall(function: u64, input: u64) -> u64 {
    vmmcall3(function, [input, 0, 0])
}

/// Executes VMMCALL with `function` in RAX and `inputs` in RBX, RCX and RDX; returns RAX.
pub fn vmmcall3(function: u64, inputs: [u64; 3]) -> u64 {
    let rax;
    // SAFETY: VMMCALL raises #VC, which the #VC core emulates through the GHCB (with an ABI
    // like `SimHypercalls`), writing back only RAX. RBX cannot be named as an operand (LLVM
    // reserves it), so it is swapped in and out around the instruction.
    unsafe {
        core::arch::asm!(
            "xchg {rbx}, rbx",
            "vmmcall",
            "xchg {rbx}, rbx",
            rbx = inout(reg) inputs[0] => _,
            inout("rax") function => rax,
            in("rcx") inputs[1],
            in("rdx") inputs[2],
            options(nostack),
        )
    };
    rax
}
