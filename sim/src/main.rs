//! The SEV-ES platform simulator: an EFI application that runs an IGVM guest as an L2 under
//! QEMU's emulated SVM and gives it SEV-ES semantics.
//!
//! While boot services are up it checks for SVM, reads `guest.igvm`, `sim.cfg` and
//! `cmdline.txt` from the boot disk, allocates guest memory (a private and a shared copy) and
//! every SVM structure, and loads the IGVM file into private memory. Then it exits boot
//! services, installs its own GDT/IDT, turns SVM on and runs vCPU 0 until the guest exits
//! through QEMU's debug-exit port, asks to be terminated, or breaks a rule; the run ends with
//! per-vCPU counters and a status of its own (see `x86::qemu::ExitStatus`).
#![no_std]
#![no_main]

extern crate alloc;

mod deliver;
mod devices;
mod memory;
mod run_idt;
mod svm;
mod vcpu;
mod vmgexit;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use efi::{EfiError, Placement};
use handoff::bootinfo::BootInfo;
use memory::{GuestMemory, View};
use sev::vmsa::Vmsa;
use sim::counters::Counters;
use sim::igvm::{self, IgvmError, LaunchParams, LaunchTarget, OutsideGuestMemory};
use sim::options::Options;
use sim::x2apic::Mailbox;
use svm::{FpuState, Gprs, RunState, Vmcb};
use uefi_raw::table::system::SystemTable;
use uefi_raw::{Handle, Status};
use vcpu::{Stop, Vcpu, VcpuSlot, Vm};
use x86::qemu::{ExitStatus, debug_exit, halt_forever};
use x86::{serial_println, tsc::rdtsc};

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();
/// Heap for the IGVM loader and the per-vCPU structures.
const HEAP_PAGES: usize = 1024;
/// Largest guest IGVM file accepted.
const MAX_IGVM: usize = 64 << 20;

/// Everything that can stop the simulator before the guest runs.
enum SetupError {
    NoSvm,
    Efi(EfiError),
    MissingGuest,
    BadText(&'static str),
    Options(sim::options::OptionError<'static>),
    Igvm(IgvmError),
    NoVcpu0,
    ApStart(x86::smp::ApStartError),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSvm => write!(
                f,
                "this CPU has no SVM with nested paging; run QEMU with -cpu EPYC-Milan,+svm,+npt"
            ),
            Self::Efi(e) => write!(f, "firmware call {} failed: {:?}", e.0, e.1),
            Self::MissingGuest => write!(f, "no guest.igvm on the boot disk"),
            Self::BadText(file) => write!(f, "{file} is not ASCII text"),
            Self::Options(e) => write!(f, "sim.cfg: {e}"),
            Self::Igvm(e) => write!(f, "guest.igvm: {e}"),
            Self::NoVcpu0 => write!(f, "guest.igvm has no VP context for vCPU 0"),
            Self::ApStart(e) => write!(f, "starting a host CPU: {e}"),
        }
    }
}

impl From<EfiError> for SetupError {
    fn from(e: EfiError) -> Self {
        Self::Efi(e)
    }
}

/// The firmware's entry point into the simulator.
#[unsafe(no_mangle)]
#[allow(clippy::not_unsafe_ptr_arg_deref)] // only the firmware calls this, with valid pointers
pub extern "efiapi" fn _start(image: Handle, st: *mut SystemTable) -> Status {
    let efi_entry = rdtsc();
    x86::serial::init();
    serial_println!("sim: SEV-ES platform simulator");
    // SAFETY: these are the firmware's own entry arguments.
    let fw = unsafe { efi::Firmware::new(image, st) };
    match run(fw, efi_entry) {
        Ok(never) => match never {},
        Err(e) => fail(format_args!("{e}")),
    }
}

/// A text file from the boot disk, or "" when it is absent.
fn text_file(fw: &efi::Firmware, name: &'static str) -> Result<&'static str, SetupError> {
    let bytes = fw.read_file(name, 4096)?.unwrap_or(&[]);
    let text = core::str::from_utf8(bytes).map_err(|_| SetupError::BadText(name))?;
    if !text.is_ascii() {
        return Err(SetupError::BadText(name));
    }
    Ok(text.trim())
}

/// `pages` zeroed 4 KiB pages from the firmware.
fn zeroed_pages(fw: &efi::Firmware, pages: usize) -> Result<u64, SetupError> {
    let at = fw.allocate_pages(pages, Placement::Anywhere)?;
    // SAFETY: freshly allocated loader-data pages, identity-mapped, owned by us from now on.
    unsafe { core::ptr::write_bytes(at as *mut u8, 0, pages * 4096) };
    Ok(at)
}

/// One copy of guest RAM: `bytes` (a multiple of 2 MiB), 2 MiB aligned.
///
/// It is not cleared: as on hardware, RAM outside the launch image holds unspecified content
/// (what the firmware left there, usually QEMU's zeroes), and clearing 2 x 256 MiB under TCG
/// would cost most of a second of launch time.
fn guest_ram(fw: &efi::Firmware, bytes: u64) -> Result<u64, SetupError> {
    const TWO_MIB: u64 = 2 << 20;
    let raw = fw.allocate_pages(((bytes + TWO_MIB) / 4096) as usize, Placement::Anywhere)?;
    Ok(raw.next_multiple_of(TWO_MIB))
}

/// The launch target: private guest memory and the VMSAs, by vCPU index (the loader passes
/// only those below the launch's vCPU count, each once).
struct Launch<'a> {
    mem: &'a GuestMemory,
    vmsas: Vec<Option<Box<Vmsa>>>,
}

impl LaunchTarget for Launch<'_> {
    fn write_page(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutsideGuestMemory> {
        let len = data.len().min(4096);
        if !gpa.is_multiple_of(4096) {
            return Err(OutsideGuestMemory { gpa });
        }
        self.mem
            .write(gpa, &data[..len], View::Private)
            .and_then(|()| {
                self.mem
                    .write(gpa + len as u64, &[0; 4096][len..], View::Private)
            })
            .map_err(|_| OutsideGuestMemory { gpa })
    }

    fn vp_context(&mut self, vp_index: u16, vmsa: &[u8; 4096]) {
        // SAFETY: `Vmsa` is a 4096-byte plain-integer struct (checked by its layout tests);
        // every bit pattern is a valid value.
        let v = unsafe { core::ptr::read_unaligned(vmsa.as_ptr() as *const Vmsa) };
        if let Some(slot) = self.vmsas.get_mut(usize::from(vp_index)) {
            *slot = Some(Box::new(v));
        }
    }
}

/// A page-aligned, all-ones permission bitmap: every access it covers is intercepted.
#[repr(C, align(4096))]
struct Bitmap<const N: usize>([u8; N]);

fn run(fw: efi::Firmware, efi_entry: u64) -> Result<core::convert::Infallible, SetupError> {
    if !svm::available() {
        return Err(SetupError::NoSvm);
    }
    let heap = zeroed_pages(&fw, HEAP_PAGES)?;
    // SAFETY: the pages are ours for good and used by nothing else.
    unsafe { HEAP.lock().init(heap as *mut u8, HEAP_PAGES * 4096) };

    let options = Options::parse(text_file(&fw, "sim.cfg")?).map_err(SetupError::Options)?;
    let cmdline = text_file(&fw, "cmdline.txt")?;
    let igvm_file = fw
        .read_file("guest.igvm", MAX_IGVM)?
        .ok_or(SetupError::MissingGuest)?;
    // 20 ms: the launch figure and the benchmark's rate rest on it (a 1 ms stall reads
    // 15-25 % fast under TCG).
    let tsc_hz = fw.tsc_hz(20_000);

    let size = options.mem_mib << 20;
    let private = guest_ram(&fw, size)?;
    let shared = guest_ram(&fw, size)?;
    // SAFETY: two distinct, 2 MiB aligned allocations of `size` bytes that nothing else uses.
    let mem = unsafe { GuestMemory::new(private, shared, size, handoff::launch::SIM_C_BIT) };

    // One vCPU per host CPU: vCPU i runs on the CPU the firmware lists i-th (the boot CPU
    // first), and has APIC ID i.
    let mut apic_ids = [0u32; handoff::launch::MAX_VCPUS as usize];
    let vp_count = fw.processors(&mut apic_ids)? as u32;
    let trampoline = fw.allocate_pages(1, Placement::Below(0x9_ffff))?;
    let mut launch = Launch {
        mem: &mem,
        vmsas: (0..vp_count).map(|_| None).collect(),
    };
    let params = LaunchParams {
        vp_count,
        ram: &[(0, size)],
        cmdline,
    };
    let summary = igvm::load(igvm_file, &params, &mut launch).map_err(SetupError::Igvm)?;
    let vmsas = launch.vmsas;
    if vmsas[0].is_none() {
        return Err(SetupError::NoVcpu0);
    }
    serial_println!(
        "sim: guest: {} MiB, {vp_count} vCPU(s), {} pages loaded, {} VP context(s); command \
         line `{cmdline}`",
        options.mem_mib,
        summary.pages,
        summary.vp_contexts
    );

    // The nested page table: at most 1 PML4 + 2 x (1 PDPT + 4 PDs) for 4 GiB of RAM.
    let npt_pool = zeroed_pages(&fw, 16)?;
    let mut next = 0u64;
    let npt = mem.build_npt(|| {
        assert!(next < 16, "nested page table pool exhausted");
        next += 1;
        npt_pool + (next - 1) * 4096
    });
    let iopm = Box::leak(Box::new(Bitmap([0xff; 3 * 4096])));
    let msrpm = Box::leak(Box::new(Bitmap([0xff; 2 * 4096])));
    // EFER is the guest's own, as KVM leaves it to SEV-ES guests (it only learns of writes,
    // through the EFER write trap): the AP start-up path enters long mode with WRMSR before
    // any #VC handler exists. Its read and write bits: MSR 0xC000_0080 in the second 2 KiB.
    msrpm.0[0x800 + 0x80 * 2 / 8] &= !0b11;
    let vcpus = (0u32..)
        .zip(vmsas)
        .map(|(i, launch)| VcpuSlot {
            mailbox: Mailbox::new(),
            counters: Counters::new(i),
            launch,
        })
        .collect();
    let vm: &'static Vm = Box::leak(Box::new(Vm {
        mem,
        trace: options.trace,
        ghcb_max: options.ghcb_max,
        inject: options.inject,
        tsc_hz,
        ap_jump_table: AtomicU64::new(0),
        npt,
        io_bitmaps: (iopm as *const _ as u64, msrpm as *const _ as u64),
        vcpus,
        started: AtomicU32::new(0),
        ending: AtomicBool::new(false),
    }));
    let cpus: Vec<HostCpu> = (0..vp_count).map(|_| HostCpu::new()).collect();
    let mut info = Box::new(BootInfo::new());

    let ap_stacks: Vec<u64> = (1..vp_count)
        .map(|_| {
            Box::leak(Box::new(ApStack([0; AP_STACK_SIZE])))
                .0
                .as_ptr_range()
                .end as u64
        })
        .collect();

    fw.exit_boot_services(&mut info)?;
    // Every exception in the simulator is a bug, and fatal.
    x86::interrupts::set_handler(|frame| x86::interrupts::fatal(frame));
    let mut cpus = cpus.into_iter();
    let bsp = cpus.next().expect("one CPU at least");
    start_aps(
        vm,
        cpus,
        &apic_ids[1..vp_count as usize],
        &ap_stacks,
        trampoline,
    )?;
    bsp.enter(vm, 0, || {
        let us = (rdtsc() - efi_entry) * 1_000_000 / tsc_hz.max(1);
        serial_println!("SIM-LAUNCH efi_to_guest_us={us}");
    })
}

/// Each application processor's stack (the host side: the simulator's exit handling).
const AP_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct ApStack([u8; AP_STACK_SIZE]);

/// What an application processor takes to its entry.
struct ApStart {
    vm: &'static Vm,
    id: u32,
    cpu: HostCpu,
}

/// Starts host CPU i (APIC ID `apic_ids[i - 1]`) for vCPU i, one after the other; each waits in
/// [`HostCpu::enter`] for its vCPU's start-up IPI.
fn start_aps(
    vm: &'static Vm,
    cpus: impl Iterator<Item = HostCpu>,
    apic_ids: &[u32],
    stacks: &[u64],
    trampoline: u64,
) -> Result<(), SetupError> {
    if apic_ids.is_empty() {
        return Ok(());
    }
    // SAFETY: the local APIC of the boot CPU, which the firmware left usable.
    let apic = unsafe { x86::apic::LocalApic::enable() };
    // SAFETY: a page below 1 MiB allocated for this before ExitBootServices, identity-mapped
    // by the firmware's page tables we run on.
    let mut t = unsafe { x86::smp::Trampoline::install(trampoline, vm.tsc_hz) }
        .map_err(SetupError::ApStart)?;
    t.send_init(&apic, apic_ids.iter().copied())
        .map_err(SetupError::ApStart)?;
    for (((id, &apic_id), cpu), &stack) in (1u32..).zip(apic_ids).zip(cpus).zip(stacks) {
        let start = Box::into_raw(Box::new(ApStart { vm, id, cpu })) as u64;
        let params = x86::smp::ApParams::new(stack, ap_entry, start);
        // SAFETY: the stack is this AP's only; `ap_entry` takes the ApStart it is given.
        unsafe { t.start_ap(&apic, apic_id, &params) }.map_err(SetupError::ApStart)?;
    }
    Ok(())
}

/// An application processor's first Rust code: runs its vCPU.
extern "C" fn ap_entry(arg: u64) -> ! {
    // SAFETY: `arg` is the ApStart that `start_aps` leaked for this AP, taken once.
    let start = unsafe { Box::from_raw(arg as *mut ApStart) };
    start.cpu.enter(start.vm, start.id, || {})
}

/// What one host CPU needs to run its vCPU: the VMCB, the page VMSAVE/VMLOAD keep its own
/// hidden state in, its host save area, and the round-trip state.
struct HostCpu {
    vmcb: &'static mut Vmcb,
    hsave: &'static mut Vmcb,
    state: &'static mut RunState,
    /// Its GDT, whose TSS holds its own IST stacks.
    gdt: &'static x86::gdt::Gdt,
}

impl HostCpu {
    fn new() -> Self {
        let host_vmcb = Box::leak(Box::new(Vmcb::zeroed()));
        let state = Box::leak(Box::new(RunState {
            gprs: Gprs::default(),
            guest_vmcb: 0,
            host_vmcb: host_vmcb.address(),
            guest_loaded: 0,
            guest_fpu: FpuState([0; 512]),
            host_fpu: FpuState([0; 512]),
        }));
        // The guest starts with the x87/SSE state of reset: FCW 0x37f, MXCSR 0x1f80.
        state.guest_fpu.0[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        state.guest_fpu.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        Self {
            vmcb: Box::leak(Box::new(Vmcb::zeroed())),
            hsave: Box::leak(Box::new(Vmcb::zeroed())),
            state,
            gdt: x86::gdt::leaked_for_new_cpu(),
        }
    }

    /// Runs vCPU `id` on this CPU (after boot services): its GDT/IDT, SVM on, then the vCPU from
    /// its launch state (an AP once its start-up IPI came) until the run ends.
    fn enter(self, vm: &'static Vm, id: u32, first_entry: impl FnOnce()) -> ! {
        // SAFETY: this CPU's own GDT and TSS, leaked, loaded once.
        unsafe { self.gdt.load() };
        // SAFETY: the GDT and TSS with this CPU's IST stacks were just loaded.
        unsafe { x86::interrupts::load_idt() };
        // SAFETY: `hsave` is this CPU's page for as long as SVM runs (forever).
        unsafe { svm::enable(self.hsave.address()) };
        let vmsa = if id == 0 {
            vm.vcpus[0]
                .launch
                .as_deref()
                .ok_or(Stop::Error(vcpu::SimError::NoLaunchState { vcpu: 0 }))
        } else {
            vcpu::await_startup(vm, id)
        };
        let stop = match vmsa {
            Ok(vmsa) => {
                let mut v = Vcpu::new(id, vm, self.vmcb, self.state, vmsa);
                first_entry();
                let stop = v.run(vm);
                (stop, Some(v.dump()))
            }
            Err(stop) => (stop, None),
        };
        finish(vm, id, stop.0, stop.1)
    }
}

/// Ends the run the way `stop` (of vCPU `id`) says, after every vCPU's counters. The first
/// vCPU to end the run wins; the others stop.
fn finish(vm: &Vm, id: u32, stop: Stop, state: Option<vcpu::GuestState>) -> ! {
    if vm.ending.swap(true, Ordering::AcqRel) {
        halt_forever()
    }
    for slot in vm.vcpus.iter() {
        serial_println!("{}", slot.counters);
    }
    match stop {
        Stop::DebugExit(status) => {
            serial_println!("sim: guest exit status {status:#x}");
            x86::io::outl(x86::qemu::DEBUG_EXIT_PORT, status);
            halt_forever()
        }
        Stop::GuestTerminated(r) => {
            let known = r
                .guest_reason()
                .map(|g| alloc::format!(" ({g:?})"))
                .unwrap_or_default();
            serial_println!(
                "sim: guest requested termination: reason set {} code {:#x}{known}",
                r.set(),
                r.code()
            );
            end(ExitStatus::GuestTerminated)
        }
        Stop::GuestGaveUp { info1, info2 } => {
            serial_println!(
                "sim: guest reported a #VC it cannot handle (SW_EXITINFO1 {info1:#x}, \
                 SW_EXITINFO2 {info2:#x})"
            );
            end(ExitStatus::GuestTerminated)
        }
        Stop::Error(e) => {
            serial_println!("sim: error: vcpu {id}: {e}");
            if let Some(state) = state {
                serial_println!("sim: vcpu {id} state: {state}");
            }
            end(match e {
                vcpu::SimError::HostLostGuestState => ExitStatus::VoidRun,
                _ => ExitStatus::SimError,
            })
        }
    }
}

fn end(status: ExitStatus) -> ! {
    debug_exit(status);
    halt_forever()
}

fn fail(msg: fmt::Arguments) -> ! {
    x86::serial::force_unlock();
    serial_println!("sim: error: {msg}");
    end(ExitStatus::SimError)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fail(format_args!("panic: {info}"))
}
