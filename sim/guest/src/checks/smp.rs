//! Several vCPUs and the virtual x2APIC: application processors started with INIT and SIPI
//! (ICR writes, each a #VC), parked in AP reset hold and woken again by SIPIs, alternating the
//! MSR protocol's reset hold and the GHCB's AP_HLT_LOOP; an NMI and a fixed interrupt sent to
//! this vCPU through its own ICR, the fixed one first while interrupts are off (delivered at
//! the interrupt window when they come on), acknowledged with EOI.

use handoff::launch::{PARAM_GPA, ParamArea};
use sev::nae;

use super::Outcome;
use crate::ap;
use crate::ghcb;
use crate::interrupts::{self, IPI_VECTOR};

/// The x2APIC ICR.
const ICR: u32 = 0x830;
/// The x2APIC spurious-interrupt vector register (bit 8: APIC software enable).
const SVR: u32 = 0x80f;
const ICR_INIT: u64 = 0x4500;
const ICR_STARTUP: u64 = 0x4600;
const ICR_NMI: u64 = 0x400;
/// Destination shorthand "self".
const ICR_SELF: u64 = 1 << 18;
/// Reset hold / wake cycles per AP.
const WAKE_CYCLES: u32 = 10;
/// Spins before a wait gives up (seconds of TCG time).
const WAIT_SPINS: u64 = 200_000_000;
/// Start-up IPIs sent before a wake-up counts as failed: a SIPI that arrives before the AP
/// has parked again is lost (it is running), as on hardware.
const ATTEMPTS: u32 = 5;

fn icr(value: u64) {
    // SAFETY: an x2APIC ICR write; the simulator's #VC path emulates it.
    unsafe { x86::msr::wrmsr(ICR, value) }
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..WAIT_SPINS {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

fn vp_count() -> u64 {
    // SAFETY: the launcher's parameter area at PARAM_GPA (launch contract), plain integers.
    u64::from(unsafe { &*(PARAM_GPA as *const ParamArea) }.vp_count)
}

/// INIT, then SIPI to vCPU `index`.
fn init_sipi(index: u64) {
    icr(ICR_INIT | index << 32);
    icr(ICR_STARTUP | 0x08 | index << 32);
}

/// Wakes AP `index` from reset hold, sending SIPIs until it counts a wake-up.
fn wake(index: u64) -> Outcome {
    let before = ap::wakes(index as usize);
    for _ in 0..ATTEMPTS {
        init_sipi(index);
        if wait_for(|| ap::wakes(index as usize) > before) {
            return Ok(());
        }
    }
    Err(alloc::format!("AP {index} did not wake from reset hold"))
}

pub fn smp() -> Outcome {
    let n = vp_count();
    ensure!(n >= 2, "needs at least 2 vCPUs; the launch has {n}");
    for i in 1..n {
        init_sipi(i);
    }
    ensure!(
        wait_for(|| ap::online() == n - 1),
        "{} of {} APs came online",
        ap::online(),
        n - 1
    );
    for cycle in 0..WAKE_CYCLES {
        // After this wake-up each AP parks the other way.
        ap::PARK_WITH_HLT_LOOP.store(cycle % 2 == 0, core::sync::atomic::Ordering::Release);
        for i in 1..n {
            wake(i)?;
        }
    }
    for i in 1..n {
        let w = ap::wakes(i as usize);
        ensure!(
            w == u64::from(WAKE_CYCLES),
            "AP {i} counted {w} wake-ups, {WAKE_CYCLES} sent"
        );
    }
    Ok(())
}

pub fn nmi_ipi() -> Outcome {
    let before = interrupts::nmis();
    icr(ICR_NMI | ICR_SELF);
    ensure!(
        wait_for(|| interrupts::nmis() > before),
        "no NMI after an NMI IPI to self"
    );
    ghcb::with(|ch| ch.ghcb.as_mut().map(nae::nmi_complete))
        .ok_or("no GHCB registered")?
        .map_err(|e| alloc::format!("NMI_COMPLETE: {e:?}"))?;
    ensure!(
        interrupts::nmis() == before + 1,
        "{} NMIs for one IPI",
        interrupts::nmis() - before
    );
    Ok(())
}

pub fn fixed_ipi() -> Outcome {
    let before = interrupts::ipis();
    // A software-disabled APIC (as after reset) takes no fixed interrupt, even with interrupts
    // on; it stays requested until the SVR enables the APIC.
    icr(u64::from(IPI_VECTOR) | ICR_SELF);
    // SAFETY: the IDT is loaded and the interrupt handler only counts and sends EOI.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
    ensure!(
        interrupts::ipis() == before,
        "a fixed interrupt came in while the APIC was software-disabled"
    );
    // SAFETY: an x2APIC SVR write (software enable, spurious vector 0xFF); emulated through #VC.
    unsafe { x86::msr::wrmsr(SVR, 0x1ff) };
    // Interrupts are off: the IPI waits in the IRR for the interrupt window.
    icr(u64::from(IPI_VECTOR) | ICR_SELF);
    ensure!(
        interrupts::ipis() == before,
        "a fixed interrupt came in while interrupts were off"
    );
    // SAFETY: the IDT is loaded and the interrupt handler only counts and sends EOI.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let arrived = wait_for(|| interrupts::ipis() > before);
    // With interrupts on, the next one comes right away.
    icr(u64::from(IPI_VECTOR) | ICR_SELF);
    let second = wait_for(|| interrupts::ipis() > before + 1);
    // SAFETY: turning interrupts off again is always sound.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    ensure!(
        arrived,
        "the fixed interrupt did not come when interrupts came on"
    );
    ensure!(
        second,
        "a fixed interrupt sent with interrupts on did not come"
    );
    ensure!(
        interrupts::ipis() == before + 2,
        "{} interrupts for two IPIs",
        interrupts::ipis() - before
    );
    Ok(())
}
