//! `bench=vc`: the guest-side cost of a #VC by event, through the kernel's real #VC handler,
//! on the SEV-ES simulator (`cargo xtask bench sev-es` runs it under QEMU `-icount shift=0`,
//! where the TSC counts instructions).
//!
//! The guest side of a #VC is what the kernel executes for it: from the handler's first
//! instruction to its VMGEXIT, and from the VMGEXIT's return to the IRET (plus, for a CPUID
//! cache hit, the whole handler without a VMGEXIT). The kernel cannot time that itself without
//! instrumenting its handler, and a guest TSC read (RDTSC) is itself a #VC on the simulator. So
//! the simulator does the timing: it reads its TSC around every VMRUN and adds up the time its
//! vCPU spent in guest mode, and reports the sum and its exit count through a CPUID leaf
//! (`handoff::sim_hypercall::GUEST_TIME_LEAF`, read through the ordinary CPUID #VC path).
//!
//! Each event runs [`ITERATIONS`] times in a loop between two such reads (a window). A window of
//! the bare loop gives the loop and the two reads' own cost, which every window has; a window of
//! SEV_STATUS reads (an exit the simulator serves without a #VC: zero guest-side work) gives
//! what each exit adds to the guest-mode time besides the guest's instructions: the
//! simulator's VMRUN/#VMEXIT path between its TSC reads. Per event:
//! `guest_cycles = (window - bare loop) / ITERATIONS - exits * exit overhead`, where the event's
//! registers are set up by at most four instructions, counted in.
//!
//! Each window's #VMEXITs are counted too: a CPUID cache hit must take one exit (the intercept,
//! no VMGEXIT), the other events two.

use handoff::sim_hypercall::GUEST_TIME_LEAF;
use x86::qemu::ExitStatus;

/// Events per window.
const ITERATIONS: u64 = 1000;
/// SEV_STATUS: its read exits to the simulator, which serves it without a #VC.
const MSR_SEV_STATUS: u32 = 0xc001_0131;
/// COM1's scratch register: forwarded by the simulator, no side effect.
const COM1_SCRATCH: u16 = 0x3ff;
/// The HPET's capability register (read-only), which the kernel maps shared and uncached.
const HPET_CAPABILITIES: u64 = x86::pc::hpet::BASE + x86::pc::hpet::CAPABILITIES;
/// Subleaf of the CPUID-hit loop's leaf 0: asked once before its window (a miss, so it is the
/// newest entry in the #VC core's cache), then always served from the cache.
const HIT_SUBLEAF: u32 = 0x1000;
/// The CPUID-miss loop cycles leaf 0 through this many subleaves from `MISS_SUBLEAF`: twice the
/// #VC core's 16-entry round-robin cache, so every one was evicted before it comes again.
const MISS_KEYS: u32 = 32;
const MISS_SUBLEAF: u32 = 0x2000;

/// What one window cost: the simulator's guest-mode TSC ticks and #VMEXITs between its reads.
#[derive(Clone, Copy)]
struct Window {
    ticks: u64,
    exits: u64,
}

/// The events a window can loop over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Nothing: the loop alone.
    Bare,
    /// RDMSR of SEV_STATUS: one exit, no #VC.
    SevStatus,
    CpuidMiss,
    CpuidHit,
    /// OUT of one byte to COM1's scratch register.
    Ioio,
    /// A qword read of the HPET's capability register.
    Mmio,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Bare => "bare_loop",
            Event::SevStatus => "exit_overhead",
            Event::CpuidMiss => "cpuid_miss",
            Event::CpuidHit => "cpuid_hit",
            Event::Ioio => "ioio",
            Event::Mmio => "mmio",
        }
    }
}

/// The guest-time reads' subleaves: a new one each time, so the #VC core's CPUID cache never
/// answers for the simulator.
struct Clock {
    next_subleaf: u32,
}

impl Clock {
    fn read(&mut self) -> Window {
        let r = x86::msr::cpuid(GUEST_TIME_LEAF, self.next_subleaf);
        self.next_subleaf = self.next_subleaf.wrapping_add(1);
        Window {
            ticks: u64::from(r.edx) << 32 | u64::from(r.eax),
            exits: u64::from(r.ecx) << 32 | u64::from(r.ebx),
        }
    }

    /// [`ITERATIONS`] of `event` between two reads.
    fn window(&mut self, event: Event) -> Window {
        if event == Event::CpuidHit {
            let _ = x86::msr::cpuid(0, HIT_SUBLEAF);
        }
        let start = self.read();
        run(event, ITERATIONS);
        let end = self.read();
        Window {
            ticks: end.ticks.wrapping_sub(start.ticks),
            exits: end.exits.wrapping_sub(start.exits),
        }
    }
}

/// `n` (> 0) events in a loop whose own instructions (`dec`, `jnz`) are the same for every
/// event.
fn run(event: Event, n: u64) {
    // SAFETY (every arm): the loop only counts `n` down, and the event touches no memory the
    // compiler knows of: CPUID and RDMSR of SEV_STATUS (readable at CPL 0) only write the
    // registers named as clobbered (RBX, which Rust reserves, is saved in a scratch register);
    // the OUT goes to COM1's scratch register, which nothing else uses; the HPET capability
    // register is read-only MMIO the kernel maps (uncached). Under SEV-ES each raises a #VC the
    // kernel's handler serves, or an exit the simulator serves.
    unsafe {
        match event {
            Event::Bare => core::arch::asm!(
                "2: dec {n}", "jnz 2b",
                n = inout(reg) n => _, options(nomem, nostack),
            ),
            Event::SevStatus => core::arch::asm!(
                "2: mov ecx, {msr}", "rdmsr", "dec {n}", "jnz 2b",
                n = inout(reg) n => _, msr = const MSR_SEV_STATUS,
                out("eax") _, out("ecx") _, out("edx") _, options(nomem, nostack),
            ),
            Event::CpuidMiss => core::arch::asm!(
                "2: mov ecx, {n:e}", "and ecx, {mask}", "add ecx, {base}", "xor eax, eax",
                "mov {rbx}, rbx", "cpuid", "mov rbx, {rbx}", "dec {n}", "jnz 2b",
                n = inout(reg) n => _, rbx = out(reg) _,
                mask = const MISS_KEYS - 1, base = const MISS_SUBLEAF,
                out("eax") _, out("ecx") _, out("edx") _, options(nomem, nostack),
            ),
            Event::CpuidHit => core::arch::asm!(
                "2: mov ecx, {sub}", "xor eax, eax",
                "mov {rbx}, rbx", "cpuid", "mov rbx, {rbx}", "dec {n}", "jnz 2b",
                n = inout(reg) n => _, rbx = out(reg) _, sub = const HIT_SUBLEAF,
                out("eax") _, out("ecx") _, out("edx") _, options(nomem, nostack),
            ),
            Event::Ioio => core::arch::asm!(
                "2: mov dx, {port}", "out dx, al", "dec {n}", "jnz 2b",
                n = inout(reg) n => _, port = const COM1_SCRATCH,
                in("al") 0x5au8, out("dx") _, options(nomem, nostack),
            ),
            Event::Mmio => core::arch::asm!(
                "2: mov {v}, qword ptr [{addr}]", "dec {n}", "jnz 2b",
                n = inout(reg) n => _, v = out(reg) _, addr = in(reg) HPET_CAPABILITIES,
                options(readonly, nostack),
            ),
        }
    }
}

/// Runs `bench=<what>` and says how it went.
pub fn run_named(what: &str) -> ExitStatus {
    match what {
        "vc" => vc(),
        other => {
            log::error!("bench=`{other}`: unknown benchmark (known: vc)");
            ExitStatus::Failure
        }
    }
}

/// `bench=vc`: one `VC-COST` line per event.
fn vc() -> ExitStatus {
    if !crate::sev::active() {
        log::error!("bench=vc measures the #VC handler: it needs SEV-ES (the simulator)");
        return ExitStatus::Failure;
    }
    let mut clock = Clock { next_subleaf: 0 };
    let (a, b) = (clock.read(), clock.read());
    if a.ticks == 0 || b.ticks <= a.ticks {
        log::error!(
            "bench=vc: CPUID leaf {GUEST_TIME_LEAF:#x} reports no guest time: not the simulator"
        );
        return ExitStatus::Failure;
    }
    let bare = clock.window(Event::Bare);
    let calibration = clock.window(Event::SevStatus);
    let (overhead, exits) = match per_iteration(calibration, bare) {
        Some(c) if c.1 == 1 => c,
        _ => {
            log::error!("bench=vc: a SEV_STATUS read did not take exactly one exit");
            return ExitStatus::Failure;
        }
    };
    log::info!(
        "VC-COST event={} guest_cycles={} exits=0 iterations={ITERATIONS}",
        Event::Bare.name(),
        bare.ticks / ITERATIONS
    );
    log::info!(
        "VC-COST event={} guest_cycles={overhead} exits={exits} iterations={ITERATIONS}",
        Event::SevStatus.name()
    );
    let mut status = ExitStatus::Success;
    for (event, want_exits) in [
        (Event::CpuidMiss, 2),
        (Event::CpuidHit, 1),
        (Event::Ioio, 2),
        (Event::Mmio, 2),
    ] {
        let w = clock.window(event);
        let Some((measured, exits)) = per_iteration(w, bare) else {
            log::error!(
                "bench=vc: {}: not a whole number of exits per event",
                event.name()
            );
            status = ExitStatus::Failure;
            continue;
        };
        if exits != want_exits {
            log::error!(
                "bench=vc: {} took {exits} exits per event, not {want_exits}",
                event.name()
            );
            status = ExitStatus::Failure;
        }
        log::info!(
            "VC-COST event={} guest_cycles={} exits={exits} iterations={ITERATIONS} measured={measured} exit_overhead={overhead}",
            event.name(),
            measured.saturating_sub(exits * overhead)
        );
    }
    status
}

/// Guest-mode ticks and exits per iteration of `w` above those of the bare loop; `None` when
/// `w` has fewer exits than the bare loop or its exits are not a whole number per iteration.
fn per_iteration(w: Window, bare: Window) -> Option<(u64, u64)> {
    let extra_exits = w.exits.checked_sub(bare.exits)?;
    if extra_exits % ITERATIONS != 0 {
        return None;
    }
    Some((
        w.ticks.saturating_sub(bare.ticks) / ITERATIONS,
        extra_exits / ITERATIONS,
    ))
}
