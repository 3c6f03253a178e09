//! The #VC path allocates nothing: a counting global allocator watches
//! `handle_vc` for every emulated instruction kind, with allocations made by
//! the test harness itself (the reference hypervisor, the memory model)
//! excluded.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{MMIO_VA, Machine, Mem, Vcpu};
use sev::exit_code::ExitCode;
use sev::ghcb::{Ghcb, GhcbTransport};
use sev::vc::{
    Gpr, GuestMemory, InsnFetch, MAX_INSN_LEN, Mapping, NoHypercalls, PageFault, PageWalk,
    VcConfig, VcOutcome, handle_vc,
};

struct Counting;

static GUEST_ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IN_GUEST: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if IN_GUEST.with(|g| g.get()) {
            GUEST_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` as harness code: its allocations are not the guest's.
fn harness<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_GUEST.with(|g| g.replace(false));
    let r = f();
    IN_GUEST.with(|g| g.set(was));
    r
}

struct HMem<'a>(&'a mut Mem);

impl InsnFetch for HMem<'_> {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; MAX_INSN_LEN]) -> Result<usize, PageFault> {
        harness(|| self.0.fetch(rip, buf))
    }
}
impl PageWalk for HMem<'_> {
    fn translate(&mut self, va: u64) -> Option<Mapping> {
        harness(|| self.0.translate(va))
    }
}
impl GuestMemory for HMem<'_> {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), PageFault> {
        harness(|| self.0.read(va, buf))
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), PageFault> {
        harness(|| self.0.write(va, data))
    }
}

struct HVcpu<'a>(&'a mut Vcpu);

impl GhcbTransport for HVcpu<'_> {
    fn ghcb(&mut self) -> &mut Ghcb {
        self.0.ghcb()
    }
    fn ghcb_gpa(&self) -> u64 {
        self.0.ghcb_gpa()
    }
    fn vmgexit(&mut self) {
        harness(|| self.0.vmgexit())
    }
}

fn run(m: &mut Machine, exit: ExitCode, code: &[u8]) -> VcOutcome {
    m.mem.put(m.regs.rip, code);
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &NoHypercalls,
    };
    IN_GUEST.with(|g| g.set(true));
    let o = handle_vc(
        exit as u64,
        &mut m.regs,
        &mut HMem(&mut m.mem),
        &mut HVcpu(&mut m.vcpu),
        &mut m.cpu,
        &cfg,
    );
    IN_GUEST.with(|g| g.set(false));
    o
}

#[test]
fn vc_path_does_not_allocate() {
    // iced-x86 builds its decoder tables on the heap at first use; the
    // stages call this at boot, before any #VC can happen.
    IN_GUEST.with(|g| g.set(true));
    sev::vc::init_decoder();
    IN_GUEST.with(|g| g.set(false));
    let init_allocs = GUEST_ALLOCS.swap(0, Ordering::Relaxed);
    assert!(init_allocs > 0, "the table build is visible to the counter");
    let mut m = Machine::default();
    m.regs.gpr[Gpr::Rbx as usize] = MMIO_VA;
    m.regs.gpr[Gpr::Rdx as usize] = 0x3f8;
    m.regs.gpr[Gpr::Rcx as usize] = 100;
    m.regs.gpr[Gpr::Rsi as usize] = 0xffff_8880_0000_0000;
    let cases: [(ExitCode, &[u8]); 10] = [
        (ExitCode::Ioio, &[0xf3, 0x6e]),
        (ExitCode::Cpuid, &[0x0f, 0xa2]),
        (ExitCode::Cpuid, &[0x0f, 0xa2]),
        (ExitCode::Npf, &[0x48, 0x8b, 0x43, 0x10]),
        (ExitCode::Npf, &[0x48, 0x89, 0x43, 0x10]),
        (ExitCode::Ioio, &[0xee]),
        (ExitCode::Rdtsc, &[0x0f, 0x31]),
        (ExitCode::Wbinvd, &[0x0f, 0x09]),
        (ExitCode::Msr, &[0x0f, 0x32]),
        (ExitCode::Cpuid, &[0xf0, 0x90]),
    ];
    for (exit, code) in cases {
        let o = run(&mut m, exit, code);
        assert!(
            !matches!(o, VcOutcome::Repeat),
            "{exit:?}: the REP OUTS (first, RCX = 100) fits one batch"
        );
    }
    // The harness did allocate (logs, memory model): make sure the counter
    // would have seen guest allocations by allocating inside the window.
    assert_eq!(GUEST_ALLOCS.load(Ordering::Relaxed), 0);
    IN_GUEST.with(|g| g.set(true));
    let v = std::hint::black_box(vec![1u8; 16]);
    IN_GUEST.with(|g| g.set(false));
    drop(v);
    assert_eq!(GUEST_ALLOCS.load(Ordering::Relaxed), 1);
}
