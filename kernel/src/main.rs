//! The kernel: entered from the stage with a `BootInfo`, brings the machine up and runs the
//! in-kernel test suite selected on the command line.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod apic;
mod bench;
mod cmdline;
mod heap;
mod interrupts;
mod logger;
mod memory;
mod panic;
mod percpu;
mod sev;
mod shutdown;
mod smp;
mod testing;
mod tsc;

use handoff::bootinfo::BootInfo;
use x86::qemu::ExitStatus;

/// Size of the boot CPU's stack.
const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack([u8; BOOT_STACK_SIZE]);

/// The boot CPU's stack; the stage's stack is not ours to keep.
static mut BOOT_STACK: Stack = Stack([0; BOOT_STACK_SIZE]);

/// The entry point the stage jumps to, with the BootInfo in RDI: switch to our own stack and
/// call [`kernel_main`] with a null frame pointer, which ends backtraces.
#[unsafe(naked)]
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "lea rsp, [rip + {stack} + {size}]",
        "xor ebp, ebp",
        "call {main}",
        "ud2",
        stack = sym BOOT_STACK,
        size = const BOOT_STACK_SIZE,
        main = sym kernel_main,
    )
}

/// One machine-readable line with the boot phases in microseconds of guest TSC time, read by
/// `cargo xtask bench boot`.
fn log_boot_times(info: &BootInfo) {
    let t = info.timestamps;
    let us = |a: u64, b: u64| {
        (b.saturating_sub(a) * 1_000_000)
            .checked_div(info.tsc_hz)
            .unwrap_or(0)
    };
    let ready = x86::tsc::rdtsc();
    log::info!(
        "BOOT-TIMES efi_to_exit_boot_services={}us decompress={}us load={}us kernel_to_ready={}us total={}us",
        us(t.efi_entry, t.exit_boot_services),
        us(t.exit_boot_services, t.decompressed),
        us(t.decompressed, t.kernel_entry),
        us(t.kernel_entry, ready),
        us(t.efi_entry, ready)
    );
}

extern "C" fn kernel_main(info: *const BootInfo) -> ! {
    // The IDT first: under SEV-ES the serial set-up below is port I/O, a #VC.
    interrupts::init();
    // SAFETY: the stage passes a pointer to a BootInfo it keeps mapped and reserved; the header
    // is validated before any other field is believed.
    let info_ptr = info.cast_mut();
    // SAFETY: as above.
    let info = unsafe { &*info_ptr };
    let valid = info.validate();
    // Under SEV-ES nothing may raise #VC before the kernel's GHCB is up, and that needs the
    // kernel's page tables (the GHCB mapped shared) and the heap (the #VC decoder): they come
    // first, silently; a failure there ends in a termination request.
    let early = (valid.is_ok() && info.sev_es()).then(|| {
        sev::enter();
        let memory = bring_up_memory(info).unwrap_or_else(|_| {
            sev::terminate(::sev::termination::GuestReason::LaunchParameters.into())
        });
        sev::init(info.c_bit);
        memory
    });
    // Without a TSC rate from the stage (the IGVM path has no firmware stall to time against)
    // the kernel measures it with the HPET, which its page tables map now.
    let calibration = (valid.is_ok() && info.tsc_hz == 0 && early.is_some()).then(|| {
        let measured = tsc::calibrate_with_hpet();
        if let Ok(hz) = measured {
            // SAFETY: the stage handed the BootInfo over to the kernel, which alone uses it
            // from now on (bootloader memory, mapped writable); `info` is not used again but
            // re-borrowed below, after this write.
            unsafe { (*info_ptr).tsc_hz = hz };
        }
        measured
    });
    // SAFETY: as above; no write to the BootInfo follows.
    let info = unsafe { &*info_ptr };
    // The stage set COM1 up; only a kernel that cannot trust its hand-over sets it up again.
    if valid.is_ok() {
        x86::serial::adopt();
    } else {
        x86::serial::init();
    }
    if let Err(e) = valid {
        x86::serial_println!("kernel: unusable BootInfo from the stage: {e:?}");
        shutdown::exit(ExitStatus::Failure);
    }
    let options = cmdline::Options::parse(info.cmdline());
    logger::init(options.log_level, info.tsc_hz);
    match calibration {
        Some(Ok(hz)) => log::info!("TSC: {hz} Hz, measured against the HPET"),
        Some(Err(e)) => log::warn!("TSC rate unknown: {e}"),
        None => {}
    }
    for bad in options.unknown() {
        log::warn!(
            "unknown command-line option `{bad}` (known options: {})",
            cmdline::KNOWN
        );
    }
    log::info!(
        "kernel at {:#x} ({} KiB), command line `{}`",
        info.kernel_start,
        info.kernel_len / 1024,
        info.cmdline()
    );
    if early.is_some() {
        log::info!(
            "SEV-ES (SEV_STATUS {:#x}, C-bit {}): #VC through the kernel's GHCB at {:#x}, \
             GHCB protocol {}, {}",
            info.sev_status,
            info.c_bit.trailing_zeros(),
            sev::boot_ghcb_page(),
            sev::ghcb_version().map_or(0, |v| v.number()),
            ::sev::hv_features::Offered(sev::hv_features())
        );
    }
    match early.map_or_else(|| bring_up_memory(info), Ok) {
        Ok(memory) => log::info!("{memory}"),
        Err(e) => {
            log::error!("{e}");
            shutdown::exit(ExitStatus::Failure);
        }
    }
    if let Err(e) = smp::start(info) {
        log::error!("SMP start-up failed: {e}");
    }
    log::info!("ready");
    log_boot_times(info);
    let status = match (options.bench, options.test) {
        (Some(bench), _) => bench::run_named(bench),
        (None, Some(selection)) => testing::run(selection, info),
        (None, None) => ExitStatus::Success,
    };
    shutdown::exit(status)
}

/// Why the kernel's memory could not be set up.
enum MemoryBringUpError {
    Tables(memory::MemoryError),
    NoHeap,
}

impl core::fmt::Display for MemoryBringUpError {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self {
            Self::Tables(e) => write!(f, "memory: {e}"),
            Self::NoHeap => write!(f, "no contiguous RAM for the heap"),
        }
    }
}

/// The frame allocator, the kernel's page tables and the heap; what to log about them.
fn bring_up_memory(info: &BootInfo) -> Result<memory::Summary, MemoryBringUpError> {
    let summary = memory::init(info).map_err(MemoryBringUpError::Tables)?;
    heap::init().map_err(|_| MemoryBringUpError::NoHeap)?;
    Ok(summary)
}
