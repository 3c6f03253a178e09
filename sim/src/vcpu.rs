//! One guest vCPU: its VMCB set up from the launch VMSA, the VMRUN loop, and what each #VMEXIT
//! becomes under SEV-ES.
//!
//! SEV-ES splits exits in two. *Automatic* exits are the hypervisor's business and invisible to
//! the guest: VMGEXIT, HLT, nested page faults on RAM, and here also the accesses to the GHCB
//! MSR and SEV_STATUS, which hardware serves without any exit but QEMU's CPU does not know.
//! *Non-automatic* exits (CPUID, port and MMIO access, MSRs, RDTSC, DR7, ...) become a #VC in
//! the guest with the exit code as error code and RIP unchanged: the guest emulates the
//! instruction itself, asking for help through the GHCB. The simulator never reads or changes
//! a guest register beyond what SEV-ES hardware does (RIP after VMGEXIT, event delivery); it
//! reads the four bytes at RIP only to tell VMGEXIT (`F3 0F 01 D9`) from VMMCALL, which QEMU
//! reports with the same exit code.

use crate::deliver::{self, TripleFault};
use crate::memory::{GuestMemory, Npt, NptRoots, View, WalkError, npt_for};
use crate::svm::{self, Gprs, RunState, Segment, Vmcb, exit, misc1, misc2, off};
use alloc::boxed::Box;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use sev::msr_protocol::{GHCB_MSR, GhcbVersion, MsrProtocolError, MsrRequest};
use sev::termination::TerminationReason;
use sev::vmsa::Vmsa;
use sim::counters::Counters;
use sim::nmi_storm::NmiStorm;
use sim::x2apic::Mailbox;

/// SEV_STATUS (read-only, no exit on hardware).
const SEV_STATUS_MSR: u32 = 0xc001_0131;
/// SEV_STATUS of an SEV-ES guest: SEV | SEV-ES.
const SEV_STATUS: u64 = 0b11;
/// #VC.
const VC_VECTOR: u8 = 29;
/// EVENTINJ: valid, type NMI, vector 2.
const EVENTINJ_NMI: u64 = (1 << 31) | (2 << 8) | 2;
/// EVENTINJ: valid, type exception, vector 6 (#UD).
const EVENTINJ_UD: u64 = (1 << 31) | (3 << 8) | 6;
/// EVENTINJ: valid, type exception, error code valid, vector 13 (#GP(0)).
const EVENTINJ_GP0: u64 = (1 << 31) | (1 << 11) | (3 << 8) | 13;
/// EVENTINJ: valid, type external interrupt (vector added).
const EVENTINJ_INTR: u64 = 1 << 31;
/// INT_CTL: V_IRQ, priority 15, ignore V_TPR, V_INTR_MASKING.
const INT_CTL_WINDOW: u64 = (1 << 8) | (0xf << 16) | (1 << 20);
const INT_CTL_MASKING: u64 = 1 << 24;
const RFLAGS_IF: u64 = 1 << 9;
/// DR7 after reset, its L0 enable (execution breakpoint at DR0: RW0 and LEN0 zero), and DR6's
/// breakpoint-hit bits.
const DR7_RESET: u64 = 0x400;
const DR7_L0: u64 = 1;
const DR6_B0_3: u64 = 0xf;
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// The L (64-bit code) bit of a VMCB segment's attributes.
const SEG_ATTRIB_L: u16 = 1 << 9;
/// How long a halted vCPU waits for an event while other vCPUs run (seconds).
const HALT_TIMEOUT_S: u64 = 10;

/// What the whole VM shares.
pub struct Vm {
    pub mem: GuestMemory,
    /// Print every VMGEXIT.
    pub trace: bool,
    /// The highest GHCB protocol version offered (`ghcb_max` in `sim.cfg`).
    pub ghcb_max: GhcbVersion,
    /// A hostile interrupt for vCPU 0: (vector, after its exit number; `inject` in `sim.cfg`).
    pub inject: Option<(u8, u64)>,
    /// Host TSC frequency, for the benchmark line and timeouts.
    pub tsc_hz: u64,
    /// The AP jump table GPA the guest set (0: none).
    pub ap_jump_table: AtomicU64,
    /// The nested page tables all vCPUs share; each runs on the one its state calls for.
    pub npt: NptRoots,
    /// Physical addresses of the all-ones IOPM and MSRPM.
    pub io_bitmaps: (u64, u64),
    /// One slot per vCPU, indexed by vCPU number = APIC ID.
    pub vcpus: Box<[VcpuSlot]>,
    /// vCPUs started so far.
    pub started: AtomicU32,
    /// Set by the vCPU that ends the run; the others stop at their next chance.
    pub ending: AtomicBool,
}

/// What other vCPUs and the end of the run need to see of one vCPU.
pub struct VcpuSlot {
    pub mailbox: Mailbox,
    pub counters: Counters,
    /// Its launch state from the IGVM file; an AP without one cannot be started.
    pub launch: Option<Box<Vmsa>>,
}

/// Why a vCPU stopped running.
#[derive(Debug)]
pub enum Stop {
    /// The guest wrote this status to QEMU's debug-exit port.
    DebugExit(u32),
    /// The guest asked to be terminated.
    GuestTerminated(TerminationReason),
    /// The guest reported a #VC it cannot handle (SW_EXITINFO1/2 of its request).
    GuestGaveUp { info1: u64, info2: u64 },
    /// The run cannot go on.
    Error(SimError),
}

/// Everything that ends a run with the simulator's error status.
#[derive(Debug)]
pub enum SimError {
    TripleFault(TripleFault),
    Shutdown,
    VmrunFailed,
    UnexpectedExit {
        code: u64,
        info1: u64,
        info2: u64,
    },
    /// HLT with nothing that could wake the vCPU.
    HaltedForever,
    /// A start-up IPI for a vCPU the IGVM file gave no launch state.
    NoLaunchState {
        vcpu: u32,
    },
    /// The simulator could not read guest memory it needed (the instruction at RIP).
    Walk(WalkError),
    /// An instruction to fetch under 32-bit (non-PAE or legacy PAE) paging, which the
    /// simulator does not walk.
    LegacyPaging {
        cr0: u64,
    },
    /// A CR0/CR3 write intercept on an instruction other than `MOV CRn, reg`.
    UnsupportedCrWrite {
        cr: u8,
        rip: u64,
        bytes: [u8; 8],
    },
    /// An instruction that raises #VC outside long mode.
    VcOutsideLongMode {
        code: u64,
    },
    /// After a #VMEXIT the guest VMCB held the simulator's own registers (its CR3), or the
    /// guest shut down delivering a page fault on a page its tables map: QEMU lost the guest's
    /// state (see `Vcpu::run`).
    HostLostGuestState,
    /// An access to a non-RAM GPA with the C-bit set: encrypted MMIO cannot be emulated.
    EncryptedMmio {
        gpa: u64,
    },
    /// A nested page fault on guest RAM, which is always mapped.
    NpfOnRam {
        gpa: u64,
        info1: u64,
    },
    /// The GHCB MSR names a GPA outside guest RAM or not page-aligned.
    BadGhcbGpa {
        gpa: u64,
    },
    /// The GHCB MSR holds a value the MSR protocol does not define.
    MsrProtocol {
        value: u64,
        error: MsrProtocolError,
    },
    /// An SNP-only MSR-protocol request from an SEV-ES guest.
    SnpOnly {
        what: &'static str,
    },
    /// An MSR-protocol request of a GHCB protocol version newer than the simulator offers
    /// (`ghcb_max`): a hypervisor of that version does not know it.
    NewerMsrRequest {
        request: MsrRequest,
        offered: GhcbVersion,
    },
    /// A GHCB request whose protocol version field names a version the simulator does not
    /// offer.
    GhcbVersion {
        version: u16,
        offered: GhcbVersion,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TripleFault(t) => write!(f, "guest triple fault: {t}"),
            Self::Shutdown => write!(f, "guest shutdown (triple fault)"),
            Self::VmrunFailed => write!(f, "VMRUN refused the guest state (invalid VMCB)"),
            Self::UnexpectedExit { code, info1, info2 } => write!(
                f,
                "unexpected #VMEXIT {code:#x} (EXITINFO1 {info1:#x}, EXITINFO2 {info2:#x})"
            ),
            Self::HaltedForever => write!(
                f,
                "the vCPU halted and nothing woke it (no interrupt, no NMI pending)"
            ),
            Self::NoLaunchState { vcpu } => write!(
                f,
                "start-up IPI for vCPU {vcpu}, but guest.igvm has no VP context for it"
            ),
            Self::Walk(e) => write!(f, "{e}"),
            Self::LegacyPaging { cr0 } => write!(
                f,
                "the guest runs with 32-bit paging (CR0 {cr0:#x}), which the simulator does not walk"
            ),
            Self::UnsupportedCrWrite { cr, rip, bytes } => write!(
                f,
                "CR{cr} written at RIP {rip:#x} by an instruction other than MOV CR, reg \
                 (bytes {bytes:02x?})"
            ),
            Self::HostLostGuestState => write!(
                f,
                "the guest VMCB came back holding the simulator's own registers, or the guest \
                 shut down on a page fault at a mapped address: QEMU's TCG lost this vCPU's \
                 guest state (a fault of the host, not of the guest); the run is void"
            ),
            Self::VcOutsideLongMode { code } => write!(
                f,
                "exit {code:#x} outside long mode: the simulator delivers #VC through 64-bit \
                 IDT gates only (SEV-ES start-up code must not raise #VC)"
            ),
            Self::EncryptedMmio { gpa } => write!(
                f,
                "access to MMIO GPA {gpa:#x} with the C-bit set (encrypted MMIO cannot be emulated)"
            ),
            Self::NpfOnRam { gpa, info1 } => {
                write!(
                    f,
                    "nested page fault on RAM GPA {gpa:#x} (error {info1:#x})"
                )
            }
            Self::BadGhcbGpa { gpa } => {
                write!(f, "VMGEXIT with GHCB GPA {gpa:#x}: not a page of guest RAM")
            }
            Self::MsrProtocol { value, error } => {
                write!(f, "invalid GHCB MSR protocol request {value:#x}: {error:?}")
            }
            Self::SnpOnly { what } => {
                write!(
                    f,
                    "SNP-only MSR protocol request ({what}) from an SEV-ES guest"
                )
            }
            Self::NewerMsrRequest { request, offered } => write!(
                f,
                "MSR protocol request {request:?} is GHCB protocol {}; this hypervisor offers \
                 at most {}",
                request.min_version().number(),
                offered.number()
            ),
            Self::GhcbVersion { version, offered } => write!(
                f,
                "GHCB request with protocol version {version}; this hypervisor offers {}..={}",
                GhcbVersion::MIN.number(),
                offered.number()
            ),
        }
    }
}

/// One vCPU's state as the simulator keeps it.
pub struct Vcpu {
    pub id: u32,
    pub vmcb: &'static mut Vmcb,
    pub state: &'static mut RunState,
    /// The GHCB MSR: a per-vCPU register of SEV-ES hardware.
    pub ghcb_msr: u64,
    /// An NMI waits for delivery.
    pub nmi_pending: bool,
    /// An NMI was delivered and the guest has not sent NMI_COMPLETE yet.
    pub nmi_blocked: bool,
    /// NMI_COMPLETE events received.
    pub nmi_completed: u64,
    /// A test's NMI storm (test hypercall `NMI_STORM`): NMIs made pending at chosen exits.
    pub nmi_storm: Option<NmiStorm>,
    /// The next NMI_COMPLETE is answered with an error (test hypercall `REFUSE_NMI_COMPLETE`).
    pub refuse_nmi_complete: bool,
    /// The instruction at which an NMI is made pending (test hypercall `NMI_AT`), while armed.
    nmi_at: Option<u64>,
    /// The vector of an external interrupt to inject at the next VMRUN, whatever the guest's
    /// state (test hypercall `INJECT_INTERRUPT`: the simulator as a hostile hypervisor).
    pub hostile_interrupt: Option<u8>,
    /// #VMEXITs so far (for `Vm::inject`).
    exits: u64,
    /// The guest's DR7 as the hypervisor tracks it (DR7 NAE events).
    pub dr7: u64,
    /// The nested page table this vCPU runs on now (`crate::memory::NptRoots`).
    npt: Npt,
    /// TSC_AUX as the hypervisor tracks it (RDTSCP, MSR events).
    pub tsc_aux: u64,
    /// Host TSC and exit count at BENCH_START.
    pub bench: Option<(u64, u64)>,
    /// An event whose delivery a #VMEXIT interrupted, to inject again.
    reinject: Option<u64>,
    pub counters: &'static Counters,
    pub mailbox: &'static Mailbox,
    /// The virtual x2APIC's in-service vectors, task priority and spurious vector register.
    pub isr: [u64; 4],
    pub tpr: u64,
    pub svr: u64,
}

/// An AP before its first start-up IPI: waits for INIT, then SIPI (a SIPI without an INIT
/// before it is dropped, as by hardware), and returns its launch state.
pub fn await_startup(vm: &Vm, id: u32) -> Result<&Vmsa, Stop> {
    let slot = &vm.vcpus[id as usize];
    let mut init = false;
    loop {
        init |= slot.mailbox.take_init();
        // An INIT posted between the two takes is seen by the second one: both flags live in
        // one atomic word, INIT posted before its SIPI, so a SIPI is dropped only when no INIT
        // came before it.
        if slot.mailbox.take_startup() && (init || slot.mailbox.take_init()) {
            break;
        }
        if vm.ending.load(Ordering::Acquire) {
            x86::qemu::halt_forever();
        }
        core::hint::spin_loop();
    }
    slot.launch
        .as_deref()
        .ok_or(Stop::Error(SimError::NoLaunchState { vcpu: id }))
}

/// The intercepts of an SEV-ES guest: everything the GHCB specification lists as a #VC
/// source, the automatic exits, and the SVM instructions (answered with #UD).
fn set_intercepts(vmcb: &mut Vmcb) {
    // CR0 and CR3 writes: completed by the simulator ([`Vcpu::write_cr`]), to switch nested
    // page tables with the guest's paging state.
    vmcb.set(off::INTERCEPT_CR, (1u32 << 16) | (1 << 19));
    vmcb.set(off::INTERCEPT_DR, (1u32 << 7) | (1 << (16 + 7)));
    vmcb.set(off::INTERCEPT_EXC, (1u32 << 1) | (1 << 17));
    vmcb.set(
        off::INTERCEPT_MISC1,
        misc1::RDTSC
            | misc1::RDPMC
            | misc1::CPUID
            | misc1::INVD
            | misc1::HLT
            | misc1::IOIO
            | misc1::MSR
            | misc1::SHUTDOWN,
    );
    vmcb.set(
        off::INTERCEPT_MISC2,
        misc2::VMRUN
            | misc2::VMMCALL
            | misc2::VMLOAD
            | misc2::VMSAVE
            | misc2::STGI
            | misc2::CLGI
            | misc2::SKINIT
            | misc2::RDTSCP
            | misc2::WBINVD
            | misc2::MONITOR
            | misc2::MWAIT
            | misc2::MWAIT_CONDITIONAL,
    );
}

fn segment(s: &sev::vmsa::VmsaSegment) -> Segment {
    Segment {
        selector: s.selector,
        attrib: s.attrib,
        limit: s.limit,
        base: s.base,
    }
}

impl Vcpu {
    /// vCPU `id` of `vm`, starting in the state of `vmsa`.
    pub fn new(
        id: u32,
        vm: &'static Vm,
        vmcb: &'static mut Vmcb,
        state: &'static mut RunState,
        vmsa: &Vmsa,
    ) -> Self {
        *vmcb = Vmcb::zeroed();
        set_intercepts(vmcb);
        vmcb.set(off::IOPM_BASE, vm.io_bitmaps.0);
        vmcb.set(off::MSRPM_BASE, vm.io_bitmaps.1);
        vmcb.set(off::ASID, id + 1);
        vmcb.set(off::NP_CONTROL, 1u64);
        let npt = npt_for(vmsa.cr0, vmsa.cr3, vm.mem.c_mask());
        vmcb.set(off::N_CR3, vm.npt.root(npt));
        // V_INTR_MASKING: physical interrupts stay the host's (masked, the simulator runs with
        // IF clear); the guest's RFLAGS.IF governs only virtual ones.
        vmcb.set(off::INT_CTL, INT_CTL_MASKING);
        for (o, s) in [
            (off::ES, &vmsa.es),
            (off::CS, &vmsa.cs),
            (off::SS, &vmsa.ss),
            (off::DS, &vmsa.ds),
            (off::FS, &vmsa.fs),
            (off::GS, &vmsa.gs),
            (off::GDTR, &vmsa.gdtr),
            (off::LDTR, &vmsa.ldtr),
            (off::IDTR, &vmsa.idtr),
            (off::TR, &vmsa.tr),
        ] {
            vmcb.set_segment(o, segment(s));
        }
        vmcb.set(off::CPL, vmsa.cpl);
        vmcb.set(off::EFER, vmsa.efer);
        vmcb.set(off::CR0, vmsa.cr0);
        vmcb.set(off::CR3, vmsa.cr3);
        vmcb.set(off::CR4, vmsa.cr4);
        vmcb.set(off::DR6, vmsa.dr6);
        vmcb.set(off::DR7, vmsa.dr7);
        vmcb.set(off::RFLAGS, vmsa.rflags);
        vmcb.set(off::RIP, vmsa.rip);
        vmcb.set(off::RSP, vmsa.rsp);
        vmcb.set(off::RAX, vmsa.rax);
        vmcb.set(off::G_PAT, vmsa.g_pat);
        vmcb.set(off::STAR, vmsa.star);
        vmcb.set(off::LSTAR, vmsa.lstar);
        vmcb.set(off::CSTAR, vmsa.cstar);
        vmcb.set(off::SFMASK, vmsa.sfmask);
        vmcb.set(off::KERNEL_GS_BASE, vmsa.kernel_gs_base);
        vmcb.set(off::CR2, vmsa.cr2);
        state.gprs = Gprs {
            rbx: vmsa.rbx,
            rcx: vmsa.rcx,
            rdx: vmsa.rdx,
            rsi: vmsa.rsi,
            rdi: vmsa.rdi,
            rbp: vmsa.rbp,
            r8: vmsa.r8,
            r9: vmsa.r9,
            r10: vmsa.r10,
            r11: vmsa.r11,
            r12: vmsa.r12,
            r13: vmsa.r13,
            r14: vmsa.r14,
            r15: vmsa.r15,
        };
        state.guest_vmcb = vmcb.address();
        Self {
            id,
            vmcb,
            state,
            ghcb_msr: 0,
            nmi_pending: false,
            nmi_blocked: false,
            nmi_completed: 0,
            nmi_storm: None,
            refuse_nmi_complete: false,
            nmi_at: None,
            hostile_interrupt: None,
            exits: 0,
            dr7: vmsa.dr7,
            npt,
            tsc_aux: u64::from(vmsa.tsc_aux),
            bench: None,
            reinject: None,
            counters: &vm.vcpus[id as usize].counters,
            mailbox: &vm.vcpus[id as usize].mailbox,
            isr: [0; 4],
            tpr: 0,
            svr: 0xff,
        }
    }

    /// Runs the guest until something ends the run.
    ///
    /// The loop runs on `crate::run_idt`'s IDT, with the guest's hidden state in the CPU
    /// (`svm::run`); the host's and the usual IDT are back when this returns.
    pub fn run(&mut self, vm: &Vm) -> Stop {
        vm.started.fetch_add(1, Ordering::AcqRel);
        // SAFETY: this CPU's GDT is loaded (`HostCpu::enter`).
        unsafe { crate::run_idt::load() };
        let stop = self.run_loop(vm);
        // SAFETY: the state `run_loop` ran with; then the usual IDT, whose IST stacks the
        // host's TSS (back in TR) names.
        unsafe {
            svm::restore_host(self.state);
            x86::interrupts::load_idt();
        }
        stop
    }

    fn run_loop(&mut self, vm: &Vm) -> Stop {
        // SAFETY: reading CR3 has no side effects.
        let host_cr3 = unsafe { x86::cr::read_cr3() };
        loop {
            if vm.ending.load(Ordering::Acquire) {
                x86::qemu::halt_forever();
            }
            self.inject_pending();
            let entry = x86::tsc::rdtsc();
            // SAFETY: SVM is on, the VMCB was set up by `new` with the VMRUN intercept; this
            // loop runs on the IST-free IDT (`run`) and the simulator uses no FS/GS-relative
            // memory, SYSCALL or SWAPGS.
            unsafe { svm::run(self.state) };
            // QEMU 10.0's TCG with nested SVM now and then (about 1 in 5 NMI storms over 4
            // vCPUs, always on vCPU 0, with or without MMIO forwarding or host interrupts) hands
            // back a guest VMCB holding the host's registers: a guest never runs on the
            // simulator's CR3. Such a run proves nothing either way; it ends as void.
            if self.vmcb.get::<u64>(off::CR3) == host_cr3 {
                return Stop::Error(SimError::HostLostGuestState);
            }
            self.counters.in_guest(x86::tsc::rdtsc() - entry);
            let code: u64 = self.vmcb.get(off::EXIT_CODE);
            self.counters.exit(code);
            self.exits += 1;
            if let Some((vector, after)) = vm.inject
                && self.id == 0
                && self.exits == after
            {
                self.hostile_interrupt = Some(vector);
            }
            let int_info: u64 = self.vmcb.get(off::EXIT_INT_INFO);
            self.reinject = (int_info & (1 << 31) != 0).then_some(int_info);
            if let Err(stop) = self.handle_exit(vm, code) {
                return stop;
            }
        }
    }

    /// Sets EVENTINJ for the next VMRUN: an interrupted delivery first, else a hostile
    /// interrupt a test asked for (ignoring RFLAGS.IF, as only a hypervisor can), else a pending
    /// NMI the guest is not blocking, else the highest fixed interrupt the guest can take now
    /// (when it cannot, an interrupt window: the VINTR exit comes when it can).
    fn inject_pending(&mut self) {
        // INIT and SIPI do nothing to a running SEV-ES vCPU (its state is the guest's): only
        // a vCPU parked in AP reset hold wakes on a SIPI, so those that came meanwhile are lost.
        if self.mailbox.has_signal() {
            self.mailbox.take_init();
            self.mailbox.take_startup();
            if self.mailbox.take_nmi() {
                self.nmi_pending = true;
            }
        }
        if !self.nmi_pending
            && !self.nmi_blocked
            && self.nmi_storm.as_mut().is_some_and(NmiStorm::due)
        {
            self.nmi_pending = true;
        }
        if let Some(event) = self.reinject.take() {
            self.vmcb.set(off::EVENT_INJ, event);
        } else if let Some(v) = self.hostile_interrupt.take() {
            self.vmcb.set(off::EVENT_INJ, EVENTINJ_INTR | u64::from(v));
        } else if self.nmi_pending && !self.nmi_blocked {
            self.vmcb.set(off::EVENT_INJ, EVENTINJ_NMI);
            self.nmi_pending = false;
            self.nmi_blocked = true;
            self.counters.nmi();
        } else if let Some(v) = self.deliverable_interrupt() {
            let rflags: u64 = self.vmcb.get(off::RFLAGS);
            let shadow = self.vmcb.get::<u64>(off::INT_STATE) & 1 != 0;
            if rflags & RFLAGS_IF != 0 && !shadow {
                self.vmcb.set(off::EVENT_INJ, EVENTINJ_INTR | u64::from(v));
                self.mailbox.take_irr(v);
                self.isr[usize::from(v / 64)] |= 1 << (v % 64);
                self.vmcb.set(off::INT_CTL, INT_CTL_MASKING);
            } else {
                self.vmcb
                    .set(off::INT_CTL, INT_CTL_MASKING | INT_CTL_WINDOW);
                self.vmcb.set(off::INT_VECTOR, v);
                let misc: u32 = self.vmcb.get(off::INTERCEPT_MISC1);
                self.vmcb.set(off::INTERCEPT_MISC1, misc | misc1::VINTR);
            }
        }
    }

    /// The highest requested fixed vector whose priority class beats the in-service one and
    /// the task priority.
    fn deliverable_interrupt(&self) -> Option<u8> {
        // A software-disabled APIC (SVR bit 8 clear, as after reset) takes no fixed interrupt.
        if self.svr & (1 << 8) == 0 {
            return None;
        }
        let v = self.mailbox.highest_irr()?;
        let in_service = (0..4).rev().find(|&i| self.isr[i] != 0).map_or(0, |i| {
            i as u64 * 64 + 63 - u64::from(self.isr[i].leading_zeros())
        });
        let floor = (in_service >> 4).max(self.tpr >> 4);
        (u64::from(v) >> 4 > floor).then_some(v)
    }

    /// EOI: the highest in-service vector is done.
    pub fn end_of_interrupt(&mut self) {
        if let Some(i) = (0..4).rev().find(|&i| self.isr[i] != 0) {
            let bit = 63 - self.isr[i].leading_zeros();
            self.isr[i] &= !(1 << bit);
        }
    }

    /// Whether something can end a HLT now: an NMI the guest does not block, or a fixed
    /// interrupt with interrupts on.
    fn can_wake(&self) -> bool {
        let nmi = (self.nmi_pending || self.mailbox.has_nmi()) && !self.nmi_blocked;
        let rflags: u64 = self.vmcb.get(off::RFLAGS);
        nmi || (rflags & RFLAGS_IF != 0 && self.deliverable_interrupt().is_some())
    }

    /// HLT: waits for something that ends it. The only running vCPU gives up at once;
    /// otherwise after [`HALT_TIMEOUT_S`] without an event (no timer exists to wake it).
    fn halt(&mut self, vm: &Vm) -> Result<(), Stop> {
        self.vmcb.set_rip(self.vmcb.rip() + 1);
        // An `sti; hlt` exits with the STI shadow still set, but it covered only the HLT: the
        // interrupt that ends the HLT is taken right after it.
        let int_state: u64 = self.vmcb.get(off::INT_STATE);
        self.vmcb.set(off::INT_STATE, int_state & !1);
        let deadline = x86::tsc::rdtsc() + HALT_TIMEOUT_S * vm.tsc_hz;
        loop {
            if self.can_wake() {
                return Ok(());
            }
            if vm.started.load(Ordering::Acquire) <= 1 || x86::tsc::rdtsc() > deadline {
                return Err(Stop::Error(SimError::HaltedForever));
            }
            if vm.ending.load(Ordering::Acquire) {
                x86::qemu::halt_forever();
            }
            core::hint::spin_loop();
        }
    }

    /// AP reset hold: parked until a start-up IPI wakes the vCPU (INITs are consumed: SEV-ES
    /// state cannot be reset by the hypervisor).
    pub fn park(&mut self, vm: &Vm) {
        loop {
            self.mailbox.take_init();
            if self.mailbox.take_startup() {
                return;
            }
            if vm.ending.load(Ordering::Acquire) {
                x86::qemu::halt_forever();
            }
            core::hint::spin_loop();
        }
    }

    fn handle_exit(&mut self, vm: &Vm, code: u64) -> Result<(), Stop> {
        let info1: u64 = self.vmcb.get(off::EXIT_INFO1);
        let info2: u64 = self.vmcb.get(off::EXIT_INFO2);
        match code {
            exit::VMMCALL if self.at_vmgexit(vm)? => crate::vmgexit::handle(self, vm),
            exit::MSR => self.msr(vm, info1 == 1),
            exit::WRITE_CR0 | exit::WRITE_CR3 => self.write_cr(vm, code),
            // QEMU's TCG reports RDTSCP with the RDTSC exit code (its RDTSCP helper checks the
            // RDTSC intercept); hardware, and the guest's #VC handler, tell them apart.
            exit::RDTSC if self.insn_at_rip(vm, &[0x0f, 0x01, 0xf9])? => {
                self.raise_vc(vm, exit::RDTSCP)
            }
            exit::EXCP_DB if self.nmi_at == Some(self.vmcb.rip()) => {
                self.nmi_at_hit();
                Ok(())
            }
            exit::READ_DR7
            | exit::WRITE_DR7
            | exit::EXCP_DB
            | exit::EXCP_AC
            | exit::RDTSC
            | exit::RDPMC
            | exit::CPUID
            | exit::INVD
            | exit::IOIO
            | exit::VMMCALL
            | exit::RDTSCP
            | exit::WBINVD
            | exit::MONITOR
            | exit::MWAIT
            | exit::MWAIT_CONDITIONAL => self.raise_vc(vm, code),
            exit::NPF => {
                let c = vm.mem.c_mask();
                let gpa = info2 & !c;
                if gpa < vm.mem.size() {
                    Err(Stop::Error(SimError::NpfOnRam { gpa, info1 }))
                } else if info2 & c != 0 {
                    Err(Stop::Error(SimError::EncryptedMmio { gpa }))
                } else {
                    self.raise_vc(vm, code)
                }
            }
            exit::HLT => self.halt(vm),
            exit::VINTR => {
                self.vmcb.set(off::INT_CTL, INT_CTL_MASKING);
                let misc: u32 = self.vmcb.get(off::INTERCEPT_MISC1);
                self.vmcb.set(off::INTERCEPT_MISC1, misc & !misc1::VINTR);
                Ok(())
            }
            exit::VMRUN | exit::VMLOAD | exit::VMSAVE | exit::STGI | exit::CLGI | exit::SKINIT => {
                self.vmcb.set(off::EVENT_INJ, EVENTINJ_UD);
                Ok(())
            }
            exit::SHUTDOWN if self.page_fault_on_a_mapped_page(vm) => {
                Err(Stop::Error(SimError::HostLostGuestState))
            }
            exit::SHUTDOWN => Err(Stop::Error(SimError::Shutdown)),
            exit::INVALID => Err(Stop::Error(SimError::VmrunFailed)),
            _ => Err(Stop::Error(SimError::UnexpectedExit { code, info1, info2 })),
        }
    }

    /// Arms `NMI_AT`: an execution breakpoint at `address`, in DR0 (this host CPU runs only
    /// this vCPU) and enabled in the VMCB's DR7, which the guest's own DR7 (tracked by the DR7
    /// NAE events) never reaches.
    pub fn arm_nmi_at(&mut self, address: u64) {
        // SAFETY: DR0 of this host CPU; nothing in the simulator uses debug registers.
        unsafe {
            core::arch::asm!("mov dr0, {}", in(reg) address, options(nomem, nostack, preserves_flags))
        };
        self.vmcb.set(off::DR7, DR7_RESET | DR7_L0);
        self.nmi_at = Some(address);
    }

    /// The `NMI_AT` breakpoint was hit (a #DB intercept before the instruction ran): taken
    /// back, and the NMI made pending, to be injected right there.
    fn nmi_at_hit(&mut self) {
        self.vmcb.set(off::DR7, DR7_RESET);
        let dr6: u64 = self.vmcb.get(off::DR6);
        self.vmcb.set(off::DR6, dr6 & !DR6_B0_3);
        self.nmi_at = None;
        self.nmi_pending = true;
    }

    /// Whether the shutdown came while delivering a page fault on an address the guest's page
    /// tables map present (CR2): no CPU raises that. It is the other face of the QEMU fault
    /// `Vcpu::run` checks for (QEMU's TLB for the vCPU lost its guest mappings).
    fn page_fault_on_a_mapped_page(&self, vm: &Vm) -> bool {
        const VALID: u64 = 1 << 31;
        const TYPE_EXCEPTION: u64 = 3 << 8;
        const PAGE_FAULT: u64 = 14;
        let info: u64 = self.vmcb.get(off::EXIT_INT_INFO);
        info & (VALID | 0x700 | 0xff) == VALID | TYPE_EXCEPTION | PAGE_FAULT
            && vm
                .mem
                .translate_in(
                    self.vmcb.get(off::CR3),
                    self.vmcb.get(off::CR2),
                    false,
                    self.npt,
                )
                .is_ok()
    }

    /// Whether the VMMCALL exit came from `rep vmmcall` (VMGEXIT).
    fn at_vmgexit(&self, vm: &Vm) -> Result<bool, Stop> {
        self.insn_at_rip(vm, &[0xf3, 0x0f, 0x01, 0xd9])
    }

    /// Whether the instruction bytes at RIP are `bytes`.
    fn insn_at_rip(&self, vm: &Vm, bytes: &[u8]) -> Result<bool, Stop> {
        let mut insn = [0u8; 4];
        let insn = &mut insn[..bytes.len()];
        self.fetch(vm, insn)?;
        Ok(insn == bytes)
    }

    /// Whether the vCPU runs 64-bit code (long mode and a 64-bit code segment).
    fn in_64bit_mode(&self) -> bool {
        let efer: u64 = self.vmcb.get(off::EFER);
        efer & EFER_LMA != 0 && self.vmcb.segment(off::CS).attrib & SEG_ATTRIB_L != 0
    }

    /// Reads `out.len()` instruction bytes at CS:RIP, in whatever mode the vCPU runs: with
    /// paging off the linear address is the GPA, fetched private as hardware does.
    fn fetch(&self, vm: &Vm, out: &mut [u8]) -> Result<(), Stop> {
        let rip = self.vmcb.rip();
        let linear = if self.in_64bit_mode() {
            rip
        } else {
            self.vmcb.segment(off::CS).base.wrapping_add(rip) & 0xffff_ffff
        };
        let cr0: u64 = self.vmcb.get(off::CR0);
        let efer: u64 = self.vmcb.get(off::EFER);
        let read = if cr0 & CR0_PG == 0 {
            vm.mem.read(linear, out, View::Private)
        } else if efer & EFER_LMA != 0 {
            vm.mem
                .read_virt_in(self.vmcb.get(off::CR3), linear, out, self.npt)
        } else {
            return Err(Stop::Error(SimError::LegacyPaging { cr0 }));
        };
        read.map_err(|e| Stop::Error(SimError::Walk(e)))
    }

    /// A guest register by its x86 number (0 RAX .. 15 R15).
    fn gpr(&self, n: u8) -> u64 {
        let g = &self.state.gprs;
        match n {
            0 => self.vmcb.rax(),
            1 => g.rcx,
            2 => g.rdx,
            3 => g.rbx,
            4 => self.vmcb.get(off::RSP),
            5 => g.rbp,
            6 => g.rsi,
            7 => g.rdi,
            8 => g.r8,
            9 => g.r9,
            10 => g.r10,
            11 => g.r11,
            12 => g.r12,
            13 => g.r13,
            14 => g.r14,
            _ => g.r15,
        }
    }

    /// A `MOV CR0/CR3, reg` the intercept stopped: completed as the hardware would (the write,
    /// EFER.LMA on a paging switch, #GP where the CPU raises it), then the nested page table
    /// that fits the new state (`crate::memory::NptRoots`). SEV-ES hardware completes these
    /// writes itself (CR write traps); the simulator reads the source register only to do
    /// the hardware's part. Any other instruction writing CR0 (LMSW, CLTS) is refused.
    fn write_cr(&mut self, vm: &Vm, code: u64) -> Result<(), Stop> {
        let rip = self.vmcb.rip();
        let mut bytes = [0u8; 8];
        // The instruction is at most 8 bytes; stay within RIP's page.
        let in_page = (4096 - (rip & 0xfff) as usize).min(bytes.len());
        self.fetch(vm, &mut bytes[..in_page])?;
        let long = self.in_64bit_mode();
        let cr = (code - exit::WRITE_CR0) as u8;
        let Some(m) = sim::cr_write::decode(&bytes[..in_page], long).filter(|m| m.cr == cr) else {
            return Err(Stop::Error(SimError::UnsupportedCrWrite { cr, rip, bytes }));
        };
        let value = if long {
            self.gpr(m.gpr)
        } else {
            self.gpr(m.gpr) & 0xffff_ffff
        };
        if cr == 0 {
            let efer: u64 = self.vmcb.get(off::EFER);
            let cr4: u64 = self.vmcb.get(off::CR4);
            let paging = value & CR0_PG != 0;
            let to_long = paging && efer & EFER_LME != 0;
            if value >> 32 != 0
                || (paging && value & CR0_PE == 0)
                || (to_long && cr4 & CR4_PAE == 0)
                || (!paging && long)
            {
                self.vmcb.set(off::EVENT_INJ, EVENTINJ_GP0);
                return Ok(());
            }
            let efer = if to_long {
                efer | EFER_LMA
            } else {
                efer & !EFER_LMA
            };
            self.vmcb.set(off::EFER, efer);
            self.vmcb.set(off::CR0, value | CR0_ET);
        } else {
            self.vmcb.set(off::CR3, value);
        }
        self.vmcb.set_rip(rip + u64::from(m.len));
        let npt = npt_for(
            self.vmcb.get(off::CR0),
            self.vmcb.get(off::CR3),
            vm.mem.c_mask(),
        );
        if npt != self.npt {
            self.npt = npt;
            self.vmcb.set(off::N_CR3, vm.npt.root(npt));
        }
        Ok(())
    }

    /// RDMSR/WRMSR: the GHCB MSR and SEV_STATUS are served as hardware does, without the guest
    /// noticing; every other MSR is a #VC.
    fn msr(&mut self, vm: &Vm, write: bool) -> Result<(), Stop> {
        let msr = self.state.gprs.rcx as u32;
        let value = (self.state.gprs.rdx << 32) | (self.vmcb.rax() & 0xffff_ffff);
        match (msr, write) {
            (GHCB_MSR, true) => self.ghcb_msr = value,
            (GHCB_MSR, false) => self.set_edx_eax(self.ghcb_msr),
            (SEV_STATUS_MSR, false) => self.set_edx_eax(SEV_STATUS),
            (SEV_STATUS_MSR, true) => {
                self.vmcb.set(off::EVENT_INJ, EVENTINJ_GP0);
                return Ok(());
            }
            _ => return self.raise_vc(vm, exit::MSR),
        }
        self.vmcb.set_rip(self.vmcb.rip() + 2);
        Ok(())
    }

    fn set_edx_eax(&mut self, v: u64) {
        self.vmcb.set_rax(v & 0xffff_ffff);
        self.state.gprs.rdx = v >> 32;
    }

    /// Delivers #VC with `code` as its error code. Only in long mode: SEV-ES start-up code
    /// outside it (real mode, 32-bit) has no #VC handler, and the simulator delivers through
    /// 64-bit IDT gates only, so it stops with the instruction's exit code instead.
    fn raise_vc(&mut self, vm: &Vm, code: u64) -> Result<(), Stop> {
        let efer: u64 = self.vmcb.get(off::EFER);
        if efer & EFER_LMA == 0 {
            return Err(Stop::Error(SimError::VcOutsideLongMode { code }));
        }
        self.counters.vc();
        // Delivery reads the guest's TR, which the CPU holds.
        // SAFETY: the state `svm::run` uses on this CPU.
        unsafe { svm::save_guest_hidden(self.state) };
        deliver::exception(self.vmcb, &vm.mem, VC_VECTOR, Some(code))
            .map_err(|t| Stop::Error(SimError::TripleFault(t)))
    }

    /// The guest state worth printing when a run fails.
    pub fn dump(&self) -> GuestState {
        let v = &self.vmcb;
        GuestState {
            rip: v.rip(),
            rsp: v.get(off::RSP),
            rflags: v.get(off::RFLAGS),
            cr0: v.get(off::CR0),
            cr3: v.get(off::CR3),
            cr4: v.get(off::CR4),
            efer: v.get(off::EFER),
            cs: v.segment(off::CS),
            idtr: v.segment(off::IDTR),
            tr_base: v.segment(off::TR).base,
            npt: self.npt,
            exit_int_info: v.get(off::EXIT_INT_INFO),
            ghcb_msr: self.ghcb_msr,
            exit_code: v.get(off::EXIT_CODE),
        }
    }
}

/// A snapshot of the guest registers the simulator can see, for error messages.
pub struct GuestState {
    rip: u64,
    rsp: u64,
    rflags: u64,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    cs: Segment,
    idtr: Segment,
    tr_base: u64,
    npt: Npt,
    /// The event whose delivery the last exit interrupted (bit 31: valid).
    exit_int_info: u64,
    ghcb_msr: u64,
    exit_code: u64,
}

impl fmt::Display for GuestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RIP={:#x} RSP={:#x} RFLAGS={:#x} CS={:#x}/{:#x} CR0={:#x} CR3={:#x} CR4={:#x} \
             EFER={:#x} IDTR={:#x}/{:#x} TR base={:#x} NPT={:?} EXITINTINFO={:#x} \
             GHCB_MSR={:#x} last exit={:#x}",
            self.rip,
            self.rsp,
            self.rflags,
            self.cs.selector,
            self.cs.attrib,
            self.cr0,
            self.cr3,
            self.cr4,
            self.efer,
            self.idtr.base,
            self.idtr.limit,
            self.tr_base,
            self.npt,
            self.exit_int_info,
            self.ghcb_msr,
            self.exit_code
        )
    }
}
