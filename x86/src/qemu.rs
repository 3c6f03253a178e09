//! Leaving QEMU with a status the test harness can tell apart.
//!
//! QEMU's `isa-debug-exit` device (iobase 0xf4) ends QEMU with status `value * 2 + 1`. A triple
//! fault under `-no-reboot` ends it with status 0, so 0 is never success: success and failure
//! both have their own odd status.

use crate::io::outl;

/// Port of QEMU's `isa-debug-exit` device, as `cargo xtask` configures it.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What a run ended with. The discriminant is what is written to the exit port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitStatus {
    /// QEMU exits with 33.
    Success = 0x10,
    /// QEMU exits with 35.
    Failure = 0x11,
    /// The simulator ended the run on the guest's termination request: QEMU exits with 37.
    GuestTerminated = 0x12,
    /// The simulator ended the run on an error (the guest broke a rule, shut down, or asked
    /// for something the simulator refuses): QEMU exits with 39.
    SimError = 0x13,
    /// The simulator found that its host (QEMU's TCG) lost a vCPU's guest state: the run says
    /// nothing about the guest, and a harness may run it again. QEMU exits with 41.
    VoidRun = 0x14,
}

impl ExitStatus {
    /// The status QEMU's process ends with.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }
}

/// Writes `status` to the debug-exit port. Under QEMU this does not return; elsewhere it does
/// nothing, and the caller falls back to another way to stop (ACPI S5 or halting).
pub fn debug_exit(status: ExitStatus) {
    outl(DEBUG_EXIT_PORT, status as u32);
}

/// Stops this CPU for good: interrupts off, halt forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
