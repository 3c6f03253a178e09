//! The #VC round-trip benchmarks, run by name only: CPUIDs between the BENCH_START and
//! BENCH_END hypercalls, each a full round trip through the simulator (CPUID intercept, software
//! #VC delivery, the guest's #VC handler, VMGEXIT, the simulator's answer, the resumes), after
//! which the simulator prints a `SIM-BENCH` line with the time they took.
//!
//! - `bench`: the guest's real #VC path: the entry stub (all registers and SSE state saved),
//!   the `sev` crate's #VC core (instruction fetch, CPUID emulation, reply validation) and its
//!   GHCB transport.
//! - `bench_raw`: the platform's round trip. For the duration of the loop, IDT gate 29 leads to
//!   a minimal handler that does only what any SEV-ES guest must: write the CPUID request into
//!   the GHCB's shared view, VMGEXIT, check the reply and copy the registers back, step over the
//!   instruction. The GHCB MSR is written once, before the loop. The simulator's side is the
//!   same as for `bench`.

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use handoff::sim_hypercall::{BENCH_END, BENCH_START};
use sev::exit_code::ExitCode;
use sev::ghcb::{GhcbField, GhcbTransport, VALID_BITMAP_OFFSET};
use sev::msr_protocol::{GHCB_PROTOCOL_VERSION, GhcbMsr};
use x86::idt::{Idt, vector};

use super::{Outcome, counting};
use crate::ghcb;
use sev::guest::vmmcall;

/// Iterations of each benchmark.
const ITERATIONS: u64 = 20_000;
/// CPUID subleaves the loop cycles through: more than the #VC core's 16-entry CPUID cache
/// holds, so every iteration of `bench` misses it and makes a full round trip (#VC, VMGEXIT,
/// IRET). `bench_raw` has no cache; it asks the same questions.
const SUBLEAVES: u64 = 32;

/// The CPUIDs both benchmarks time.
fn cpuid_loop() {
    for i in 0..ITERATIONS {
        core::hint::black_box(x86::msr::cpuid(0, (i % SUBLEAVES) as u32));
    }
}

/// The guest's full #VC path.
pub fn bench() -> Outcome {
    vmmcall(BENCH_START, 0);
    let ((), vcs) = counting(cpuid_loop);
    vmmcall(BENCH_END, ITERATIONS);
    vcs.expect(
        "the benchmark's CPUIDs",
        ExitCode::Cpuid,
        ITERATIONS..=ITERATIONS,
    )
}

/// The GHCB's shared view, for [`raw_vc`].
static RAW_GHCB: AtomicU64 = AtomicU64::new(0);
/// The entry stub of vector 29, where [`raw_vc`] sends any #VC but a plain CPUID.
static FULL_VC: AtomicU64 = AtomicU64::new(0);
/// CPUIDs [`raw_vc`] answered.
static RAW_ANSWERED: AtomicU64 = AtomicU64::new(0);
/// Replies [`raw_vc`] found wrong (not success, or without all four registers).
static RAW_BAD_REPLIES: AtomicU64 = AtomicU64::new(0);

/// The IDT of `bench_raw`'s loop: the usual one, but gate 29 leads to [`raw_vc`] (on the same
/// IST stack).
static RAW_IDT: spin::Once<Idt> = spin::Once::new();

const fn valid_mask(fields: &[GhcbField], word: usize) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < fields.len() {
        let bit = fields[i].valid_bit();
        if bit / 64 == word {
            mask |= 1 << (bit % 64);
        }
        i += 1;
    }
    mask
}

/// What the request marks valid: RAX (leaf), RCX (subleaf) and the exit code and information.
const REQUEST: &[GhcbField] = &[
    GhcbField::Rax,
    GhcbField::Rcx,
    GhcbField::SwExitCode,
    GhcbField::SwExitInfo1,
    GhcbField::SwExitInfo2,
];
/// What a CPUID reply must mark valid: the four registers and SW_EXITINFO1.
const REPLY: &[GhcbField] = &[
    GhcbField::Rax,
    GhcbField::Rbx,
    GhcbField::Rcx,
    GhcbField::Rdx,
    GhcbField::SwExitInfo1,
];
const _: () = assert!(
    VALID_BITMAP_OFFSET == 0x3f0,
    "the bitmap is two qwords at 0x3f0"
);

/// The minimal #VC handler of `bench_raw` (an IDT entry point: error code on the stack, then
/// the interrupt frame). A #VC for the plain two-byte CPUID (`0F A2`) is answered through the
/// GHCB: RAX and RCX go in, the reply must be success with RAX, RBX, RCX and RDX, which come
/// back zero-extended as CPUID writes them; RIP steps over the instruction. A bad reply is
/// counted (the check fails) and the registers are left as the hypervisor's reply has them.
/// Anything else goes, untouched, to the usual entry stub, whose handler then finds the GHCB
/// channel taken by `bench_raw` and terminates the run.
///
/// Only RAX, RBX, RCX and RDX change, the registers CPUID writes; the GHCB MSR must hold the
/// GHCB GPA.
#[unsafe(naked)]
extern "C" fn raw_vc() {
    naked_asm!(
        "cmp qword ptr [rsp], {cpuid_exit}",
        "jne 3f",
        "push rbx",
        "mov rbx, [rsp + 16]",
        "cmp word ptr [rbx], 0xa20f",
        "pop rbx",
        "jne 3f",
        // The request. RBX and RDX are free: CPUID overwrites them.
        "mov rdx, [rip + {ghcb}]",
        "mov [rdx + {rax}], rax",
        "mov [rdx + {rcx}], rcx",
        "mov qword ptr [rdx + {exit_code}], {cpuid_exit}",
        "mov qword ptr [rdx + {info1}], 0",
        "mov qword ptr [rdx + {info2}], 0",
        "mov rbx, {req0}",
        "mov [rdx + {bitmap}], rbx",
        "mov rbx, {req1}",
        "mov [rdx + {bitmap} + 8], rbx",
        // VMGEXIT.
        ".byte 0xf3, 0x0f, 0x01, 0xd9",
        // The reply: success, with every register valid.
        "cmp dword ptr [rdx + {info1}], 0",
        "jne 2f",
        "mov rbx, {rep0}",
        "and rbx, [rdx + {bitmap}]",
        "mov rax, {rep0}",
        "cmp rbx, rax",
        "jne 2f",
        "mov rbx, {rep1}",
        "and rbx, [rdx + {bitmap} + 8]",
        "mov rax, {rep1}",
        "cmp rbx, rax",
        "jne 2f",
        "inc qword ptr [rip + {answered}]",
        "jmp 1f",
        "2:",
        "inc qword ptr [rip + {bad}]",
        "1:",
        "mov eax, [rdx + {rax}]",
        "mov ebx, [rdx + {rbx}]",
        "mov ecx, [rdx + {rcx}]",
        "mov edx, [rdx + {rdx}]",
        "add qword ptr [rsp + 8], 2",
        "add rsp, 8",
        "iretq",
        "3:",
        "jmp qword ptr [rip + {full}]",
        cpuid_exit = const ExitCode::Cpuid.raw(),
        ghcb = sym RAW_GHCB,
        full = sym FULL_VC,
        answered = sym RAW_ANSWERED,
        bad = sym RAW_BAD_REPLIES,
        rax = const GhcbField::Rax.offset(),
        rbx = const GhcbField::Rbx.offset(),
        rcx = const GhcbField::Rcx.offset(),
        rdx = const GhcbField::Rdx.offset(),
        exit_code = const GhcbField::SwExitCode.offset(),
        info1 = const GhcbField::SwExitInfo1.offset(),
        info2 = const GhcbField::SwExitInfo2.offset(),
        bitmap = const VALID_BITMAP_OFFSET,
        req0 = const valid_mask(REQUEST, 0),
        req1 = const valid_mask(REQUEST, 1),
        rep0 = const valid_mask(REPLY, 0),
        rep1 = const valid_mask(REPLY, 1),
    )
}

/// The platform's round trip, through [`raw_vc`].
pub fn bench_raw() -> Outcome {
    vmmcall(BENCH_START, 0);
    let prepared = ghcb::with(|ch| {
        // The channel stays taken for the whole loop: nothing else may use the GHCB meanwhile.
        let t = ch.ghcb.as_mut()?;
        t.ghcb().prepare(GHCB_PROTOCOL_VERSION);
        RAW_GHCB.store(core::ptr::from_mut(t.ghcb()) as u64, Ordering::Relaxed);
        ch.msr.write(ghcb::gpa());
        let idt = RAW_IDT.call_once(|| {
            let usual = x86::interrupts::idt();
            FULL_VC.store(
                usual.gate(vector::VMM_COMMUNICATION).handler(),
                Ordering::Relaxed,
            );
            Idt::new(|n| {
                if n == vector::VMM_COMMUNICATION {
                    raw_vc as *const () as u64
                } else {
                    usual.gate(n).handler()
                }
            })
        });
        let before = RAW_ANSWERED.load(Ordering::Relaxed);
        // SAFETY: this vCPU's GDT and TSS are loaded (interrupts::init); every gate but 29 is
        // the usual entry stub, and gate 29's handler is an entry point for the #VC frame on
        // the same IST stack, which hands any #VC but CPUID to the usual stub. The GHCB MSR
        // holds the GPA (written above) and the channel is ours until the usual IDT is back.
        unsafe { idt.load() };
        cpuid_loop();
        // SAFETY: as in `interrupts::init`: GDT and TSS loaded.
        unsafe { x86::interrupts::load_idt() };
        Some(RAW_ANSWERED.load(Ordering::Relaxed) - before)
    });
    vmmcall(BENCH_END, ITERATIONS);
    let answered = prepared.ok_or("no GHCB registered")?;
    let bad = RAW_BAD_REPLIES.load(Ordering::Relaxed);
    ensure!(
        bad == 0,
        "{bad} CPUID replies were not success with RAX..RDX"
    );
    ensure!(
        answered == ITERATIONS,
        "the minimal handler answered {answered} CPUIDs, expected {ITERATIONS}"
    );
    Ok(())
}
