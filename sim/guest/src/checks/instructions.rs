//! Instructions the simulator intercepts without an I/O or MSR meaning: RDTSC, RDTSCP, RDPMC,
//! DR7 reads and writes, WBINVD, MONITOR and MWAIT. Each is a #VC with its own exit code,
//! emulated through the GHCB (DR7 reads from the #VC core's own copy, which the hypervisor
//! cannot see).

use core::arch::asm;
use sev::exit_code::ExitCode;

use super::{Outcome, one_vc};

/// CPUID 1 ECX: MONITOR/MWAIT.
const CPUID_1_ECX_MONITOR: u32 = 1 << 3;

fn read_tsc() -> Result<u64, alloc::string::String> {
    one_vc("RDTSC", ExitCode::Rdtsc, x86::tsc::rdtsc)
}

fn read_tscp() -> Result<u64, alloc::string::String> {
    let mut aux = 0;
    // SAFETY: RDTSCP only writes `aux` (TSC_AUX).
    one_vc("RDTSCP", ExitCode::Rdtscp, || unsafe {
        core::arch::x86_64::__rdtscp(&mut aux)
    })
}

/// Two RDTSCs, strictly increasing (each is a round trip through the simulator).
pub fn rdtsc() -> Outcome {
    let a = read_tsc()?;
    let b = read_tsc()?;
    ensure!(b > a, "RDTSC went from {a} to {b}");
    Ok(())
}

/// RDTSCP, interleaved with RDTSC: one clock, strictly increasing.
pub fn rdtscp() -> Outcome {
    let a = read_tscp()?;
    let b = read_tsc()?;
    let c = read_tscp()?;
    ensure!(
        a < b && b < c,
        "RDTSCP {a}, RDTSC {b}, RDTSCP {c}: not increasing"
    );
    Ok(())
}

/// RDPMC of counter 0 reaches the simulator. What it returns is the simulator's business (the
/// CPU it runs on may count nothing); that it answers, and with the right exit code, is the
/// check.
pub fn rdpmc() -> Outcome {
    one_vc("RDPMC", ExitCode::Rdpmc, || {
        let (lo, hi): (u32, u32);
        // SAFETY: RDPMC at CPL 0 only reads a counter.
        unsafe {
            asm!("rdpmc", in("ecx") 0, out("eax") lo, out("edx") hi, options(nostack, preserves_flags))
        };
        u64::from(hi) << 32 | u64::from(lo)
    })?;
    Ok(())
}

fn read_dr7() -> Result<u64, alloc::string::String> {
    one_vc("MOV r64, DR7", ExitCode::ReadDr7, || {
        let v;
        // SAFETY: reading DR7 has no side effects.
        unsafe { asm!("mov {}, dr7", out(reg) v, options(nostack, preserves_flags)) };
        v
    })
}

fn write_dr7(v: u64) -> Outcome {
    one_vc("MOV DR7, r64", ExitCode::WriteDr7, || {
        // SAFETY: the values written arm no breakpoint (only LE/GE and reserved bit 10).
        unsafe { asm!("mov dr7, {}", in(reg) v, options(nostack, preserves_flags)) };
    })
}

/// A DR7 value with LE and GE set (exact-breakpoint hints) and no breakpoint enabled, then the
/// original value, each read back.
pub fn dr7() -> Outcome {
    let original = read_dr7()?;
    for v in [0x700, original] {
        write_dr7(v)?;
        let back = read_dr7()?;
        ensure!(back == v, "wrote {v:#x} to DR7, read back {back:#x}");
    }
    Ok(())
}

pub fn wbinvd() -> Outcome {
    one_vc("WBINVD", ExitCode::Wbinvd, || {
        // SAFETY: write-back and invalidate loses no data.
        unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
    })
}

/// MONITOR on a line of ours, then MWAIT (which the simulator must not turn into a wait for
/// an interrupt that never comes: interrupts are off).
pub fn monitor_mwait() -> Outcome {
    let ecx = one_vc("CPUID", ExitCode::Cpuid, || x86::msr::cpuid(1, 0))?.ecx;
    ensure!(
        ecx & CPUID_1_ECX_MONITOR != 0,
        "CPUID 1 ECX = {ecx:#x} does not offer MONITOR/MWAIT"
    );
    let line = 0u64;
    one_vc("MONITOR", ExitCode::Monitor, || {
        // SAFETY: MONITOR only arms address monitoring of `line`, a valid local.
        unsafe {
            asm!("monitor", in("rax") &raw const line, in("ecx") 0, in("edx") 0,
                options(nostack, preserves_flags))
        };
    })?;
    one_vc("MWAIT", ExitCode::Mwait, || {
        // SAFETY: MWAIT with no hints and no extensions at most waits for a store to the
        // monitored line or an event.
        unsafe { asm!("mwait", in("eax") 0, in("ecx") 0, options(nostack, preserves_flags)) };
    })
}
