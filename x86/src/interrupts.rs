//! Interrupt and exception entry: 256 stubs, one register frame, one Rust dispatch function.
//!
//! # Why every gate is on an IST stack
//! The precompiled `core` uses the red zone (128 bytes below RSP that leaf functions use without
//! moving RSP). A CPU that pushes an interrupt frame onto the interrupted stack would overwrite
//! it, so every gate of the [`Idt`] names an IST slot and the CPU always pushes onto a known-good
//! stack ([`crate::gdt::ist`]).
//!
//! # Nesting
//! An IST stack is reused from its top each time its vector fires, so a second exception on the
//! same IST while the first still uses it would destroy the first frame. Hence three kinds of
//! entry:
//!
//! - **Moving** (every vector but NMI, #DF and #MC): when the interrupted code ran at CPL 0, the
//!   stub copies the hardware frame (and the vector and error code) from the general IST stack to
//!   the interrupted stack, 16-byte aligned below `RSP - 128` (below the red zone), and continues
//!   there. The general IST stack is free again after a handful of instructions, so a handler may
//!   fault (#PF, #UD, a #VC for port I/O, int3) and nest as deeply as its stack allows; each
//!   nested frame lands below the previous one's red zone.
//! - **Staying** (#DF, #MC): these run on their own IST stacks. A machine check can arrive at
//!   any instruction, including inside a moving stub before it left the general IST stack, and a
//!   #DF may be caused by the very stack a moving stub would switch to. Neither returns twice.
//! - **NMI**: its own IST stack, and the handler runs there, never nested (below).
//!
//! A fault *inside* the copy (the interrupted stack is unmapped: a stack overflow) re-enters on
//! the general IST stack and overwrites the frame being copied; the stub recognises that case by
//! the faulting RIP, stays on the IST stack, and `dispatch` reports it as fatal instead of
//! calling the handler.
//!
//! # NMIs
//! A second NMI can arrive while the handler of the first still runs: under SEV-ES the handler
//! sends NMI_COMPLETE before its IRET and the hypervisor may inject the next NMI right after it
//! (at worst at the instruction after the VMGEXIT), and on bare metal any exception inside the
//! handler unblocks NMIs with its IRETQ. The CPU delivers that NMI at the top of the NMI stack
//! again. The scheme is Linux's (`entry_64.S`, "nested NMIs"), simplified by our fixed frame:
//!
//! - The top [`NMI_LANDING`] bytes of the NMI stack are a landing zone: a first-level NMI copies
//!   its frame (hardware frame, vector, error code) just below it and runs its handler there,
//!   so a nested NMI's hardware frame overwrites nothing live.
//! - A per-CPU state word above the stack's top ([`crate::gdt::NMI_SCRATCH`]: the TSS address,
//!   then the state) says whether this CPU's NMI handler is executing. A nested NMI (state not
//!   idle) does not run the handler: it marks the state *latched* and returns at once, without
//!   NMI_COMPLETE, so the hypervisor keeps further NMIs back.
//! - Before its IRETQ the first-level NMI looks at the state: latched means one more NMI was
//!   delivered meanwhile, and the handler runs again (on the same frame), which sends that
//!   NMI's NMI_COMPLETE. Its last instructions (from `x86_nmi_exit_check` to the IRETQ) form a
//!   window in which the state may already read idle while the frame is still live: a nested
//!   NMI that interrupted this window (known by its RIP) latches and returns to the start of
//!   the window, so the check sees the latch.
//!
//! So the handler runs once per delivered NMI, one run at a time, on a bounded stack, however
//! the NMIs are timed. Under SEV-ES that makes every NMI, every handler run and every
//! NMI_COMPLETE match one to one; on bare metal NMIs that arrive while one is latched merge
//! (the CPU itself holds only one pending NMI).
//!
//! The handler may take exceptions. A moving stub puts their frames below the NMI handler's
//! stack pointer, on the NMI stack. The one problem is an NMI that interrupted a moving stub
//! *before* it left the general IST stack: an exception of the NMI handler would be delivered
//! at that stack's top, over the interrupted stub's frame (the #VC case under SEV-ES: the NMI
//! arrives as a #VC is delivered, and its handler does port I/O or CPUID). As Linux does for
//! its #VC stack (`__sev_es_ist_enter`), the NMI entry then points the TSS's general IST slot
//! below the interrupted stack pointer for the duration of the handler, and puts it back after.
//! The TSS is found through the scratch word that `Gdt::load` writes.
//!
//! [`in_nmi`] tells code that may run in an NMI handler (the console) not to wait for a lock the
//! interrupted code may hold.
//!
//! # The frame
//! Each stub pushes a dummy error code where the CPU pushes none and the vector, then the common
//! path saves all 15 general registers and CR2 (before anything can fault again), saves the SSE
//! state with `fxsave64` into a 16-byte aligned area below the frame, clears DF and calls
//! `dispatch` with a `&mut` [`InterruptFrame`]. A handler may change the frame (e.g. advance
//! RIP past an instruction); the stub restores SSE state and registers from it and returns with
//! IRETQ. The handler itself is registered per binary with [`set_handler`].
//!
//! FXSAVE covers x87, MMX and XMM0-15, everything the binaries use: they are built for the
//! baseline x86-64 target (SSE2, no AVX), so no YMM/ZMM state exists to be clobbered.

use crate::gdt::{IST_STACK_SIZE, NMI_SCRATCH, Tss, ist};
use crate::idt::{Idt, has_error_code, vector};
use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stride between the entry stubs: each is padded to 16 bytes.
const STUB_STRIDE: u64 = 16;

/// The top bytes of the NMI stack that a nested NMI may write: its hardware frame (40 bytes),
/// the vector and error code its stub pushes (16) and the two registers the NMI entry saves
/// (16), rounded up to 16. A first-level NMI runs below them.
pub const NMI_LANDING: u64 = 80;

/// What the entry stubs save, lowest address first: the saved CR2 and general registers, then
/// what the stub pushed (vector, error code), then the hardware frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InterruptFrame {
    /// CR2 at entry (the faulting address of a #PF; meaningless for other vectors).
    pub cr2: u64,
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl InterruptFrame {
    /// Whether the CPU built this frame without the error code its vector's stub expects: an
    /// external interrupt (or a software `int n`) on a vector for which exceptions push one
    /// (`idt::has_error_code`). Under SEV-ES the hypervisor injects whatever it likes through
    /// the VMCB's EVENTINJ, which the guest does not protect (Heckler): an interrupt on #PF or
    /// #VC would have the guest handle a fault or a hypervisor request that never happened.
    ///
    /// Such a frame is one word short, so every field from `error_code` up holds the next one:
    /// the `cs` slot holds RFLAGS, whose bit 1 is always set, where a frame of code running at
    /// CPL 0 holds a selector with RPL 0 (none of the binaries runs anything at CPL 3, so such
    /// a frame is no frame of theirs either). The entry stub's CPL-3 test (`test [rsp + 40], 3`)
    /// reads the same slot: it keeps such a frame on the IST stack, which is the binary's own,
    /// rather than follow the shifted "stack pointer". A handler must not resume from such a
    /// frame (IRETQ would pop the wrong words) and should copy what it reports before it raises
    /// a nested exception: that one is delivered at the top of the same IST stack, over this
    /// frame's upper fields.
    ///
    /// On vectors without an error code an injected interrupt builds an ordinary frame; only
    /// the handler can tell that nothing there should have happened.
    pub fn lacks_its_error_code(&self) -> bool {
        let vector = u8::try_from(self.vector).ok();
        vector.is_some_and(has_error_code) && self.cs & 3 != 0
    }
}

/// Mnemonic and name of exception `vector` (0..32), or `None` for external interrupts.
pub const fn exception_name(vector: u64) -> Option<(&'static str, &'static str)> {
    Some(match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        9 => ("#CSO", "coprocessor segment overrun"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point error"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        28 => ("#HV", "hypervisor injection"),
        29 => ("#VC", "VMM communication"),
        30 => ("#SX", "security exception"),
        15 | 22..=27 | 31 => ("#RES", "reserved"),
        _ => return None,
    })
}

/// The register dump printed for an unexpected exception: a first line starting with
/// `EXCEPTION <mnemonic>` (or `INTERRUPT` for vectors from 32), then one `NAME=value` per
/// register.
impl fmt::Display for InterruptFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match exception_name(self.vector) {
            Some((mnemonic, name)) => {
                write!(f, "EXCEPTION {mnemonic} ({name}, vector {})", self.vector)?
            }
            None => write!(f, "INTERRUPT vector {}", self.vector)?,
        }
        writeln!(f, " error code {:#x}", self.error_code)?;
        let rows: [[(&str, u64); 4]; 6] = [
            [
                ("CR2", self.cr2),
                ("RIP", self.rip),
                ("RSP", self.rsp),
                ("RFLAGS", self.rflags),
            ],
            [
                ("CS", self.cs),
                ("SS", self.ss),
                ("RAX", self.rax),
                ("RBX", self.rbx),
            ],
            [
                ("RCX", self.rcx),
                ("RDX", self.rdx),
                ("RSI", self.rsi),
                ("RDI", self.rdi),
            ],
            [
                ("RBP", self.rbp),
                ("R8", self.r8),
                ("R9", self.r9),
                ("R10", self.r10),
            ],
            [
                ("R11", self.r11),
                ("R12", self.r12),
                ("R13", self.r13),
                ("R14", self.r14),
            ],
            [("R15", self.r15), ("", 0), ("", 0), ("", 0)],
        ];
        for (i, row) in rows.iter().enumerate() {
            for (j, (name, value)) in row.iter().filter(|(n, _)| !n.is_empty()).enumerate() {
                if j > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{name}={value:#018x}")?;
            }
            if i + 1 < rows.len() {
                f.write_str("\n")?;
            }
        }
        Ok(())
    }
}

/// The function each binary registers to handle every interrupt and exception. It returns to
/// resume the interrupted code (with any changes it made to the frame), or calls [`fatal`].
pub type Handler = fn(&mut InterruptFrame);

static HANDLER: spin::Once<Handler> = spin::Once::new();

/// Registers the binary's handler (the first registration wins; later calls change nothing).
pub fn set_handler(handler: Handler) {
    HANDLER.call_once(|| handler);
}

/// Prints the register dump of an exception nobody handles and ends the run with a failure:
/// QEMU's debug exit (status 35), then halting for good on anything else. Never returns, never
/// exits with success.
pub fn fatal(frame: &InterruptFrame) -> ! {
    crate::serial::force_unlock();
    crate::serial_println!("{frame}");
    crate::qemu::debug_exit(crate::qemu::ExitStatus::Failure);
    crate::qemu::halt_forever()
}

/// An IDT whose 256 gates lead to the entry stubs (for a caller that keeps its own; most use
/// [`load_idt`]).
pub fn idt() -> Idt {
    let stubs = stubs_address();
    Idt::new(|n| stubs + u64::from(n) * STUB_STRIDE)
}

/// The binary's one IDT, shared by all its CPUs: 256 gates to the entry stubs.
static IDT: spin::Once<Idt> = spin::Once::new();

/// Loads the IDT (built on first use) on the running CPU.
///
/// # Safety
/// The running CPU has loaded its own GDT and TSS ([`crate::gdt::Gdt::load`]), with IST stacks
/// no other CPU uses.
pub unsafe fn load_idt() {
    let idt = IDT.call_once(idt);
    // SAFETY: the gates lead to the entry stubs; the caller loaded GDT and TSS.
    unsafe { idt.load() };
}

/// The address of vector 0's stub.
fn stubs_address() -> u64 {
    let a;
    // SAFETY: computes an address, touches nothing.
    unsafe {
        core::arch::asm!("lea {}, [rip + x86_interrupt_stubs]", out(reg) a, options(pure, nomem, nostack, preserves_flags))
    };
    a
}

/// The range of RIPs in which a moving stub writes to the interrupted stack.
fn move_window() -> (u64, u64) {
    let (start, end);
    // SAFETY: computes addresses, touches nothing.
    unsafe {
        core::arch::asm!(
            "lea {}, [rip + x86_interrupt_move_window]",
            "lea {}, [rip + x86_interrupt_move_window_end]",
            out(reg) start, out(reg) end,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    (start, end)
}

/// Called by every entry stub but the NMI's with the saved frame.
extern "C" fn dispatch(frame: &mut InterruptFrame) {
    let (start, end) = move_window();
    let staying = matches!(
        frame.vector as u8,
        vector::DOUBLE_FAULT | vector::MACHINE_CHECK
    );
    if !staying && (start..end).contains(&frame.rip) {
        crate::serial::force_unlock();
        crate::serial_println!(
            "fault while moving an interrupt frame to the interrupted stack (stack overflow?)"
        );
        fatal(frame);
    }
    handle(frame)
}

/// Hands `frame` to the registered handler (fatal without one).
fn handle(frame: &mut InterruptFrame) {
    match HANDLER.get() {
        Some(handler) => handler(frame),
        None => fatal(frame),
    }
}

/// Called by the NMI entry for each NMI it handles, with the saved frame and the TSS address
/// from the scratch words (0 if `Gdt::load` never wrote it). When the NMI interrupted code on
/// the general IST stack (a moving stub before its move), the general IST slot points below
/// that code's stack pointer while the handler runs (see the module docs).
extern "C" fn dispatch_nmi(frame: &mut InterruptFrame, tss: u64) {
    // SAFETY: `Gdt::load` wrote the address of this CPU's 'static TSS.
    let tss = (tss != 0).then(|| unsafe { &*(tss as *const Tss) });
    let shifted = tss.and_then(|tss| {
        let top = tss.ist(ist::GENERAL);
        let on_general = (top - IST_STACK_SIZE as u64..top).contains(&frame.rsp);
        // SAFETY: this CPU's TSS; everything below the interrupted stack pointer on the general
        // IST stack is free (the interrupted stub only uses what lies above it).
        on_general.then(|| (tss, unsafe { tss.set_ist(ist::GENERAL, frame.rsp & !15) }))
    });
    handle(frame);
    if let Some((tss, top)) = shifted {
        // SAFETY: puts back the value taken above, on the same CPU.
        unsafe { tss.set_ist(ist::GENERAL, top) };
    }
}

/// The addresses of the NMI exit window's instructions, in order: the check of the state, its
/// branch, the state's clearing and the IRETQ. A nested NMI at any of them must make the
/// handler run again (see the module docs): for tests that place an NMI there.
pub fn nmi_exit_window() -> [u64; 4] {
    let (check, branch, clear, iret);
    // SAFETY: computes addresses, touches nothing.
    unsafe {
        core::arch::asm!(
            "lea {}, [rip + x86_nmi_exit_check]",
            "lea {}, [rip + x86_nmi_exit_branch]",
            "lea {}, [rip + x86_nmi_exit_clear]",
            "lea {}, [rip + x86_nmi_iret]",
            out(reg) check, out(reg) branch, out(reg) clear, out(reg) iret,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    [check, branch, clear, iret]
}

/// Most CPUs whose NMI stacks [`in_nmi`] knows (CPUs beyond are never reported as in an NMI,
/// so a program runs no more CPUs than this).
pub const MAX_NMI_STACKS: usize = 256;
/// The NMI stack tops of the CPUs that loaded their GDT ([`register_nmi_stack`]).
static NMI_STACKS: [AtomicU64; MAX_NMI_STACKS] = [const { AtomicU64::new(0) }; MAX_NMI_STACKS];
static NMI_STACK_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Notes a CPU's NMI stack (its TSS's NMI top) for [`in_nmi`], once: `Gdt::load` calls it
/// each time a CPU loads its GDT.
pub(crate) fn register_nmi_stack(top: u64) {
    if nmi_stack_tops().any(|t| t == top) {
        return;
    }
    let i = NMI_STACK_COUNT.fetch_add(1, Ordering::AcqRel);
    if let Some(slot) = NMI_STACKS.get(i) {
        slot.store(top, Ordering::Release);
    }
}

/// The NMI stack tops registered so far.
fn nmi_stack_tops() -> impl Iterator<Item = u64> {
    let n = NMI_STACK_COUNT.load(Ordering::Acquire).min(MAX_NMI_STACKS);
    NMI_STACKS[..n]
        .iter()
        .map(|t| t.load(Ordering::Acquire))
        .filter(|&t| t != 0)
}

/// Whether the running CPU is inside its NMI handler (or an exception that handler took): its
/// stack pointer is on its NMI stack, where nothing else runs. Such code must not wait for a
/// lock, which the code the NMI interrupted may hold.
pub fn in_nmi() -> bool {
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags))
    };
    let below = (IST_STACK_SIZE - NMI_SCRATCH) as u64;
    nmi_stack_tops().any(|top| (top - below..top).contains(&rsp))
}

// The entry stubs. Each is 16 bytes: `push 0` (2 bytes, only where the CPU pushes no error
// code), `push imm32` vector (5 bytes, so vectors >= 128 are not sign-extended) and a jump to the
// moving, staying or NMI path. The error-code list must match `idt::has_error_code`, and the
// staying list `idt::ist_for` (both checked by the tests below, which read the assembled bytes).
core::arch::global_asm!(
    // The register frame of both the common and the NMI path: the GPRs and CR2 (RBX then
    // points at it, the `InterruptFrame`), then the SSE state on a 16-byte-aligned area below.
    // `x86_restore_frame` undoes it and drops the vector and error code, leaving RSP at the
    // hardware frame.
    ".macro x86_save_frame",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rax, cr2",
    "push rax",
    "mov rbx, rsp",
    "sub rsp, 512",
    "and rsp, -16",
    "fxsave64 [rsp]",
    ".endm",
    ".macro x86_restore_frame",
    "fxrstor64 [rsp]",
    "mov rsp, rbx",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    ".endm",
    ".pushsection .text.x86_interrupt_entry, \"ax\", @progbits",
    ".balign 16",
    ".globl x86_interrupt_stubs",
    ".hidden x86_interrupt_stubs",
    "x86_interrupt_stubs:",
    ".set x86_vec, 0",
    ".rept 256",
    ".balign 16",
    ".if (x86_vec == 8) || (x86_vec == 10) || (x86_vec == 11) || (x86_vec == 12) || (x86_vec == 13) || (x86_vec == 14) || (x86_vec == 17) || (x86_vec == 21) || (x86_vec == 29) || (x86_vec == 30)",
    ".else",
    ".byte 0x6a, 0x00",
    ".endif",
    ".byte 0x68",
    ".long x86_vec",
    ".if x86_vec == 2",
    "jmp x86_interrupt_nmi",
    ".elseif (x86_vec == 8) || (x86_vec == 18)",
    "jmp x86_interrupt_stay",
    ".else",
    "jmp x86_interrupt_move",
    ".endif",
    ".set x86_vec, x86_vec + 1",
    ".endr",
    "",
    // Moving path. Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS; after the two pushes
    // below everything is 16 bytes further up.
    ".balign 16",
    "x86_interrupt_move:",
    "push rax",
    "push rcx",
    // Interrupted at CPL 3: that stack is not ours to write (the binaries never run CPL 3).
    "test byte ptr [rsp + 40], 3",
    "jnz .Lx86_stay_here",
    // A fault inside the copy below: stay on the IST stack (dispatch reports it).
    "mov rax, [rsp + 32]",
    "lea rcx, [rip + x86_interrupt_move_window]",
    "cmp rax, rcx",
    "jb .Lx86_do_move",
    "lea rcx, [rip + x86_interrupt_move_window_end]",
    "cmp rax, rcx",
    "jb .Lx86_stay_here",
    ".Lx86_do_move:",
    "mov rax, [rsp + 56]",
    "sub rax, 128",
    "and rax, -16",
    "sub rax, 72",
    "x86_interrupt_move_window:",
    "mov rcx, [rsp]",
    "mov [rax], rcx",
    "mov rcx, [rsp + 8]",
    "mov [rax + 8], rcx",
    "mov rcx, [rsp + 16]",
    "mov [rax + 16], rcx",
    "mov rcx, [rsp + 24]",
    "mov [rax + 24], rcx",
    "mov rcx, [rsp + 32]",
    "mov [rax + 32], rcx",
    "mov rcx, [rsp + 40]",
    "mov [rax + 40], rcx",
    "mov rcx, [rsp + 48]",
    "mov [rax + 48], rcx",
    "mov rcx, [rsp + 56]",
    "mov [rax + 56], rcx",
    "mov rcx, [rsp + 64]",
    "mov [rax + 64], rcx",
    "mov rsp, rax",
    "x86_interrupt_move_window_end:",
    ".Lx86_stay_here:",
    "pop rcx",
    "pop rax",
    // Common path: save everything, call dispatch, restore, return.
    "x86_interrupt_stay:",
    "x86_save_frame",
    "mov rdi, rbx",
    "cld",
    "call {dispatch}",
    "x86_restore_frame",
    "iretq",
    "",
    // NMI path (see the module docs). T is the NMI stack's top: the CPU always delivers NMIs
    // there, so on entry RSP = T - 56 (vector, error code, RIP, CS, RFLAGS, RSP, SS) and the
    // scratch words sit at T (TSS address) and T + 8 (state: 0 idle, 1 executing, 3 executing
    // and one NMI latched). After the two pushes below: RCX at [rsp], RAX at [rsp + 8], the
    // frame from [rsp + 16], the state at [rsp + 80].
    ".balign 16",
    "x86_interrupt_nmi:",
    "push rax",
    "push rcx",
    // Interrupted in the exit window of this CPU's first-level NMI: latch, and make it check
    // again.
    "mov rax, [rsp + 32]",
    "lea rcx, [rip + x86_nmi_exit_check]",
    "cmp rax, rcx",
    "jb 2f",
    "lea rcx, [rip + x86_nmi_iret]",
    "cmp rax, rcx",
    "ja 2f",
    "lea rcx, [rip + x86_nmi_exit_check]",
    "mov [rsp + 32], rcx",
    "jmp 3f",
    "2:",
    "cmp qword ptr [rsp + 80], 0",
    "jne 3f",
    // First level: executing; the frame goes below the landing zone (T - 136 = RSP - 64).
    "mov qword ptr [rsp + 80], 1",
    "mov rax, [rsp + 16]",
    "mov [rsp - 64], rax",
    "mov rax, [rsp + 24]",
    "mov [rsp - 56], rax",
    "mov rax, [rsp + 32]",
    "mov [rsp - 48], rax",
    "mov rax, [rsp + 40]",
    "mov [rsp - 40], rax",
    "mov rax, [rsp + 48]",
    "mov [rsp - 32], rax",
    "mov rax, [rsp + 56]",
    "mov [rsp - 24], rax",
    "mov rax, [rsp + 64]",
    "mov [rsp - 16], rax",
    "pop rcx",
    "pop rax",
    "lea rsp, [rsp - 80]",
    // Runs the handler once: RSP = T - 136 here, T - 264 after the 16 pushes.
    "x86_nmi_body:",
    "x86_save_frame",
    "mov rdi, rbx",
    "mov rsi, [rbx + 264]",
    "cld",
    "call {dispatch_nmi}",
    "x86_restore_frame",
    // The exit window: RSP = T - 120 (the hardware frame), every register the interrupted
    // code's; the flags are free (IRETQ restores them).
    "x86_nmi_exit_check:",
    "cmp qword ptr [rsp + 128], 1",
    "x86_nmi_exit_branch:",
    "jne 4f",
    "x86_nmi_exit_clear:",
    "mov qword ptr [rsp + 128], 0",
    "x86_nmi_iret:",
    "iretq",
    // An NMI was latched while the handler ran: run it again for that one.
    "4:",
    "mov qword ptr [rsp + 128], 1",
    "sub rsp, 16",
    "jmp x86_nmi_body",
    // Nested: latch for the first-level NMI and return at once (no NMI_COMPLETE: the
    // hypervisor holds further NMIs back until the handler has run for this one).
    "3:",
    "mov qword ptr [rsp + 80], 3",
    "pop rcx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    ".popsection",
    dispatch = sym dispatch,
    dispatch_nmi = sym dispatch_nmi,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idt::ist_for;

    /// The first bytes of vector `v`'s stub, as assembled into this test binary.
    fn stub(v: u8) -> [u8; 16] {
        let p = (stubs_address() + u64::from(v) * STUB_STRIDE) as *const [u8; 16];
        // SAFETY: the stubs are 256 * 16 bytes of code in this binary's text, readable.
        unsafe { p.read() }
    }

    #[test]
    fn stubs_push_dummy_error_code_and_vector() {
        for v in 0..=255u8 {
            let s = stub(v);
            let push_vector = if has_error_code(v) {
                &s[..5]
            } else {
                assert_eq!(s[..2], [0x6a, 0x00], "vector {v}: dummy error code");
                &s[2..7]
            };
            assert_eq!(push_vector[0], 0x68, "vector {v}: push imm32");
            assert_eq!(
                u32::from_le_bytes(push_vector[1..5].try_into().unwrap()),
                u32::from(v)
            );
        }
    }

    #[test]
    fn nmi_df_mc_have_their_own_paths() {
        let target = |v: u8| {
            let s = stub(v);
            let at = if has_error_code(v) { 5 } else { 7 };
            let base = stubs_address() + u64::from(v) * STUB_STRIDE + at as u64;
            match s[at] {
                0xeb => base + 2 + (s[at + 1] as i8) as u64,
                0xe9 => base
                    .wrapping_add(5)
                    .wrapping_add(i32::from_le_bytes(s[at + 1..at + 5].try_into().unwrap()) as u64),
                op => panic!("vector {v}: not a jmp ({op:#x})"),
            }
        };
        let moving = target(0);
        let staying = target(8);
        let nmi = target(2);
        assert!(moving != staying && staying != nmi && nmi != moving);
        for v in 0..=255u8 {
            let expected = match v {
                vector::NMI => nmi,
                _ if ist_for(v) == ist::GENERAL => moving,
                _ => staying,
            };
            assert_eq!(target(v), expected, "vector {v}");
        }
    }

    #[test]
    fn frame_layout_matches_stub() {
        // 16 saved values (CR2 + 15 GPRs) below the vector, then the 7 the stub jumps with.
        assert_eq!(core::mem::offset_of!(InterruptFrame, vector), 16 * 8);
        assert_eq!(core::mem::offset_of!(InterruptFrame, ss), 22 * 8);
        assert_eq!(size_of::<InterruptFrame>(), 23 * 8);
    }

    #[test]
    fn in_nmi_means_on_a_registered_nmi_stack() {
        let here = 0u64;
        let rsp = &here as *const u64 as u64;
        // A stack of someone else's: not this thread's.
        register_nmi_stack(rsp + 4 * IST_STACK_SIZE as u64);
        assert!(!in_nmi());
        // A stack this thread runs on, registered twice (a CPU back online): once is enough.
        let top = (rsp + 64) & !15;
        register_nmi_stack(top);
        let count = NMI_STACK_COUNT.load(Ordering::Acquire);
        register_nmi_stack(top);
        assert_eq!(NMI_STACK_COUNT.load(Ordering::Acquire), count);
        assert!(in_nmi());
    }

    /// An interrupt on #PF as the stub saves it: no error code, so each slot from the error
    /// code's up holds the next word (RIP, CS, RFLAGS, RSP, SS, then whatever lies above).
    #[test]
    fn a_frame_without_its_error_code_is_recognised() {
        let fault = InterruptFrame {
            vector: 14,
            error_code: 2,
            rip: 0x40_1000,
            cs: u64::from(crate::gdt::KERNEL_CODE),
            rflags: 0x46,
            rsp: 0x7_ff00,
            ss: u64::from(crate::gdt::KERNEL_DATA),
            ..Default::default()
        };
        assert!(!fault.lacks_its_error_code());
        let shifted = InterruptFrame {
            error_code: fault.rip,
            rip: fault.cs,
            cs: fault.rflags,
            rflags: fault.rsp,
            rsp: fault.ss,
            ss: 0,
            ..fault
        };
        assert!(shifted.lacks_its_error_code());
        // Whatever the interrupted code left in RFLAGS: bit 1 is always set.
        for rflags in [0x2, 0x202, 0x10046, 0x3f_7fd7] {
            for v in 0..=255u8 {
                let frame = InterruptFrame {
                    vector: u64::from(v),
                    cs: rflags,
                    ..shifted
                };
                assert_eq!(
                    frame.lacks_its_error_code(),
                    has_error_code(v),
                    "vector {v}"
                );
            }
        }
        // A vector without an error code cannot be told apart; neither can a vector that is no
        // vector (not a frame of the stubs).
        let breakpoint = InterruptFrame {
            vector: 3,
            ..shifted
        };
        assert!(!breakpoint.lacks_its_error_code());
        let bogus = InterruptFrame {
            vector: 0x10e,
            ..shifted
        };
        assert!(!bogus.lacks_its_error_code());
    }

    #[test]
    fn dump_names_everything() {
        let frame = InterruptFrame {
            vector: 14,
            error_code: 2,
            cr2: 0x7fff_dead_b000,
            r15: 0x1515,
            rip: 0xabc,
            ..Default::default()
        };
        let text = format!("{frame}");
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with("EXCEPTION #PF (page fault, vector 14)"),
            "{first}"
        );
        assert!(text.contains("CR2=0x00007fffdeadb000"), "{text}");
        assert!(text.contains("R15=0x0000000000001515"), "{text}");
        for reg in [
            "RIP", "RSP", "RFLAGS", "CS", "SS", "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP",
            "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15",
        ] {
            assert!(text.contains(&format!("{reg}=0x")), "{reg} missing: {text}");
        }
        let irq = InterruptFrame {
            vector: 0x40,
            ..Default::default()
        };
        assert!(format!("{irq}").starts_with("INTERRUPT vector 64"));
    }
}
