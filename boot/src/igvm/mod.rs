//! The stage's IGVM entry: a 64-bit start without UEFI, under SEV-ES, on the launch contract of
//! `handoff::launch` (launch page tables, parameter area in RDI, vCPU index in RSI).
//!
//! Start-up of the boot vCPU, in the order SEV-ES forces (the simulator's test guest does the
//! same, through the same `sev::guest` pieces):
//! 1. [`_start_igvm`]: own stack, then [`main`] with the parameter area's GPA.
//! 2. The stage's GDT/TSS/IDT (`crate::interrupts`), before anything can raise #VC.
//! 3. The heap and the #VC core's decoder tables ([`HEAP`]).
//! 4. [`ghcb::establish`]: CPUID 0x8000001F through the early #VC path (MSR protocol),
//!    protocol negotiation (version 2), GHCB registration; from then on #VCs go through the
//!    GHCB page, and COM1 works.
//! 5. The `BootInfo` from the parameter area ([`launch`]), then the path the EFI entry takes
//!    too: unpack, check, load and start the kernel (`crate::start_kernel`).
//!
//! The stage keeps the launch page tables: they identity-map 0 .. 3 GiB private, which covers
//! everything it touches (its #PF-driven identity map is for the EFI path). Every failure ends
//! in a termination request with a reason of its own (`sev::termination::GuestReason`), after a
//! `stage: error:` line once COM1 works.
//!
//! Application processors park in AP reset hold through the MSR protocol, on small stacks of
//! their own, without raising #VC; the kernel wakes them (issue 5).

pub mod ghcb;
mod launch;

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use handoff::bootinfo::BootInfo;
use handoff::launch::{MAX_VCPUS, PAGE_TABLE_PAGES, PAGE_TABLES_GPA, PARAM_GPA, ParamArea};
use handoff::payload::Header;
use sev::guest::DecoderHeap;
use sev::hw::{GhcbMsrRecord, HwGhcbMsr};
use sev::msr_protocol;
use sev::termination::{GuestReason, TerminationReason};
use x86::idt::vector;
use x86::interrupts::InterruptFrame;
use x86::paging::ADDR_MASK;
use x86::serial_println;
use x86::tsc::rdtsc;

/// The stage's stack on this path (the EFI path runs on the firmware's).
const STACK_SIZE: usize = 64 * 1024;
/// Stack of a parked AP: the MSR-protocol loop needs little.
const AP_STACK_SIZE: usize = 4096;

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

static mut STACK: Stack<STACK_SIZE> = Stack([0; STACK_SIZE]);
/// One stack per vCPU index (index 0, the boot vCPU, leaves its slot unused).
static mut AP_STACKS: Stack<{ AP_STACK_SIZE * MAX_VCPUS as usize }> =
    Stack([0; AP_STACK_SIZE * MAX_VCPUS as usize]);

/// The heap, for the #VC core's decoder tables (about 330 KiB) only.
#[global_allocator]
static HEAP: DecoderHeap<{ 512 * 1024 }> = DecoderHeap::new();

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

/// The IGVM entry point of every vCPU (RIP of the launch VMSAs; xtask's IGVM builder looks
/// this symbol up). vCPU 0 keeps RDI (the parameter area's GPA) and runs [`main`] on [`STACK`];
/// an AP runs [`park_ap`] on its own stack (an index beyond the stacks is a launch bug: `ud2`
/// without an IDT shuts that vCPU down). RBP is cleared so backtraces end here.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _start_igvm() -> ! {
    core::arch::naked_asm!(
        "test rsi, rsi",
        "jnz 2f",
        "lea rsp, [rip + {stack} + {size}]",
        "xor ebp, ebp",
        "call {main}",
        "ud2",
        "2:",
        "cmp rsi, {vcpus}",
        "jae 3f",
        "imul rax, rsi, {ap_size}",
        "lea rsp, [rip + {ap_stacks} + {ap_size}]",
        "add rsp, rax",
        "xor ebp, ebp",
        "call {park_ap}",
        "3:",
        "ud2",
        stack = sym STACK,
        size = const STACK_SIZE,
        main = sym main,
        vcpus = const MAX_VCPUS,
        ap_size = const AP_STACK_SIZE,
        ap_stacks = sym AP_STACKS,
        park_ap = sym park_ap,
    )
}

/// An AP: parks in AP reset hold through the MSR protocol (automatic exits, no #VC, no IDT
/// needed) until the kernel takes it over; a start-up IPI that wakes it before then parks it
/// again. A protocol failure terminates the guest.
extern "C" fn park_ap() -> ! {
    let record = GhcbMsrRecord::new();
    // SAFETY: CPL 0 in an SEV-ES guest; this AP's own record, and nothing else on this AP uses
    // the GHCB MSR.
    let mut msr = unsafe { HwGhcbMsr::new(&record) };
    loop {
        if let Err(e) = msr_protocol::ap_reset_hold(&mut msr) {
            msr_protocol::terminate(&mut msr, TerminationReason::from(e.reason()))
        }
    }
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
        ghcb::terminate(GuestReason::LaunchParameters.into());
    }
    let c_bit = c.trailing_zeros();
    ghcb::TABLES.init(c_bit);
    HEAP.init();
    sev::vc::init_decoder();
    let info = ghcb::establish(c_bit as u8).unwrap_or_else(|r| ghcb::terminate(r));
    let entry_tsc = rdtsc();
    x86::serial::init();
    serial_println!(
        "stage: started (IGVM, SEV-ES: GHCB protocol {}..={}, C-bit {})",
        info.min,
        info.max,
        info.cbit
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

/// Every exception on this path: #VC goes to the #VC handler, anything else is fatal.
pub fn handle_exception(frame: &mut InterruptFrame) {
    if frame.vector == u64::from(vector::VMM_COMMUNICATION) {
        ghcb::handle_vc(frame)
    } else {
        fatal(frame)
    }
}

/// An exception nobody handles: the register dump (when printing can work), then termination.
pub fn fatal(frame: &InterruptFrame) -> ! {
    if ghcb::can_print() {
        x86::serial::force_unlock();
        serial_println!("{frame}");
    }
    ghcb::terminate(GuestReason::UnexpectedException.into())
}

/// Prints `stage: error: {msg}` (when printing can work) and terminates with `reason`.
pub fn fail(reason: GuestReason, msg: fmt::Arguments) -> ! {
    if ghcb::can_print() {
        x86::serial::force_unlock();
        serial_println!("stage: error: {msg}");
    }
    ghcb::terminate(reason.into())
}
