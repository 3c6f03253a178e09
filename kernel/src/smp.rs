//! The application processors (APs): starting them, handing them work, taking them offline
//! and bringing them back.
//!
//! Every AP gets a stack of its own and a [`PerCpu`] and is started through `x86::smp`'s
//! real-mode trampoline; it reports in from [`ap_main`] and then idles in HLT, interrupts on,
//! until the boot CPU posts it work ([`spawn`], [`call`], [`offline`]) and sends it a
//! [`WAKE_VECTOR`] IPI. Which APs exist, and how they start:
//!
//! - **Without SEV** (the EFI entry, ACPI): the MADT's enabled CPUs. INIT resets a CPU, then
//!   two start-up IPIs point it at the trampoline (`Trampoline::start_ap`). An offline AP
//!   waits in `cli; hlt` until the next INIT.
//! - **Under SEV-ES**: from IGVM (no ACPI) the launch's vCPUs 1 .. `vp_count`, whose APIC ID
//!   is their vCPU index; through the EFI entry the MADT's CPUs, which the firmware parked on
//!   its own AP jump table, whose reset vector the kernel points at the trampoline too
//!   (`point_firmware_jump_table`). No one can reset an SEV-ES vCPU (its registers are in the
//!   encrypted VMSA): the kernel installs the AP jump table (`crate::sev`) with the trampoline
//!   as its reset vector before starting any AP. The first INIT-SIPI starts a vCPU at its
//!   launch state, in the stage, which parks it on the jump table (AP Reset Hold); every later
//!   one wakes it from there, and it goes through the reset vector into the trampoline
//!   (`Trampoline::wake_ap`, which repeats the pair until the AP arrives). An offline AP parks
//!   on the jump table the same way; only the jump table page and the trampoline page, which
//!   the stage reserved, stay in use for it. AP Reset Hold is GHCB protocol version 2: from a
//!   version 1 hypervisor the jump table passes straight through to the reset vector
//!   (`sev::guest::ParkMode`), so the first INIT-SIPI brings a vCPU from its launch state into
//!   the kernel, and [`offline`] is refused ([`SmpError::NeedsGhcbV2`]): nothing could hold an
//!   AP that parked.
//!
//! An AP that comes back online runs [`ap_main`] again on the same stack and GDT (its old
//! frames are dead), and under SEV-ES on its registered GHCB.

use crate::acpi::{self, AcpiError};
use crate::apic;
use crate::percpu::{self, PerCpu};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;
use handoff::bootinfo::BootInfo;
use sev::guest::ApJumpTable;
use x86::apic::{ApicError, LocalApic, Mode};
use x86::smp::{ApParams, ApStartError, Trampoline};

/// Size of each application processor's stack.
const AP_STACK_SIZE: usize = 32 * 1024;

/// The fixed IPI vector that wakes an idle AP to look at its work (its handler only sends EOI).
pub const WAKE_VECTOR: u8 = 0xf0;

/// [`PerCpu::work`] value: go offline.
const WORK_OFFLINE: usize = 1;

/// How long [`offline`], [`call`] and the AP start-up wait for an AP to answer (ms): far more
/// than an AP needs, even on an emulator sharing its host cores with other runs.
const AP_TIMEOUT_MS: u64 = 5000;

/// How often `Trampoline::wake_ap` repeats INIT-SIPI under SEV-ES (ms): about how long a
/// launched or offlined AP takes to reach AP Reset Hold on TCG.
const WAKE_RETRY_MS: u64 = 5;

/// Why SMP start-up or an AP operation failed (an AP that does not arrive at boot is not an
/// error of [`start`]: it is named in the log and missing from the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    Acpi(AcpiError),
    /// The running CPU's APIC ID is not among the MADT's enabled CPUs.
    BootCpuNotInMadt(u32),
    /// Under SEV-ES the boot CPU must be vCPU 0, APIC ID 0 (APIC ID = vCPU index).
    BootCpuNotVcpu0(u32),
    OutOfMemory,
    /// The trampoline page, the clock, the page tables or an IPI (see `x86::smp`).
    Start(ApStartError),
    /// The AP jump table could not be set up (SEV-ES).
    JumpTable,
    /// No such CPU, or the boot CPU, which cannot go offline.
    NoSuchAp(usize),
    /// The AP is not online.
    NotOnline(usize),
    /// The AP is already online.
    AlreadyOnline(usize),
    /// The AP still has work it has not taken.
    Busy(usize),
    /// The AP did not answer in time.
    Timeout(usize),
    /// An earlier start-up timed out: an AP may still arrive on the trampoline's parameters, so
    /// no other AP is started.
    TrampolineInUse,
    /// Taking the AP offline needs AP Reset Hold, which the negotiated GHCB protocol (version
    /// 1) does not have.
    NeedsGhcbV2(usize),
    Ipi(ApicError),
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Acpi(e) => write!(f, "{e}"),
            Self::BootCpuNotInMadt(id) => write!(f, "boot CPU (APIC {id}) not in the MADT"),
            Self::BootCpuNotVcpu0(id) => {
                write!(
                    f,
                    "boot CPU has APIC ID {id}; under SEV-ES it must be vCPU 0"
                )
            }
            Self::OutOfMemory => write!(f, "no memory for AP stacks"),
            Self::Start(e) => write!(f, "{e}"),
            Self::JumpTable => write!(f, "no AP jump table"),
            Self::NoSuchAp(i) => write!(f, "cpu {i} is not an application processor"),
            Self::NotOnline(i) => write!(f, "cpu {i} is not online"),
            Self::AlreadyOnline(i) => write!(f, "cpu {i} is already online"),
            Self::Busy(i) => write!(f, "cpu {i} has not taken its last work yet"),
            Self::Timeout(i) => write!(f, "cpu {i} did not answer within {AP_TIMEOUT_MS} ms"),
            Self::TrampolineInUse => {
                write!(f, "an AP that timed out may still use the trampoline")
            }
            Self::NeedsGhcbV2(i) => write!(
                f,
                "cpu {i} cannot go offline: GHCB protocol 1 has no AP Reset Hold to park it in"
            ),
            Self::Ipi(e) => write!(f, "IPI failed: {e:?}"),
        }
    }
}

/// The outcome of [`start`].
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// CPUs that reported in, the boot CPU included.
    pub online: usize,
    /// CPUs expected: the MADT's enabled CPUs, or the launch's vCPUs under SEV-ES.
    pub expected: usize,
    /// Microseconds from kernel entry until the last AP reported (or gave up).
    pub since_kernel_entry_us: u64,
}

static REPORT: spin::Once<Report> = spin::Once::new();

/// The result of [`start`], if it ran to the end.
pub fn report() -> Option<Report> {
    REPORT.get().copied()
}

/// What starting an AP needs after boot too: the trampoline (one AP at a time, hence the
/// lock), the APIC, and under SEV-ES the C-bit.
struct Starter {
    trampoline: Trampoline,
    apic: LocalApic,
    /// The C-bit mask under SEV-ES (APs are woken through the AP jump table), else 0.
    encryption_mask: u64,
    tsc_hz: u64,
    /// Set when an AP did not arrive: the trampoline's parameters may still be read.
    poisoned: bool,
}

static STARTER: spin::Once<spin::Mutex<Starter>> = spin::Once::new();

/// Under SEV-ES, the AP jump table APs park on.
static JUMP_TABLE: spin::Once<ApJumpTable> = spin::Once::new();

/// Starts every AP (see the module docs) and waits for each ([`AP_TIMEOUT_MS`]). Logs `cpu N
/// (apic ID) online` per CPU (from the CPU itself) and `N of M CPUs online`.
pub fn start(info: &BootInfo) -> Result<Report, SmpError> {
    // From IGVM the launch names the vCPUs; through the EFI entry (also under SEV-ES) ACPI does.
    let tables = if info.sev_es() && info.vp_count > 0 {
        None
    } else {
        Some(acpi::tables(info).map_err(SmpError::Acpi)?)
    };
    if !offline_available() {
        log::warn!("GHCB protocol v1: CPU offline unavailable (AP Reset Hold needs v2)");
    }
    let apic = apic::init_bsp();
    let bsp_id = apic.id();
    match apic.mode() {
        Mode::X2Apic => log::debug!("local APIC: x2APIC"),
        Mode::XApic { base } => log::debug!("local APIC: xAPIC at {base:#x}"),
    }
    let ap_ids: Vec<u32> = match tables {
        Some(t) => {
            let madt_cpus = &t.madt.cpus;
            if !madt_cpus.iter().any(|c| c.apic_id == bsp_id) {
                return Err(SmpError::BootCpuNotInMadt(bsp_id));
            }
            let mut ids = Vec::new();
            ids.try_reserve_exact(madt_cpus.len())
                .map_err(|_| SmpError::OutOfMemory)?;
            ids.extend(
                madt_cpus
                    .iter()
                    .filter(|c| c.apic_id != bsp_id)
                    .map(|c| c.apic_id),
            );
            // Every CPU needs an NMI stack the console's `in_nmi` knows, and under SEV-ES one
            // of the kernel's GHCB channels.
            let max = if info.sev_es() {
                crate::sev::MAX_CPUS
            } else {
                x86::interrupts::MAX_NMI_STACKS
            };
            if ids.len() >= max {
                log::warn!(
                    "{} CPUs in the MADT, the kernel runs at most {max}; the rest stay parked",
                    ids.len() + 1
                );
                ids.truncate(max - 1);
            }
            ids
        }
        None => {
            if bsp_id != 0 {
                return Err(SmpError::BootCpuNotVcpu0(bsp_id));
            }
            let vcpus = (info.vp_count as usize).clamp(1, crate::sev::MAX_CPUS);
            log::info!("SEV-ES: {} vCPUs launched", info.vp_count);
            (1..vcpus as u32).collect()
        }
    };
    let mut cpus = Vec::new();
    cpus.try_reserve_exact(ap_ids.len() + 1)
        .map_err(|_| SmpError::OutOfMemory)?;
    cpus.push(PerCpu::new(0, bsp_id, (0, 0)));
    for &id in &ap_ids {
        cpus.push(PerCpu::new(cpus.len(), id, alloc_stack()?));
    }
    let cpus = percpu::init_table(cpus);
    cpus[0].install();
    cpus[0].report_apic_id(bsp_id);
    cpus[0].online.store(true, Ordering::Release);
    log::info!("cpu 0 (apic {bsp_id}) online");
    if cpus.len() > 1 {
        start_aps(info, apic, &cpus[1..])?;
    }
    let online = cpus
        .iter()
        .filter(|c| c.online.load(Ordering::Acquire))
        .count();
    let since = x86::tsc::rdtsc().saturating_sub(info.timestamps.kernel_entry);
    let report = Report {
        online,
        expected: cpus.len(),
        since_kernel_entry_us: (since * 1_000_000).checked_div(info.tsc_hz).unwrap_or(0),
    };
    log::info!(
        "{} of {} CPUs online, {} us after kernel entry",
        report.online,
        report.expected,
        report.since_kernel_entry_us
    );
    Ok(*REPORT.call_once(|| report))
}

fn alloc_stack() -> Result<(usize, usize), SmpError> {
    let layout = core::alloc::Layout::from_size_align(AP_STACK_SIZE, 16)
        .map_err(|_| SmpError::OutOfMemory)?;
    // SAFETY: the layout has a non-zero size. The stack is never freed: its CPU may run again
    // whenever it is brought online.
    let p = unsafe { alloc::alloc::alloc(layout) } as usize;
    if p == 0 {
        return Err(SmpError::OutOfMemory);
    }
    Ok((p, p + AP_STACK_SIZE))
}

/// Installs the trampoline (and under SEV-ES the AP jump table), then starts each AP and
/// waits up to [`AP_TIMEOUT_MS`] for it to report in. Without SEV, INIT goes to every AP first (10 ms, once);
/// an AP that does not arrive is named and sent INIT again, so that it cannot start late on
/// the next AP's parameters. Under SEV-ES no INIT can stop a late AP, so start-up stops at the
/// first that does not arrive.
fn start_aps(info: &BootInfo, apic: LocalApic, aps: &'static [PerCpu]) -> Result<(), SmpError> {
    // SAFETY: the stage reserved this page below 1 MiB for us (bootloader memory, identity
    // mapped); nothing else uses it, and no AP runs from it yet.
    let trampoline =
        unsafe { Trampoline::install(info.ap_trampoline, info.tsc_hz) }.map_err(SmpError::Start)?;
    let encryption_mask = if info.sev_es() { info.c_bit } else { 0 };
    if info.sev_es() {
        // Only a firmware (the EFI entry) parks APs on a table of its own; from IGVM the APs
        // start in the stage, and nothing the hypervisor says there is worth a write.
        if info.vp_count == 0 {
            point_firmware_jump_table(info, trampoline.reset_vector())?;
        }
        let table =
            crate::sev::install_ap_jump_table(info.ap_jump_table, trampoline.reset_vector())
                .map_err(|e| {
                    log::error!("{e}");
                    SmpError::JumpTable
                })?;
        log::debug!(
            "AP jump table at {:#x}, reset vector {:04x}:0000",
            table.gpa(),
            trampoline.reset_vector().0
        );
        JUMP_TABLE.call_once(|| table);
    }
    let starter = STARTER.call_once(|| {
        spin::Mutex::new(Starter {
            trampoline,
            apic,
            encryption_mask,
            tsc_hz: info.tsc_hz,
            poisoned: false,
        })
    });
    let mut starter = starter.lock();
    // Every AP runs on this CPU's CR3 and EFER: refuse them before any CPU is reset.
    starter.params(&aps[0]).check().map_err(SmpError::Start)?;
    if !info.sev_es() {
        let Starter {
            trampoline, apic, ..
        } = &*starter;
        trampoline
            .send_init(apic, aps.iter().map(|ap| ap.apic_id))
            .map_err(SmpError::Start)?;
    }
    for ap in aps {
        match starter.start(ap, !info.sev_es()) {
            Ok(()) => {}
            Err(SmpError::Timeout(_)) if !starter.poisoned => log_late(ap),
            Err(SmpError::Timeout(_)) => {
                log_late(ap);
                log::error!("no further AP is started: {}", SmpError::TrampolineInUse);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Under an SEV-ES firmware that parked its APs on a jump table of its own (OVMF, through the
/// EFI entry), points that table's reset vector at the trampoline too, as Linux does: the
/// firmware's parking code wakes into it. The page comes from the hypervisor (AP_JUMP_TABLE
/// GET), so it is written only if the memory map says the firmware owns it. None registered
/// (the IGVM path) is fine; one that fails the check stops SMP start-up.
fn point_firmware_jump_table(info: &BootInfo, (cs, ip): (u16, u16)) -> Result<(), SmpError> {
    let firmware = crate::sev::firmware_ap_jump_table().map_err(|e| {
        log::error!("{e}");
        SmpError::JumpTable
    })?;
    if firmware == 0 || firmware == info.ap_jump_table {
        return Ok(());
    }
    if !info.is_firmware_page(firmware) {
        log::error!(
            "the hypervisor names {firmware:#x} as the firmware's AP jump table: not a firmware page"
        );
        return Err(SmpError::JumpTable);
    }
    ApJumpTable::at(firmware).set_reset_vector(cs, ip);
    log::info!("firmware AP jump table at {firmware:#x}: reset vector {cs:04x}:{ip:04x}");
    Ok(())
}

impl Starter {
    /// The trampoline parameters of `ap`: this CPU's page tables, its stack, [`ap_main`].
    fn params(&self, ap: &PerCpu) -> ApParams {
        ApParams::new(ap.stack.1 as u64, ap_main, ap.index as u64)
            .with_encryption_mask(self.encryption_mask)
    }

    /// Starts `ap` (without SEV: `initialized` when it was sent INIT already) and waits until
    /// it is online.
    fn start(&mut self, ap: &'static PerCpu, initialized: bool) -> Result<(), SmpError> {
        if self.poisoned {
            return Err(SmpError::TrampolineInUse);
        }
        let t0 = x86::tsc::rdtsc();
        let params = self.params(ap);
        let started = if self.encryption_mask != 0 {
            // SAFETY: the kernel's identity map (this CPU's CR3) maps the kernel image, the
            // heap and the trampoline page; the stack is this AP's alone, unused while it is
            // offline (it parks before it goes).
            unsafe {
                self.trampoline.wake_ap(
                    &self.apic,
                    ap.apic_id,
                    &params,
                    WAKE_RETRY_MS,
                    AP_TIMEOUT_MS,
                )
            }
        } else {
            if !initialized {
                self.trampoline
                    .send_init(&self.apic, [ap.apic_id])
                    .map_err(SmpError::Start)?;
            }
            // SAFETY: as above; INIT reset the AP, so nothing of it runs on the stack.
            unsafe { self.trampoline.start_ap(&self.apic, ap.apic_id, &params) }
        };
        match started {
            Ok(()) => {}
            Err(ApStartError::Timeout) => {
                // Without SEV `start_ap` sent INIT again; under SEV-ES nothing can stop the AP.
                self.poisoned = self.encryption_mask != 0;
                return Err(SmpError::Timeout(ap.index));
            }
            Err(e) => return Err(SmpError::Start(e)),
        }
        let hz = self.tsc_hz;
        let left = (hz / 1000 * AP_TIMEOUT_MS).saturating_sub(x86::tsc::rdtsc() - t0);
        if !x86::tsc::spin_until(left, || ap.online.load(Ordering::Acquire)) {
            if self.encryption_mask == 0 {
                self.apic
                    .send_ipi(ap.apic_id, x86::apic::ICR_INIT, hz / 1000 * 10)
                    .map_err(SmpError::Ipi)?;
            }
            return Err(SmpError::Timeout(ap.index));
        }
        Ok(())
    }
}

fn log_late(ap: &PerCpu) {
    log::error!(
        "cpu {} (apic {}) did not come online within {AP_TIMEOUT_MS} ms",
        ap.index,
        ap.apic_id
    );
}

/// The AP with per-CPU index `index` (not the boot CPU).
fn ap(index: usize) -> Result<&'static PerCpu, SmpError> {
    percpu::table()
        .get(index)
        .filter(|_| index != 0)
        .ok_or(SmpError::NoSuchAp(index))
}

/// Posts `work` to `cpu` and wakes it; returns the number of works it will have finished once
/// it has finished this one.
fn post(cpu: &'static PerCpu, work: usize) -> Result<u64, SmpError> {
    if !cpu.online.load(Ordering::Acquire) {
        return Err(SmpError::NotOnline(cpu.index));
    }
    cpu.work
        .compare_exchange(0, work, Ordering::AcqRel, Ordering::Acquire)
        .map_err(|_| SmpError::Busy(cpu.index))?;
    let target = cpu.work_posted.fetch_add(1, Ordering::AcqRel) + 1;
    apic::send_ipi(
        cpu.apic_id,
        x86::apic::ICR_FIXED | u32::from(WAKE_VECTOR),
        ms_to_ticks(10),
    )
    .map_err(SmpError::Ipi)?;
    Ok(target)
}

/// `ms` milliseconds in TSC ticks (the rate [`start`] was given; 3 GHz before that, for
/// timeouts only).
fn ms_to_ticks(ms: u64) -> u64 {
    let hz = STARTER.get().map_or(3_000_000_000, |s| s.lock().tsc_hz);
    hz / 1000 * ms
}

/// Work running on an AP ([`spawn`]).
#[must_use = "wait for the work to finish"]
pub struct Pending {
    cpu: &'static PerCpu,
    target: u64,
}

impl Pending {
    /// Waits up to `timeout_ms` for the work to finish.
    pub fn wait(self, timeout_ms: u64) -> Result<(), SmpError> {
        let done = || self.cpu.work_done.load(Ordering::Acquire) >= self.target;
        if x86::tsc::spin_until(ms_to_ticks(timeout_ms), done) {
            Ok(())
        } else {
            Err(SmpError::Timeout(self.cpu.index))
        }
    }
}

/// Runs `f` on the AP `index` (with interrupts off, on its own stack), without waiting.
pub fn spawn(index: usize, f: fn()) -> Result<Pending, SmpError> {
    let cpu = ap(index)?;
    let target = post(cpu, f as usize)?;
    Ok(Pending { cpu, target })
}

/// Runs `f` on the AP `index` and waits (up to [`AP_TIMEOUT_MS`]) until it returned.
pub fn call(index: usize, f: fn()) -> Result<(), SmpError> {
    spawn(index, f)?.wait(AP_TIMEOUT_MS)
}

/// Whether APs can go offline: always without SEV (INIT resets them), under SEV-ES only with
/// AP Reset Hold, GHCB protocol version 2 (see the module docs).
fn offline_available() -> bool {
    crate::sev::ghcb_version().is_none_or(|v| v.has_msr_ap_reset_hold())
}

/// Takes the AP `index` offline: it stops (see the module docs) once it has finished its
/// work; returns when it said so. Refused under GHCB protocol version 1
/// ([`SmpError::NeedsGhcbV2`]), before the AP hears of it.
pub fn offline(index: usize) -> Result<(), SmpError> {
    let cpu = ap(index)?;
    if !offline_available() {
        return Err(SmpError::NeedsGhcbV2(index));
    }
    post(cpu, WORK_OFFLINE)?;
    if x86::tsc::spin_until(ms_to_ticks(AP_TIMEOUT_MS), || {
        !cpu.online.load(Ordering::Acquire)
    }) {
        Ok(())
    } else {
        Err(SmpError::Timeout(index))
    }
}

/// Brings the offline AP `index` back and waits until it is online.
pub fn online(index: usize) -> Result<(), SmpError> {
    let cpu = ap(index)?;
    if cpu.online.load(Ordering::Acquire) {
        return Err(SmpError::AlreadyOnline(index));
    }
    let starter = STARTER.get().ok_or(SmpError::NoSuchAp(index))?;
    starter.lock().start(cpu, false)
}

/// Where each AP arrives from the trampoline, on its own stack, interrupts off. It still runs
/// on the trampoline page's GDT and with the reset IDTR (no IDT), so it loads its own GDT/TSS
/// and the shared IDT first, before anything can fault; then its per-CPU data, before anything
/// can raise #VC (under SEV-ES that finds its GHCB), then its GHCB.
extern "C" fn ap_main(index: u64) -> ! {
    let Some(cpu) = percpu::table().get(index as usize) else {
        x86::qemu::halt_forever()
    };
    let again = cpu.gdt.is_completed();
    let gdt = *cpu.gdt.call_once(x86::gdt::leaked_for_new_cpu);
    crate::interrupts::init_ap(gdt, again);
    cpu.install();
    if crate::sev::active() {
        crate::sev::init_ap(cpu.index);
    }
    apic::init_ap();
    cpu.report_apic_id(apic::id());
    let starts = cpu.starts.fetch_add(1, Ordering::AcqRel) + 1;
    if starts == 1 {
        log::info!("cpu {} (apic {}) online", cpu.index, cpu.apic_id);
    } else {
        log::debug!("cpu {} online again (start {starts})", cpu.index);
    }
    cpu.online.store(true, Ordering::Release);
    idle(cpu)
}

/// An online AP's loop: takes the work the boot CPU posted, or waits in HLT with interrupts on
/// for the [`WAKE_VECTOR`] IPI that comes with the next (`sti; hlt` takes an interrupt that was
/// already pending, so a wake-up sent between the check and the HLT is not lost).
fn idle(cpu: &'static PerCpu) -> ! {
    loop {
        match cpu.work.swap(0, Ordering::AcqRel) {
            0 => {
                // SAFETY: waits for an interrupt with interrupts enabled only for the HLT; the
                // IDT handles WAKE_VECTOR.
                unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
            }
            WORK_OFFLINE => park(cpu),
            f => {
                // SAFETY: `post` stores only WORK_OFFLINE or a `fn()` (from `spawn`).
                let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
                f();
                cpu.work_done.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Stops this AP: says it is offline, then parks (see the module docs). Never returns; the AP
/// comes back through [`online`] and the trampoline.
fn park(cpu: &'static PerCpu) -> ! {
    log::debug!("cpu {} offline", cpu.index);
    cpu.work_done.fetch_add(1, Ordering::AcqRel);
    cpu.online.store(false, Ordering::Release);
    match JUMP_TABLE.get() {
        // SAFETY: installed before any AP started; the kernel's tables identity-map it
        // (bootloader memory, private); this AP runs 64-bit code at CPL 0 in an SEV-ES guest
        // and abandons its stack and state; NMIs go to online CPUs only.
        Some(table) => unsafe { table.park() },
        None => loop {
            // SAFETY: stops the CPU until the INIT of `online`.
            unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
        },
    }
}
