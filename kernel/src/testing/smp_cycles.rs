//! CPU offline/online: every AP goes offline and comes back [`CYCLES`] times (under SEV-ES
//! through the AP jump table's AP Reset Hold and reset vector, without SEV through INIT), and
//! after each return runs work that takes #VCs under SEV-ES (CPUID, a port read) through its
//! own GHCB. Under GHCB protocol version 1, which has no AP Reset Hold, every AP's offline is
//! refused instead ([`SmpError::NeedsGhcbV2`]), and the AP stays online and keeps working.

use crate::percpu;
use crate::smp::{self, SmpError};
use core::sync::atomic::{AtomicU32, Ordering};
use handoff::bootinfo::BootInfo;

/// Offline/online cycles per AP (issue 5 asks for 100).
const CYCLES: u32 = 100;

/// Per CPU index, the probes that ran on it.
static PROBES: [AtomicU32; crate::sev::MAX_CPUS] =
    [const { AtomicU32::new(0) }; crate::sev::MAX_CPUS];

/// Work for an AP just back online: CPUID and a port read (each a #VC under SEV-ES), counted
/// per CPU when both answered sensibly.
fn probe() {
    let vendor = x86::msr::cpuid(0, 0);
    // COM1's line status register: reading it has no side effects.
    let lsr = x86::io::inb(0x3fd);
    if vendor.ebx != 0 && lsr != 0xff {
        let cpu = percpu::current();
        PROBES[cpu.index].fetch_add(1, Ordering::AcqRel);
    }
}

pub fn offline_online(_: &BootInfo) -> Result<(), &'static str> {
    let cpus = percpu::table();
    if smp::offline(0) != Err(SmpError::NoSuchAp(0)) {
        return Err("the boot CPU was not refused");
    }
    if smp::offline(cpus.len()) != Err(SmpError::NoSuchAp(cpus.len())) {
        return Err("a CPU that does not exist was not refused");
    }
    for cpu in &cpus[1..] {
        if smp::online(cpu.index) != Err(SmpError::AlreadyOnline(cpu.index)) {
            return Err("onlining an online AP was not refused");
        }
    }
    if crate::sev::ghcb_version().is_some_and(|v| !v.has_msr_ap_reset_hold()) {
        return offline_refused();
    }
    let before: alloc::vec::Vec<u32> = cpus
        .iter()
        .map(|c| c.starts.load(Ordering::Acquire))
        .collect();
    for _ in 0..CYCLES {
        for cpu in &cpus[1..] {
            smp::offline(cpu.index).map_err(|e| {
                log::error!("cpu {}: {e}", cpu.index);
                "an AP did not go offline"
            })?;
            if cpu.online.load(Ordering::Acquire) {
                return Err("an offline AP still says it is online");
            }
            if smp::call(cpu.index, probe) != Err(SmpError::NotOnline(cpu.index)) {
                return Err("work for an offline AP was not refused");
            }
            smp::online(cpu.index).map_err(|_| "an AP did not come back online")?;
            smp::call(cpu.index, probe).map_err(|_| "an AP back online did not run its work")?;
        }
    }
    for (cpu, before) in cpus.iter().zip(before).skip(1) {
        if cpu.starts.load(Ordering::Acquire) != before + CYCLES {
            return Err("an AP's start count is not one per cycle");
        }
        if PROBES[cpu.index].load(Ordering::Acquire) < CYCLES || !cpu.gs_ok.load(Ordering::Acquire)
        {
            return Err("an AP back online did not find its per-CPU data or its #VC answers");
        }
    }
    log::info!(
        "{} APs went offline and online {CYCLES} times each",
        cpus.len() - 1
    );
    Ok(())
}

/// Under GHCB protocol version 1: offline is refused for every AP with the typed error, and
/// the AP, which never heard of it, is still online, runs work (its #VCs answered) and was not
/// restarted.
fn offline_refused() -> Result<(), &'static str> {
    let cpus = percpu::table();
    for cpu in &cpus[1..] {
        let starts = cpu.starts.load(Ordering::Acquire);
        let probes = PROBES[cpu.index].load(Ordering::Acquire);
        match smp::offline(cpu.index) {
            Err(e @ SmpError::NeedsGhcbV2(i)) if i == cpu.index => log::info!("refused: {e}"),
            Err(e) => {
                log::error!("cpu {}: {e}", cpu.index);
                return Err("offline under GHCB protocol 1 failed with another error");
            }
            Ok(()) => return Err("an AP went offline under GHCB protocol 1"),
        }
        if !cpu.online.load(Ordering::Acquire) {
            return Err("an AP whose offline was refused says it is offline");
        }
        smp::call(cpu.index, probe)
            .map_err(|_| "an AP whose offline was refused did not run work")?;
        if PROBES[cpu.index].load(Ordering::Acquire) != probes + 1
            || cpu.starts.load(Ordering::Acquire) != starts
        {
            return Err("an AP whose offline was refused did not answer its #VCs, or restarted");
        }
    }
    log::info!(
        "GHCB protocol 1: offline refused for each of {} APs, all still online",
        cpus.len() - 1
    );
    Ok(())
}
