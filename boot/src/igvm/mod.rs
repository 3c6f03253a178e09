//! The stage's IGVM entry: a 64-bit start without UEFI, under SEV-ES, on the launch contract of
//! `handoff::launch` (launch page tables, parameter area in RDI, vCPU index in RSI).
//!
//! Start-up of the boot vCPU, in the order SEV-ES forces (the simulator's test guest does the
//! same, through the same `sev::guest` pieces):
//! 1. [`_start_igvm`]: own stack, then [`main`] with the parameter area's GPA.
//! 2. The stage's GDT/TSS/IDT (`crate::interrupts`), before anything can raise #VC.
//! 3. The heap and the #VC core's decoder tables ([`HEAP`]).
//! 4. [`GhcbChannel::establish`] on [`GHCB`]: CPUID 0x8000001F through the early #VC path
//!    (MSR protocol), protocol negotiation (version 2, or 1 from a version 1 hypervisor), the
//!    GHCB's GPA in the GHCB MSR, HV_FEATURES (none in version 1); from then on #VCs go through
//!    the GHCB page, and COM1 works.
//! 5. The `BootInfo` from the parameter area ([`launch`]) and the SEV state (SEV_STATUS, the
//!    C-bit, the vCPU count: the kernel has no ACPI tables on this path), then the path the EFI entry takes
//!    too: unpack, check, load and start the kernel (`crate::start_kernel`).
//!
//! The stage keeps the launch page tables: they identity-map 0 .. 3 GiB private, which covers
//! everything it touches (its #PF-driven identity map is for the EFI path). Every failure ends
//! in a termination request with a reason of its own (`sev::termination::GuestReason`), after a
//! `stage: error:` line once COM1 works.
//!
//! Application processors run only once the kernel starts them (INIT and a start-up IPI, which
//! under SEV-ES start a vCPU at its launch state, here): each parks on the AP jump table the
//! kernel installed at [`AP_JUMP_TABLE_GPA`] (`sev::guest::ApJumpTable`: AP Reset Hold, no
//! #VC), and the kernel's next start-up IPI sends it through the table's reset vector into the
//! kernel. Under GHCB protocol version 1 (no AP Reset Hold) the kernel installs the table to
//! pass straight through to the reset vector: the first start-up IPI brings the AP into the
//! kernel. The stage reserves that page and the trampoline page (both in the bootloader memory
//! below its image) and names them in the `BootInfo`.

mod launch;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use handoff::bootinfo::BootInfo;
use handoff::launch::{
    AP_JUMP_TABLE_GPA, AP_TRAMPOLINE_GPA, MAX_VCPUS, PAGE_TABLE_PAGES, PAGE_TABLES_GPA, PARAM_GPA,
    ParamArea, SHARED_ALIAS,
};
use handoff::payload::Header;
use sev::guest::{ApJumpTable, DecoderHeap, GhcbChannel, GhcbPage, LaunchTables};
use sev::hv_features::Offered;
use sev::termination::GuestReason;
use sev::vc::{NoHypercalls, VcConfig};
use x86::idt::vector;
use x86::interrupts::InterruptFrame;
use x86::paging::ADDR_MASK;
use x86::serial_println;
use x86::tsc::rdtsc;

/// The stage's stack on this path (the EFI path runs on the firmware's).
const STACK_SIZE: usize = 64 * 1024;
/// Stack of an AP on its way to the AP jump table.
const AP_STACK_SIZE: usize = 4096;

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

static mut STACK: Stack<STACK_SIZE> = Stack([0; STACK_SIZE]);
/// One stack per vCPU index (index 0, the boot vCPU, leaves its slot unused).
static mut AP_STACKS: Stack<{ AP_STACK_SIZE * MAX_VCPUS as usize }> =
    Stack([0; AP_STACK_SIZE * MAX_VCPUS as usize]);

/// The heap, for the #VC core's decoder tables (about 330 KiB) only.
#[global_allocator]
pub(crate) static HEAP: DecoderHeap<{ 512 * 1024 }> = DecoderHeap::new();

/// The boot vCPU's channel to the hypervisor: the GHCB MSR, the GHCB page and the #VC core's
/// per-CPU state behind one lock. Only the boot vCPU raises #VC (the APs stay in reset hold),
/// so one channel suffices.
static GHCB: GhcbChannel = {
    static PAGE: GhcbPage = GhcbPage::new();
    // SAFETY: PAGE is declared here, so this channel is its only user; it is in the stage image,
    // below 1 GiB, which the launch tables map identity and private, and decrypted at
    // SHARED_ALIAS + GPA; the channel serves the boot vCPU, at CPL 0 in an SEV-ES guest, where
    // nothing else touches the GHCB MSR (the APs have their own).
    unsafe { GhcbChannel::new(&PAGE, SHARED_ALIAS) }
};

/// The launch page tables the stage keeps on this path.
static TABLES: LaunchTables = LaunchTables::new();

/// The `BootInfo` handed to the kernel: in the stage image, which the memory map marks as
/// bootloader memory.
static mut INFO: BootInfo = BootInfo::new();

/// Set once the boot vCPU runs the IGVM path: exceptions and failures are handled here.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether the stage was started through its IGVM entry.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

unsafe extern "C" {
    /// The end of the stage image (`linker.ld`).
    static __image_end: u8;
}

sev::igvm_entry! {
    /// The IGVM entry point of every vCPU (RIP of the launch VMSAs; xtask's IGVM builder looks
    /// this symbol up). vCPU 0 keeps RDI (the parameter area's GPA) and runs [`main`] on
    /// [`STACK`]; an AP runs [`park_ap`] on its own stack (`sev::igvm_entry!` has the details).
    pub fn _start_igvm;
    boot: main, STACK, STACK_SIZE;
    aps: park_ap, AP_STACKS, AP_STACK_SIZE, MAX_VCPUS;
}

/// An AP, started by the kernel: parks on the kernel's AP jump table until the kernel's next
/// start-up IPI sends it to the table's reset vector, or goes there at once if the kernel
/// installed the table to pass through (GHCB protocol version 1; the table's code reads its
/// mode). (The entry passes the vCPU index, which the kernel's AP start-up knows by itself.)
extern "C" fn park_ap(_index: u64) -> ! {
    // SAFETY: the kernel installed the jump table before it started any AP; the launch tables
    // identity-map the page (0 .. 3 GiB, private); this AP runs 64-bit code at CPL 0 in an
    // SEV-ES guest, has nothing to keep (its stack is abandoned) and no one sends it an NMI.
    unsafe { ApJumpTable::at(AP_JUMP_TABLE_GPA).park() }
}

/// The boot vCPU's first Rust code.
extern "C" fn main(param_gpa: u64) -> ! {
    ACTIVE.store(true, Ordering::Release);
    crate::interrupts::init();
    // SAFETY: CPL 0; reading CR3 has no side effects.
    let cr3 = unsafe { x86::cr::read_cr3() };
    // The launch tables carry the C-bit in CR3: everything above the PML4's address.
    let c = cr3 & ADDR_MASK & !PAGE_TABLES_GPA;
    if !c.is_power_of_two() {
        GHCB.terminate(GuestReason::LaunchParameters.into());
    }
    let c_bit = c.trailing_zeros();
    TABLES.init(c_bit);
    HEAP.init();
    sev::vc::init_decoder();
    let info = GHCB
        .establish(c_bit as u8)
        .unwrap_or_else(|r| GHCB.terminate(r));
    let (info, hv_features) = (info.info, Offered(info.hv_features));
    let entry_tsc = rdtsc();
    x86::serial::init();
    serial_println!(
        "stage: started (IGVM, SEV-ES: GHCB protocol {} of {}..={}, C-bit {}, {hv_features})",
        info.version.number(),
        info.min,
        info.max,
        info.cbit,
    );
    if param_gpa != PARAM_GPA {
        fail(
            GuestReason::LaunchParameters,
            format_args!(
                "parameter area at {param_gpa:#x}, the launch contract says {PARAM_GPA:#x}"
            ),
        );
    }
    // SAFETY: the launch contract puts the parameter area, filled by the launcher, at PARAM_GPA,
    // identity-mapped private memory that nothing else writes; every field is a plain integer.
    let params = unsafe { &*(PARAM_GPA as *const ParamArea) };
    let header = Header::parse(crate::PAYLOAD)
        .unwrap_or_else(|e| fail(GuestReason::KernelLoad, format_args!("{e}")));
    let info_ptr = &raw mut INFO;
    // SAFETY: only the boot vCPU runs this, once; nothing else refers to INFO.
    let boot_info = unsafe { &mut *info_ptr };
    let stage_end = (&raw const __image_end) as u64;
    let place = launch::fill(boot_info, params, stage_end, &header)
        .unwrap_or_else(|e| fail(GuestReason::LaunchParameters, format_args!("{e}")));
    boot_info.timestamps.efi_entry = entry_tsc;
    boot_info.timestamps.exit_boot_services = entry_tsc;
    boot_info.tsc_hz = tsc_hz();
    boot_info.page_tables.cr3 = cr3;
    boot_info.page_tables.pool_start = PAGE_TABLES_GPA;
    boot_info.page_tables.pool_len = PAGE_TABLE_PAGES * 4096;
    // SAFETY: SEV_STATUS exists in every SEV guest (`GHCB.establish` checked it) and is read
    // without an exit.
    boot_info.sev_status = unsafe { x86::msr::rdmsr(sev::sev_status::SEV_STATUS_MSR) };
    boot_info.c_bit = 1 << c_bit;
    boot_info.ap_trampoline = AP_TRAMPOLINE_GPA;
    boot_info.ap_jump_table = AP_JUMP_TABLE_GPA;
    // The launcher's count, bounded by the vCPUs the IGVM file gives a launch state.
    boot_info.vp_count = params.vp_count.min(u32::from(MAX_VCPUS));
    serial_println!(
        "stage: {} vCPUs, {} memory regions, TSC {} Hz (0: unknown), command line `{}`",
        params.vp_count,
        boot_info.memory_map().len(),
        boot_info.tsc_hz,
        boot_info.cmdline()
    );
    match crate::start_kernel(boot_info, &header, place.elf, place.image, || {
        serial_println!("stage: jumping to the kernel (launch page tables, SEV-ES)");
    }) {
        Ok(never) => match never {},
        Err(e) => fail(GuestReason::KernelLoad, format_args!("{e}")),
    }
}

/// The TSC frequency from CPUID leaf 0x15 (TSC/crystal ratio and crystal frequency) or, failing
/// that, leaf 0x16 (base frequency in MHz); 0 when the (hypervisor-answered, untrusted but
/// harmless here) leaves do not say.
fn tsc_hz() -> u64 {
    let max = x86::msr::cpuid(0, 0).eax;
    if max >= 0x15 {
        let r = x86::msr::cpuid(0x15, 0);
        if r.eax != 0 && r.ebx != 0 && r.ecx != 0 {
            return u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax);
        }
    }
    if max >= 0x16 {
        return u64::from(x86::msr::cpuid(0x16, 0).eax & 0xffff) * 1_000_000;
    }
    0
}

/// Every exception on this path: #VC goes to the #VC handler, anything else is fatal; a frame
/// without its error code (`InterruptFrame::lacks_its_error_code`) is an interrupt the
/// hypervisor injected, never taken for a #VC.
pub fn handle_exception(frame: &mut InterruptFrame) {
    if frame.lacks_its_error_code() {
        let v = frame.vector;
        fail(
            GuestReason::MissingErrorCode,
            format_args!("vector {v} arrived without its error code: an injected interrupt"),
        )
    }
    if frame.vector == u64::from(vector::VMM_COMMUNICATION) {
        let cfg = VcConfig {
            cpuid_page: None,
            hypercalls: &NoHypercalls,
        };
        if let Some(e) = GHCB.handle_vc(frame, &TABLES, &cfg) {
            GHCB.raised_fatal(frame, e, "stage: ")
        }
    } else {
        fatal(frame)
    }
}

/// An exception nobody handles: the register dump (when printing can work), then termination.
pub fn fatal(frame: &InterruptFrame) -> ! {
    GHCB.fail(
        format_args!("{frame}"),
        GuestReason::UnexpectedException.into(),
    )
}

/// Prints `stage: error: {msg}` (when printing can work) and terminates with `reason`.
pub fn fail(reason: GuestReason, msg: fmt::Arguments) -> ! {
    GHCB.fail(format_args!("stage: error: {msg}"), reason.into())
}
