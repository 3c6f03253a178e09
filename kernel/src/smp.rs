//! Starting the application processors (APs): every enabled CPU of the MADT gets a stack of its
//! own and a [`PerCpu`], and is started through `x86::smp` (INIT, then two start-up IPIs
//! pointing at the real-mode trampoline); it reports in from [`ap_main`] and then idles. The
//! boot CPU waits for each AP with a timeout and names those that did not arrive.

use crate::acpi::{self, AcpiError};
use crate::apic;
use crate::percpu::{self, PerCpu};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;
use handoff::bootinfo::BootInfo;
use x86::apic::{ICR_INIT, LocalApic, Mode};
use x86::smp::{ApParams, ApStartError, Trampoline};

/// Size of each application processor's stack.
const AP_STACK_SIZE: usize = 32 * 1024;

/// Why SMP start-up could not even begin (an AP that does not arrive is not an error here: it
/// is named in the log and missing from the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    Acpi(AcpiError),
    /// The running CPU's APIC ID is not among the MADT's enabled CPUs.
    BootCpuNotInMadt(u32),
    OutOfMemory,
    /// The trampoline page, the clock, the page tables or an IPI (see `x86::smp`).
    Start(ApStartError),
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Acpi(e) => write!(f, "{e}"),
            Self::BootCpuNotInMadt(id) => write!(f, "boot CPU (APIC {id}) not in the MADT"),
            Self::OutOfMemory => write!(f, "no memory for AP stacks"),
            Self::Start(e) => write!(f, "{e}"),
        }
    }
}

/// The outcome of [`start`].
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// CPUs that reported in, the boot CPU included.
    pub online: usize,
    /// Enabled CPUs in the MADT.
    pub expected: usize,
    /// Microseconds from kernel entry until the last AP reported (or gave up).
    pub since_kernel_entry_us: u64,
}

static REPORT: spin::Once<Report> = spin::Once::new();

/// The result of [`start`], if it ran to the end.
pub fn report() -> Option<Report> {
    REPORT.get().copied()
}

/// Starts every AP of the MADT and waits for each (1 s of TSC time). Logs `cpu N (apic ID)
/// online` per CPU (from the CPU itself) and `N of M CPUs online`.
///
/// Under SEV-ES (launched from IGVM) there are no ACPI tables and APs are not started yet: the
/// boot CPU is the only one, and the launcher's other vCPUs stay where the platform holds them
/// until their first INIT-SIPI (AP start-up under SEV-ES, with a GHCB per CPU, is the next step
/// of issue 5).
pub fn start(info: &BootInfo) -> Result<Report, SmpError> {
    let tables = if info.sev_es() {
        None
    } else {
        Some(acpi::tables(info).map_err(SmpError::Acpi)?)
    };
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
            ids
        }
        None => {
            log::info!(
                "SEV-ES: {} vCPUs launched, {} APs not started (AP start-up under SEV-ES comes next)",
                info.vp_count,
                info.vp_count.saturating_sub(1)
            );
            Vec::new()
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
    cpus[0].install(bsp_id);
    cpus[0].online.store(true, Ordering::Release);
    log::info!("cpu 0 (apic {bsp_id}) online");
    if cpus.len() > 1 {
        start_aps(info, &apic, &cpus[1..])?;
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
    // SAFETY: the layout has a non-zero size. The stack is never freed: its CPU runs forever.
    let p = unsafe { alloc::alloc::alloc(layout) } as usize;
    if p == 0 {
        return Err(SmpError::OutOfMemory);
    }
    Ok((p, p + AP_STACK_SIZE))
}

/// INIT to every AP, 10 ms, then per AP: parameters, SIPI, 200 us, SIPI, and a wait of up to
/// 1 s for it to report in. An AP that does not arrive is named and sent INIT again, so that it
/// cannot start late on the next AP's parameters (`x86::smp` does so for one that does not
/// reach [`ap_main`]; the kernel for one that stops on the way to `online`).
fn start_aps(info: &BootInfo, apic: &LocalApic, aps: &'static [PerCpu]) -> Result<(), SmpError> {
    let hz = info.tsc_hz;
    let params = |ap: &PerCpu| ApParams::new(ap.stack.1 as u64, ap_main, ap.index as u64);
    // SAFETY: the stage reserved this page below 1 MiB for us (BOOTLOADER memory, identity
    // mapped); nothing else uses it, and no AP runs from it yet.
    let mut trampoline =
        unsafe { Trampoline::install(info.ap_trampoline, hz) }.map_err(SmpError::Start)?;
    // Every AP runs on this CPU's CR3 and EFER: refuse them before any CPU is reset.
    params(&aps[0]).check().map_err(SmpError::Start)?;
    trampoline
        .send_init(apic, aps.iter().map(|ap| ap.apic_id))
        .map_err(SmpError::Start)?;
    for ap in aps {
        let t0 = x86::tsc::rdtsc();
        // SAFETY: the kernel's identity map (this CPU's CR3) maps the kernel image and the
        // heap; the stack was allocated for this AP alone and is never freed.
        match unsafe { trampoline.start_ap(apic, ap.apic_id, &params(ap)) } {
            Ok(()) => {}
            Err(ApStartError::Timeout) => {
                log_late(ap);
                continue;
            }
            Err(e) => return Err(SmpError::Start(e)),
        }
        while !ap.online.load(Ordering::Acquire) {
            if x86::tsc::rdtsc() - t0 > hz {
                log_late(ap);
                apic.send_ipi(ap.apic_id, ICR_INIT, hz / 1000 * 10)
                    .map_err(|e| SmpError::Start(ApStartError::Ipi(e)))?;
                break;
            }
            core::hint::spin_loop();
        }
    }
    Ok(())
}

fn log_late(ap: &PerCpu) {
    log::error!(
        "cpu {} (apic {}) did not come online within 1 s",
        ap.index,
        ap.apic_id
    );
}

/// Where each AP arrives from the trampoline, on its own stack, interrupts off. It still runs
/// on the trampoline page's GDT and with the reset IDTR (no IDT), so it loads its own GDT/TSS
/// and the shared IDT first, before anything can fault.
extern "C" fn ap_main(index: u64) -> ! {
    let Some(cpu) = percpu::table().get(index as usize) else {
        x86::qemu::halt_forever()
    };
    crate::interrupts::init_ap();
    apic::init_ap();
    cpu.install(apic::id());
    log::info!("cpu {} (apic {}) online", cpu.index, cpu.apic_id);
    cpu.online.store(true, Ordering::Release);
    x86::qemu::halt_forever()
}
