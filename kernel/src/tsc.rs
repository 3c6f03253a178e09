//! The TSC rate when the stage could not measure it: under SEV-ES from IGVM there is no
//! firmware stall to time against, and the hypervisor need not report CPUID 0x15/0x16. The
//! HPET (which the simulator forwards, and every QEMU/KVM machine has) is the reference: its
//! counter period is in its capabilities register, and 10 ms of it are timed with RDTSC. Under
//! SEV-ES every HPET read and RDTSC may be a #VC and a VMGEXIT, so the window is not polled:
//! the CPU spins without exits for a number of rounds that doubles until the window has
//! passed, which costs a handful of reads.
//!
//! Under SEV-ES the HPET is the hypervisor's device: its period and counter are untrusted
//! input. The period must be what the HPET specification allows (at most 100 ns), the counter
//! must advance within a bounded number of reads, and the result must be a plausible CPU clock
//! (100 MHz .. 10 GHz); otherwise the rate stays unknown (0) and the caller says so.

use x86::pc::hpet::{self, CapabilitiesError};

/// How long the measurement runs.
const WINDOW_FS: u64 = 10_000_000_000_000; // 10 ms
/// Spin rounds before the first look at the counter; doubled after each look.
const FIRST_SPIN: u64 = 1 << 16;
/// Looks at the counter before giving up on one that does not advance (the spin reaches
/// `FIRST_SPIN << 24` rounds by then).
const MAX_READS: u32 = 24;

/// Why the TSC could not be measured.
#[derive(Clone, Copy, Debug)]
pub enum CalibrationError {
    /// The capabilities register is no HPET's (e.g. no valid period).
    Capabilities(CapabilitiesError),
    /// The counter did not run for the whole window.
    Stalled,
    /// The result is no plausible CPU clock.
    Implausible(u64),
}

impl core::fmt::Display for CalibrationError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Self::Capabilities(e) => write!(f, "HPET capabilities: {e}"),
            Self::Stalled => write!(f, "the HPET counter does not advance"),
            Self::Implausible(hz) => write!(f, "measured {hz} Hz, not a plausible TSC rate"),
        }
    }
}

fn read(reg: u64) -> u64 {
    // SAFETY: an aligned 64-bit HPET register; the kernel's page tables map the HPET page
    // (`crate::memory`: MMIO, uncached, shared under SEV), and reading it has no side effects.
    unsafe { core::ptr::read_volatile((hpet::BASE + reg) as *const u64) }
}

/// Measures the TSC rate against the HPET. Call once the kernel's page tables are up (and,
/// under SEV-ES, the GHCB: every access is an MMIO #VC).
pub fn calibrate_with_hpet() -> Result<u64, CalibrationError> {
    let period =
        hpet::period_fs(read(hpet::CAPABILITIES)).map_err(CalibrationError::Capabilities)?;
    let config = read(hpet::CONFIG);
    let enabled_here = config & hpet::ENABLE == 0;
    if enabled_here {
        write_config(config | hpet::ENABLE);
    }
    let measured = measure(period);
    if enabled_here {
        // As the firmware left it: a running HPET may fire the timers it programmed.
        write_config(config);
    }
    measured
}

fn write_config(value: u64) {
    // SAFETY: the configuration register of the HPET mapped above; its enable bit only starts
    // or stops the main counter.
    unsafe { core::ptr::write_volatile((hpet::BASE + hpet::CONFIG) as *mut u64, value) };
}

/// Times [`WINDOW_FS`] of the running HPET counter (period `period` fs) with the TSC.
fn measure(period: u64) -> Result<u64, CalibrationError> {
    let ticks = WINDOW_FS / period;
    let start = read(hpet::COUNTER);
    let tsc0 = x86::tsc::rdtsc();
    let mut spin = FIRST_SPIN;
    let mut reads = 0;
    let (elapsed, tsc) = loop {
        for _ in 0..spin {
            core::hint::spin_loop();
        }
        let now = read(hpet::COUNTER).wrapping_sub(start);
        let tsc = x86::tsc::rdtsc().wrapping_sub(tsc0);
        if now >= ticks {
            break (now, tsc);
        }
        reads += 1;
        if reads > MAX_READS {
            return Err(CalibrationError::Stalled);
        }
        spin *= 2;
    };
    // hz = tsc / (elapsed * period fs), in u128 to keep the precision.
    let fs = u128::from(elapsed) * u128::from(period);
    let hz = (u128::from(tsc) * 1_000_000_000_000_000 / fs) as u64;
    if !(100_000_000..=10_000_000_000).contains(&hz) {
        return Err(CalibrationError::Implausible(hz));
    }
    Ok(hz)
}
