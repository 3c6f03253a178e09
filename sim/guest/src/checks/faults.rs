//! What the simulator must refuse or escalate, each ending the run (selected by name only):
//! a #VC whose gate lies beyond the IDT limit becomes a #DF the guest handles; with #DF's gate
//! gone too, the guest shuts down (status 39 with the guest state); an MSR-protocol value the
//! protocol does not define ends the run (status 39).

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use super::Outcome;

/// The IDT register as SIDT/LIDT see it.
#[repr(C, packed)]
struct Idtr {
    limit: u16,
    base: u64,
}

/// Set while `vc_double_fault` expects its #DF.
static EXPECT_DOUBLE_FAULT: AtomicBool = AtomicBool::new(false);
/// The IDTR to restore in the #DF handler.
static mut SAVED_IDTR: Idtr = Idtr { limit: 0, base: 0 };

fn sidt() -> Idtr {
    let mut r = Idtr { limit: 0, base: 0 };
    // SAFETY: SIDT writes 10 bytes to `r`.
    unsafe { asm!("sidt [{}]", in(reg) &raw mut r, options(nostack)) };
    r
}

/// # Safety
/// `r` points to an IDTR describing an IDT whose gates the guest can live with.
unsafe fn lidt(r: *const Idtr) {
    // SAFETY: per the caller.
    unsafe { asm!("lidt [{}]", in(reg) r, options(nostack, readonly)) };
}

/// Shortens the IDT to `vectors` gates and executes CPUID (a #VC).
fn cpuid_with_idt_limit(vectors: u16) {
    let full = sidt();
    // SAFETY: the same table, shorter: gates beyond it are what the checks want missing.
    unsafe {
        SAVED_IDTR = Idtr {
            limit: full.limit,
            base: full.base,
        };
        lidt(&Idtr {
            limit: vectors * 16 - 1,
            base: full.base,
        });
    }
    core::hint::black_box(x86::msr::cpuid(0, 0));
    // SAFETY: the full table again.
    unsafe { lidt(&full) };
}

/// The #DF handler's part: restores the IDT and ends the run with success if the #DF was
/// expected. Returns when it was not.
pub fn double_fault() {
    if !EXPECT_DOUBLE_FAULT.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the IDTR saved before it was shortened.
    unsafe { lidt(&raw const SAVED_IDTR) };
    x86::serial::force_unlock();
    x86::serial_println!("TEST vc_double_fault PASS");
    x86::serial_println!("1 passed, 0 failed");
    x86::qemu::debug_exit(x86::qemu::ExitStatus::Success);
    x86::qemu::halt_forever()
}

/// #VC gate beyond the IDT limit: the simulator must deliver #DF (gate 8 is still there).
pub fn vc_double_fault() -> Outcome {
    EXPECT_DOUBLE_FAULT.store(true, Ordering::Release);
    cpuid_with_idt_limit(29);
    EXPECT_DOUBLE_FAULT.store(false, Ordering::Release);
    Err("CPUID completed although its #VC gate was beyond the IDT limit".into())
}

/// #VC and #DF gates beyond the IDT limit: the simulator must shut the guest down.
pub fn triple_fault() -> Outcome {
    cpuid_with_idt_limit(8);
    Err("CPUID completed although neither #VC nor #DF could be delivered".into())
}

/// GHCB GPA Registration, an SEV-SNP request: KVM terminates an SEV-ES guest that sends it,
/// and so must the simulator.
pub fn ghcb_registration() -> Outcome {
    let gpa = crate::ghcb::gpa();
    crate::ghcb::with(|ch| {
        // The run ends here; an answer is a failure.
        let r = sev::msr_protocol::register_ghcb(&mut ch.msr, gpa);
        Err(alloc::format!(
            "the simulator answered GHCB GPA Registration from an SEV-ES guest: {r:?}"
        ))
    })
}

/// An MSR-protocol request with a code the protocol does not define (0xfff).
pub fn bad_msr_request() -> Outcome {
    // SAFETY: the GHCB MSR and VMGEXIT of an SEV-ES guest; the simulator must end the run.
    unsafe {
        x86::msr::wrmsr(sev::msr_protocol::GHCB_MSR, 0xfff);
        asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(nostack));
    }
    Err("the simulator resumed after an undefined MSR-protocol request".into())
}
