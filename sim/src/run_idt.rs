//! The IDT the simulator runs its VMRUN loop on.
//!
//! Between two VMRUNs the CPU keeps the guest's hidden state, its TR among it (`svm::run`), so
//! an exception through a gate with an IST slot would take its stack from the guest's TSS: from
//! an address the guest chose. The loop's IDT has no IST slots: each of the 32 exception gates
//! leads, on the simulator's own stack, to a report of the fault (vector, error code, RIP) and
//! the end of the run with the simulator's error status; the frame is never returned to, so the
//! red zone the usual IDT protects does not matter. Nothing else can arrive: external
//! interrupts and NMIs wait while GIF is clear, as it is from #VMEXIT to the next VMRUN, and
//! the simulator raises no software interrupts (a vector beyond the table is a #GP).

use core::arch::{global_asm, naked_asm};
use core::sync::atomic::{AtomicBool, Ordering};
use x86::gdt::KERNEL_CODE;
use x86::idt::{Gate, has_error_code};
use x86::qemu::{ExitStatus, debug_exit, halt_forever};
use x86::serial_println;

/// The exception vectors.
const VECTORS: usize = 32;
/// Bytes between two entry stubs (each `push imm8; jmp rel32` padded to this).
const STUB_SIZE: usize = 8;

// One stub per vector: pushes the vector and joins `fault_entry`, with the CPU's frame (and
// error code, for the vectors that have one) above it.
global_asm!(
    ".pushsection .text.sim_run_idt_stubs, \"ax\"",
    ".balign {size}",
    ".hidden sim_run_idt_stubs",
    ".globl sim_run_idt_stubs",
    "sim_run_idt_stubs:",
    ".set sim_run_idt_vector, 0",
    ".rept {vectors}",
    ".balign {size}",
    ".byte 0x6a, sim_run_idt_vector",
    "jmp {entry}",
    ".set sim_run_idt_vector, sim_run_idt_vector + 1",
    ".endr",
    ".popsection",
    size = const STUB_SIZE,
    vectors = const VECTORS,
    entry = sym fault_entry,
);

unsafe extern "C" {
    /// The first of the [`VECTORS`] stubs of the `global_asm!` block above.
    static sim_run_idt_stubs: [u8; VECTORS * STUB_SIZE];
}

/// The stubs' common part: the vector (pushed by the stub) and the CPU's frame to [`report`],
/// on a 16-byte aligned stack.
#[unsafe(naked)]
extern "C" fn fault_entry() {
    naked_asm!(
        "pop rdi",
        "mov rsi, rsp",
        "and rsp, -16",
        "call {report}",
        "ud2",
        report = sym report,
    )
}

/// Set by the first fault: a fault while reporting one stops the CPU at once.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Prints the fault and ends the run (QEMU status 39).
extern "C" fn report(vector: u64, frame: *const u64) -> ! {
    if REPORTING.swap(true, Ordering::AcqRel) {
        halt_forever()
    }
    let with_code = u8::try_from(vector).is_ok_and(has_error_code);
    // SAFETY: `frame` is the CPU's exception frame on this stack: the error code first for the
    // vectors that push one, then RIP.
    let (error, rip) = unsafe {
        if with_code {
            (frame.read(), frame.add(1).read())
        } else {
            (0, frame.read())
        }
    };
    x86::serial::force_unlock();
    serial_println!(
        "sim: error: the simulator took exception {vector} (error code {error:#x}, CR2 {:#x}) \
         at RIP {rip:#x} in its VMRUN loop",
        x86::cr::read_cr2()
    );
    debug_exit(ExitStatus::SimError);
    halt_forever()
}

/// The loop's gates, in the format LIDT takes.
#[repr(C, align(16))]
struct Table([Gate; VECTORS]);

static TABLE: spin::Once<Table> = spin::Once::new();

/// Loads the loop's IDT on the running CPU (until `x86::interrupts::load_idt` loads the usual
/// one again).
///
/// # Safety
/// The running CPU has loaded a GDT with [`KERNEL_CODE`].
pub unsafe fn load() {
    let table = TABLE.call_once(|| {
        let stubs = (&raw const sim_run_idt_stubs) as u64;
        Table(core::array::from_fn(|v| {
            Gate::interrupt(stubs + (v * STUB_SIZE) as u64, KERNEL_CODE, 0)
        }))
    });
    // SAFETY: the table is 'static and every gate leads to a stub of this module, in the code
    // segment the caller's GDT has, on the running stack (no IST slot).
    unsafe { x86::idt::load_gates(&table.0) };
}
