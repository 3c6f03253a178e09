//! Test hypercalls of the SEV-ES simulator: what a test guest may ask of the simulator beyond
//! what a hypervisor offers, through the GHCB VMMCALL event (RAX = function, inputs in RBX; the
//! result comes back in RAX). A guest must not rely on them elsewhere: a real hypervisor answers
//! unknown VMMCALLs with an error or an exception.

/// Common prefix of every function number ("SIM" in the top bytes), so that a stray VMMCALL of
/// another guest never matches.
pub const PREFIX: u64 = 0x5349_4d00_0000_0000;
/// The bits of RAX that hold [`PREFIX`].
pub const PREFIX_MASK: u64 = 0xffff_ff00_0000_0000;
/// RAX after a function the simulator does not define (KVM's `-KVM_ENOSYS`).
pub const UNKNOWN_FUNCTION: u64 = -1000i64 as u64;

/// Injects one NMI into the calling vCPU, subject to NMI blocking: it is delivered when the
/// vCPU is not already handling an NMI (before NMI_COMPLETE). RAX = 0.
pub const INJECT_NMI: u64 = PREFIX | 1;
/// Starts the #VC round-trip benchmark: the simulator notes the host TSC and its exit counters.
pub const BENCH_START: u64 = PREFIX | 2;
/// Ends the benchmark; RBX = the number of iterations the guest ran. The simulator prints a
/// `SIM-BENCH` line with the elapsed time and the exits taken.
pub const BENCH_END: u64 = PREFIX | 3;
/// Reads one of the calling vCPU's NMI counters: RBX = [`NMIS_INJECTED`] or
/// [`NMI_COMPLETES`]. RAX = the count.
pub const NMI_COUNTER: u64 = PREFIX | 4;
/// NMI_COUNTER's RBX for the NMIs injected into this vCPU so far.
pub const NMIS_INJECTED: u64 = 0;
/// NMI_COUNTER's RBX for the NMI_COMPLETE events received from this vCPU so far.
pub const NMI_COMPLETES: u64 = 1;
/// Starts an NMI storm on the calling vCPU, replacing any storm it had: RBX = the number of
/// NMIs, RCX and RDX = the least and the most exits of this vCPU between one NMI's
/// NMI_COMPLETE (the first: this hypercall) and the next NMI, drawn at random in between
/// (fixed seed per vCPU). A gap of 0 injects the next NMI right after NMI_COMPLETE, before the
/// guest's IRET. RAX = 0, or [`INVALID_INPUT`] when RCX > RDX. The storm pauses while another
/// NMI is pending or being handled, and ends when all its NMIs were injected (or with RBX = 0).
pub const NMI_STORM: u64 = PREFIX | 5;
/// RAX after a function whose inputs the simulator refuses (KVM's `-KVM_EINVAL`).
pub const INVALID_INPUT: u64 = -22i64 as u64;
/// Makes the simulator answer the calling vCPU's next NMI_COMPLETE with an error (invalid
/// input), leaving NMIs blocked: a guest's handling of a refused NMI_COMPLETE. RAX = 0.
pub const REFUSE_NMI_COMPLETE: u64 = PREFIX | 6;
/// Makes an NMI pending when the calling vCPU next executes the instruction at the virtual
/// address RBX: the simulator stops it there with an execution breakpoint of its own (DR0, and
/// the VMCB's DR7, which the guest's DR7 events never touch), taken back once hit. The NMI is
/// injected right at that instruction unless the guest is handling one. For code no exit
/// interrupts, such as an NMI handler's last instructions. RAX = 0.
pub const NMI_AT: u64 = PREFIX | 7;
/// The simulator as a hostile hypervisor (Heckler): injects an external interrupt on vector
/// RBX (0..=255) into the calling vCPU at its next VMRUN, that is right after the VMGEXIT of
/// this hypercall, through EVENTINJ (type INTR: no error code, whatever the vector, and
/// regardless of RFLAGS.IF, as a hypervisor may). Nothing of the virtual APIC takes part (no
/// in-service bit: an EOI for it ends another vector's). RAX = 0, or [`INVALID_INPUT`] for a
/// vector above 255.
pub const INJECT_INTERRUPT: u64 = PREFIX | 8;
/// A CPUID leaf in the hypervisor range (0x4000_0000..=0x4fff_ffff; "@SIM") through which the
/// simulator reports the calling vCPU's time in guest mode: EDX:EAX = host TSC ticks spent
/// between VMRUN and #VMEXIT so far, ECX:EBX = its #VMEXITs so far. The subleaf (ECX) is
/// ignored, so a guest whose #VC handler caches CPUID answers by (leaf, subleaf) asks with a new
/// subleaf each time. It is CPUID rather than a VMMCALL so that it works through any #VC
/// handler, whatever hypercalls it lets through (the kernel's lets none); used by the kernel's
/// `bench=vc`.
pub const GUEST_TIME_LEAF: u32 = 0x4053_494d;
