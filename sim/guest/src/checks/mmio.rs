//! MMIO: a load or store to a device page (mapped shared, 3..4 GiB in the launch tables) is a
//! nested page fault the simulator turns into a #VC with exit code 0x400, emulated through the
//! GHCB's MMIO read/write events. The simulator forwards the HPET and the IOAPIC, whose
//! identification registers have values known in advance.

use sev::exit_code::ExitCode::Npf;
use x86::pc::{hpet, ioapic};

use super::{Outcome, counting, one_vc};

/// The HPET's 64-bit general capabilities and ID register.
const HPET: u64 = hpet::BASE + hpet::CAPABILITIES;

fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: `addr` is a register of a device the simulator forwards, mapped shared and
    // uncached by the launch tables; reading these registers has no side effects.
    unsafe { (addr as *const T).read_volatile() }
}

pub fn mmio() -> Outcome {
    hpet()?;
    ioapic()?;
    movs()
}

/// The capabilities register as a 64-bit load and its period as a 32-bit load (the HPET takes
/// no narrower accesses), consistent and sensible.
fn hpet() -> Outcome {
    let cap = one_vc("MOV r64, [HPET]", Npf, || read::<u64>(HPET))?;
    let period =
        hpet::period_fs(cap).map_err(|e| alloc::format!("HPET capabilities {cap:#x}: {e}"))?;
    let high = one_vc("MOV r32, [HPET + 4]", Npf, || read::<u32>(HPET + 4))?;
    ensure!(
        u64::from(high) == period,
        "HPET period read as a dword: {high:#x}, as part of the qword: {period:#x}"
    );
    Ok(())
}

/// The IOAPIC version through its index/data pair: a store, then a load.
fn ioapic() -> Outcome {
    // SAFETY: selecting a register in the IOAPIC's index register only affects what the data
    // window shows; nothing else in this guest uses the IOAPIC.
    one_vc("MOV [IOAPIC index], r32", Npf, || unsafe {
        (ioapic::INDEX as *mut u32).write_volatile(ioapic::VERSION)
    })?;
    let v = one_vc("MOV r32, [IOAPIC data]", Npf, || read::<u32>(ioapic::DATA))?;
    check_ioapic_version(v)
}

fn check_ioapic_version(v: u32) -> Outcome {
    ioapic::check_version(v).map_err(|e| alloc::format!("{e}"))
}

/// MOVS with MMIO on either side, one #VC per element: the HPET capabilities copied into
/// private memory as two dwords, and the IOAPIC index written from private memory.
fn movs() -> Outcome {
    let cap = read::<u64>(HPET);
    let mut copy = [0u32; 2];
    let ((), vcs) = counting(|| rep_movsd(HPET as *const u32, copy.as_mut_ptr(), copy.len()));
    vcs.expect("REP MOVSD from the HPET", Npf, 2..=2)?;
    let copied = u64::from(copy[0]) | u64::from(copy[1]) << 32;
    ensure!(
        copied == cap,
        "REP MOVSD copied {copied:#x} from the HPET, a MOV read {cap:#x}"
    );
    let index = [ioapic::VERSION];
    let ((), vcs) = counting(|| rep_movsd(index.as_ptr(), ioapic::INDEX as *mut u32, 1));
    vcs.expect("REP MOVSD to the IOAPIC index", Npf, 1..=1)?;
    let v = one_vc("MOV r32, [IOAPIC data]", Npf, || read::<u32>(ioapic::DATA))?;
    check_ioapic_version(v)
}

/// `rep movsd` of `n` dwords.
fn rep_movsd(src: *const u32, dst: *mut u32, n: usize) {
    // SAFETY: both sides are valid for `n` dwords: private buffers of the caller, or registers
    // of the forwarded devices that `mmio` names (reading them has no side effects, writing the
    // IOAPIC index only selects a register).
    unsafe {
        core::arch::asm!("rep movsd", inout("rsi") src => _, inout("rdi") dst => _,
            inout("rcx") n => _, options(nostack, preserves_flags))
    };
}
