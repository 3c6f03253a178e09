//! The kernel's exceptions: each CPU's GDT, TSS and IST stacks, the one IDT all CPUs share, and
//! the handler behind every vector (entry and nesting are `x86::interrupts`' business).
//!
//! Nothing is expected to fault in the kernel: every exception prints the register dump and ends
//! the run with a failure, except the ones the in-kernel tests provoke on purpose (a breakpoint,
//! a `ud2` inside the breakpoint handler to prove nesting, a self-NMI, the #DBs a test arms with
//! [`expect_debug`]), which are counted and resumed, and, under SEV-ES, #VC (`crate::sev`).
//! Under SEV-ES a resumed NMI ends with NMI_COMPLETE (`crate::sev::nmi_complete`), without which
//! the hypervisor sends no other, and a #DB may come as a #VC that `crate::sev` hands to
//! [`debug`].
//!
//! # Injected interrupts
//! Under SEV-ES the hypervisor may inject an external interrupt on any vector (Heckler): the
//! VMCB's EVENTINJ is not part of the protected state. Where exceptions push an error code (#PF,
//! #GP, #VC...) such an interrupt pushes none, and the frame tells
//! (`InterruptFrame::lacks_its_error_code`): it is never taken for the exception, least of all
//! for a #VC, whose "exit code" would be the interrupted RIP. Elsewhere (0x80, #UD, #DB...) the
//! frame is an ordinary one, and what protects the kernel is that it handles no vector it does
//! not expect: every other one ends the run. Under SEV-ES "ends the run" is a termination
//! request with a reason ([`fatal`]), not the debug exit, a port write the hypervisor that sent
//! the event is free to ignore.

use ::sev::termination::GuestReason;
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use x86::gdt::{Gdt, IstStacks, Tss};
use x86::idt::vector;
use x86::interrupts::InterruptFrame;

/// The boot CPU's IST stacks (application processors get theirs from the heap).
static BOOT_IST: IstStacks = IstStacks::new();
static BOOT_TSS: spin::Once<Tss> = spin::Once::new();
static BOOT_GDT: spin::Once<Gdt> = spin::Once::new();

/// Breakpoints handled so far.
pub static BREAKPOINTS: AtomicUsize = AtomicUsize::new(0);
/// When set, the next breakpoint handler executes `ud2` (a nested #UD, recovered).
pub static NEST_UD: AtomicBool = AtomicBool::new(false);
/// Nested #UDs recovered so far.
pub static NESTED_UD: AtomicUsize = AtomicUsize::new(0);
/// When set, the next breakpoint handler overwrites every XMM register.
pub static CLOBBER_SSE: AtomicBool = AtomicBool::new(false);
/// Armed by the breakpoint handler right before its own `ud2`: only that #UD is recovered.
static UD_ARMED: AtomicBool = AtomicBool::new(false);
/// When set, the next NMI is counted and resumed instead of being fatal.
pub static EXPECT_NMI: AtomicBool = AtomicBool::new(false);
/// NMIs handled so far.
pub static NMIS: AtomicUsize = AtomicUsize::new(0);
/// Under SEV-ES: handled NMIs that interrupted the #VC handler in the middle of its GHCB
/// request and borrowed the GHCB from it to send NMI_COMPLETE.
pub static NMIS_IN_VC: AtomicUsize = AtomicUsize::new(0);
/// Under SEV-ES: the exit code of the #VC the last such NMI interrupted.
pub static NMI_INTERRUPTED_VC: AtomicU64 = AtomicU64::new(0);
/// Where the frame of the last handled breakpoint or NMI was (its address): tells the tests
/// which stack the handler ran on.
pub static LAST_FRAME: AtomicU64 = AtomicU64::new(0);

/// Installs the boot CPU's GDT, TSS and IDT. Call once, first thing in the kernel.
pub fn init() {
    x86::interrupts::set_handler(handle);
    let tss = BOOT_TSS.call_once(|| Tss::new(BOOT_IST.tops()));
    let gdt = BOOT_GDT.call_once(|| Gdt::new(tss));
    // SAFETY: the boot CPU's own GDT and TSS, 'static, loaded once.
    unsafe { gdt.load() };
    // SAFETY: the GDT and TSS with the boot CPU's IST stacks were just loaded.
    unsafe { x86::interrupts::load_idt() };
}

/// The boot CPU's IST stack `slot` (1-based) as (lowest address, top).
pub fn boot_ist_stack(slot: u8) -> (u64, u64) {
    let top = BOOT_IST.tops()[usize::from(slot) - 1];
    let above = if slot == x86::gdt::ist::NMI {
        x86::gdt::NMI_SCRATCH as u64
    } else {
        0
    };
    (top + above - x86::gdt::IST_STACK_SIZE as u64, top)
}

/// Loads the running application processor's own GDT (with its TSS and IST stacks, from
/// `x86::gdt::leaked_for_new_cpu`, kept by `crate::smp` for as long as the CPU exists) and the
/// shared IDT. `again` when this CPU loaded `gdt` before and was reset since (back online).
pub fn init_ap(gdt: &'static Gdt, again: bool) {
    if again {
        // SAFETY: this CPU's own GDT, loaded by this CPU before it went offline; no other CPU
        // uses it.
        unsafe { gdt.reload() };
    } else {
        // SAFETY: this CPU's own GDT and TSS, loaded for the first time.
        unsafe { gdt.load() };
    }
    // SAFETY: the GDT and TSS with this CPU's IST stacks were just loaded.
    unsafe { x86::interrupts::load_idt() };
}

/// The handler for every vector. A frame without its error code is an injected interrupt, and
/// every vector the kernel does not expect ends the run (see the module docs).
fn handle(frame: &mut InterruptFrame) {
    if frame.lacks_its_error_code() {
        // A copy first: the line below may raise #VC, delivered over this frame (it stayed on
        // the IST stack).
        let copy = *frame;
        say(format_args!(
            "kernel: vector {} arrived without the error code its exceptions push: an \
             injected interrupt, not the exception (in the dump, from the error code on, each \
             field holds the next one's value)",
            copy.vector
        ));
        fatal(copy, GuestReason::MissingErrorCode)
    }
    match frame.vector as u8 {
        vector::BREAKPOINT => {
            LAST_FRAME.store(frame as *const InterruptFrame as u64, Ordering::Release);
            breakpoint()
        }
        vector::NMI => nmi(frame),
        vector::DEBUG => debug(frame, DebugVia::Idt),
        crate::smp::WAKE_VECTOR => crate::apic::get().eoi(),
        // A spurious interrupt is not in service: nothing to acknowledge.
        x86::apic::SPURIOUS_VECTOR => {}
        vector::INVALID_OPCODE if UD_ARMED.swap(false, Ordering::AcqRel) => {
            NESTED_UD.fetch_add(1, Ordering::AcqRel);
            frame.rip += 2; // past the `ud2`
        }
        vector::VMM_COMMUNICATION if crate::sev::active() => crate::sev::handle_vc(frame),
        v if v >= FIRST_INTERRUPT => {
            say(format_args!(
                "kernel: interrupt on vector {v:#x}, which nothing of the kernel's raises"
            ));
            fatal(*frame, GuestReason::UnexpectedInterrupt)
        }
        _ => fatal(*frame, GuestReason::UnexpectedException),
    }
}

/// The first vector that is not an exception's.
const FIRST_INTERRUPT: u8 = 32;

/// Prints a line on the way to [`fatal`], when printing can work: always without SEV-ES; under
/// SEV-ES once the running CPU's GHCB is up (before, the line's #VC would fail and terminate
/// with the reason of that failure instead of the caller's).
fn say(line: fmt::Arguments) {
    if !crate::sev::active() || crate::sev::can_print() {
        x86::serial::force_unlock();
        x86::serial_println!("{line}");
    }
}

/// Ends the run for an event the kernel does not handle: the register dump, then, under SEV-ES,
/// a termination request with `reason`; without SEV-ES the failure exit
/// (`x86::interrupts::fatal`). Never the debug exit alone under SEV-ES: it is a port write the
/// hypervisor may ignore, and the event may be the hypervisor's doing.
///
/// `frame` is a copy, taken before anything printed: a print under SEV-ES is a #VC, which may
/// be delivered over the original (an injected frame stays on the IST stack).
fn fatal(frame: InterruptFrame, reason: GuestReason) -> ! {
    if !crate::sev::active() {
        x86::interrupts::fatal(&frame)
    }
    say(format_args!("{frame}"));
    crate::sev::terminate(reason.into())
}

/// A test's NMI hook (`crate::testing::nmi_storm`), as the address of a `fn(&InterruptFrame)`;
/// 0 for none. While one is set every NMI is expected: the hook runs in the NMI handler before
/// NMI_COMPLETE, on every CPU.
static NMI_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Sets the NMI hook (`None` clears it).
pub fn set_nmi_hook(hook: Option<fn(&InterruptFrame)>) {
    NMI_HOOK.store(hook.map_or(0, |h| h as usize), Ordering::Release);
}

/// The NMI handler: an NMI a test expects (a hook is set, or [`EXPECT_NMI`] announced it) is
/// counted and resumed, after NMI_COMPLETE under SEV-ES; any other is fatal. `x86::interrupts`
/// runs it once per NMI, never nested.
fn nmi(frame: &mut InterruptFrame) {
    let hook = NMI_HOOK.load(Ordering::Acquire);
    if hook == 0 && !EXPECT_NMI.swap(false, Ordering::AcqRel) {
        fatal(*frame, GuestReason::UnexpectedException)
    }
    LAST_FRAME.store(frame as *const InterruptFrame as u64, Ordering::Release);
    if hook != 0 {
        // SAFETY: `set_nmi_hook` stores nothing but the addresses of `fn(&InterruptFrame)`s.
        let hook: fn(&InterruptFrame) = unsafe { core::mem::transmute(hook) };
        hook(frame);
    }
    if crate::sev::active() {
        let done = crate::sev::nmi_complete();
        if let (true, Some(vc)) = (done.borrowed, done.interrupted_vc) {
            NMI_INTERRUPTED_VC.store(vc, Ordering::Release);
            NMIS_IN_VC.fetch_add(1, Ordering::AcqRel);
        }
    }
    NMIS.fetch_add(1, Ordering::AcqRel);
}

/// The breakpoint handler: counts, and does what the tests asked for. It runs on the
/// interrupted stack (below its red zone), so a nested exception here reuses the general IST
/// stack while this frame is still live.
fn breakpoint() {
    BREAKPOINTS.fetch_add(1, Ordering::AcqRel);
    if NEST_UD.swap(false, Ordering::AcqRel) {
        UD_ARMED.store(true, Ordering::Release);
        // SAFETY: raises #UD, which `handle` resumes after (armed just above).
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
    if CLOBBER_SSE.swap(false, Ordering::AcqRel) {
        // SAFETY: only writes XMM registers, which are declared clobbered.
        unsafe {
            asm!(
                "pcmpeqd xmm0, xmm0",
                "pcmpeqd xmm1, xmm1",
                "pcmpeqd xmm2, xmm2",
                "pcmpeqd xmm3, xmm3",
                "pcmpeqd xmm4, xmm4",
                "pcmpeqd xmm5, xmm5",
                "pcmpeqd xmm6, xmm6",
                "pcmpeqd xmm7, xmm7",
                "pcmpeqd xmm8, xmm8",
                "pcmpeqd xmm9, xmm9",
                "pcmpeqd xmm10, xmm10",
                "pcmpeqd xmm11, xmm11",
                "pcmpeqd xmm12, xmm12",
                "pcmpeqd xmm13, xmm13",
                "pcmpeqd xmm14, xmm14",
                "pcmpeqd xmm15, xmm15",
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
                out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
                options(nomem, nostack),
            )
        };
    }
}

/// RFLAGS.TF: single-step, a #DB after each instruction.
pub const RFLAGS_TF: u64 = 1 << 8;
/// DR6.BS: the #DB was a single-step trap.
pub const DR6_BS: u64 = 1 << 14;
/// DR6's value with no debug condition recorded (its reserved bits read as ones).
const DR6_RESET: u64 = 0xffff_0ff0;

/// How a #DB reached [`debug`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugVia {
    /// Through IDT vector 1: without SEV-ES, or a #DB the hypervisor does not intercept (ICEBP
    /// never is: the #DB intercept does not cover it, APM vol. 2 "#DB (Debug)").
    Idt,
    /// Handed back by the #VC handler (`crate::sev::handle_vc`): the hypervisor intercepts
    /// #DB (KVM does unless DebugSwap gives the guest its debug registers; the simulator does),
    /// which SEV-ES turns into a #VC with exit code 0x41.
    Vc,
}

/// One #DB a test armed, as [`debug`] saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugTrap {
    /// Where the interrupted code resumes: past the instruction, for a trap.
    pub rip: u64,
    /// DR6 as the handler read it.
    pub dr6: u64,
    pub via: DebugVia,
}

/// The most #DBs one arming records ([`debug_traps`]).
const DEBUG_TRAPS_MAX: usize = 8;
/// #DBs still expected ([`expect_debug`]).
static DEBUG_EXPECTED: AtomicUsize = AtomicUsize::new(0);
/// #DBs taken since the last [`expect_debug`].
static DEBUG_TAKEN: AtomicUsize = AtomicUsize::new(0);
/// The first [`DEBUG_TRAPS_MAX`] of them: RIP, DR6, and 1 if it came through #VC.
static DEBUG_LOG: [[AtomicU64; 3]; DEBUG_TRAPS_MAX] =
    [const { [const { AtomicU64::new(0) }; 3] }; DEBUG_TRAPS_MAX];

/// Arms [`debug`] for the next `n` #DBs (forgetting those recorded before): each is recorded
/// and resumed, and the last also clears RFLAGS.TF, ending a single-step.
pub fn expect_debug(n: usize) {
    DEBUG_TAKEN.store(0, Ordering::Release);
    DEBUG_EXPECTED.store(n, Ordering::Release);
}

/// The #DBs taken since [`expect_debug`] (the first [`DEBUG_TRAPS_MAX`]), in order, and how
/// many of those expected did not come.
pub fn debug_traps() -> (alloc::vec::Vec<DebugTrap>, usize) {
    let taken = DEBUG_TAKEN.load(Ordering::Acquire).min(DEBUG_TRAPS_MAX);
    let traps = DEBUG_LOG[..taken]
        .iter()
        .map(|[rip, dr6, vc]| DebugTrap {
            rip: rip.load(Ordering::Acquire),
            dr6: dr6.load(Ordering::Acquire),
            via: match vc.load(Ordering::Acquire) {
                0 => DebugVia::Idt,
                _ => DebugVia::Vc,
            },
        })
        .collect();
    (traps, DEBUG_EXPECTED.load(Ordering::Acquire))
}

/// The #DB handler, for a #DB through IDT vector 1 and for one the #VC handler hands back
/// (Linux's `vc_handle_db_exception` -> `exc_debug`); `frame` is the interrupted context either
/// way. It reads DR6 once and resets it ([`take_dr6`]).
///
/// The kernel has no debugger: nothing sets RFLAGS.TF or enables a breakpoint in DR7 but a
/// test, which says how many #DBs it expects ([`expect_debug`]). Those are recorded and
/// resumed. Any other #DB ends the run like every unexpected exception: a line naming it, the
/// register dump, the failure exit. It is a leaked TF or breakpoint (a bug that resuming would
/// hide, and a TF that stays set traps again after every instruction) or an event the
/// hypervisor injected (SEV-ES lets it inject any), and resuming a fault-type #DB (an
/// instruction breakpoint) without RFLAGS.RF would take it again forever.
///
/// No #DB comes from inside the #VC path, so none can loop through it: #VC delivery (an
/// interrupt gate) clears TF, so neither the #VC handler nor this handler called from it is
/// ever single-stepped; no breakpoint is armed; a #DB handed back by the #VC handler comes
/// after the GHCB was released, so this handler's own #VCs (a print) are served normally, and
/// it never re-enters the #VC core. Either way it runs on the interrupted stack, where the
/// moving entry stub put it (`x86::interrupts`), not on an IST stack a nested event reuses.
pub fn debug(frame: &mut InterruptFrame, via: DebugVia) {
    let dr6 = take_dr6();
    let Ok(left) =
        DEBUG_EXPECTED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
    else {
        x86::serial::force_unlock();
        x86::serial_println!(
            "kernel: unexpected #DB ({via:?}) at RIP {:#x}, DR6 {dr6:#x}",
            frame.rip
        );
        fatal(*frame, GuestReason::UnexpectedException)
    };
    let i = DEBUG_TAKEN.fetch_add(1, Ordering::AcqRel);
    if let Some([rip, dr6_slot, vc]) = DEBUG_LOG.get(i) {
        rip.store(frame.rip, Ordering::Release);
        dr6_slot.store(dr6, Ordering::Release);
        vc.store(u64::from(via == DebugVia::Vc), Ordering::Release);
    }
    if left == 1 {
        frame.rflags &= !RFLAGS_TF;
    }
}

/// Reads DR6 and writes [`DR6_RESET`] back: the CPU sets DR6's status bits on a #DB and never
/// clears them, so each #DB must find them clear to tell what caused it.
///
/// Under SEV-ES DR6 is guest state (in the VMSA) that the guest reads and writes without an
/// exit: the GHCB protocol has no NAE event for it, and neither KVM nor the simulator intercept
/// it (one that did would make this a #VC the #VC core refuses). A #DB the hypervisor
/// intercepts has updated DR6 before the intercept, as on AMD hardware (KVM's `db_interception`
/// reads the new bits from the VMCB), so a #DB through #VC reads the same DR6 as one through
/// the IDT.
fn take_dr6() -> u64 {
    let dr6;
    // SAFETY: reading DR6 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack, preserves_flags)) };
    // SAFETY: writing DR6 only clears the recorded debug conditions, which were just read.
    unsafe { asm!("mov dr6, {}", in(reg) DR6_RESET, options(nomem, nostack, preserves_flags)) };
    dr6
}
