//! GDT, TSS with IST stacks, the IDT, and the one handler behind every vector.
//!
//! The launch state has an empty IDT, so these are installed first thing: from then on a #VC
//! (vector 29) reaches [`crate::vc::handle`], an NMI (vector 2, on its own IST stack) is
//! counted, and anything else is unexpected and ends the run with the register dump.

use core::sync::atomic::{AtomicU64, Ordering};
use x86::gdt::{Gdt, IstStacks, Tss};
use x86::idt::vector;
use x86::interrupts::{InterruptFrame, fatal};

static IST: IstStacks = IstStacks::new();
static TSS: spin::Once<Tss> = spin::Once::new();
static GDT: spin::Once<Gdt> = spin::Once::new();

/// NMIs delivered so far. The NMI handler only counts: it must not use the GHCB, because an
/// NMI the simulator injects arrives right after a VMGEXIT, while the interrupted #VC handler
/// still owns the GHCB (the NMI check sends NMI_COMPLETE itself).
static NMIS: AtomicU64 = AtomicU64::new(0);

/// Installs GDT, TSS and IDT on the (only) vCPU. Call once, before anything can raise #VC.
pub fn init() {
    x86::interrupts::set_handler(handle);
    let tss = TSS.call_once(|| Tss::new(IST.tops()));
    let gdt = GDT.call_once(|| Gdt::new(tss));
    // SAFETY: this vCPU's own GDT and TSS, 'static, loaded once.
    unsafe { gdt.load() };
    // SAFETY: the GDT and TSS with this vCPU's IST stacks were just loaded.
    unsafe { x86::interrupts::load_idt() };
}

/// NMIs delivered so far.
pub fn nmis() -> u64 {
    NMIS.load(Ordering::Acquire)
}

/// The vector of the fixed IPIs the SMP checks send to themselves.
pub const IPI_VECTOR: u8 = 0x40;
/// Fixed IPIs handled so far.
static IPIS: AtomicU64 = AtomicU64::new(0);

/// Fixed IPIs handled so far.
pub fn ipis() -> u64 {
    IPIS.load(Ordering::Acquire)
}

/// x2APIC EOI register.
const X2APIC_EOI: u32 = 0x80b;

/// The handler for every vector. A frame without its error code is an interrupt the
/// hypervisor injected on an exception vector (`InterruptFrame::lacks_its_error_code`), never
/// taken for that exception: the run ends with its own reason.
fn handle(frame: &mut InterruptFrame) {
    if frame.lacks_its_error_code() {
        let v = frame.vector;
        crate::ghcb::CHANNEL.fail(
            format_args!("simguest: vector {v} without its error code: injected"),
            sev::termination::GuestReason::MissingErrorCode.into(),
        )
    }
    match frame.vector as u8 {
        vector::VMM_COMMUNICATION => crate::vc::handle(frame),
        vector::NMI => {
            NMIS.fetch_add(1, Ordering::AcqRel);
        }
        vector::DOUBLE_FAULT => {
            crate::checks::double_fault();
            fatal(frame)
        }
        IPI_VECTOR => {
            IPIS.fetch_add(1, Ordering::AcqRel);
            // SAFETY: the x2APIC EOI write (a #VC the #VC handler emulates); the checks enable
            // interrupts only where they do not hold the GHCB.
            unsafe { x86::msr::wrmsr(X2APIC_EOI, 0) };
        }
        _ => fatal(frame),
    }
}
