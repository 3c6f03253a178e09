//! The kernel's local APIC: the one [`LocalApic`] all its CPUs use, chosen by the boot CPU
//! (`x86::apic` drives the hardware).

pub use x86::apic::ApicError;
use x86::apic::LocalApic;

static APIC: spin::Once<LocalApic> = spin::Once::new();

/// Chooses the mode on the boot CPU and switches this CPU's APIC into it (see
/// [`LocalApic::enable`]).
pub fn init_bsp() -> LocalApic {
    // SAFETY: called after `memory::init`: the kernel's identity map, which every CPU runs on,
    // maps the local APIC window (0xFEE00000, where the firmware leaves the xAPIC) uncached.
    *APIC.call_once(|| unsafe { LocalApic::enable() })
}

/// Puts an application processor's APIC into the boot CPU's mode.
pub fn init_ap() {
    get().enable_this_cpu();
}

/// The APIC chosen by [`init_bsp`].
pub fn get() -> LocalApic {
    *APIC
        .get()
        .expect("apic::init_bsp runs before any other APIC use")
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    get().id()
}

/// Sends an IPI (ICR low word `icr`) to APIC ID `dest`; see [`LocalApic::send_ipi`].
pub fn send_ipi(dest: u32, icr: u32, timeout_ticks: u64) -> Result<(), ApicError> {
    get().send_ipi(dest, icr, timeout_ticks)
}
