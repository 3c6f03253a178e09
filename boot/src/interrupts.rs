//! The stage's own GDT, TSS and IDT, installed right after ExitBootServices: from then on the
//! firmware's handlers are gone with the rest of boot services, and any fault in the stage
//! prints the register dump of `x86::interrupts` and ends the run with a failure.
//!
//! Everything lives in the stage's image (statics), so it stays mapped whatever page tables
//! the stage switches to, as long as they map the image. The IGVM entry installs the same
//! tables first thing, before anything can raise #VC, and routes every vector to its own
//! handler (`crate::igvm::handle_exception`). On the EFI entry #VC goes to `crate::sev_efi`
//! (under the firmware's SEV-ES these tables are the first step of taking #VC over), and under
//! SEV-ES an exception nobody handles ends in a termination request instead of QEMU's exit.

use x86::gdt::{Gdt, IstStacks, Tss};
use x86::idt::vector;
use x86::interrupts::{InterruptFrame, fatal};

static IST: IstStacks = IstStacks::new();
static TSS: spin::Once<Tss> = spin::Once::new();
static GDT: spin::Once<Gdt> = spin::Once::new();

/// Masks interrupts (the stage uses none; a firmware timer tick would otherwise be fatal) and
/// installs the stage's GDT, TSS and IDT on the boot CPU (once per entry).
pub fn init() {
    // SAFETY: only clears IF.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    x86::interrupts::set_handler(handle);
    let tss = TSS.call_once(|| Tss::new(IST.tops()));
    let gdt = GDT.call_once(|| Gdt::new(tss));
    // SAFETY: the stage's own GDT and TSS, 'static, loaded once, on the only CPU it runs on.
    unsafe { gdt.load() };
    // SAFETY: the GDT and TSS with the IST stacks were just loaded.
    unsafe { x86::interrupts::load_idt() };
}

/// The handler for every vector: on the IGVM path, the IGVM path's (#VC); else #VC goes to the
/// EFI path's SEV-ES handler, a #PF the page-fault hook resolves is retried, everything else
/// is fatal.
fn handle(frame: &mut InterruptFrame) {
    if crate::igvm::active() {
        return crate::igvm::handle_exception(frame);
    }
    if frame.vector == u64::from(vector::VMM_COMMUNICATION) {
        return crate::sev_efi::handle_vc(frame);
    }
    if frame.vector == u64::from(vector::PAGE_FAULT) && page_fault(frame.cr2, frame.error_code) {
        return;
    }
    if crate::sev_efi::active() {
        crate::sev_efi::fatal(frame)
    }
    fatal(frame)
}

/// The #PF hook: whether the fault at `addr` was resolved, so that the faulting access can be
/// retried. The on-demand identity map answers; why it could not is printed before the dump.
fn page_fault(addr: u64, error_code: u64) -> bool {
    match crate::idmap::handle_page_fault(addr, error_code) {
        Ok(()) => true,
        Err(e) => {
            if crate::sev_efi::can_print() {
                x86::serial::force_unlock();
                x86::serial_println!("stage: {e}");
            }
            false
        }
    }
}
