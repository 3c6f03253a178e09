//! The in-kernel test runner.
//!
//! Cases are compiled into the kernel and selected with `test=all` or `test=NAME`. Each result is
//! one machine-readable line, `TEST <name> PASS|FAIL [reason]`, and the run ends with
//! `N passed, N failed`, which `cargo xtask test` parses.

use handoff::bootinfo::{BootInfo, MemoryKind};
use x86::qemu::ExitStatus;

/// A test case: Ok, or the reason it failed.
type Case = fn(&BootInfo) -> Result<(), &'static str>;

/// Every case, by name.
const CASES: &[(&str, Case)] = &[
    ("boot_info", boot_info),
    ("heap", heap),
    ("tsc_monotonic", tsc_monotonic),
];

/// Runs the cases `selection` names and returns the exit status for the run.
pub fn run(selection: &str, info: &BootInfo) -> ExitStatus {
    let (mut passed, mut failed) = (0, 0);
    let mut matched = false;
    for (name, case) in CASES
        .iter()
        .filter(|(n, _)| selection == "all" || *n == selection)
    {
        matched = true;
        match case(info) {
            Ok(()) => {
                passed += 1;
                x86::serial_println!("TEST {name} PASS");
            }
            Err(why) => {
                failed += 1;
                x86::serial_println!("TEST {name} FAIL {why}");
            }
        }
    }
    if !matched {
        x86::serial_println!("kernel: no test named `{selection}`");
        failed += 1;
    }
    x86::serial_println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

fn boot_info(info: &BootInfo) -> Result<(), &'static str> {
    let map = info.memory_map();
    if !map.windows(2).all(|w| w[0].end() <= w[1].start) {
        return Err("memory map not sorted or overlapping");
    }
    let usable: u64 = map
        .iter()
        .filter(|r| r.kind == MemoryKind::USABLE)
        .map(|r| r.len)
        .sum();
    if usable < 16 << 20 {
        return Err("less than 16 MiB of usable memory");
    }
    let k = (info.kernel_start, info.kernel_start + info.kernel_len);
    if !map
        .iter()
        .any(|r| r.kind == MemoryKind::BOOTLOADER && r.start <= k.0 && k.1 <= r.end())
    {
        return Err("kernel image not inside a bootloader region");
    }
    if info.rsdp == 0 {
        return Err("no ACPI RSDP");
    }
    Ok(())
}

fn heap(_: &BootInfo) -> Result<(), &'static str> {
    use alloc::vec::Vec;
    let before = crate::heap::used();
    let v: Vec<u64> = (0..10_000).collect();
    if v.iter().sum::<u64>() != 49_995_000 || crate::heap::used() < before + 80_000 {
        return Err("allocation is wrong");
    }
    drop(v);
    if crate::heap::used() != before {
        return Err("memory not returned");
    }
    Ok(())
}

fn tsc_monotonic(info: &BootInfo) -> Result<(), &'static str> {
    let t = info.timestamps;
    let now = x86::tsc::rdtsc();
    if !(t.efi_entry < t.exit_boot_services
        && t.exit_boot_services < t.kernel_entry
        && t.kernel_entry < now)
    {
        return Err("stage timestamps out of order");
    }
    Ok(())
}
