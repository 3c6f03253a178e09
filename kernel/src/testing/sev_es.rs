//! Cases for every instruction the kernel may execute that SEV-ES turns into a #VC (a NAE event
//! emulated through the GHCB), and for the GHCB itself.
//!
//! Each case checks what the instruction returned against something known: COM1's scratch
//! register reads back what was written (the simulator forwards COM1), the HPET's capability
//! register and the IOAPIC's version register have values the specifications bound, DR7 and
//! TSC_AUX read back what was written, CPUID through the GHCB agrees with CPUID through the MSR
//! protocol. Under SEV-ES each also checks that the instruction went through the kernel's #VC
//! handler and the GHCB: [`via_ghcb`] first makes the GHCB hold another request, then runs the
//! instruction and finds the GHCB holding its exit code (only the #VC core writes it). A #DB
//! makes no request: [`vc_db`] finds from the kernel's #DB handler which #DBs came as a #VC.
//! The integration tests (`tests/tests/sev_es_vc.rs`) add the simulator's own counts.
//!
//! Cases that also make sense without SEV run in plain QEMU too; the others are listed in
//! [`ONLY_UNDER_SEV_ES`] with the reason. [`BY_NAME_ONLY`] holds the requests the #VC core
//! refuses and the interrupts a hostile hypervisor injects ([`injected`]): each ends the run in
//! a termination request with its own reason.

use super::Case;
use core::arch::asm;
use handoff::bootinfo::BootInfo;
use sev::exit_code::ExitCode;
use sev::hw::{GhcbMsrRecord, HwGhcbMsr};
use sev::msr_protocol::{self, GhcbMsr};
use x86::io::{inb, inl, inw, outb, outl, outw};
use x86::pc::{hpet, ioapic};
use x86::serial::COM1;

/// The cases `test=all` runs after the kernel's own.
pub const CASES: &[(&str, Case)] = &[
    ("vc_cpuid", vc_cpuid),
    ("vc_ioio", vc_ioio),
    ("vc_mmio", vc_mmio),
    ("vc_msr", vc_msr),
    ("vc_rdtsc", vc_rdtsc),
    ("vc_rdpmc", vc_rdpmc),
    ("vc_dr7", vc_dr7),
    ("vc_db", vc_db),
    ("vc_wbinvd", vc_wbinvd),
    ("vc_monitor_mwait", vc_monitor_mwait),
    ("vc_vmmcall", vc_vmmcall),
    ("ghcb_protocol", ghcb_protocol),
];

/// Requests the #VC core refuses: each ends the run with a termination request, so they run
/// only when named.
pub const BY_NAME_ONLY: &[(&str, Case)] = &[
    ("vc_invd", vc_invd),
    ("vc_unsupported_mmio", vc_unsupported_mmio),
    ("vc_msr_refused", vc_msr_refused),
    ("injected_pf", injected::<{ x86::idt::vector::PAGE_FAULT }>),
    (
        "injected_vc",
        injected::<{ x86::idt::vector::VMM_COMMUNICATION }>,
    ),
    ("injected_0x80", injected::<0x80>),
];

/// Cases that need SEV-ES, with the reason: without it they say `SKIP`.
pub const ONLY_UNDER_SEV_ES: &[(&str, &str)] = &[
    ("vc_rdpmc", "QEMU's TCG does not implement RDPMC (#UD)"),
    (
        "vc_monitor_mwait",
        "QEMU's TCG MWAIT halts a lone vCPU until an interrupt, and interrupts are off",
    ),
    (
        "vc_vmmcall",
        "QEMU's TCG raises #UD for VMMCALL without a hypervisor",
    ),
    ("ghcb_protocol", "no GHCB without SEV-ES"),
    ("vc_invd", "only the #VC core refuses INVD"),
    (
        "vc_unsupported_mmio",
        "only the #VC core refuses MMIO it does not emulate",
    ),
    (
        "vc_msr_refused",
        "the #GP comes from the hypervisor's GHCB reply",
    ),
];

/// Fails the case with `why` unless `cond` holds; the values behind a failure go to the log.
macro_rules! ensure {
    ($cond:expr, $why:expr, $($details:tt)+) => {
        if !$cond {
            log::error!("{}: {}", $why, format_args!($($details)+));
            return Err($why);
        }
    };
}

/// Runs `f`, which executes one instruction that raises a #VC with exit code `exit` (and
/// nothing else that reaches the GHCB), and under SEV-ES checks that its request went through
/// the GHCB: a different request is made first (RDTSC, or RDTSCP when RDTSC is the one under
/// test), so the GHCB can only hold `exit` afterwards if `f`'s #VC put it there. Without SEV-ES
/// it just runs `f`.
fn via_ghcb<T>(exit: ExitCode, f: impl FnOnce() -> T) -> Result<T, &'static str> {
    if !crate::sev::active() {
        return Ok(f());
    }
    if exit == ExitCode::Rdtsc {
        rdtscp();
    } else {
        x86::tsc::rdtsc();
    }
    let v = f();
    let held = crate::sev::ghcb_exit_code();
    ensure!(
        held == exit.raw(),
        "the instruction's request did not go through the GHCB",
        "expected exit code {:#x}, the GHCB holds {held:#x}",
        exit.raw()
    );
    Ok(v)
}

/// Runs `f` with this CPU's GHCB MSR for MSR-protocol requests (under SEV-ES only).
/// `msr_protocol::request` leaves the MSR holding what it held (the registered GHCB GPA), so
/// the kernel's GHCB channel, which knows the MSR to hold its GPA, stays right; nothing else
/// uses the MSR meanwhile: the cases run on the boot CPU with interrupts off, and no case
/// expects an NMI here.
fn with_msr_protocol<R>(f: impl FnOnce(&mut HwGhcbMsr<'_>) -> R) -> R {
    let record = GhcbMsrRecord::new();
    // SAFETY: CPL 0 in an SEV-ES guest (callers check `crate::sev::active`); the record is
    // this use's own, and nothing else uses the GHCB MSR while `f` runs (see above).
    let mut msr = unsafe { HwGhcbMsr::new(&record) };
    f(&mut msr)
}

/// CPUID leaf 0x8000_001F EAX: SEV, SEV-ES.
const CPUID_SEV_ES: u32 = (1 << 1) | (1 << 3);

/// CPUID answers are stable and sensible; under SEV-ES they come through the GHCB (a leaf the
/// #VC core's cache cannot hold yet), agree with the MSR protocol's answers register by
/// register, name AMD and report SEV-ES with the C-bit the kernel runs with.
fn vc_cpuid(info: &BootInfo) -> Result<(), &'static str> {
    let cpuid = |leaf| {
        let r = x86::msr::cpuid(leaf, 0);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    // A subleaf nothing else asks for: a cache miss, so a request through the GHCB.
    let fresh = via_ghcb(ExitCode::Cpuid, || x86::msr::cpuid(0x8000_0005, 0x5eed))?;
    let again = x86::msr::cpuid(0x8000_0005, 0x5eed);
    ensure!(
        fresh == again,
        "CPUID answered one leaf differently twice",
        "{fresh:x?} then {again:x?}"
    );
    let ext = cpuid(0x8000_0000);
    let phys = cpuid(0x8000_0008)[0] & 0xff;
    ensure!(
        ext[0] >= 0x8000_0008 && (32..=52).contains(&phys),
        "CPUID: no address-size leaf, or an impossible physical address width",
        "highest extended leaf {:#x}, {phys} physical address bits",
        ext[0]
    );
    if !crate::sev::active() {
        return Ok(());
    }
    let vendor = cpuid(0);
    ensure!(
        [vendor[1], vendor[3], vendor[2]] == [0x6874_7541, 0x6974_6e65, 0x444d_4163],
        "CPUID 0 does not name AuthenticAMD under SEV-ES",
        "{vendor:x?}"
    );
    let sev = cpuid(0x8000_001f);
    ensure!(
        sev[0] & CPUID_SEV_ES == CPUID_SEV_ES && 1u64 << (sev[1] & 0x3f) == info.c_bit,
        "CPUID 0x8000001F does not report SEV-ES with the kernel's C-bit",
        "{sev:x?}, C-bit mask {:#x}",
        info.c_bit
    );
    for leaf in [0, 1, 7, 0x8000_0000, 0x8000_0001, 0x8000_0008, 0x8000_001f] {
        let through_ghcb = cpuid(leaf);
        let through_msr = with_msr_protocol(|msr| msr_protocol::cpuid(msr, leaf))
            .map_err(|_| "CPUID through the MSR protocol failed")?;
        ensure!(
            through_ghcb == through_msr,
            "CPUID through the GHCB and through the MSR protocol differ",
            "leaf {leaf:#x}: {through_ghcb:x?} vs {through_msr:x?}"
        );
    }
    Ok(())
}

/// COM1's scratch register: nothing uses it, and it reads back what was written.
const SCRATCH: u16 = COM1 + 7;
/// COM1's modem status register (read-only: writes are ignored), right below the scratch
/// register: a word there ends in the scratch register.
const MODEM_STATUS: u16 = COM1 + 6;
/// COM1's modem control register: a dword there ends in the scratch register (line and modem
/// status in between ignore writes; modem control is written back with its own value).
const MODEM_CONTROL: u16 = COM1 + 4;

/// IN/OUT of a byte, a word and a dword, and REP OUTS/INS of bytes and words, through COM1's
/// scratch register; the long REP INSB crosses a page and is more than one GHCB shared buffer
/// (several rounds of the #VC core).
fn vc_ioio(_: &BootInfo) -> Result<(), &'static str> {
    for v in [0x5a, 0xa5] {
        via_ghcb(ExitCode::Ioio, || outb(SCRATCH, v))?;
        let back = via_ghcb(ExitCode::Ioio, || inb(SCRATCH))?;
        ensure!(
            back == v,
            "IN of a byte did not read back OUT's",
            "wrote {v:#x}, read {back:#x}"
        );
    }
    via_ghcb(ExitCode::Ioio, || outw(MODEM_STATUS, 0x6900))?;
    let w = via_ghcb(ExitCode::Ioio, || inw(MODEM_STATUS))?;
    ensure!(
        w >> 8 == 0x69,
        "IN of a word did not read back OUT's",
        "scratch byte {:#x}, expected 0x69",
        w >> 8
    );
    let mcr = inb(MODEM_CONTROL);
    let dword = 0x3c00_0000 | u32::from(mcr);
    via_ghcb(ExitCode::Ioio, || outl(MODEM_CONTROL, dword))?;
    let d = via_ghcb(ExitCode::Ioio, || inl(MODEM_CONTROL))?;
    ensure!(
        d >> 24 == 0x3c && d as u8 == mcr,
        "IN of a dword did not read back OUT's",
        "read {d:#x}, expected scratch 0x3c and modem control {mcr:#x}"
    );

    via_ghcb(ExitCode::Ioio, || {
        rep_outsb(SCRATCH, &[0x11, 0x22, 0x33, 0x44])
    })?;
    let last = inb(SCRATCH);
    ensure!(
        last == 0x44,
        "REP OUTSB did not leave its last byte in the scratch register",
        "read {last:#x}, expected 0x44"
    );
    // 3000 bytes at an offset that makes them cross a page boundary.
    let mut page = alloc::vec![0u8; 3 * 4096];
    let start = (4096 - (page.as_ptr() as usize) % 4096) + 4096 - 1000;
    let long = &mut page[start..start + 3000];
    via_ghcb(ExitCode::Ioio, || rep_insb(SCRATCH, long))?;
    let wrong = long.iter().position(|&b| b != 0x44);
    ensure!(
        wrong.is_none() && page[..start].iter().all(|&b| b == 0),
        "REP INSB of 3000 bytes read something else than the scratch register",
        "first wrong byte at {wrong:?}"
    );
    via_ghcb(ExitCode::Ioio, || {
        rep_outsw(MODEM_STATUS, &[0x1100, 0x7700])
    })?;
    let mut words = [0u16; 4];
    via_ghcb(ExitCode::Ioio, || rep_insw(MODEM_STATUS, &mut words))?;
    ensure!(
        words.iter().all(|w| w >> 8 == 0x77),
        "REP INSW after REP OUTSW did not read the scratch register",
        "{words:#x?}, expected scratch byte 0x77 in each"
    );
    Ok(())
}

fn rep_outsb(port: u16, data: &[u8]) {
    // SAFETY: reads `data` only; the port is COM1's scratch register, which nothing else uses.
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") data.as_ptr() => _,
            inout("rcx") data.len() => _, options(nostack, preserves_flags, readonly))
    };
}

fn rep_insb(port: u16, buf: &mut [u8]) {
    // SAFETY: writes `buf` only.
    unsafe {
        asm!("rep insb", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    };
}

fn rep_outsw(port: u16, data: &[u16]) {
    // SAFETY: reads `data` only; the port pair is COM1's modem status (ignores writes) and
    // scratch registers.
    unsafe {
        asm!("rep outsw", in("dx") port, inout("rsi") data.as_ptr() => _,
            inout("rcx") data.len() => _, options(nostack, preserves_flags, readonly))
    };
}

fn rep_insw(port: u16, buf: &mut [u16]) {
    // SAFETY: writes `buf` only.
    unsafe {
        asm!("rep insw", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    };
}

/// The HPET's 64-bit general capabilities and ID register.
const HPET_CAP: u64 = hpet::BASE + hpet::CAPABILITIES;

fn mmio_read<T: Copy>(addr: u64) -> T {
    // SAFETY: `addr` is a register of the HPET or the IOAPIC, which the kernel maps uncached
    // (shared under SEV-ES, where the simulator forwards both); reading these registers has no
    // side effects.
    unsafe { (addr as *const T).read_volatile() }
}

/// The HPET capability register (a qword load and its period as a dword load, revision, vendor
/// and period within the specification's bounds), the IOAPIC version register through the
/// index/data pair (a store and a load) and REP MOVSD from the HPET into RAM and from RAM into
/// the IOAPIC's index register.
fn vc_mmio(_: &BootInfo) -> Result<(), &'static str> {
    let cap = via_ghcb(ExitCode::MmioRead, || mmio_read::<u64>(HPET_CAP))?;
    let period = hpet::period_fs(cap).map_err(|e| {
        log::error!("HPET capability register {cap:#x}: {e}");
        "HPET capability register: no HPET's"
    })?;
    let high = via_ghcb(ExitCode::MmioRead, || mmio_read::<u32>(HPET_CAP + 4))?;
    ensure!(
        u64::from(high) == period,
        "HPET period read as a dword differs from the qword's",
        "{high:#x} vs {period:#x}"
    );
    // SAFETY: selecting an IOAPIC register only changes what the data window shows; nothing
    // else in the kernel uses the IOAPIC.
    via_ghcb(ExitCode::MmioWrite, || unsafe {
        (ioapic::INDEX as *mut u32).write_volatile(ioapic::VERSION)
    })?;
    let v = via_ghcb(ExitCode::MmioRead, || mmio_read::<u32>(ioapic::DATA))?;
    check_ioapic_version(v)?;

    let mut copy = [0u32; 2];
    via_ghcb(ExitCode::MmioRead, || {
        rep_movsd(HPET_CAP as *const u32, copy.as_mut_ptr(), copy.len())
    })?;
    let copied = u64::from(copy[0]) | u64::from(copy[1]) << 32;
    ensure!(
        copied == cap,
        "REP MOVSD from the HPET copied something else than a MOV read",
        "{copied:#x} vs {cap:#x}"
    );
    // The index away from the version register first, so that only the REP MOVSD can select it.
    // SAFETY: as above.
    unsafe { (ioapic::INDEX as *mut u32).write_volatile(0) };
    let index = [ioapic::VERSION];
    via_ghcb(ExitCode::MmioWrite, || {
        rep_movsd(index.as_ptr(), ioapic::INDEX as *mut u32, 1)
    })?;
    check_ioapic_version(mmio_read::<u32>(ioapic::DATA))
}

/// [`ioapic::check_version`], as a test failure.
fn check_ioapic_version(v: u32) -> Result<(), &'static str> {
    ioapic::check_version(v).map_err(|e| {
        log::error!("{e}");
        "IOAPIC version register: not an IOAPIC version or fewer than 24 pins"
    })
}

/// `rep movsd` of `n` dwords.
fn rep_movsd(src: *const u32, dst: *mut u32, n: usize) {
    // SAFETY: both sides are valid for `n` dwords: a buffer of the caller, or registers of the
    // HPET (reading has no side effects) or the IOAPIC index (writing selects a register).
    unsafe {
        asm!("rep movsd", inout("rsi") src => _, inout("rdi") dst => _,
            inout("rcx") n => _, options(nostack, preserves_flags))
    };
}

/// IA32_TIME_STAMP_COUNTER.
const IA32_TSC: u32 = 0x10;

/// RDMSR/WRMSR: TSC_AUX reads back two values written (and RDTSCP returns it), then its own;
/// under SEV-ES the TSC read as an MSR lies between two RDTSCs.
fn vc_msr(_: &BootInfo) -> Result<(), &'static str> {
    use x86::msr::{IA32_TSC_AUX, rdmsr, wrmsr};
    // SAFETY: TSC_AUX is only read by RDTSCP, which nothing in the kernel relies on; the
    // original value is put back.
    let original = via_ghcb(ExitCode::Msr, || unsafe { rdmsr(IA32_TSC_AUX) })?;
    for v in [0x5eed, 0xa5a5_0001, original] {
        // SAFETY: as above.
        via_ghcb(ExitCode::Msr, || unsafe { wrmsr(IA32_TSC_AUX, v) })?;
        // SAFETY: reading TSC_AUX has no side effects.
        let back = via_ghcb(ExitCode::Msr, || unsafe { rdmsr(IA32_TSC_AUX) })?;
        let (_, aux) = rdtscp();
        ensure!(
            back == v && u64::from(aux) == v,
            "TSC_AUX did not read back what was written",
            "wrote {v:#x}, RDMSR {back:#x}, RDTSCP {aux:#x}"
        );
    }
    if !crate::sev::active() {
        return Ok(()); // QEMU's TCG reads IA32_TSC as 0
    }
    let before = x86::tsc::rdtsc();
    // SAFETY: reading the TSC has no side effects.
    let msr = via_ghcb(ExitCode::Msr, || unsafe { rdmsr(IA32_TSC) })?;
    let after = x86::tsc::rdtsc();
    ensure!(
        before < msr && msr < after,
        "the TSC read as an MSR is not between two RDTSCs",
        "{before} {msr} {after}"
    );
    Ok(())
}

/// RDTSCP: the TSC and TSC_AUX.
fn rdtscp() -> (u64, u32) {
    let mut aux = 0;
    // SAFETY: RDTSCP only writes `aux`.
    let tsc = unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    (tsc, aux)
}

/// RDTSC and RDTSCP interleaved: one clock, strictly increasing.
fn vc_rdtsc(_: &BootInfo) -> Result<(), &'static str> {
    let a = via_ghcb(ExitCode::Rdtsc, x86::tsc::rdtsc)?;
    let (b, _) = via_ghcb(ExitCode::Rdtscp, rdtscp)?;
    let c = via_ghcb(ExitCode::Rdtsc, x86::tsc::rdtsc)?;
    let (d, _) = via_ghcb(ExitCode::Rdtscp, rdtscp)?;
    ensure!(
        a < b && b < c && c < d,
        "RDTSC and RDTSCP are not one increasing clock",
        "{a} {b} {c} {d}"
    );
    Ok(())
}

/// RDPMC of each of the six counters AMD CPUs have reaches the hypervisor and comes back; a
/// counter does not run backwards between two reads.
fn vc_rdpmc(_: &BootInfo) -> Result<(), &'static str> {
    for counter in 0..6 {
        let a = via_ghcb(ExitCode::Rdpmc, || rdpmc(counter))?;
        let b = via_ghcb(ExitCode::Rdpmc, || rdpmc(counter))?;
        ensure!(
            b >= a,
            "a performance counter ran backwards",
            "counter {counter}: {a} then {b}"
        );
    }
    Ok(())
}

fn rdpmc(counter: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDPMC at CPL 0 only reads a counter.
    unsafe {
        asm!("rdpmc", in("ecx") counter, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

fn read_dr7() -> u64 {
    let v;
    // SAFETY: reading DR7 has no side effects.
    unsafe { asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn write_dr7(v: u64) {
    // SAFETY: the values written arm no breakpoint (L0-L3 and G0-G3 stay as the caller read
    // them or clear).
    unsafe { asm!("mov dr7, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
}

/// DR7 with LE and GE set (exact-breakpoint hints) and a length and type for breakpoint 0 but
/// no breakpoint enabled reads back as written; then the original value. Under SEV-ES the
/// write goes to the hypervisor and the read comes from the #VC core's own copy.
fn vc_dr7(_: &BootInfo) -> Result<(), &'static str> {
    let original = read_dr7();
    for v in [0x000d_0700, original] {
        via_ghcb(ExitCode::WriteDr7, || write_dr7(v))?;
        let back = read_dr7();
        ensure!(
            back == v,
            "DR7 did not read back what was written",
            "wrote {v:#x}, read {back:#x}"
        );
    }
    Ok(())
}

/// Single-stepping and ICEBP. With RFLAGS.TF set, three instructions of different lengths each
/// end in a #DB with DR6.BS whose RIP is the next instruction's, each ran once (their sum), and
/// the #DB handler, asked for three, cleared TF at the third, ending the single-step. Then ICEBP
/// (0xF1) raises a #DB right after itself without DR6.BS (so the handler also reset DR6: its
/// status bits are sticky). Under SEV-ES the hypervisor intercepts #DB unless DebugSwap gives
/// the guest its debug registers (the simulator does, as KVM does): each step's #DB comes as a
/// #VC with exit code 0x41 that the #VC handler hands to the #DB handler; ICEBP's never does,
/// as on hardware (the #DB intercept does not cover it). The stepped instructions raise no #VC:
/// one that did would be emulated and skipped without a #DB of its own.
fn vc_db(info: &BootInfo) -> Result<(), &'static str> {
    use crate::interrupts::{DR6_BS, DebugVia, RFLAGS_TF, debug_traps, expect_debug};
    use sev::sev_status::SevStatus;
    let status = SevStatus::from_msr(info.sev_status);
    let step_via = if crate::sev::active() && !status.contains(SevStatus::DEBUG_SWAP) {
        DebugVia::Vc
    } else {
        DebugVia::Idt
    };
    let mut after = [0u64; 3];
    let mut sum: u64 = 0;
    let flags: u64;
    expect_debug(after.len());
    // SAFETY: changes only the named registers, `after` and the flags (TF on, then off again
    // whatever the #DB handler did, so that a broken handler fails the checks below instead of
    // stepping through the rest of the run); the stack is balanced.
    unsafe {
        asm!(
            "lea {t}, [rip + 3f]",
            "mov [{after}], {t}",
            "lea {t}, [rip + 4f]",
            "mov [{after} + 8], {t}",
            "lea {t}, [rip + 5f]",
            "mov [{after} + 16], {t}",
            "pushfq",
            "or qword ptr [rsp], 0x100",
            "popfq",
            "2:",
            "inc {sum}",
            "3:",
            "add {sum}, 2",
            "4:",
            "add {sum}, 0x7f4",
            "5:",
            "pushfq",
            "pop {flags}",
            "pushfq",
            "and qword ptr [rsp], -0x101",
            "popfq",
            sum = inout(reg) sum,
            flags = out(reg) flags,
            t = out(reg) _,
            after = in(reg) after.as_mut_ptr(),
        )
    };
    let (steps, missing) = debug_traps();
    ensure!(
        missing == 0 && steps.len() == after.len(),
        "single-stepping three instructions did not take three #DBs",
        "{steps:x?}, {missing} missing"
    );
    ensure!(
        sum == 0x7f7 && flags & RFLAGS_TF == 0,
        "the stepped instructions did not each run once, or TF stayed set",
        "sum {sum:#x}, RFLAGS {flags:#x}"
    );
    for (trap, rip) in steps.iter().zip(after) {
        ensure!(
            trap.rip == rip && trap.dr6 & DR6_BS != 0 && trap.via == step_via,
            "a single-step #DB at the wrong RIP, without DR6.BS or not as expected",
            "{trap:x?}, expected RIP {rip:#x} through {step_via:?}"
        );
    }
    expect_debug(1);
    let icebp_after: u64;
    // SAFETY: ICEBP raises a #DB, which the handler (armed above) resumes right after it.
    unsafe {
        asm!(
            "lea {a}, [rip + 2f]",
            ".byte 0xf1",
            "2:",
            a = out(reg) icebp_after,
            options(nomem, nostack),
        )
    };
    let (icebp, missing) = debug_traps();
    let right = match icebp.as_slice() {
        [t] => t.rip == icebp_after && t.via == DebugVia::Idt && t.dr6 & DR6_BS == 0,
        _ => false,
    };
    ensure!(
        right && missing == 0,
        "ICEBP's #DB did not come through the IDT right after it without DR6.BS",
        "{icebp:x?}, {missing} missing, expected RIP {icebp_after:#x}"
    );
    Ok(())
}

/// WBINVD returns, and memory written before it reads back after it.
fn vc_wbinvd(_: &BootInfo) -> Result<(), &'static str> {
    let cell = core::hint::black_box(0x5eed_u64);
    // SAFETY: write-back and invalidate loses no data.
    via_ghcb(ExitCode::Wbinvd, || unsafe {
        asm!("wbinvd", options(nostack, preserves_flags))
    })?;
    ensure!(
        core::hint::black_box(cell) == 0x5eed,
        "memory changed across WBINVD",
        "{cell:#x}"
    );
    Ok(())
}

/// CPUID 1 ECX: MONITOR/MWAIT.
const CPUID_MONITOR: u32 = 1 << 3;

/// MONITOR on a line of ours, then MWAIT without hints, which returns (the hypervisor decides
/// what waiting means; it must not wait for an interrupt that cannot come).
fn vc_monitor_mwait(_: &BootInfo) -> Result<(), &'static str> {
    let ecx = x86::msr::cpuid(1, 0).ecx;
    ensure!(
        ecx & CPUID_MONITOR != 0,
        "CPUID does not offer MONITOR/MWAIT",
        "CPUID 1 ECX {ecx:#x}"
    );
    let line = 0u64;
    // SAFETY: MONITOR only arms address monitoring of `line`, a valid local.
    via_ghcb(ExitCode::Monitor, || unsafe {
        asm!("monitor", in("rax") &raw const line, in("ecx") 0, in("edx") 0,
            options(nostack, preserves_flags))
    })?;
    // SAFETY: MWAIT without hints or extensions at most waits for a store to the monitored line
    // or an event.
    via_ghcb(ExitCode::Mwait, || unsafe {
        asm!("mwait", in("eax") 0, in("ecx") 0, options(nostack, preserves_flags))
    })?;
    Ok(())
}

/// VMMCALL with the simulator's hypercall prefix goes to the hypervisor with RAX and RBX and
/// brings RAX back (`sev::guest::SimHypercalls`, the kernel's hypercall ABI): a function nobody
/// defines is answered as unknown (the simulator's answer, and KVM's `-KVM_ENOSYS`); the
/// simulator's NMI counters of this vCPU agree (every NMI injected was completed; a hypervisor
/// without them answers both as unknown).
fn vc_vmmcall(_: &BootInfo) -> Result<(), &'static str> {
    use handoff::sim_hypercall::{
        NMI_COMPLETES, NMI_COUNTER, NMIS_INJECTED, PREFIX, UNKNOWN_FUNCTION,
    };
    use sev::guest::vmmcall;
    let unknown = via_ghcb(ExitCode::Vmmcall, || vmmcall(PREFIX | 0xff_ffff, 0))?;
    ensure!(
        unknown == UNKNOWN_FUNCTION,
        "an undefined hypercall was not answered as unknown",
        "RAX {unknown:#x}"
    );
    let injected = via_ghcb(ExitCode::Vmmcall, || vmmcall(NMI_COUNTER, NMIS_INJECTED))?;
    let completed = via_ghcb(ExitCode::Vmmcall, || vmmcall(NMI_COUNTER, NMI_COMPLETES))?;
    ensure!(
        injected == completed,
        "the hypervisor's NMI counters disagree",
        "{injected} NMIs injected, {completed} completed"
    );
    Ok(())
}

/// The GHCB in use: the GHCB MSR holds a page of the kernel image that the kernel maps identity
/// and shared; through the MSR protocol, the SEV information negotiates the version the kernel
/// runs and names the kernel's C-bit, and the hypervisor's features suit this kind of guest
/// (`sev::hv_features::check`; protocol version 1 has no HV_FEATURES, which the kernel then
/// never asked for); the GHCB serves a request afterwards (each request put the GPA back in
/// the MSR).
fn ghcb_protocol(info: &BootInfo) -> Result<(), &'static str> {
    use sev::hv_features::{GuestKind, check};
    use sev::sev_status::SevStatus;
    let version = crate::sev::ghcb_version().ok_or("no GHCB protocol version negotiated")?;
    let (gpa, sev_info, features) = with_msr_protocol(|msr| {
        (
            msr.read(),
            msr_protocol::negotiate(msr),
            version
                .has_hv_features()
                .then(|| msr_protocol::hv_features(msr)),
        )
    });
    let in_image = (info.kernel_start..info.kernel_start + info.kernel_len).contains(&gpa);
    let shared = crate::memory::translate(gpa).is_some_and(|t| t.phys == gpa && !t.encrypted);
    ensure!(
        gpa % 4096 == 0 && in_image && shared,
        "the GHCB MSR does not hold a shared page of the kernel",
        "{gpa:#x}"
    );
    let sev_info = sev_info.map_err(|_| "SEV information through the MSR protocol failed")?;
    ensure!(
        sev_info.version == version && 1u64 << sev_info.cbit == info.c_bit,
        "SEV information negotiates another protocol version or names another C-bit",
        "{sev_info:?}, running {version:?}, C-bit mask {:#x}",
        info.c_bit
    );
    match features {
        Some(features) => {
            let features = features.map_err(|_| "HV_FEATURES through the MSR protocol failed")?;
            let kind = GuestKind::of(SevStatus::from_msr(info.sev_status));
            ensure!(
                check(kind, features).is_ok(),
                "the hypervisor's features do not suit this guest",
                "{features:?} for {kind:?}"
            );
        }
        None => ensure!(
            crate::sev::hv_features().is_none(),
            "HV_FEATURES known under GHCB protocol 1",
            "{:?}",
            crate::sev::hv_features()
        ),
    }
    via_ghcb(ExitCode::Rdtscp, rdtscp)?;
    Ok(())
}

/// INVD would discard dirty lines of encrypted memory: the #VC core refuses it and the guest
/// ends with reason `InvdRefused`. Returning is a failure.
fn vc_invd(_: &BootInfo) -> Result<(), &'static str> {
    // SAFETY: not safe by design: under SEV-ES the #VC core terminates the guest instead.
    unsafe { asm!("invd", options(nostack, preserves_flags)) };
    Err("INVD returned")
}

/// An OR into an IOAPIC register is MMIO the #VC core does not emulate (only moves): the guest
/// ends with reason `UnsupportedMmio`. Returning is a failure.
fn vc_unsupported_mmio(_: &BootInfo) -> Result<(), &'static str> {
    // SAFETY: not safe by design: under SEV-ES the #VC core terminates the guest instead (the
    // access, an OR of 0 into the IOAPIC index register, would change nothing anyway).
    unsafe { asm!("or dword ptr [{}], 0", in(reg) ioapic::INDEX, options(nostack)) };
    Err("an OR into MMIO returned")
}

/// RDMSR of an MSR the simulator does not know: it answers with the GHCB's exception reply
/// (#GP), which the #VC core hands back to the kernel, which has no use for it (no MSR probing
/// with fix-ups): the guest ends with reason `UnexpectedException` through the GHCB, not the
/// debug exit. Returning is a failure.
fn vc_msr_refused(_: &BootInfo) -> Result<(), &'static str> {
    /// An MSR no CPU has (in the range Intel reserves for nothing, unknown to the simulator).
    const NO_SUCH_MSR: u32 = 0x4000_1234;
    // SAFETY: not safe by design: the hypervisor refuses the read and the guest terminates.
    let _ = unsafe { x86::msr::rdmsr(NO_SUCH_MSR) };
    Err("RDMSR of an MSR the hypervisor refuses returned")
}

/// An interrupt on vector `V` that the kernel must not survive. Under SEV-ES the simulator, as a
/// hostile hypervisor, injects it (test hypercall `INJECT_INTERRUPT`: an external interrupt,
/// right after the hypercall's VMGEXIT, so inside the #VC handler while it holds the GHCB).
/// Without SEV-ES, where nobody injects, a software `int V` builds the same frame (no error
/// code). On #PF and #VC the frame lacks the error code those exceptions push, and the guest
/// ends with reason `MissingErrorCode`; on 0x80, which nothing of the kernel's raises, with
/// `UnexpectedInterrupt`; without SEV-ES each ends in the failure exit. Returning is a failure.
fn injected<const V: u8>(info: &BootInfo) -> Result<(), &'static str> {
    use handoff::sim_hypercall::INJECT_INTERRUPT;
    if info.sev_es() {
        let rax = sev::guest::vmmcall(INJECT_INTERRUPT, u64::from(V));
        ensure!(
            rax == 0,
            "the hypervisor did not inject the interrupt",
            "vector {V:#x}: RAX {rax:#x}"
        );
    } else {
        // SAFETY: not safe by design: the kernel ends the run instead of returning.
        unsafe { asm!("int {v}", v = const V, options(nomem, nostack)) };
    }
    Err("the kernel resumed after an interrupt it must not take")
}
