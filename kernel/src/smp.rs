//! Starting the application processors (APs): every enabled CPU of the MADT gets INIT, then
//! two start-up IPIs pointing at the real-mode [`trampoline`], a stack of its own and a
//! [`PerCpu`]; it reports in from [`ap_main`] and then idles. The boot CPU waits for each AP
//! with a timeout and names those that did not arrive.

mod trampoline;

use crate::acpi::{self, AcpiError};
use crate::apic::{self, ApicError};
use crate::percpu::{self, PerCpu};
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;
use handoff::bootinfo::BootInfo;

/// Size of each application processor's stack.
const AP_STACK_SIZE: usize = 32 * 1024;
/// EFER bits: long mode enable, no-execute enable.
const EFER_LME: u64 = 1 << 8;
const EFER_NXE: u64 = 1 << 11;

/// Why SMP start-up could not even begin (an AP that does not arrive is not an error here: it
/// is named in the log and missing from the count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    Acpi(AcpiError),
    /// The running CPU's APIC ID is not among the MADT's enabled CPUs.
    BootCpuNotInMadt(u32),
    /// The stage reserved no page below 1 MiB for the trampoline, or an unusable one.
    BadTrampolinePage(u64),
    /// The trampoline loads CR3 in 32-bit mode.
    Cr3Above4GiB(u64),
    /// The INIT/SIPI delays are measured with the TSC.
    NoTscFrequency,
    OutOfMemory,
    Ipi(ApicError),
}

impl fmt::Display for SmpError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Acpi(e) => write!(f, "{e}"),
            Self::BootCpuNotInMadt(id) => write!(f, "boot CPU (APIC {id}) not in the MADT"),
            Self::BadTrampolinePage(a) => write!(
                f,
                "no usable AP trampoline page (got {a:#x}; need a 4 KiB page below 1 MiB)"
            ),
            Self::Cr3Above4GiB(cr3) => write!(
                f,
                "CR3 {cr3:#x} is above 4 GiB; the AP trampoline loads it in 32-bit mode"
            ),
            Self::NoTscFrequency => write!(f, "TSC frequency unknown: cannot time INIT/SIPI"),
            Self::OutOfMemory => write!(f, "no memory for AP stacks"),
            Self::Ipi(e) => write!(f, "IPI failed: {e:?}"),
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
pub fn start(info: &BootInfo) -> Result<Report, SmpError> {
    let tables = acpi::tables(info).map_err(SmpError::Acpi)?;
    let mode = apic::init_bsp();
    let bsp_id = apic::id();
    match mode {
        apic::Mode::X2Apic => log::debug!("local APIC: x2APIC"),
        apic::Mode::XApic { base } => log::debug!("local APIC: xAPIC at {base:#x}"),
    }
    let madt_cpus = &tables.madt.cpus;
    if !madt_cpus.iter().any(|c| c.apic_id == bsp_id) {
        return Err(SmpError::BootCpuNotInMadt(bsp_id));
    }
    let mut cpus = Vec::new();
    cpus.try_reserve_exact(madt_cpus.len())
        .map_err(|_| SmpError::OutOfMemory)?;
    cpus.push(PerCpu::new(0, bsp_id, (0, 0)));
    for c in madt_cpus.iter().filter(|c| c.apic_id != bsp_id) {
        cpus.push(PerCpu::new(cpus.len(), c.apic_id, alloc_stack()?));
    }
    let cpus = percpu::init_table(cpus);
    cpus[0].install(bsp_id);
    cpus[0].online.store(true, Ordering::Release);
    log::info!("cpu 0 (apic {bsp_id}) online");
    if cpus.len() > 1 {
        start_aps(info, &cpus[1..])?;
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
/// cannot start late on the next AP's parameters.
fn start_aps(info: &BootInfo, aps: &'static [PerCpu]) -> Result<(), SmpError> {
    let hz = info.tsc_hz;
    if hz == 0 {
        return Err(SmpError::NoTscFrequency);
    }
    let page = info.ap_trampoline;
    let code = trampoline::code();
    if page == 0 || !page.is_multiple_of(4096) || page + 4096 > 1 << 20 || code.len() > 4096 {
        return Err(SmpError::BadTrampolinePage(page));
    }
    // SAFETY: reading CR3 has no side effects.
    let cr3 = unsafe { x86::cr::read_cr3() };
    if cr3 >> 32 != 0 {
        return Err(SmpError::Cr3Above4GiB(cr3));
    }
    // SAFETY: EFER exists on every x86-64 CPU.
    let efer = EFER_LME | (unsafe { x86::msr::rdmsr(x86::msr::IA32_EFER) } & EFER_NXE);
    let base = page as *mut u8;
    // SAFETY: the stage reserved this page below 1 MiB for us (BOOTLOADER memory, identity
    // mapped); nothing else uses it, and no AP runs from it yet.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), base, code.len()) };
    let params = base
        .wrapping_add(trampoline::PARAMS_OFFSET)
        .cast::<trampoline::Params>();

    let ms = hz / 1000;
    for ap in aps {
        apic::send_ipi(ap.apic_id, apic::ICR_INIT, 10 * ms).map_err(SmpError::Ipi)?;
    }
    delay(10 * ms);
    for ap in aps {
        let p = trampoline::Params {
            cr3,
            efer,
            stack_top: ap.stack.1 as u64,
            entry: ap_main as *const () as u64,
            cpu_index: ap.index as u64,
        };
        // SAFETY: the parameter block is inside the copied page; the previous AP is past the
        // trampoline (it reported in, or was sent INIT again), so no CPU reads it now.
        unsafe { params.write_volatile(p) };
        let sipi = apic::ICR_STARTUP | (page >> 12) as u32;
        apic::send_ipi(ap.apic_id, sipi, 10 * ms).map_err(SmpError::Ipi)?;
        delay(ms / 5);
        apic::send_ipi(ap.apic_id, sipi, 10 * ms).map_err(SmpError::Ipi)?;
        let t0 = x86::tsc::rdtsc();
        while !ap.online.load(Ordering::Acquire) {
            if x86::tsc::rdtsc() - t0 > hz {
                log::error!(
                    "cpu {} (apic {}) did not come online within 1 s",
                    ap.index,
                    ap.apic_id
                );
                apic::send_ipi(ap.apic_id, apic::ICR_INIT, 10 * ms).map_err(SmpError::Ipi)?;
                break;
            }
            core::hint::spin_loop();
        }
    }
    Ok(())
}

fn delay(ticks: u64) {
    let t0 = x86::tsc::rdtsc();
    while x86::tsc::rdtsc() - t0 < ticks {
        core::hint::spin_loop();
    }
}

/// Where each AP arrives from the trampoline, on its own stack, interrupts off. It still runs
/// on the trampoline page's GDT and with the reset IDTR (no IDT): the per-CPU GDT/TSS and the
/// shared IDT are to be loaded here once they exist, before anything can fault.
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
