//! MMIO: a load or store to a device page (mapped shared, 3..4 GiB in the launch tables) is a
//! nested page fault the simulator turns into a #VC with exit code 0x400, emulated through the
//! GHCB's MMIO read/write events. The simulator forwards the HPET and the IOAPIC, whose
//! identification registers have values known in advance.

use sev::exit_code::ExitCode::Npf;

use super::{Outcome, counting, one_vc};

/// The HPET's registers; offset 0 is the 64-bit general capabilities and ID register.
const HPET: u64 = 0xfed0_0000;
/// The IOAPIC's index register.
const IOAPIC_INDEX: u64 = 0xfec0_0000;
/// The IOAPIC's data window.
const IOAPIC_DATA: u64 = 0xfec0_0010;
/// Index of the IOAPIC version register.
const IOAPIC_VERSION: u32 = 1;
/// Largest counter period the HPET specification allows: 100 ns, in femtoseconds.
const HPET_MAX_PERIOD_FS: u64 = 100_000_000;

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
    let revision = cap as u8;
    let vendor = (cap >> 16) as u16;
    let period = cap >> 32;
    ensure!(revision != 0, "HPET capabilities {cap:#x}: revision 0");
    ensure!(
        vendor != 0 && vendor != 0xffff,
        "HPET capabilities {cap:#x}: vendor ID {vendor:#x}"
    );
    ensure!(
        (1..=HPET_MAX_PERIOD_FS).contains(&period),
        "HPET capabilities {cap:#x}: period {period} fs outside 1..={HPET_MAX_PERIOD_FS}"
    );
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
        (IOAPIC_INDEX as *mut u32).write_volatile(IOAPIC_VERSION)
    })?;
    let v = one_vc("MOV r32, [IOAPIC data]", Npf, || read::<u32>(IOAPIC_DATA))?;
    check_ioapic_version(v)
}

/// Version 0x11 (the 82093AA) or 0x20 (QEMU's default), with a PC's 24 pins or more.
fn check_ioapic_version(v: u32) -> Outcome {
    let version = v as u8;
    let max_entry = (v >> 16) as u8;
    ensure!(
        matches!(version, 0x11 | 0x20),
        "IOAPIC version register {v:#x}: version {version:#x}, expected 0x11 or 0x20"
    );
    ensure!(
        max_entry >= 23,
        "IOAPIC version register {v:#x}: {} redirection entries, expected at least 24",
        u32::from(max_entry) + 1
    );
    Ok(())
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
    let index = [IOAPIC_VERSION];
    let ((), vcs) = counting(|| rep_movsd(index.as_ptr(), IOAPIC_INDEX as *mut u32, 1));
    vcs.expect("REP MOVSD to the IOAPIC index", Npf, 1..=1)?;
    let v = one_vc("MOV r32, [IOAPIC data]", Npf, || read::<u32>(IOAPIC_DATA))?;
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
