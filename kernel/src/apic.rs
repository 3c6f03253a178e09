//! The local APIC, in x2APIC mode (MSRs 0x800+) when CPUID offers it, otherwise xAPIC (MMIO at
//! the base in IA32_APIC_BASE, identity-mapped by the stage's page tables).
//!
//! Only what SMP start-up needs: the APIC ID and sending INIT/SIPI inter-processor interrupts.

use x86::msr::{IA32_APIC_BASE, cpuid, rdmsr, wrmsr};

/// IA32_APIC_BASE: APIC globally enabled.
const BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: x2APIC mode.
const BASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE bits 12..51: the xAPIC MMIO base.
const BASE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// CPUID.1:ECX bit 21: x2APIC supported.
const CPUID_X2APIC: u32 = 1 << 21;

/// xAPIC register offsets; the x2APIC MSR is 0x800 + offset / 16.
const REG_ID: u32 = 0x20;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
/// x2APIC: the whole 64-bit ICR is one MSR.
const X2APIC_ICR: u32 = 0x830;
const X2APIC_ID: u32 = 0x802;

/// ICR: delivery status (xAPIC only): 1 while the previous IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;
/// ICR: INIT, level assert.
pub const ICR_INIT: u32 = (0b101 << 8) | (1 << 14);
/// ICR: start-up, with the vector (page number of the start-up code) in bits 7:0.
pub const ICR_STARTUP: u32 = (0b110 << 8) | (1 << 14);

/// How this machine's local APICs are driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    X2Apic,
    XApic { base: u64 },
}

/// Why an IPI was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicError {
    /// The xAPIC still reported the previous IPI pending after the timeout.
    DeliveryTimeout,
    /// An xAPIC destination above 255 cannot be addressed.
    DestinationTooLarge(u32),
}

static MODE: spin::Once<Mode> = spin::Once::new();

/// Chooses the mode on the boot CPU and switches this CPU's APIC into it: x2APIC when CPUID
/// offers it (or the firmware already enabled it), else xAPIC at the base IA32_APIC_BASE names.
pub fn init_bsp() -> Mode {
    *MODE.call_once(|| {
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
        let base = unsafe { rdmsr(IA32_APIC_BASE) };
        if base & BASE_X2APIC != 0 || cpuid(1, 0).ecx & CPUID_X2APIC != 0 {
            enable_x2apic(base);
            Mode::X2Apic
        } else {
            Mode::XApic {
                base: base & BASE_ADDRESS,
            }
        }
    })
}

/// Puts an application processor's APIC into the boot CPU's mode (after INIT it is in xAPIC
/// mode). Runs in 64-bit code, where RDMSR is allowed.
pub fn init_ap() {
    if mode() == Mode::X2Apic {
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
        enable_x2apic(unsafe { rdmsr(IA32_APIC_BASE) });
    }
}

fn enable_x2apic(base: u64) {
    if base & BASE_X2APIC == 0 {
        // SAFETY: CPUID reported x2APIC support; going from enabled xAPIC to x2APIC is the
        // architected transition (the enable bit is set in the same write).
        unsafe { wrmsr(IA32_APIC_BASE, base | BASE_ENABLE | BASE_X2APIC) };
    }
}

/// The mode chosen by [`init_bsp`].
pub fn mode() -> Mode {
    *MODE
        .get()
        .expect("apic::init_bsp runs before any other APIC use")
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    match mode() {
        // SAFETY: in x2APIC mode the ID MSR exists.
        Mode::X2Apic => unsafe { rdmsr(X2APIC_ID) as u32 },
        Mode::XApic { base } => read(base, REG_ID) >> 24,
    }
}

/// Sends an IPI with ICR low word `icr` to the CPU with APIC ID `dest`. In xAPIC mode, waits
/// (up to `timeout_ticks` of TSC time) for the delivery-status bit to clear; x2APIC has no such
/// bit (the ICR write completes the send).
pub fn send_ipi(dest: u32, icr: u32, timeout_ticks: u64) -> Result<(), ApicError> {
    match mode() {
        // SAFETY: writing the x2APIC ICR sends the IPI the caller asked for.
        Mode::X2Apic => unsafe { wrmsr(X2APIC_ICR, (u64::from(dest) << 32) | u64::from(icr)) },
        Mode::XApic { base } => {
            let dest = u8::try_from(dest).map_err(|_| ApicError::DestinationTooLarge(dest))?;
            write(base, REG_ICR_HIGH, u32::from(dest) << 24);
            write(base, REG_ICR_LOW, icr);
            let t0 = x86::tsc::rdtsc();
            while read(base, REG_ICR_LOW) & ICR_PENDING != 0 {
                if x86::tsc::rdtsc() - t0 > timeout_ticks {
                    return Err(ApicError::DeliveryTimeout);
                }
                core::hint::spin_loop();
            }
        }
    }
    Ok(())
}

fn read(base: u64, reg: u32) -> u32 {
    // SAFETY: `base` is the xAPIC MMIO page from IA32_APIC_BASE, identity-mapped (uncached) by
    // the firmware's page tables; `reg` is a register offset within it.
    unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
}

fn write(base: u64, reg: u32, v: u32) {
    // SAFETY: as in `read`; writes to ID/ICR registers only have the documented effects.
    unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, v) }
}
