//! Per-CPU data: one [`PerCpu`] per CPU, reached through the GS base (IA32_GS_BASE), whose first
//! word points back at the structure so that [`current`] is a single `mov rax, gs:[0]`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// One CPU's data. Fields set by the boot CPU before the CPU starts are plain; what the CPU
/// itself reports is atomic.
#[repr(C)]
pub struct PerCpu {
    /// Points at this structure: `gs:[0]`.
    self_ptr: *const PerCpu,
    /// Index in the MADT's list of enabled CPUs, boot CPU first.
    pub index: usize,
    /// APIC ID from the MADT.
    pub apic_id: u32,
    /// The stack the boot CPU allocated for this CPU: (lowest address, one past the highest);
    /// (0, 0) for the boot CPU itself, which stays on the kernel's boot stack.
    pub stack: (usize, usize),
    /// The APIC ID the CPU read from its own APIC once running.
    pub reported_apic_id: AtomicU32,
    /// Set by the CPU when it found itself through [`current`] (its GS base is right).
    pub gs_ok: AtomicBool,
    /// Set by the CPU when it is up, cleared when it goes offline.
    pub online: AtomicBool,
    /// The CPU's GDT (with its TSS and IST stacks), made on its first start and loaded again
    /// on every later one (`crate::smp`).
    pub gdt: spin::Once<&'static x86::gdt::Gdt>,
    /// Times the CPU came online.
    pub starts: AtomicU32,
    /// Work the boot CPU hands the CPU (`crate::smp`): 0 none, else a request the CPU takes.
    pub work: AtomicUsize,
    /// Work requests the boot CPU has posted to the CPU.
    pub work_posted: AtomicU64,
    /// Work requests the CPU has finished.
    pub work_done: AtomicU64,
}

// SAFETY: `self_ptr` is only ever read to find the structure itself; the rest is plain data set
// before the CPU starts or atomics.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    pub fn new(index: usize, apic_id: u32, stack: (usize, usize)) -> Self {
        Self {
            self_ptr: core::ptr::null(),
            index,
            apic_id,
            stack,
            reported_apic_id: AtomicU32::new(u32::MAX),
            gs_ok: AtomicBool::new(false),
            online: AtomicBool::new(false),
            gdt: spin::Once::new(),
            starts: AtomicU32::new(0),
            work: AtomicUsize::new(0),
            work_posted: AtomicU64::new(0),
            work_done: AtomicU64::new(0),
        }
    }

    /// Makes `self` the running CPU's per-CPU data (GS base) and records whether [`current`]
    /// finds `self`. Under SEV-ES nothing here exits (no #VC: an AP calls this before it has a
    /// GHCB), once the boot CPU has called it.
    pub fn install(&'static self) {
        let base = self as *const Self as u64;
        if crate::sev::active() && enable_fsgsbase() {
            // SAFETY: CR4.FSGSBASE is set (just above); as for the MSR write below.
            unsafe {
                core::arch::asm!("wrgsbase {}", in(reg) base, options(nostack, preserves_flags))
            };
        } else {
            // SAFETY: GS is not otherwise used (its selector is 0 or flat); the structure is in
            // the leaked table and lives for the rest of the run.
            unsafe { x86::msr::wrmsr(x86::msr::IA32_GS_BASE, base) };
        }
        self.gs_ok
            .store(core::ptr::eq(current(), self), Ordering::Relaxed);
    }

    /// Records the APIC ID the CPU read from its own APIC.
    pub fn report_apic_id(&self, apic_id: u32) {
        self.reported_apic_id.store(apic_id, Ordering::Relaxed);
    }
}

/// CR4.FSGSBASE: WRGSBASE may be used.
const CR4_FSGSBASE: u64 = 1 << 16;

/// Whether the CPUs have FSGSBASE (CPUID 7.0 EBX[0]), asked once, on the boot CPU (under
/// SEV-ES CPUID is a #VC, which an AP cannot take before its per-CPU data is installed).
static FSGSBASE: spin::Once<bool> = spin::Once::new();

/// Sets CR4.FSGSBASE on this CPU when the CPUs have it; returns whether it is set. Under SEV-ES
/// the GS base is written with WRGSBASE: an SEV-ES hypervisor keeps the register in the
/// encrypted VMSA, and the simulator does not serve a WRMSR of it (it would be a #VC it refuses
/// with #GP); CR4 writes do not exit.
fn enable_fsgsbase() -> bool {
    let has = *FSGSBASE
        .call_once(|| x86::msr::cpuid(0, 0).eax >= 7 && x86::msr::cpuid(7, 0).ebx & 1 != 0);
    if !has {
        return false;
    }
    let cr4 = x86::cr::read_cr4() | CR4_FSGSBASE;
    // SAFETY: the CPU supports FSGSBASE (checked above); the bit only allows the
    // RD/WR{FS,GS}BASE instructions.
    unsafe { core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) };
    true
}

static TABLE: spin::Once<&'static [PerCpu]> = spin::Once::new();

/// Makes `cpus` the table of all CPUs for the rest of the run (set once, by the boot CPU, before
/// any application processor starts) and returns it.
pub fn init_table(cpus: alloc::vec::Vec<PerCpu>) -> &'static [PerCpu] {
    TABLE.call_once(|| {
        let cpus = alloc::boxed::Box::leak(cpus.into_boxed_slice());
        for c in cpus.iter_mut() {
            c.self_ptr = c;
        }
        cpus
    })
}

/// All CPUs, boot CPU first; empty before [`init_table`].
pub fn table() -> &'static [PerCpu] {
    TABLE.get().copied().unwrap_or(&[])
}

/// Under SEV-ES, the running CPU's per-CPU data if it installed it ([`PerCpu::install`] sets
/// CR4.FSGSBASE and the GS base together there), `None` before: what the #VC handler asks.
pub fn try_current() -> Option<&'static PerCpu> {
    if x86::cr::read_cr4() & CR4_FSGSBASE == 0 {
        return None;
    }
    let base: u64;
    // SAFETY: CR4.FSGSBASE is set (checked above), so RDGSBASE works.
    unsafe {
        core::arch::asm!("rdgsbase {}", out(reg) base, options(nomem, nostack, preserves_flags))
    };
    // SAFETY: with CR4.FSGSBASE set, the GS base was written by `install` (the trampoline and
    // the stage leave CR4.FSGSBASE clear) and points at a 'static PerCpu.
    (base != 0).then(|| unsafe { &*(base as *const PerCpu) })
}

/// The running CPU's per-CPU data. Only valid after [`PerCpu::install`] ran on this CPU.
pub fn current() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: after `install`, gs:[0] holds the address of this CPU's leaked PerCpu.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: see above: the pointer is to a 'static PerCpu.
    unsafe { &*p }
}
