//! AMD SVM: the VMCB, enabling SVM on a CPU, and the VMRUN round trip.
//!
//! Offsets follow APM vol. 2 appendix B (control area 0x000..0x3ff, state save area from
//! 0x400). QEMU's TCG SVM (see the README) provides no decode assists and no next-RIP, and does
//! not switch FS/GS/TR/LDTR/KernelGsBase/syscall MSRs on VMRUN/#VMEXIT: [`run`] uses
//! VMLOAD/VMSAVE for those, as on hardware, once per stretch of runs.

use core::arch::{asm, naked_asm};
use core::ptr::{read_volatile, write_volatile};

/// Control-area and save-area offsets used by the simulator.
pub mod off {
    /// CR reads (bits 15:0) and writes (bits 31:16).
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_DR: usize = 0x004;
    pub const INTERCEPT_EXC: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const ASID: usize = 0x058;
    pub const INT_CTL: usize = 0x060;
    /// V_INTR_VECTOR: bits 39:32 of the INT_CTL quadword, one byte.
    pub const INT_VECTOR: usize = 0x064;
    pub const INT_STATE: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_CONTROL: usize = 0x090;
    pub const EVENT_INJ: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;

    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// Bits of the intercept vector at 0x00c.
pub mod misc1 {
    pub const VINTR: u32 = 1 << 4;
    pub const RDTSC: u32 = 1 << 14;
    pub const RDPMC: u32 = 1 << 15;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const IOIO: u32 = 1 << 27;
    pub const MSR: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Bits of the intercept vector at 0x010.
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const RDTSCP: u32 = 1 << 7;
    pub const WBINVD: u32 = 1 << 9;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_CONDITIONAL: u32 = 1 << 12;
}

/// SVM exit codes the simulator handles (APM vol. 2 table C-1).
pub mod exit {
    pub const WRITE_CR0: u64 = 0x10;
    pub const WRITE_CR3: u64 = 0x13;
    pub const READ_DR7: u64 = 0x27;
    pub const WRITE_DR7: u64 = 0x37;
    pub const EXCP_DB: u64 = 0x41;
    pub const EXCP_AC: u64 = 0x51;
    pub const VINTR: u64 = 0x64;
    pub const RDTSC: u64 = 0x6e;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const NPF: u64 = 0x400;
    /// VMRUN failed its consistency checks.
    pub const INVALID: u64 = u64::MAX;
}

/// A segment register in the save area.
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// One VMCB page.
#[repr(C, align(4096))]
pub struct Vmcb([u8; 4096]);

impl Vmcb {
    pub const fn zeroed() -> Self {
        Self([0; 4096])
    }

    fn check<T>(off: usize) {
        assert!(off + size_of::<T>() <= 4096 && off.is_multiple_of(size_of::<T>()));
    }

    pub fn get<T: Copy>(&self, off: usize) -> T {
        Self::check::<T>(off);
        // SAFETY: in bounds and aligned (checked); the VMCB is plain memory the CPU writes only
        // during VMRUN, which cannot overlap this read.
        unsafe { read_volatile(self.0.as_ptr().add(off) as *const T) }
    }

    pub fn set<T: Copy>(&mut self, off: usize, v: T) {
        Self::check::<T>(off);
        // SAFETY: as in `get`.
        unsafe { write_volatile(self.0.as_mut_ptr().add(off) as *mut T, v) }
    }

    pub fn segment(&self, off: usize) -> Segment {
        Segment {
            selector: self.get(off),
            attrib: self.get(off + 2),
            limit: self.get(off + 4),
            base: self.get(off + 8),
        }
    }

    pub fn set_segment(&mut self, off: usize, s: Segment) {
        self.set(off, s.selector);
        self.set(off + 2, s.attrib);
        self.set(off + 4, s.limit);
        self.set(off + 8, s.base);
    }

    pub fn rip(&self) -> u64 {
        self.get(off::RIP)
    }

    pub fn set_rip(&mut self, v: u64) {
        self.set(off::RIP, v)
    }

    pub fn rax(&self) -> u64 {
        self.get(off::RAX)
    }

    pub fn set_rax(&mut self, v: u64) {
        self.set(off::RAX, v)
    }

    pub fn address(&self) -> u64 {
        self as *const Self as u64
    }
}

/// The guest's general registers that VMRUN does not keep in the VMCB (RAX and RSP are there),
/// in the order `run` saves them.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Gprs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// FXSAVE area.
#[repr(C, align(16))]
pub struct FpuState(pub [u8; 512]);

/// Everything one VMRUN round trip needs, in one place the assembly can address. Aligned so
/// that it never straddles a page: after each world switch QEMU's TCG refills its TLB for every
/// page the simulator touches (see [`vmrun_asm`]).
#[repr(C, align(2048))]
pub struct RunState {
    pub gprs: Gprs,
    /// Physical address of the guest VMCB.
    pub guest_vmcb: u64,
    /// Physical address of the page VMSAVE/VMLOAD keep the host's hidden state in.
    pub host_vmcb: u64,
    /// Nonzero while the CPU holds the guest's hidden state instead of the host's (see [`run`]):
    /// from the first [`run`] to [`restore_host`]. Zero at first.
    pub guest_loaded: u64,
    pub guest_fpu: FpuState,
    /// The host's x87 control word and MXCSR, at their FXSAVE offsets: the only x87/SSE state
    /// the host keeps across [`run`] (the rest is caller-saved in the SysV ABI).
    pub host_fpu: FpuState,
}

/// Turns on SVM on the running CPU with `hsave` as its host save area.
///
/// # Safety
/// `hsave` is a 4 KiB-aligned page owned by this CPU for as long as SVM runs.
pub unsafe fn enable(hsave: u64) {
    const EFER_SVME: u64 = 1 << 12;
    const VM_HSAVE_PA: u32 = 0xc001_0117;
    // SAFETY: per the caller; SVM was checked present by the caller's CPUID test.
    unsafe {
        x86::msr::wrmsr(
            x86::msr::IA32_EFER,
            x86::msr::rdmsr(x86::msr::IA32_EFER) | EFER_SVME,
        );
        x86::msr::wrmsr(VM_HSAVE_PA, hsave);
    }
}

/// Runs the guest of `state` until its next #VMEXIT.
///
/// The guest's hidden state (FS, GS, TR, LDTR, KernelGsBase, the syscall and sysenter MSRs),
/// which VMRUN and #VMEXIT leave alone, is loaded with VMLOAD at the first call and then stays
/// in the CPU across the exits: the simulator uses none of it between two runs, and QEMU's TCG
/// runs each VMLOAD as a helper costing about a microsecond, two per exit if the host's state
/// came back after every exit. The guest VMCB's copy of that state is current only after
/// [`save_guest_hidden`] or [`restore_host`].
///
/// # Safety
/// SVM is enabled on this CPU, the guest VMCB is consistent and its intercepts include VMRUN.
/// `state` is used on this CPU only. From the first call until [`restore_host`] the CPU runs
/// the simulator with the guest's FS, GS, TR, LDTR and syscall MSRs: the caller takes no
/// exception through an IST gate meanwhile (it runs on `crate::run_idt`) and uses no FS- or
/// GS-relative memory, SYSCALL or SWAPGS.
pub unsafe fn run(state: &mut RunState) {
    // SAFETY: per the caller; `vmrun_asm` saves and restores every callee-saved register and
    // the callee-saved x87/SSE control state.
    unsafe { vmrun_asm(state) }
}

/// Copies the guest's hidden state from the CPU into the guest VMCB (VMSAVE), where the
/// simulator reads it (the TR for exception delivery); nothing to do before the first [`run`].
///
/// # Safety
/// `state` is the one [`run`] uses on this CPU.
pub unsafe fn save_guest_hidden(state: &RunState) {
    if state.guest_loaded != 0 {
        // SAFETY: the guest VMCB is this CPU's, and the CPU holds the guest's hidden state.
        unsafe { asm!("vmsave rax", in("rax") state.guest_vmcb, options(nostack)) };
    }
}

/// Gives the CPU the host's hidden state back after [`run`], the guest's saved in its VMCB.
///
/// # Safety
/// `state` is the one [`run`] uses on this CPU.
pub unsafe fn restore_host(state: &mut RunState) {
    if state.guest_loaded != 0 {
        // SAFETY: both pages are this CPU's; the host page holds what the first run saved.
        unsafe {
            asm!(
                "vmsave rax",
                "mov rax, {host}",
                "vmload rax",
                host = in(reg) state.host_vmcb,
                inout("rax") state.guest_vmcb => _,
                options(nostack),
            )
        };
        state.guest_loaded = 0;
    }
}

/// Offsets of the x87 control word and of MXCSR in an FXSAVE area.
const FXSAVE_FCW: usize = 0;
const FXSAVE_MXCSR: usize = 24;

/// VMRUN with the guest's GPRs and x87/SSE state loaded, and at the first run its hidden state
/// (see [`run`]), interrupts off (GIF is cleared by VMRUN's exit anyway; host interrupts are
/// not used).
///
/// Each instruction here costs: QEMU's TCG runs VMSAVE, VMLOAD, FXSAVE and FXRSTOR as helpers,
/// and after each world switch it refills its TLB for every page touched. So the host keeps
/// only what it needs: the callee-saved GPRs (pushed), the x87 control word and MXCSR (the
/// SysV ABI makes XMM and x87 registers caller-saved; after FNINIT the x87 stack is empty, as
/// the ABI expects at a call).
#[unsafe(naked)]
unsafe extern "C" fn vmrun_asm(state: *mut RunState) {
    naked_asm!(
        "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
        "push rdi",
        // Host x87/SSE control out, guest x87/SSE state in.
        "fnstcw [rdi + {host_fpu} + {fcw}]",
        "stmxcsr [rdi + {host_fpu} + {mxcsr}]",
        "fxrstor64 [rdi + {guest_fpu}]",
        // Host hidden state (FS/GS/TR/LDTR/KernelGsBase/syscall MSRs) out and the guest's in,
        // unless the guest's is still in the CPU.
        "cmp qword ptr [rdi + {guest_loaded}], 0",
        "jne 2f",
        "mov rax, [rdi + {host_vmcb}]",
        "vmsave rax",
        "mov rax, [rdi + {guest_vmcb}]",
        "vmload rax",
        "mov qword ptr [rdi + {guest_loaded}], 1",
        "2:",
        "mov rax, [rdi + {guest_vmcb}]",
        "mov rbx, [rdi + 0]", "mov rcx, [rdi + 8]", "mov rdx, [rdi + 16]", "mov rsi, [rdi + 24]",
        "mov rbp, [rdi + 40]", "mov r8, [rdi + 48]", "mov r9, [rdi + 56]", "mov r10, [rdi + 64]",
        "mov r11, [rdi + 72]", "mov r12, [rdi + 80]", "mov r13, [rdi + 88]", "mov r14, [rdi + 96]",
        "mov r15, [rdi + 104]",
        "mov rdi, [rdi + 32]",
        "vmrun rax",
        // The guest's RDI goes through the stack so that the state pointer can come back.
        "push rdi",
        "mov rdi, [rsp + 8]",
        "mov [rdi + 0], rbx", "mov [rdi + 8], rcx", "mov [rdi + 16], rdx", "mov [rdi + 24], rsi",
        "mov [rdi + 40], rbp", "mov [rdi + 48], r8", "mov [rdi + 56], r9", "mov [rdi + 64], r10",
        "mov [rdi + 72], r11", "mov [rdi + 80], r12", "mov [rdi + 88], r13", "mov [rdi + 96], r14",
        "mov [rdi + 104], r15",
        "pop rax",
        "mov [rdi + 32], rax",
        "fxsave64 [rdi + {guest_fpu}]",
        "fninit",
        "fldcw [rdi + {host_fpu} + {fcw}]",
        "ldmxcsr [rdi + {host_fpu} + {mxcsr}]",
        "pop rdi",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
        "ret",
        guest_vmcb = const core::mem::offset_of!(RunState, guest_vmcb),
        host_vmcb = const core::mem::offset_of!(RunState, host_vmcb),
        guest_fpu = const core::mem::offset_of!(RunState, guest_fpu),
        host_fpu = const core::mem::offset_of!(RunState, host_fpu),
        guest_loaded = const core::mem::offset_of!(RunState, guest_loaded),
        fcw = const FXSAVE_FCW,
        mxcsr = const FXSAVE_MXCSR,
    )
}

/// Whether this CPU has SVM with nested paging (CPUID 0x8000_0001 ECX[2], 0x8000_000A EDX[0]).
pub fn available() -> bool {
    let ext = x86::msr::cpuid(0x8000_0001, 0);
    ext.ecx & (1 << 2) != 0 && x86::msr::cpuid(0x8000_000a, 0).edx & 1 != 0
}
