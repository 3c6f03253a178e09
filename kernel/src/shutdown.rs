//! Ending a run: QEMU's debug-exit device first, then ACPI S5 (power off) when the ACPI tables
//! were parsed and gave the PM1a control port and the S5 sleep type, then halting with a message.
//! Under SEV-ES, a GHCB termination request instead of ACPI.

use x86::qemu::{ExitStatus, debug_exit, halt_forever};

/// Ends the run with `status`. Never returns.
pub fn exit(status: ExitStatus) -> ! {
    debug_exit(status);
    if crate::sev::active() {
        // Under SEV-ES the simulator forwards the debug-exit port and ends the run at once;
        // a platform that does not ends here, through the GHCB (no ACPI on this path).
        x86::serial_println!("kernel: no debug-exit device; termination request ({status:?})");
        crate::sev::terminate(::sev::termination::GhcbReason::General.into())
    }
    // QEMU ends asynchronously after the port write; give it time before concluding that no
    // debug-exit device exists.
    let t0 = x86::tsc::rdtsc();
    while x86::tsc::rdtsc() - t0 < 1 << 30 {
        core::hint::spin_loop();
    }
    x86::serial_println!("kernel: no debug-exit device; ACPI power-off ({status:?})");
    crate::acpi::power_off();
    x86::serial_println!("kernel: no ACPI power-off; halting ({status:?})");
    halt_forever()
}
