//! NMIs at their worst, and the NMI storm of issue 5.
//!
//! An NMI can arrive at any instruction; under SEV-ES the hypervisor injects one whenever the
//! guest exits and the previous one was completed. The cases put NMIs where the entry code of
//! `x86::interrupts` and the GHCB channel are weakest, and count every one:
//!
//! - [`nested`] (every platform): an NMI whose handler makes a second NMI pending and lets it
//!   in (bare metal: an int3 inside the handler, whose IRETQ unblocks NMIs; SEV-ES: the
//!   handler's NMI_COMPLETE) gets the second one in the middle of its handler. It must run
//!   after the first one's handler, not inside it.
//! - [`worst_cases`] (the SEV-ES simulator, whose test hypercall `NMI_STORM` places NMIs at
//!   chosen exits, or `NMI_AT` at a chosen instruction): NMIs right after each NMI_COMPLETE (in
//!   the window before the handler's IRETQ); an NMI at each instruction of the NMI exit's last
//!   window, where the state already reads "done" or is about to; an NMI at the first instruction of a #VC handler whose own handler raises a #VC
//!   (the general IST stack is still in use below it); an NMI right after a #VC handler's
//!   VMGEXIT, while it holds the GHCB, whose handler raises a #VC (the GHCB is borrowed a
//!   second time); an NMI while the console is held, whose handler logs.
//! - [`complete_refused`] (the simulator, ends the run): an NMI_COMPLETE the hypervisor refuses,
//!   sent from a GHCB borrowed from an interrupted #VC, ends in a termination request with the
//!   hypervisor-error reason and a line saying so (not in a loop of #VCs that cannot be served).
//! - [`storm`] and [`storm_full`] (the simulator): every online CPU runs a #VC-heavy loop
//!   (CPUID, port I/O, MMIO, each checked) under an NMI storm of random gaps, handlers reading
//!   the HPET through a #VC of their own; handler runs, NMIs injected and NMI_COMPLETEs must
//!   agree per CPU. Each CPU prints `NMI-STORM cpu=<index> nmis=<runs> injected=<n>
//!   completed=<n> loops=<n> ms=<n>` for the integration test, which also checks the
//!   simulator's own `SIM-COUNTERS`.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use handoff::bootinfo::BootInfo;
use handoff::sim_hypercall::{
    NMI_AT, NMI_COMPLETES, NMI_COUNTER, NMI_STORM, NMIS_INJECTED, REFUSE_NMI_COMPLETE,
};
use sev::guest::{vmmcall, vmmcall3};
use x86::interrupts::InterruptFrame;
use x86::pc::{hpet, ioapic};

/// NMIs of [`storm`] per CPU, in CI (see `tests/tests/nmi_storm.rs` for the time it takes).
const STORM_NMIS: u64 = 5_000;
/// NMIs of [`storm_full`] in all (issue 5: at least 100,000), spread over the online CPUs.
const FULL_STORM_NMIS: u64 = 100_000;
/// The most exits between an NMI_COMPLETE and the next NMI of a storm (the least is 0).
const STORM_MAX_GAP: u64 = 12;
/// Rounds of the storm's loop without an NMI after which the storm has stalled: far more exits
/// than [`STORM_MAX_GAP`].
const STALL_LOOPS: u32 = 1000;

/// CPUs the counters cover (CPU index, boot CPU 0).
const MAX_CPUS: usize = 16;

/// One CPU's NMI handler runs under the hook.
struct CpuNmis {
    runs: AtomicU64,
    /// Handler runs in progress on this CPU, and the most seen at once.
    depth: AtomicU32,
    max_depth: AtomicU32,
}

static CPUS: [CpuNmis; MAX_CPUS] = [const {
    CpuNmis {
        runs: AtomicU64::new(0),
        depth: AtomicU32::new(0),
        max_depth: AtomicU32::new(0),
    }
}; MAX_CPUS];

/// What the hook does besides counting.
static ACTION: AtomicU8 = AtomicU8::new(NOTHING);
const NOTHING: u8 = 0;
/// Read the HPET's capability register (an MMIO #VC) and check it against [`HPET_CAP`].
const READ_HPET: u8 = 1;
/// Log a line (a #VC for the clock, and the console).
const LOG: u8 = 2;
/// Once (when [`SELF_NMI_ARMED`]): send a self-NMI, then int3.
const SELF_NMI: u8 = 3;

/// The HPET capability register as read before the test (constant).
static HPET_CAP: AtomicU64 = AtomicU64::new(0);
/// Reads of it inside NMI handlers that differed.
static BAD_HPET_READS: AtomicU64 = AtomicU64::new(0);
/// Handler runs that found no per-CPU data or a CPU beyond [`MAX_CPUS`].
static UNCOUNTED: AtomicU64 = AtomicU64::new(0);
/// The interrupted RSP of the last NMI the hook saw.
static LAST_RSP: AtomicU64 = AtomicU64::new(0);
/// [`SELF_NMI`] fires once per arming.
static SELF_NMI_ARMED: AtomicBool = AtomicBool::new(false);

/// COM1's line control register (read by the loops: constant while nothing reprograms the
/// port) and its scratch register (written by the loops, used by nothing else).
const COM1_LCR: u16 = x86::serial::COM1 + 3;
const COM1_SCRATCH: u16 = x86::serial::COM1 + 7;

/// ICR: delivery mode NMI, level assert.
const ICR_NMI: u32 = (0b100 << 8) | (1 << 14);

fn cpu_index() -> usize {
    crate::percpu::current().index
}

/// The NMI hook (`crate::interrupts::set_nmi_hook`): counts per CPU, tracks nesting, and does
/// [`ACTION`].
fn hook(frame: &InterruptFrame) {
    let Some(c) = CPUS.get(cpu_index()) else {
        UNCOUNTED.fetch_add(1, Ordering::AcqRel);
        return;
    };
    let depth = c.depth.fetch_add(1, Ordering::AcqRel) + 1;
    c.max_depth.fetch_max(depth, Ordering::AcqRel);
    c.runs.fetch_add(1, Ordering::AcqRel);
    LAST_RSP.store(frame.rsp, Ordering::Release);
    match ACTION.load(Ordering::Acquire) {
        READ_HPET if hpet_cap() != HPET_CAP.load(Ordering::Acquire) => {
            BAD_HPET_READS.fetch_add(1, Ordering::AcqRel);
        }
        LOG => log::warn!("an NMI handler logs"),
        SELF_NMI if SELF_NMI_ARMED.swap(false, Ordering::AcqRel) => {
            // Pending until NMIs are unblocked: by the int3's IRETQ on bare metal, by this
            // handler's NMI_COMPLETE under SEV-ES.
            let _ = crate::apic::send_ipi(crate::apic::id(), ICR_NMI, u64::MAX);
            // SAFETY: the breakpoint handler counts and resumes after the int3.
            unsafe { core::arch::asm!("int3") };
        }
        _ => {}
    }
    c.depth.fetch_sub(1, Ordering::AcqRel);
}

/// Installs the hook with `action` for the duration of `f`.
fn hooked<T>(action: u8, f: impl FnOnce() -> T) -> T {
    ACTION.store(action, Ordering::Release);
    crate::interrupts::set_nmi_hook(Some(hook));
    let r = f();
    crate::interrupts::set_nmi_hook(None);
    ACTION.store(NOTHING, Ordering::Release);
    r
}

fn runs(cpu: usize) -> u64 {
    CPUS[cpu].runs.load(Ordering::Acquire)
}

/// Fails with `why` unless `cond` holds; the values behind a failure go to the log.
macro_rules! ensure {
    ($cond:expr, $why:expr, $($details:tt)+) => {
        if !$cond {
            log::error!("{}: {}", $why, format_args!($($details)+));
            return Err($why);
        }
    };
}

/// Waits until CPU `cpu`'s handler ran `target` times (or `ms` passed).
fn wait_runs(info: &BootInfo, cpu: usize, target: u64, ms: u64) -> Result<(), &'static str> {
    let (t0, limit) = (x86::tsc::rdtsc(), ms * super::ticks_per_ms(info));
    while runs(cpu) < target {
        ensure!(
            x86::tsc::rdtsc() - t0 < limit,
            "an NMI was not handled in time",
            "cpu {cpu}: {} of {target} handler runs",
            runs(cpu)
        );
        core::hint::spin_loop();
    }
    Ok(())
}

/// A second NMI let in by the first one's handler runs after it, not inside it.
pub(super) fn nested(info: &BootInfo) -> Result<(), &'static str> {
    let cpu = cpu_index();
    let before = runs(cpu);
    CPUS[cpu].max_depth.store(0, Ordering::Release);
    SELF_NMI_ARMED.store(true, Ordering::Release);
    hooked(SELF_NMI, || {
        crate::apic::send_ipi(crate::apic::id(), ICR_NMI, 10 * super::ticks_per_ms(info))
            .map_err(|_| "the self-NMI could not be sent")?;
        wait_runs(info, cpu, before + 2, 1000)
    })?;
    let (n, depth) = (
        runs(cpu) - before,
        CPUS[cpu].max_depth.load(Ordering::Acquire),
    );
    ensure!(
        n == 2 && depth == 1,
        "the NMI let in by an NMI handler did not run once, after it",
        "{n} runs, nested {depth} deep"
    );
    Ok(())
}

/// The simulator's NMI counters for the calling vCPU: (injected, completed).
fn sim_nmi_counters() -> (u64, u64) {
    (
        vmmcall(NMI_COUNTER, NMIS_INJECTED),
        vmmcall(NMI_COUNTER, NMI_COMPLETES),
    )
}

/// Starts an NMI storm on the calling vCPU: `count` NMIs, `min..=max` exits apart.
fn nmi_storm(count: u64, min: u64, max: u64) -> Result<(), &'static str> {
    let r = vmmcall3(NMI_STORM, [count, min, max]);
    ensure!(
        r == 0,
        "NMI_STORM refused (not on the SEV-ES simulator?)",
        "answer {r:#x}"
    );
    Ok(())
}

fn hpet_cap() -> u64 {
    // SAFETY: the HPET's capability register, mapped uncached and shared (MMIO); reading it
    // has no side effect.
    unsafe { ((hpet::BASE + hpet::CAPABILITIES) as *const u64).read_volatile() }
}

/// CPUID leaf 0 with subleaf `n`: the #VC core caches answers by (leaf, subleaf), so a subleaf
/// it has not seen goes to the hypervisor. Returns the vendor registers.
fn cpuid_miss(n: u32) -> [u32; 4] {
    let r = x86::msr::cpuid(0, n);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The simulator's worst placements, one after the other (see the module docs).
pub(super) fn worst_cases(info: &BootInfo) -> Result<(), &'static str> {
    ensure!(
        crate::sev::active(),
        "needs SEV-ES (the simulator)",
        "SEV-ES is off"
    );
    let cpu = cpu_index();
    let vendor = cpuid_miss(0);
    HPET_CAP.store(hpet_cap(), Ordering::Release);
    BAD_HPET_READS.store(0, Ordering::Release);
    let mut subleaf = 0x100;
    let mut fresh = || {
        subleaf += 1;
        subleaf
    };

    // NMIs right after NMI_COMPLETE: each one arrives before the previous handler's IRETQ.
    const BACK_TO_BACK: u64 = 50;
    let t = tally(info, cpu, BACK_TO_BACK, BACK_TO_BACK)?;
    ensure!(
        t.is(BACK_TO_BACK),
        "NMIs injected right after NMI_COMPLETE were lost, repeated or nested",
        "{t}"
    );

    // An NMI at each instruction of the exit window of the first NMI's handler (placed with a
    // breakpoint: no exit happens there): it must make the handler run once more.
    for (i, at) in x86::interrupts::nmi_exit_window().into_iter().enumerate() {
        // Armed first: the breakpoint only fires inside a handler, which the storm starts.
        let r = vmmcall(NMI_AT, at);
        ensure!(r == 0, "NMI_AT refused", "answer {r:#x}");
        let t = tally(info, cpu, 1, 2)?;
        ensure!(
            t.is(2),
            "an NMI in the NMI exit window was lost, repeated or nested",
            "instruction {i} ({at:#x}): {t}"
        );
    }

    // An NMI at the first instruction of a #VC handler (CPUID's), whose handler reads the HPET
    // (a #VC delivered on the general IST stack, which the interrupted entry still uses).
    let runs0 = runs(cpu);
    let (got, storm) = hooked(READ_HPET, || {
        let storm = nmi_storm(1, 1, 1);
        (cpuid_miss(fresh()), storm)
    });
    storm?;
    let (general_low, general_top) = crate::interrupts::boot_ist_stack(x86::gdt::ist::GENERAL);
    let at = LAST_RSP.load(Ordering::Acquire);
    ensure!(
        runs(cpu) == runs0 + 1 && (general_low..general_top).contains(&at),
        "no NMI arrived at the entry of the #VC handler",
        "{} runs, interrupted RSP {at:#x}",
        runs(cpu) - runs0
    );
    ensure!(
        got == vendor && BAD_HPET_READS.load(Ordering::Acquire) == 0,
        "a #VC inside an NMI at a #VC entry broke the interrupted #VC or its own",
        "CPUID {got:x?} (expected {vendor:x?}), {} bad HPET reads",
        BAD_HPET_READS.load(Ordering::Acquire)
    );

    // An NMI right after the VMGEXIT of CPUID's #VC handler (which holds the GHCB), whose
    // handler reads the HPET through the GHCB too.
    let (runs0, borrowed0) = (
        runs(cpu),
        crate::interrupts::NMIS_IN_VC.load(Ordering::Acquire),
    );
    let (got, storm) = hooked(READ_HPET, || {
        let storm = nmi_storm(1, 2, 2);
        (cpuid_miss(fresh()), storm)
    });
    storm?;
    ensure!(
        runs(cpu) == runs0 + 1
            && crate::interrupts::NMIS_IN_VC.load(Ordering::Acquire) == borrowed0 + 1,
        "no NMI arrived while the #VC handler held the GHCB",
        "{} runs",
        runs(cpu) - runs0
    );
    ensure!(
        got == vendor && BAD_HPET_READS.load(Ordering::Acquire) == 0,
        "a #VC inside an NMI that interrupted a GHCB request broke either request",
        "CPUID {got:x?} (expected {vendor:x?}), {} bad HPET reads",
        BAD_HPET_READS.load(Ordering::Acquire)
    );

    // An NMI while this CPU holds the console (at the first port access of a line), whose
    // handler logs: it must not wait for the console.
    let runs0 = runs(cpu);
    let storm = hooked(LOG, || {
        let storm = nmi_storm(1, 1, 1);
        x86::serial_println!("nmi_worst_cases: this line is interrupted by an NMI that logs");
        storm
    });
    storm?;
    ensure!(
        runs(cpu) == runs0 + 1,
        "no NMI arrived while the console was held",
        "{} runs",
        runs(cpu) - runs0
    );
    Ok(())
}

/// What a placement of NMIs did on one CPU: its handler runs and their deepest nesting, and the
/// NMIs the simulator injected and saw completed meanwhile.
struct Tally {
    runs: u64,
    depth: u32,
    injected: u64,
    completed: u64,
}

impl Tally {
    /// Exactly `n` NMIs, each injected, handled and completed once, none nested in another.
    fn is(&self, n: u64) -> bool {
        self.runs == n && self.injected == n && self.completed == n && self.depth == 1
    }
}

impl core::fmt::Display for Tally {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} handler runs (nested {} deep), {} injected, {} completed",
            self.runs, self.depth, self.injected, self.completed
        )
    }
}

/// Sends `count` storm NMIs to this CPU (`cpu`), whose handler does nothing else, and waits for
/// `expected` handler runs.
fn tally(info: &BootInfo, cpu: usize, count: u64, expected: u64) -> Result<Tally, &'static str> {
    let (runs0, (inj0, done0)) = (runs(cpu), sim_nmi_counters());
    CPUS[cpu].max_depth.store(0, Ordering::Release);
    hooked(NOTHING, || {
        nmi_storm(count, 0, 0)?;
        wait_runs(info, cpu, runs0 + expected, 1000)
    })?;
    let (inj, done) = sim_nmi_counters();
    Ok(Tally {
        runs: runs(cpu) - runs0,
        depth: CPUS[cpu].max_depth.load(Ordering::Acquire),
        injected: inj - inj0,
        completed: done - done0,
    })
}

/// A refused NMI_COMPLETE from an NMI that interrupted CPUID's #VC right after its VMGEXIT: the
/// guest must terminate with the hypervisor-error reason. Never returns when it works.
pub(super) fn complete_refused(_: &BootInfo) -> Result<(), &'static str> {
    ensure!(
        crate::sev::active(),
        "needs SEV-ES (the simulator)",
        "SEV-ES is off"
    );
    let r = vmmcall(REFUSE_NMI_COMPLETE, 0);
    ensure!(
        r == 0,
        "REFUSE_NMI_COMPLETE refused (not on the SEV-ES simulator?)",
        "answer {r:#x}"
    );
    hooked(NOTHING, || {
        nmi_storm(1, 2, 2)?;
        cpuid_miss(0x200);
        Ok::<(), &'static str>(())
    })?;
    Err("the guest went on after a refused NMI_COMPLETE")
}

/// The storm: [`STORM_NMIS`] NMIs per online CPU.
pub(super) fn storm(info: &BootInfo) -> Result<(), &'static str> {
    run_storm(info, STORM_NMIS)
}

/// The storm of issue 5: [`FULL_STORM_NMIS`] NMIs spread over the online CPUs.
pub(super) fn storm_full(info: &BootInfo) -> Result<(), &'static str> {
    let cpus = crate::percpu::table().len().max(1) as u64;
    run_storm(info, FULL_STORM_NMIS.div_ceil(cpus))
}

/// NMIs each CPU of the running storm takes.
static STORM_PER_CPU: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per millisecond (`super::ticks_per_ms`), for the storm's deadline and times.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(1);
/// How long a CPU's part of the storm may take.
const STORM_DEADLINE_MS: u64 = 600_000;
/// CPUs whose part of the storm failed.
static STORM_FAILURES: AtomicU64 = AtomicU64::new(0);
/// COM1's line control register as the console set it (8N1), for the loops to check.
static COM1_LCR_VALUE: AtomicU8 = AtomicU8::new(0);

fn run_storm(info: &BootInfo, per_cpu: u64) -> Result<(), &'static str> {
    ensure!(
        crate::sev::active(),
        "needs SEV-ES (the simulator)",
        "SEV-ES is off"
    );
    HPET_CAP.store(hpet_cap(), Ordering::Release);
    BAD_HPET_READS.store(0, Ordering::Release);
    STORM_FAILURES.store(0, Ordering::Release);
    COM1_LCR_VALUE.store(x86::io::inb(COM1_LCR), Ordering::Release);
    STORM_PER_CPU.store(per_cpu, Ordering::Release);
    TICKS_PER_MS.store(super::ticks_per_ms(info), Ordering::Release);
    let me = cpu_index();
    hooked(READ_HPET, || {
        let aps = crate::percpu::table()
            .iter()
            .filter(|c| c.index != me && c.online.load(Ordering::Acquire));
        let pending: alloc::vec::Vec<_> = aps
            .filter_map(|c| match crate::smp::spawn(c.index, storm_on_this_cpu) {
                Ok(p) => Some(p),
                Err(e) => {
                    log::error!("cpu {}: the storm could not start there: {e}", c.index);
                    STORM_FAILURES.fetch_add(1, Ordering::AcqRel);
                    None
                }
            })
            .collect();
        storm_on_this_cpu();
        for p in pending {
            if let Err(e) = p.wait(STORM_DEADLINE_MS + 10_000) {
                log::error!("the storm did not end: {e}");
                STORM_FAILURES.fetch_add(1, Ordering::AcqRel);
            }
        }
    });
    ensure!(
        STORM_FAILURES.load(Ordering::Acquire) == 0
            && BAD_HPET_READS.load(Ordering::Acquire) == 0
            && UNCOUNTED.load(Ordering::Acquire) == 0,
        "the NMI storm failed",
        "{} CPUs failed, {} bad HPET reads in NMI handlers, {} uncounted NMIs",
        STORM_FAILURES.load(Ordering::Acquire),
        BAD_HPET_READS.load(Ordering::Acquire),
        UNCOUNTED.load(Ordering::Acquire)
    );
    Ok(())
}

/// One CPU's part of the storm (the boot CPU's, or an AP's through `crate::smp::spawn`): arms
/// it, runs the #VC loop until its handler ran for every NMI, then compares with the
/// simulator's counts and prints its `NMI-STORM` line.
fn storm_on_this_cpu() {
    let cpu = cpu_index();
    if let Err(why) = storm_loop(cpu) {
        log::error!("cpu {cpu}: {why}");
        STORM_FAILURES.fetch_add(1, Ordering::AcqRel);
    }
}

fn storm_loop(cpu: usize) -> Result<(), &'static str> {
    let per_cpu = STORM_PER_CPU.load(Ordering::Acquire);
    ensure!(cpu < MAX_CPUS, "a CPU beyond the counters", "cpu {cpu}");
    let vendor = cpuid_miss(0);
    let (runs0, (inj0, done0)) = (runs(cpu), sim_nmi_counters());
    let ticks_per_ms = TICKS_PER_MS.load(Ordering::Acquire);
    let t0 = x86::tsc::rdtsc();
    let deadline = t0 + STORM_DEADLINE_MS * ticks_per_ms;
    nmi_storm(per_cpu, 0, STORM_MAX_GAP)?;
    let (mut loops, mut last_nmi_at, mut seen) = (0u32, 0u32, runs0);
    while runs(cpu) - runs0 < per_cpu {
        ensure!(
            loops % 8 != 0 || x86::tsc::rdtsc() < deadline,
            "the storm did not end in time",
            "cpu {cpu}: {} of {per_cpu} NMIs handled after {loops} loops",
            runs(cpu) - runs0
        );
        if runs(cpu) != seen {
            (seen, last_nmi_at) = (runs(cpu), loops);
        }
        // Each round takes about 12 exits, and no gap is longer than STORM_MAX_GAP.
        ensure!(
            loops - last_nmi_at < STALL_LOOPS,
            "NMIs stopped coming (one lost: no NMI_COMPLETE for it)",
            "cpu {cpu}: {} of {per_cpu} NMIs handled, none in the last {STALL_LOOPS} loops",
            runs(cpu) - runs0
        );
        one_loop(loops, vendor)?;
        loops += 1;
    }
    let ms = (x86::tsc::rdtsc() - t0) / ticks_per_ms;
    let (inj, done) = sim_nmi_counters();
    let n = runs(cpu) - runs0;
    x86::serial_println!(
        "NMI-STORM cpu={cpu} nmis={n} injected={} completed={} loops={loops} ms={ms}",
        inj - inj0,
        done - done0
    );
    ensure!(
        n == per_cpu && inj - inj0 == n && done - done0 == n,
        "handler runs, injected NMIs and NMI_COMPLETEs differ",
        "cpu {cpu}: {n} runs of {per_cpu}, {} injected, {} completed",
        inj - inj0,
        done - done0
    );
    Ok(())
}

/// One round of the #VC-heavy loop, each result checked where it can be: CPUID (a new subleaf:
/// through the GHCB), COM1's line control register read and its scratch register written (port
/// I/O), the HPET's capability register read, the IOAPIC's version register selected and read
/// (MMIO; every CPU selects the same register, so no lock is needed). Every 8th round also
/// reads the TSC (for the deadline; a #VC too).
fn one_loop(i: u32, vendor: [u32; 4]) -> Result<(), &'static str> {
    let got = cpuid_miss(0x1000 + i % 64);
    ensure!(got == vendor, "CPUID under the storm", "{got:x?}");
    let lcr = x86::io::inb(COM1_LCR);
    ensure!(
        lcr == COM1_LCR_VALUE.load(Ordering::Acquire),
        "port input under the storm",
        "COM1 LCR {lcr:#x}"
    );
    x86::io::outb(COM1_SCRATCH, i as u8);
    let cap = hpet_cap();
    ensure!(
        cap == HPET_CAP.load(Ordering::Acquire),
        "MMIO read under the storm",
        "HPET {cap:#x}"
    );
    // SAFETY: selects the IOAPIC's version register (nothing else in the kernel uses the
    // IOAPIC), then reads it; MMIO mapped uncached and shared.
    let version = unsafe {
        (ioapic::INDEX as *mut u32).write_volatile(ioapic::VERSION);
        (ioapic::DATA as *const u32).read_volatile()
    };
    ensure!(
        ioapic::check_version(version).is_ok(),
        "MMIO write and read under the storm",
        "IOAPIC version {version:#x}"
    );
    Ok(())
}
