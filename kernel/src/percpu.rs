//! Per-CPU data: one [`PerCpu`] per CPU, reached through the GS base (IA32_GS_BASE), whose first
//! word points back at the structure so that [`current`] is a single `mov rax, gs:[0]`.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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
    /// Set by the CPU when it is up.
    pub online: AtomicBool,
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
        }
    }

    /// Makes `self` the running CPU's per-CPU data (GS base) and records what the CPU sees of
    /// itself: `apic_id` read from its own APIC, and whether [`current`] finds `self`.
    pub fn install(&'static self, apic_id: u32) {
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
        self.reported_apic_id.store(apic_id, Ordering::Relaxed);
        self.gs_ok
            .store(core::ptr::eq(current(), self), Ordering::Relaxed);
    }
}

/// CR4.FSGSBASE: WRGSBASE may be used.
const CR4_FSGSBASE: u64 = 1 << 16;

/// Sets CR4.FSGSBASE on this CPU when CPUID 7.0 EBX[0] says the CPU has it; returns whether it
/// is set. Under SEV-ES the GS base is written with WRGSBASE: an SEV-ES hypervisor keeps the
/// register in the encrypted VMSA, and the simulator does not serve a WRMSR of it (it would be
/// a #VC it refuses with #GP); CR4 writes do not exit.
fn enable_fsgsbase() -> bool {
    if x86::msr::cpuid(0, 0).eax < 7 || x86::msr::cpuid(7, 0).ebx & 1 == 0 {
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
