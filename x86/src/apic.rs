//! The local APIC, in x2APIC mode (MSRs 0x800+) when CPUID offers it, otherwise xAPIC (MMIO at
//! the base in IA32_APIC_BASE).
//!
//! What starting application processors and acknowledging interrupts need: the APIC ID, sending
//! inter-processor interrupts with the delivery-status wait, and EOI. Which mode a program runs
//! its CPUs in is chosen once, on the boot CPU ([`LocalApic::enable`]); the resulting
//! [`LocalApic`] is a plain value every CPU of the program can use.

use crate::msr::{IA32_APIC_BASE, cpuid, rdmsr, wrmsr};

/// IA32_APIC_BASE: APIC globally enabled.
const BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: x2APIC mode.
const BASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE bits 12..51: the xAPIC MMIO base.
const BASE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// CPUID.1:ECX bit 21: x2APIC supported.
const CPUID_X2APIC: u32 = 1 << 21;

/// xAPIC register offsets; the x2APIC MSR of a register is 0x800 + offset / 16.
const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
/// x2APIC: the ID register (the full 32-bit ID, not shifted as in xAPIC).
const X2APIC_ID: u32 = 0x802;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
/// x2APIC: the whole 64-bit ICR is one MSR.
const X2APIC_ICR: u32 = 0x830;

/// ICR: delivery status (xAPIC only): 1 while the previous IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;
/// ICR: INIT, level assert.
pub const ICR_INIT: u32 = (0b101 << 8) | (1 << 14);
/// ICR: fixed delivery, level assert; OR in the vector.
pub const ICR_FIXED: u32 = 1 << 14;
/// The spurious-interrupt vector the APIC is set up with: its handler does nothing (no EOI).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// SVR: APIC software enable; without it only INIT, SIPI and NMI are accepted.
const SVR_ENABLE: u32 = 1 << 8;
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

/// The local APICs of a program's CPUs, all driven in one [`Mode`]. Every method acts on the
/// APIC of the CPU that calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalApic {
    mode: Mode,
}

impl LocalApic {
    /// Chooses the mode on the calling (boot) CPU and switches its APIC into it: x2APIC when
    /// CPUID offers it (or the firmware already enabled it), else xAPIC at the base
    /// IA32_APIC_BASE names.
    ///
    /// # Safety
    /// In xAPIC mode every method accesses the APIC's MMIO page through its physical address:
    /// the caller's page tables identity-map that page (uncached) on every CPU that uses the
    /// returned value, as the firmware's and the kernel's identity maps do.
    pub unsafe fn enable() -> Self {
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
        let base = unsafe { rdmsr(IA32_APIC_BASE) };
        let mode = if base & BASE_X2APIC != 0 || cpuid(1, 0).ecx & CPUID_X2APIC != 0 {
            enable_x2apic(base);
            Mode::X2Apic
        } else {
            Mode::XApic {
                base: base & BASE_ADDRESS,
            }
        };
        let apic = Self { mode };
        apic.software_enable();
        apic
    }

    /// Sets the SVR's software-enable bit (with [`SPURIOUS_VECTOR`]), which INIT clears: fixed
    /// interrupts reach the CPU only with it.
    fn software_enable(&self) {
        let svr = SVR_ENABLE | u32::from(SPURIOUS_VECTOR);
        match self.mode {
            // SAFETY: in x2APIC mode the SVR MSR exists; enabling only lets fixed interrupts in.
            Mode::X2Apic => unsafe { wrmsr(X2APIC_SVR, u64::from(svr)) },
            Mode::XApic { base } => write(base, REG_SVR, svr),
        }
    }

    /// The mode [`LocalApic::enable`] chose.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Puts the calling CPU's APIC into this mode: an application processor comes out of INIT
    /// in xAPIC mode, so it calls this before any other method. Runs in 64-bit code, where
    /// RDMSR is allowed.
    pub fn enable_this_cpu(&self) {
        if self.mode == Mode::X2Apic {
            // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU.
            enable_x2apic(unsafe { rdmsr(IA32_APIC_BASE) });
        }
        self.software_enable();
    }

    /// The calling CPU's APIC ID.
    pub fn id(&self) -> u32 {
        match self.mode {
            // SAFETY: in x2APIC mode the ID MSR exists.
            Mode::X2Apic => unsafe { rdmsr(X2APIC_ID) as u32 },
            Mode::XApic { base } => read(base, REG_ID) >> 24,
        }
    }

    /// Sends an IPI with ICR low word `icr` to the CPU with APIC ID `dest`. In xAPIC mode, waits
    /// (up to `timeout_ticks` of TSC time) for the delivery-status bit to clear; x2APIC has no
    /// such bit (the ICR write completes the send).
    pub fn send_ipi(&self, dest: u32, icr: u32, timeout_ticks: u64) -> Result<(), ApicError> {
        match self.mode {
            // SAFETY: writing the x2APIC ICR sends the IPI the caller asked for.
            Mode::X2Apic => unsafe { wrmsr(X2APIC_ICR, (u64::from(dest) << 32) | u64::from(icr)) },
            Mode::XApic { base } => {
                let dest = u8::try_from(dest).map_err(|_| ApicError::DestinationTooLarge(dest))?;
                write(base, REG_ICR_HIGH, u32::from(dest) << 24);
                write(base, REG_ICR_LOW, icr);
                let t0 = crate::tsc::rdtsc();
                while read(base, REG_ICR_LOW) & ICR_PENDING != 0 {
                    if crate::tsc::rdtsc() - t0 > timeout_ticks {
                        return Err(ApicError::DeliveryTimeout);
                    }
                    core::hint::spin_loop();
                }
            }
        }
        Ok(())
    }

    /// Signals the end of the interrupt being handled, so the APIC can deliver the next one of
    /// the same or lower priority.
    pub fn eoi(&self) {
        match self.mode {
            // SAFETY: in x2APIC mode the EOI MSR exists; writing 0 is the architected EOI.
            Mode::X2Apic => unsafe { wrmsr(X2APIC_EOI, 0) },
            Mode::XApic { base } => write(base, REG_EOI, 0),
        }
    }
}

fn enable_x2apic(base: u64) {
    if base & BASE_X2APIC == 0 {
        // SAFETY: CPUID reported x2APIC support; going from enabled xAPIC to x2APIC is the
        // architected transition (the enable bit is set in the same write).
        unsafe { wrmsr(IA32_APIC_BASE, base | BASE_ENABLE | BASE_X2APIC) };
    }
}

fn read(base: u64, reg: u32) -> u32 {
    // SAFETY: `base` is the xAPIC MMIO page from IA32_APIC_BASE, identity-mapped (uncached) as
    // `LocalApic::enable`'s caller guaranteed; `reg` is a register offset within it.
    unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
}

fn write(base: u64, reg: u32, v: u32) {
    // SAFETY: as in `read`; writes to the EOI, SVR and ICR registers only have their
    // documented effects.
    unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, v) }
}
