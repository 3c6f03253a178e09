//! The decompressor stage: an EFI application that collects what the firmware knows, exits boot
//! services, unpacks and checks the embedded kernel, loads it and jumps to it with a `BootInfo`.
//! It has a second entry, [`igvm::_start_igvm`], for a launch from an IGVM file under SEV-ES
//! (no UEFI); both end in [`start_kernel`]. Under the firmware's SEV-ES the EFI entry takes #VC
//! and the GHCB over from the firmware at ExitBootServices ([`sev_efi`]).
#![no_std]
#![no_main]

mod fw_cfg;
mod idmap;
mod igvm;
mod interrupts;
mod sev_efi;

use efi::Placement;
use handoff::bootinfo::{BootInfo, KERNEL_PREFERRED_BASE};
use handoff::elf::Elf;
use handoff::payload::{self, Header};
use sev::termination::GuestReason;
use uefi_raw::table::system::SystemTable;
use uefi_raw::{Handle, Status};
use x86::qemu::{ExitStatus, debug_exit, halt_forever};
use x86::{serial_println, tsc::rdtsc};

/// The packed kernel, put here by `cargo xtask build`.
static PAYLOAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kernel.payload"));

/// Everything that can stop the stage, each with its own message.
enum StageError {
    Efi(efi::EfiError),
    Payload(payload::PayloadError),
    Elf(handoff::elf::ElfError),
    Idmap(idmap::IdmapError),
}

impl StageError {
    /// The termination reason under SEV-ES.
    fn reason(&self) -> GuestReason {
        match self {
            Self::Efi(_) | Self::Payload(_) | Self::Elf(_) => GuestReason::KernelLoad,
            Self::Idmap(_) => GuestReason::StageMemory,
        }
    }
}

impl core::fmt::Display for StageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Efi(e) => write!(f, "{e}"),
            Self::Payload(e) => write!(f, "{e}"),
            Self::Elf(e) => write!(f, "{e}"),
            Self::Idmap(e) => write!(f, "{e}"),
        }
    }
}

/// The firmware's entry point into the stage (the ELF and PE entry).
#[unsafe(no_mangle)]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // only the firmware calls this, with valid pointers
pub extern "efiapi" fn _start(image: Handle, st: *mut SystemTable) -> Status {
    let efi_entry = rdtsc();
    x86::serial::init();
    serial_println!("stage: started");
    let sev_es = sev_efi::detect();
    // SAFETY: these are the firmware's own entry arguments.
    let fw = unsafe { efi::Firmware::new(image, st) };
    match run(fw, efi_entry, sev_es) {
        Ok(never) => match never {},
        Err(e) => fail(e.reason(), format_args!("{e}")),
    }
}

fn run(
    fw: efi::Firmware,
    efi_entry: u64,
    sev_es: Option<sev::guest::SevEsPlan>,
) -> Result<core::convert::Infallible, StageError> {
    let header = Header::parse(PAYLOAD).map_err(StageError::Payload)?;
    let pages = |bytes: u64| bytes.div_ceil(4096) as usize;

    // Reserve everything while the firmware still hands out memory: the BootInfo, the kernel
    // image (at its preferred address, so that debuggers know where its symbols are, else
    // anywhere below 4 GiB: its .bss holds the PML4 that APs load in 32-bit mode), the buffer
    // the ELF is decompressed into, and a page below 1 MiB for the APs.
    let info_addr = fw
        .allocate_pages(pages(size_of::<BootInfo>() as u64), Placement::Anywhere)
        .map_err(StageError::Efi)?;
    let image_pages = pages(header.image_span);
    let image_addr = fw
        .allocate_pages(image_pages, Placement::At(KERNEL_PREFERRED_BASE))
        .or_else(|_| fw.allocate_pages(image_pages, Placement::Below(0xffff_ffff)))
        .map_err(StageError::Efi)?;
    if image_addr != KERNEL_PREFERRED_BASE {
        serial_println!(
            "stage: {KERNEL_PREFERRED_BASE:#x} is taken; kernel goes to {image_addr:#x}"
        );
    }
    let elf_addr = fw
        .allocate_pages(pages(header.uncompressed_len), Placement::Anywhere)
        .map_err(StageError::Efi)?;
    let ap_trampoline = fw
        .allocate_pages(1, Placement::Below(0x9_ffff))
        .unwrap_or(0);
    let tsc_hz = fw.tsc_hz(1000);
    let stage_image = fw.image_span().map_err(StageError::Efi)?;

    // SAFETY: freshly allocated loader-data pages, large enough, owned by us from now on.
    let info = unsafe { &mut *(info_addr as *mut BootInfo) };
    *info = BootInfo::new();
    info.timestamps.efi_entry = efi_entry;
    info.tsc_hz = tsc_hz;
    info.ap_trampoline = ap_trampoline;
    info.rsdp = fw.rsdp().unwrap_or(0);
    info.cc_blob = fw.cc_blob().unwrap_or(0);
    let mut line = [0u8; handoff::bootinfo::MAX_CMDLINE];
    let mut n = fw.load_options(&mut line);
    let mut text = cmdline_text(&line[..n]);
    if text.is_empty() {
        n = fw_cfg::read_file(fw_cfg::CMDLINE_FILE, &mut line).unwrap_or(0);
        text = cmdline_text(&line[..n]);
    }
    info.set_cmdline(text);
    if sev_es.is_some() {
        sev_efi::prepare(&fw, info).map_err(StageError::Efi)?;
    }

    fw.exit_boot_services(info).map_err(StageError::Efi)?;
    // Under SEV-ES nothing may raise #VC before the stage's IDT: the takeover comes first.
    match &sev_es {
        Some(plan) => {
            sev_efi::take_over(plan, info, stage_image);
            info.timestamps.exit_boot_services = rdtsc();
        }
        None => {
            info.timestamps.exit_boot_services = rdtsc();
            interrupts::init();
            idmap::init(info, stage_image, None).map_err(StageError::Idmap)?;
        }
    }

    start_kernel(info, &header, elf_addr, image_addr, || {
        let (faults, tables) = idmap::stats();
        serial_println!("stage: identity map: {faults} faults, {tables} tables");
    })
}

/// The part both entries share, once the stage runs on its own descriptor tables with the
/// memory it reserved mapped: unpacks the embedded kernel into the `header.uncompressed_len`
/// bytes at `elf_addr`, checks it, loads it into the `header.image_span` bytes at
/// `image_addr`, records it in `info`, runs `before_jump` (the entry's last words) and jumps
/// to the kernel with `info` in RDI.
fn start_kernel(
    info: &mut BootInfo,
    header: &Header,
    elf_addr: u64,
    image_addr: u64,
    before_jump: impl FnOnce(),
) -> Result<core::convert::Infallible, StageError> {
    // SAFETY: reserved by the caller, exactly `uncompressed_len` bytes, not aliased.
    let elf_buf = unsafe {
        core::slice::from_raw_parts_mut(elf_addr as *mut u8, header.uncompressed_len as usize)
    };
    payload::unpack(PAYLOAD, elf_buf, |src, dst| {
        lz4_flex::block::decompress_into(src, dst).ok()
    })
    .map_err(StageError::Payload)?;
    info.timestamps.decompressed = rdtsc();
    let elf = Elf::parse(elf_buf).map_err(StageError::Elf)?;
    let span = elf.span();
    // SAFETY: reserved by the caller with `image_span` bytes; `load` checks that the ELF fits.
    let image = unsafe {
        core::slice::from_raw_parts_mut(image_addr as *mut u8, header.image_span as usize)
    };
    let entry = elf.load(image, image_addr).map_err(StageError::Elf)?;
    info.kernel_start = image_addr;
    info.kernel_len = span;
    serial_println!("stage: kernel loaded at {image_addr:#x} ({span} bytes), entry {entry:#x}");
    before_jump();
    info.timestamps.kernel_entry = rdtsc();
    let info_addr = core::ptr::from_mut(info) as u64;
    // SAFETY: `entry` is the loaded kernel's entry point, which takes the BootInfo in RDI and
    // never returns; the caller's page tables map the kernel image and the BootInfo.
    unsafe {
        core::arch::asm!("cli", "jmp {entry}", entry = in(reg) entry, in("rdi") info_addr, options(noreturn))
    }
}

/// The command line as text: printable ASCII only (a firmware boot entry may carry binary
/// data), without a leading image name (the UEFI shell passes `stage.efi args...`).
fn cmdline_text(raw: &[u8]) -> &str {
    if !raw.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        return "";
    }
    let s = core::str::from_utf8(raw).unwrap_or("").trim();
    match s.split_once(' ') {
        Some((first, rest)) if is_efi_name(first) => rest.trim(),
        None if is_efi_name(s) => "",
        _ => s,
    }
}

fn is_efi_name(s: &str) -> bool {
    s.len() >= 4 && s.as_bytes()[s.len() - 4..].eq_ignore_ascii_case(b".efi")
}

/// Ends the run after an error: under SEV-ES through `sev_efi` with `reason`, else with
/// `stage: error: {msg}` and a failure exit.
fn fail(reason: GuestReason, msg: core::fmt::Arguments) -> ! {
    if sev_efi::active() {
        sev_efi::fail(reason.into(), msg)
    }
    x86::serial::force_unlock();
    serial_println!("stage: error: {msg}");
    exit_failure()
}

/// QEMU's debug exit with the failure status, then halting for good.
fn exit_failure() -> ! {
    debug_exit(ExitStatus::Failure);
    halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if igvm::active() {
        igvm::fail(
            sev::termination::GuestReason::Panic,
            format_args!("panic: {info}"),
        )
    }
    fail(GuestReason::Panic, format_args!("panic: {info}"))
}
