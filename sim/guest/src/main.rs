//! The simulator's SEV-ES test guest: a minimal 64-bit payload launched from an IGVM file
//! (`handoff::launch` is the contract: entry state, GPA/GVA layout, parameter area in RDI) that
//! exercises every SEV-ES semantic the simulator provides and reports one line per check.
//!
//! Start-up, in the order SEV-ES forces:
//! 1. [`_start`]: own stack, then [`main`] with the parameter area's GPA.
//! 2. [`interrupts::init`]: GDT/TSS with IST stacks and the IDT, before anything can raise #VC.
//! 3. [`heap::init`] and `sev::vc::init_decoder`: the #VC core decodes with iced-x86, whose
//!    tables live on the heap and must exist before the first #VC that needs decoding.
//! 4. [`ghcb::establish`]: one CPUID through the early #VC path (GHCB MSR protocol), protocol
//!    negotiation, GHCB registration; from then on every #VC goes through the GHCB page.
//! 5. COM1, the command line, the checks ([`checks`]), and QEMU's debug exit.
//!
//! Nothing here is the kernel: this guest exists so the simulator can be tested against a
//! guest whose every #VC and VMGEXIT is known in advance.
#![no_std]
#![no_main]

extern crate alloc;

mod ap;
mod checks;
mod cmdline;
mod ghcb;
mod heap;
mod interrupts;
mod memory;
mod panic;
mod vc;

use handoff::launch::{PARAM_GPA, ParamArea};
use x86::qemu::ExitStatus;

/// Size of the guest's only stack.
const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// The stack: the launch state has RSP = 0, so the guest brings its own (in .bss).
static mut STACK: Stack = Stack([0; STACK_SIZE]);

sev::igvm_entry! {
    /// The IGVM entry point of every vCPU (RIP of the launch VMSAs): RSI holds the vCPU's index.
    /// vCPU 0 keeps RDI (the parameter area's GPA) and runs [`main`] on [`STACK`]; an AP runs
    /// [`ap::main`] with its index on its own stack (`sev::igvm_entry!` has the details).
    pub fn _start;
    boot: main, STACK, STACK_SIZE;
    aps: ap::main, ap::STACKS, ap::STACK_SIZE, handoff::launch::MAX_VCPUS;
}

extern "C" fn main(param_gpa: u64) -> ! {
    interrupts::init();
    memory::init();
    heap::init();
    sev::vc::init_decoder();
    let sev_info = ghcb::establish();
    x86::serial::init();
    x86::serial_println!(
        "simguest: GHCB protocol {} (hypervisor offers {}..={}, C-bit {}), GHCB at {:#x}",
        sev_info.version.number(),
        sev_info.min,
        sev_info.max,
        sev_info.cbit,
        ghcb::gpa()
    );
    if param_gpa != PARAM_GPA {
        x86::serial_println!(
            "simguest: parameter area at {param_gpa:#x}, the launch contract says {PARAM_GPA:#x}"
        );
        exit(ExitStatus::Failure);
    }
    // SAFETY: the launch contract puts the parameter area, filled by the launcher, at PARAM_GPA,
    // identity-mapped private memory that nothing else writes; every field is a plain integer.
    let params = unsafe { &*(PARAM_GPA as *const ParamArea) };
    let Some(line) = params.cmdline() else {
        x86::serial_println!("simguest: the command line is not NUL-terminated ASCII");
        exit(ExitStatus::Failure);
    };
    let options = cmdline::Options::parse(line);
    for bad in options.unknown() {
        x86::serial_println!(
            "simguest: unknown command-line option `{bad}` (known: {})",
            cmdline::KNOWN
        );
    }
    exit(checks::run(options.test))
}

/// Ends the run through QEMU's debug-exit port (forwarded by the simulator); halts if that
/// returns.
fn exit(status: ExitStatus) -> ! {
    x86::qemu::debug_exit(status);
    x86::qemu::halt_forever()
}
