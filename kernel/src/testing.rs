//! The in-kernel test runner.
//!
//! Cases are compiled into the kernel and selected with `test=all` or `test=NAME`. Each result is
//! one machine-readable line, `TEST <name> PASS|FAIL [reason]`, and the run ends with
//! `N passed, N failed`, which `cargo xtask test` parses.

mod nmi_storm;
mod sev_es;
mod smp_cycles;

use handoff::bootinfo::{BootInfo, MemoryKind};
use x86::qemu::ExitStatus;

/// A test case: Ok, or the reason it failed.
type Case = fn(&BootInfo) -> Result<(), &'static str>;

/// Every case, by name.
const CASES: &[(&str, Case)] = &[
    ("boot_info", boot_info),
    ("heap", heap),
    ("frames", frames),
    ("paging", paging),
    ("stage_page_tables", stage_page_tables),
    ("tsc_monotonic", tsc_monotonic),
    ("acpi_madt", acpi_madt),
    ("acpi_rejects_bad_tables", acpi_rejects_bad_tables),
    ("smp_all_online", smp_all_online),
    ("smp_offline_online", smp_cycles::offline_online),
    ("breakpoint", breakpoint),
    ("nested_exception", nested_exception),
    ("sse_preserved", sse_preserved),
    ("nmi", nmi),
    ("nmi_nested", nmi_storm::nested),
];

/// Cases that end the run on purpose, need the SEV-ES simulator's test hypercalls or take long
/// (and so are not part of `all`), selected only by name.
const BY_NAME_ONLY: &[(&str, Case)] = &[
    ("page_fault", page_fault),
    ("nmi_worst_cases", nmi_storm::worst_cases),
    ("nmi_complete_refused", nmi_storm::complete_refused),
    ("nmi_storm", nmi_storm::storm),
    ("nmi_storm_full", nmi_storm::storm_full),
];

/// Cases that do not apply under SEV-ES (launched from IGVM), with the reason: they are not
/// run, and say so in a `TEST <name> SKIP <reason>` line.
const NOT_UNDER_SEV_ES: &[(&str, &str)] = &[
    (
        "stage_page_tables",
        "the IGVM stage keeps the launch page tables (RAM mapped up front), no on-demand map",
    ),
    ("acpi_madt", "no ACPI tables on the IGVM path"),
];

/// Runs the cases `selection` names (the kernel's and [`sev_es`]'s) and returns the exit status
/// for the run. The cases that do not apply (under SEV-ES those of [`NOT_UNDER_SEV_ES`], without
/// it those of [`sev_es::ONLY_UNDER_SEV_ES`]) are reported as skipped instead.
pub fn run(selection: &str, info: &BootInfo) -> ExitStatus {
    let skips = if info.sev_es() {
        NOT_UNDER_SEV_ES
    } else {
        sev_es::ONLY_UNDER_SEV_ES
    };
    let skipped = |name: &str| skips.iter().any(|(n, _)| *n == name);
    let mut selected_skips = 0;
    for (name, why) in skips {
        if selection == "all" || selection == *name {
            x86::serial_println!("TEST {name} SKIP {why}");
            selected_skips += 1;
        }
    }
    if selected_skips > 0 && selection != "all" {
        x86::serial_println!("0 passed, 0 failed");
        return ExitStatus::Success;
    }
    let runnable = |cases: &[(&'static str, Case)]| -> alloc::vec::Vec<(&'static str, Case)> {
        cases.iter().copied().filter(|(n, _)| !skipped(n)).collect()
    };
    let all = runnable(&[CASES, sev_es::CASES].concat());
    let by_name = runnable(&[BY_NAME_ONLY, sev_es::BY_NAME_ONLY].concat());
    x86::testing::run("kernel", selection, &all, &by_name, |case| case(info))
}

/// TSC ticks per millisecond for the cases' timeouts: from the stage's measurement, or, when the
/// platform did not say (the simulator reports no TSC rate), as for a 3 GHz TSC, which only
/// stretches or shrinks timeouts that are generous to begin with.
fn ticks_per_ms(info: &BootInfo) -> u64 {
    match info.tsc_hz / 1000 {
        0 => 3_000_000,
        t => t,
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
    if info.sev_es() {
        // The IGVM path: no ACPI, the vCPU count and the C-bit come from the launch.
        if info.vp_count == 0 || !info.c_bit.is_power_of_two() {
            return Err("SEV-ES without a vCPU count or a C-bit");
        }
    } else if info.rsdp == 0 {
        return Err("no ACPI RSDP");
    } else if info.sev_status != 0 || info.c_bit != 0 || info.vp_count != 0 {
        return Err("SEV fields set on the EFI path");
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

/// Many frames come out distinct, page-aligned, inside usable RAM above 1 MiB and clear of the
/// kernel image and the BootInfo; they are writable; freed ones are handed out again.
fn frames(info: &BootInfo) -> Result<(), &'static str> {
    use crate::memory::frames::{alloc_contiguous, alloc_frame, available, free_frame};
    use alloc::vec::Vec;
    const N: usize = 2000;
    let before = available();
    let mut got: Vec<u64> = (0..N).map_while(|_| alloc_frame()).collect();
    if got.len() != N || available() != before - N {
        return Err("allocation count wrong");
    }
    let info_span = (info as *const BootInfo as u64, size_of::<BootInfo>() as u64);
    for &f in &got {
        let usable = info
            .memory_map()
            .iter()
            .any(|r| r.kind == MemoryKind::USABLE && r.start <= f && f + 4096 <= r.end());
        let overlaps = |(s, len): (u64, u64)| f < s + len && s < f + 4096;
        if f % 4096 != 0 || f < 1 << 20 || !usable {
            return Err("a frame outside usable RAM above 1 MiB");
        }
        if overlaps((info.kernel_start, info.kernel_len)) || overlaps(info_span) {
            return Err("a frame overlaps the kernel image or the BootInfo");
        }
        // SAFETY: a frame we own, identity-mapped by the kernel's tables.
        unsafe { (f as *mut u64).add(511).write_volatile(f) };
    }
    got.sort_unstable();
    if got.windows(2).any(|w| w[0] == w[1]) {
        return Err("a frame was handed out twice");
    }
    for &f in &got {
        // SAFETY: allocated above, no longer used.
        if unsafe { (f as *const u64).add(511).read_volatile() } != f
            || unsafe { free_frame(f) }.is_err()
        {
            return Err("a frame lost its contents or was refused back");
        }
    }
    // SAFETY: not a frame of ours: refused without being touched.
    if unsafe { free_frame(0x1000) }.is_ok() || available() != before {
        return Err("free accounting wrong");
    }
    let mut again: Vec<u64> = (0..N).map_while(|_| alloc_frame()).collect();
    again.sort_unstable();
    if again != got {
        return Err("freed frames were not reused");
    }
    for f in again {
        // SAFETY: allocated above, unused.
        unsafe { free_frame(f) }.map_err(|_| "a frame was refused back")?;
    }
    // A contiguous run (kept for good: 64 KiB per run of this test) lies inside one usable
    // region, apart from the single frames, and is counted.
    let run = alloc_contiguous(16).ok_or("no 16 contiguous frames")?;
    let run_end = run + 16 * 4096;
    let in_one_region = info
        .memory_map()
        .iter()
        .any(|r| r.kind == MemoryKind::USABLE && r.start <= run && run_end <= r.end());
    if !in_one_region
        || !run.is_multiple_of(4096)
        || available() != before - 16
        || got.iter().any(|&f| run <= f && f < run_end)
    {
        return Err("a contiguous run is misplaced or counted wrong");
    }
    Ok(())
}

/// The kernel's own tables are live and map RAM, the BootInfo, the kernel and the APIC window
/// the way `memory::init` says: 2 MiB pages inside regions, 4 KiB ones at unaligned edges,
/// nothing at page 0 or in holes of the map.
fn paging(info: &BootInfo) -> Result<(), &'static str> {
    use crate::memory::translate;
    use x86::paging::{PAGE_2M, PAGE_4K, PageFlags};
    let root = crate::memory::root().ok_or("no kernel page tables")?;
    // SAFETY: reading CR3 has no side effects.
    if unsafe { x86::cr::read_cr3() } & !0xfff & !info.c_bit != root || root >> 32 != 0 {
        return Err("CR3 is not the kernel's PML4 below 4 GiB");
    }
    if info.sev_es() {
        // RAM private, MMIO and the GHCB shared.
        let encrypted = |va: u64| translate(va).map(|t| t.encrypted);
        if encrypted(info.kernel_start) != Some(true)
            || encrypted(0xfee0_0000) != Some(false)
            || encrypted(x86::pc::hpet::BASE) != Some(false)
            || crate::sev::ghcb_pages().any(|ghcb| {
                encrypted(ghcb) != Some(false) || encrypted(ghcb + PAGE_4K) != Some(true)
            })
        {
            return Err("under SEV-ES RAM is not private or MMIO/the GHCBs not shared");
        }
    }
    let identity = |va: u64| translate(va).is_some_and(|t| t.phys == va);
    let here = paging as *const () as u64;
    if !identity(here) || !identity(info as *const BootInfo as u64) || !identity(info.kernel_start)
    {
        return Err("kernel code, image or BootInfo not identity-mapped");
    }
    if translate(0).is_some() {
        return Err("page 0 is mapped");
    }
    let lapic = translate(0xfee0_0010).ok_or("local APIC not mapped")?;
    if lapic.page_size != PAGE_2M
        || !lapic
            .flags
            .contains(PageFlags::NO_CACHE | PageFlags::WRITABLE)
    {
        return Err("local APIC not an uncached writable 2 MiB page");
    }
    // A RAM region with an unaligned end followed by a hole: last page 4 KiB, next unmapped.
    // The IGVM launcher's map (SEV-ES) has no hole below its end: there the end of the map is
    // the end of the mapping.
    let map = info.memory_map();
    let edge = map
        .windows(2)
        .find(|w| {
            w[0].end() % PAGE_2M != 0 && w[0].end() < w[1].start && w[0].kind != MemoryKind::MMIO
        })
        .map(|w| w[0].end());
    match edge {
        Some(edge) => {
            let last = translate(edge - 8).ok_or("last page of a region not mapped")?;
            if last.page_size != PAGE_4K || last.phys != edge - 8 || translate(edge).is_some() {
                return Err("region edge not mapped with 4 KiB pages up to the hole");
            }
        }
        None if info.sev_es() => {
            let end = map.last().ok_or("empty memory map")?.end();
            if translate(end - 8).is_none_or(|t| t.phys != end - 8) || translate(end).is_some() {
                return Err("the end of the memory map is not the end of the mapping");
            }
        }
        None => return Err("no unaligned region end before a hole in the memory map"),
    }
    // Some 2 MiB block wholly inside usable RAM is one 2 MiB page.
    let block = map
        .iter()
        .filter(|r| r.kind == MemoryKind::USABLE)
        .map(|r| r.start.next_multiple_of(PAGE_2M))
        .zip(map.iter().filter(|r| r.kind == MemoryKind::USABLE))
        .find(|&(b, r)| b + PAGE_2M <= r.end())
        .ok_or("no 2 MiB block of usable RAM")?
        .0;
    let t = translate(block + 0x1234).ok_or("usable RAM not mapped")?;
    if t.page_size != PAGE_2M || t.phys != block + 0x1234 || !t.flags.contains(PageFlags::WRITABLE)
    {
        return Err("a 2 MiB block of RAM is not a writable 2 MiB page");
    }
    // One page of it uncached: the block is split, the page changes, its neighbour does not;
    // mapping it back makes it write-back again (as a 4 KiB page).
    let page = block + 0x5000;
    let uncached = PageFlags::WRITABLE | PageFlags::NO_CACHE;
    crate::memory::map(page, page + PAGE_4K, uncached).map_err(|_| "remapping a page failed")?;
    let (t, next) = (translate(page), translate(page + PAGE_4K));
    crate::memory::map(page, page + PAGE_4K, PageFlags::WRITABLE)
        .map_err(|_| "remapping back failed")?;
    if !t.is_some_and(|t| t.page_size == PAGE_4K && t.flags.contains(PageFlags::NO_CACHE))
        || !next.is_some_and(|n| n.page_size == PAGE_4K && !n.flags.contains(PageFlags::NO_CACHE))
        || translate(page).is_none_or(|t| t.flags.contains(PageFlags::NO_CACHE))
    {
        return Err("a 4 KiB remap inside a 2 MiB page did not split it as expected");
    }
    Ok(())
}

/// The stage's on-demand tables, still intact in its loader memory: recorded in the BootInfo,
/// mapping what the stage touched (the kernel image, the BootInfo) and not all of RAM.
fn stage_page_tables(info: &BootInfo) -> Result<(), &'static str> {
    use x86::paging::{Identity, PAGE_2M, PageTables};
    let pt = info.page_tables;
    let in_loader_memory = info.memory_map().iter().any(|r| {
        r.kind == MemoryKind::BOOTLOADER
            && r.start <= pt.pool_start
            && pt.pool_start + pt.pool_len <= r.end()
    });
    if pt.pool_len == 0
        || !in_loader_memory
        || !(pt.pool_start..pt.pool_start + pt.pool_len).contains(&pt.cr3)
    {
        return Err("no stage page-table pool in loader memory holding CR3");
    }
    // SAFETY: the stage's tables lie in loader memory nobody reuses, and are only read here.
    let stage = unsafe { PageTables::new(pt.cr3 & !0xfff, 0, Identity) };
    let identity = |va: u64| stage.translate(va).is_some_and(|t| t.phys == va);
    let info_addr = info as *const BootInfo as u64;
    if !identity(info.kernel_start)
        || !identity(info.kernel_start + info.kernel_len - 1)
        || !identity(info_addr)
    {
        return Err("the stage's tables do not map the kernel image or the BootInfo");
    }
    let untouched = info
        .memory_map()
        .iter()
        .filter(|r| r.kind == MemoryKind::USABLE)
        .flat_map(|r| (r.start.next_multiple_of(PAGE_2M)..r.end()).step_by(PAGE_2M as usize))
        .any(|va| stage.translate(va).is_none());
    if !untouched {
        return Err("the stage mapped all usable RAM: not on demand");
    }
    Ok(())
}

fn tsc_monotonic(info: &BootInfo) -> Result<(), &'static str> {
    let t = info.timestamps;
    let now = x86::tsc::rdtsc();
    // The IGVM stage has no boot services: it enters with both stamps the same.
    let boot_services = if info.sev_es() {
        t.efi_entry == t.exit_boot_services
    } else {
        t.efi_entry < t.exit_boot_services
    };
    if !(boot_services && t.exit_boot_services < t.kernel_entry && t.kernel_entry < now) {
        return Err("stage timestamps out of order");
    }
    Ok(())
}

fn acpi_madt(info: &BootInfo) -> Result<(), &'static str> {
    let t = crate::acpi::tables(info).map_err(|_| "ACPI tables not usable")?;
    if t.madt.cpus.is_empty() || t.madt.io_apics.is_empty() {
        return Err("MADT lists no CPU or no IOAPIC");
    }
    let report = crate::smp::report().ok_or("SMP start-up did not complete")?;
    if report.expected != t.madt.cpus.len() || report.online != report.expected {
        return Err("not every enabled MADT CPU reported in");
    }
    if t.fadt.is_none_or(|f| f.pm1a_control == 0) || t.s5_sleep_type.is_none() {
        return Err("no PM1a control block or no _S5_ in the DSDT");
    }
    Ok(())
}

/// Hand-made tables with one defect each are errors, not crashes or silent successes; the
/// `_S5_` search decodes the sleep type and gives up on a malformed package.
fn acpi_rejects_bad_tables(_: &BootInfo) -> Result<(), &'static str> {
    use crate::acpi::{check_table, parse_madt, parse_rsdp};
    use alloc::vec::Vec;
    // A MADT: header, local APIC address, flags, a Local APIC entry (enabled, ID 3) and an
    // x2APIC entry (enabled, ID 300).
    let mut madt: Vec<u8> = Vec::new();
    madt.extend_from_slice(b"APIC");
    madt.extend_from_slice(&[0; 32]);
    madt.extend_from_slice(&0xfee0_0000u32.to_le_bytes());
    madt.extend_from_slice(&1u32.to_le_bytes());
    madt.extend_from_slice(&[0, 8, 1, 3, 1, 0, 0, 0]);
    madt.extend_from_slice(&[9, 16, 0, 0]);
    madt.extend_from_slice(&300u32.to_le_bytes());
    madt.extend_from_slice(&1u32.to_le_bytes());
    madt.extend_from_slice(&7u32.to_le_bytes());
    let len = madt.len() as u32;
    madt[4..8].copy_from_slice(&len.to_le_bytes());
    let sum = madt.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    madt[9] = 0u8.wrapping_sub(sum);
    check_table(&madt, b"APIC").map_err(|_| "a good MADT was rejected")?;
    let m = parse_madt(&madt).map_err(|_| "a good MADT did not parse")?;
    if m.cpus.iter().map(|c| c.apic_id).collect::<Vec<_>>() != [3, 300] {
        return Err("MADT CPUs parsed wrong");
    }
    let mut bad = madt.clone();
    bad[20] ^= 1;
    if check_table(&bad, b"APIC").is_ok() {
        return Err("a bad checksum was accepted");
    }
    if check_table(&madt[..madt.len() - 1], b"APIC").is_ok() {
        return Err("a truncated table was accepted");
    }
    let mut bad = madt.clone();
    bad[44 + 8 + 1] = 40; // the x2APIC entry claims to run past the table
    if parse_madt(&bad).is_ok() {
        return Err("an entry running past the MADT was accepted");
    }
    if parse_rsdp(b"RSD PTR \0\0\0\0\0\0\0\0\0\0\0\0").is_ok() {
        return Err("an RSDP with a bad checksum was accepted");
    }
    // `Name (_S5, Package (4) { 5, Zero, ...})`, a truncated package, a name without a package.
    let s5 = crate::acpi::find_s5;
    if s5(b"\x10\x08_S5_\x12\x08\x04\x0a\x05\x00\x00\x00") != Some(5)
        || s5(b"\x08_S5_\x12\x06\x04\x00\x00\x00\x00") != Some(0)
        || s5(b"\x08_S5_\x12\x06").is_some()
        || s5(b"\x08_S5_\x0a\x05").is_some()
    {
        return Err("_S5_ package decoded wrong");
    }
    Ok(())
}

fn smp_all_online(_: &BootInfo) -> Result<(), &'static str> {
    use core::sync::atomic::Ordering;
    let cpus = crate::percpu::table();
    if cpus.is_empty() {
        return Err("no per-CPU table");
    }
    for (i, c) in cpus.iter().enumerate() {
        if c.index != i || !c.online.load(Ordering::Acquire) {
            return Err("a CPU did not report in");
        }
        if c.reported_apic_id.load(Ordering::Relaxed) != c.apic_id {
            return Err("a CPU's own APIC ID differs from its MADT entry");
        }
        if !c.gs_ok.load(Ordering::Relaxed) {
            return Err("a CPU's GS base does not point at its per-CPU data");
        }
        if cpus[..i].iter().any(|o| o.apic_id == c.apic_id) {
            return Err("two CPUs share an APIC ID");
        }
        if i > 0 && (c.stack.1 - c.stack.0 == 0 || cpus[1..i].iter().any(|o| o.stack == c.stack)) {
            return Err("an AP has no stack of its own");
        }
    }
    if !core::ptr::eq(crate::percpu::current(), &cpus[0]) {
        return Err("the boot CPU's GS base does not point at cpu 0");
    }
    Ok(())
}

/// int3 is handled and resumed, on the interrupted stack below its red zone (the frame was
/// moved off the general IST stack).
fn breakpoint(_: &BootInfo) -> Result<(), &'static str> {
    use crate::interrupts::{BREAKPOINTS, LAST_FRAME, boot_ist_stack};
    use core::sync::atomic::Ordering;
    let before = BREAKPOINTS.load(Ordering::Acquire);
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    for _ in 0..3 {
        // SAFETY: the breakpoint handler counts and resumes after the int3.
        unsafe { core::arch::asm!("int3") };
    }
    if BREAKPOINTS.load(Ordering::Acquire) != before + 3 {
        return Err("int3 not handled exactly once each");
    }
    let frame = LAST_FRAME.load(Ordering::Acquire);
    let (ist_low, ist_top) = boot_ist_stack(x86::gdt::ist::GENERAL);
    if (ist_low..ist_top).contains(&frame) || !(rsp - 4096..rsp - 128).contains(&frame) {
        return Err("the handler did not run on the interrupted stack below its red zone");
    }
    Ok(())
}

/// Two self-NMIs in a row are each handled on the NMI's own IST stack and resumed. Under
/// SEV-ES the second only arrives if the first one's handler sent NMI_COMPLETE, and each one
/// arrives inside the #VC handler of the ICR write (an x2APIC MSR write) right after its
/// VMGEXIT: the NMI handler must borrow the GHCB from it, and the interrupted #VC must still
/// find its own reply (`send_ipi` returns, the next #VC works).
fn nmi(info: &BootInfo) -> Result<(), &'static str> {
    use crate::interrupts::{
        EXPECT_NMI, LAST_FRAME, NMI_INTERRUPTED_VC, NMIS, NMIS_IN_VC, boot_ist_stack,
    };
    use core::sync::atomic::Ordering;
    /// ICR: delivery mode NMI, level assert.
    const ICR_NMI: u32 = (0b100 << 8) | (1 << 14);
    const MSR_EXIT: u64 = sev::exit_code::ExitCode::Msr.raw();
    let ms = ticks_per_ms(info);
    for _ in 0..2 {
        let before = NMIS.load(Ordering::Acquire);
        let in_vc = NMIS_IN_VC.load(Ordering::Acquire);
        EXPECT_NMI.store(true, Ordering::Release);
        crate::apic::send_ipi(crate::apic::id(), ICR_NMI, 10 * ms)
            .map_err(|_| "the self-NMI could not be sent")?;
        // Under SEV-ES the NMI has been handled inside the ICR write's #VC, and no GHCB request
        // followed that #VC yet (RDTSC below is one): the page holds the ICR write's request
        // and reply, not NMI_COMPLETE's.
        if crate::sev::active() && crate::sev::ghcb_exit_code() != MSR_EXIT {
            return Err("the GHCB does not hold the interrupted ICR write's request");
        }
        let t0 = x86::tsc::rdtsc();
        while NMIS.load(Ordering::Acquire) == before && x86::tsc::rdtsc() - t0 < 100 * ms {
            core::hint::spin_loop();
        }
        if NMIS.load(Ordering::Acquire) != before + 1 {
            EXPECT_NMI.store(false, Ordering::Release);
            return Err("a self-NMI was not handled within 100 ms");
        }
        let (low, top) = boot_ist_stack(x86::gdt::ist::NMI);
        if !(low..top).contains(&LAST_FRAME.load(Ordering::Acquire)) {
            return Err("the NMI handler did not run on the NMI IST stack");
        }
        if crate::sev::active() {
            if NMIS_IN_VC.load(Ordering::Acquire) != in_vc + 1 {
                return Err("the self-NMI did not interrupt the ICR write's #VC mid-request");
            }
            if NMI_INTERRUPTED_VC.load(Ordering::Acquire) != MSR_EXIT {
                return Err("the self-NMI interrupted a #VC other than the ICR's MSR write");
            }
            // The interrupted #VC completed; another one (CPUID) must work on the restored GHCB.
            if x86::msr::cpuid(0, 0).eax == 0 {
                return Err("CPUID through the GHCB failed after the NMI");
            }
        }
    }
    Ok(())
}

/// A breakpoint whose handler raises #UD: the #UD enters on the same IST stack as the
/// breakpoint did, so it only works if the breakpoint's frame had moved off that stack. The
/// interrupted code's registers and the red zone below its RSP must come back intact.
fn nested_exception(_: &BootInfo) -> Result<(), &'static str> {
    use crate::interrupts::{BREAKPOINTS, NEST_UD, NESTED_UD};
    use core::sync::atomic::Ordering;
    let (bp, ud) = (
        BREAKPOINTS.load(Ordering::Acquire),
        NESTED_UD.load(Ordering::Acquire),
    );
    let expected: [u64; 10] =
        core::array::from_fn(|i| 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 3) ^ 0x5a5a);
    let mut r = expected;
    let red_zone_damage: u64;
    NEST_UD.store(true, Ordering::Release);
    // SAFETY: writes only the red zone below RSP (the kernel is built without a red zone, so the
    // compiler keeps nothing there); the int3 and the nested #UD are resumed by the handler.
    unsafe {
        core::arch::asm!(
            "mov ecx, 16",
            "2:",
            "lea rax, [rcx + 0x7eed0000]",
            "mov [rsp + rcx * 8 - 136], rax",
            "dec rcx",
            "jnz 2b",
            "int3",
            "xor edx, edx",
            "mov ecx, 16",
            "3:",
            "lea rax, [rcx + 0x7eed0000]",
            "cmp [rsp + rcx * 8 - 136], rax",
            "je 4f",
            "inc rdx",
            "4:",
            "dec rcx",
            "jnz 3b",
            inout("rsi") r[0], inout("rdi") r[1], inout("r8") r[2], inout("r9") r[3],
            inout("r10") r[4], inout("r11") r[5], inout("r12") r[6], inout("r13") r[7],
            inout("r14") r[8], inout("r15") r[9],
            out("rax") _, out("rcx") _, out("rdx") red_zone_damage,
        )
    };
    if BREAKPOINTS.load(Ordering::Acquire) != bp + 1 || NESTED_UD.load(Ordering::Acquire) != ud + 1
    {
        return Err("the breakpoint or the nested #UD was not handled once");
    }
    if r != expected {
        return Err("general registers changed across the nested exceptions");
    }
    if red_zone_damage != 0 {
        return Err("the red zone below the interrupted RSP was overwritten");
    }
    Ok(())
}

/// A breakpoint handler that overwrites all XMM registers must leave the interrupted code's
/// values in place (the entry stub saves and restores them with fxsave64/fxrstor64).
fn sse_preserved(_: &BootInfo) -> Result<(), &'static str> {
    use crate::interrupts::CLOBBER_SSE;
    use core::sync::atomic::Ordering;
    let input: [u128; 16] = core::array::from_fn(|i| {
        0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.rotate_left(8 * i as u32) ^ i as u128
    });
    let mut output = [0u128; 16];
    CLOBBER_SSE.store(true, Ordering::Release);
    // SAFETY: reads `input` and writes `output` (16 x 16 bytes each); XMM registers are clobbered.
    unsafe {
        core::arch::asm!(
            "movdqu xmm0, [{i} + 0]",
            "movdqu xmm1, [{i} + 16]",
            "movdqu xmm2, [{i} + 32]",
            "movdqu xmm3, [{i} + 48]",
            "movdqu xmm4, [{i} + 64]",
            "movdqu xmm5, [{i} + 80]",
            "movdqu xmm6, [{i} + 96]",
            "movdqu xmm7, [{i} + 112]",
            "movdqu xmm8, [{i} + 128]",
            "movdqu xmm9, [{i} + 144]",
            "movdqu xmm10, [{i} + 160]",
            "movdqu xmm11, [{i} + 176]",
            "movdqu xmm12, [{i} + 192]",
            "movdqu xmm13, [{i} + 208]",
            "movdqu xmm14, [{i} + 224]",
            "movdqu xmm15, [{i} + 240]",
            "int3",
            "movdqu [{o} + 0], xmm0",
            "movdqu [{o} + 16], xmm1",
            "movdqu [{o} + 32], xmm2",
            "movdqu [{o} + 48], xmm3",
            "movdqu [{o} + 64], xmm4",
            "movdqu [{o} + 80], xmm5",
            "movdqu [{o} + 96], xmm6",
            "movdqu [{o} + 112], xmm7",
            "movdqu [{o} + 128], xmm8",
            "movdqu [{o} + 144], xmm9",
            "movdqu [{o} + 160], xmm10",
            "movdqu [{o} + 176], xmm11",
            "movdqu [{o} + 192], xmm12",
            "movdqu [{o} + 208], xmm13",
            "movdqu [{o} + 224], xmm14",
            "movdqu [{o} + 240], xmm15",
            i = in(reg) input.as_ptr(),
            o = in(reg) output.as_mut_ptr(),
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        )
    };
    if CLOBBER_SSE.load(Ordering::Acquire) {
        return Err("the breakpoint handler did not run");
    }
    if output != input {
        return Err("XMM registers changed across an interrupt");
    }
    Ok(())
}

/// Address of the deliberate page fault: far above any RAM or MMIO the kernel maps.
const PAGE_FAULT_ADDRESS: u64 = 0x7fff_dead_b000;

/// Reads unmapped memory: the #PF handler prints the register dump (with
/// `CR2=0x00007fffdeadb000`) and ends the run with a failure; returning is a failure too.
fn page_fault(_: &BootInfo) -> Result<(), &'static str> {
    // SAFETY: not safe by design: the read faults and the run ends in the exception handler.
    let _ = unsafe { core::ptr::read_volatile(PAGE_FAULT_ADDRESS as *const u64) };
    Err("reading unmapped memory did not fault")
}
