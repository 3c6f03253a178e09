//! Termination reasons: the (reason set, reason code) pair a guest hands the
//! hypervisor when it gives up, through the MSR protocol (0x100) or the
//! TERM_REQUEST NAE event.
//!
//! Set 0 is defined by the GHCB specification. Set 1 is ours ("guest
//! specific"): every way this crate, the decompressor stage or the kernel can
//! decide that the hypervisor cannot be trusted any further has one code, so a
//! host log line says exactly what went wrong without a guest console.

use core::sync::atomic::{AtomicU16, Ordering};

/// Reason set defined by the GHCB specification.
pub const REASON_SET_GHCB: u8 = 0;
/// Reason set whose codes this project defines ([`GuestReason`]).
pub const REASON_SET_GUEST: u8 = 1;

/// A termination reason as carried on the wire: a 4-bit set and an 8-bit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TerminationReason {
    set: u8,
    code: u8,
}

impl TerminationReason {
    /// Builds a reason; `set` is truncated to the 4 bits the protocol carries.
    pub const fn new(set: u8, code: u8) -> Self {
        Self {
            set: set & 0xf,
            code,
        }
    }

    /// The reason set (0 = GHCB specification, 1 = [`GuestReason`]).
    pub const fn set(self) -> u8 {
        self.set
    }

    /// The reason code within the set.
    pub const fn code(self) -> u8 {
        self.code
    }

    /// The set-1 reason this stands for, if it is one of ours.
    pub fn guest_reason(self) -> Option<GuestReason> {
        if self.set == REASON_SET_GUEST {
            GuestReason::from_code(self.code)
        } else {
            None
        }
    }
}

/// The guest's termination reason once one is chosen ([`settle`]), as `0x8000 | set << 8 | code`;
/// 0 before.
static SETTLED: AtomicU16 = AtomicU16::new(0);

/// Chooses the reason the guest terminates with: `reason` if it is the first, which is logged,
/// else the first one again, silently. The guest's ways of asking to terminate call this first
/// (`sev::guest`), then [`msr_protocol::terminate`](crate::msr_protocol::terminate) or
/// [`nae::terminate`](crate::nae::terminate) with its answer.
///
/// The log line is console output, which under SEV-ES is a #VC, and a #VC that fails asks to
/// terminate again: logging every time could recurse until the stack is gone, and the
/// hypervisor would hear of the last failure, not the first. Another CPU that terminates
/// meanwhile sends the same reason.
pub fn settle(reason: TerminationReason) -> TerminationReason {
    let wire = 0x8000 | u16::from(reason.set) << 8 | u16::from(reason.code);
    match SETTLED.compare_exchange(0, wire, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            log::error!(
                "terminating: reason set {} code {:#x}",
                reason.set,
                reason.code
            );
            reason
        }
        Err(first) => TerminationReason::new((first >> 8) as u8, first as u8),
    }
}

impl From<GhcbReason> for TerminationReason {
    fn from(r: GhcbReason) -> Self {
        Self::new(REASON_SET_GHCB, r as u8)
    }
}

impl From<GuestReason> for TerminationReason {
    fn from(r: GuestReason) -> Self {
        Self::new(REASON_SET_GUEST, r as u8)
    }
}

/// Reason codes of set 0, defined by the GHCB specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GhcbReason {
    /// General termination request.
    General = 0,
    /// The hypervisor's SEV-ES/GHCB protocol range does not include a version
    /// this guest speaks.
    ProtocolUnsupported = 1,
    /// SEV-SNP features the guest needs are not supported by the hypervisor.
    SnpUnsupported = 2,
}

/// Reason codes of set 1: this project's own, one per failure a guest stage
/// detects. The numbers are part of our guest ABI: never renumber, only add.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GuestReason {
    /// A #VC arrived with an exit code the emulation core does not handle.
    UnsupportedExit = 0x01,
    /// The instruction at RIP does not match the #VC exit code (WeSee,
    /// CVE-2024-25742: a hypervisor injecting #VC to fake an intercept).
    ExitCodeMismatch = 0x02,
    /// A #VC was raised while CPL was 3 (CVE-2023-46813).
    UserModeVc = 0x03,
    /// The instruction at RIP could not be decoded.
    DecodeFailed = 0x04,
    /// An MMIO access targeted an encrypted (C-bit) mapping: emulating it
    /// would leak or let the hypervisor forge private memory.
    MmioEncrypted = 0x05,
    /// An MMIO access targeted a user-accessible mapping.
    MmioUserMapping = 0x06,
    /// An instruction that faults on MMIO but that the core does not emulate
    /// (e.g. an ALU op on device memory, or an access crossing a page).
    UnsupportedMmio = 0x07,
    /// The hypervisor answered with an exception other than #GP/#UD, or an
    /// event that is not an exception.
    BadHypervisorException = 0x08,
    /// The hypervisor reported an error (SW_EXITINFO1 = 2).
    HypervisorError = 0x09,
    /// A register the reply must carry lacks its valid bit.
    MissingValidBit = 0x0a,
    /// A reply field has a value the protocol does not allow.
    MalformedReply = 0x0b,
    /// INVD was executed; it would discard dirty lines of encrypted memory.
    InvdRefused = 0x0c,
    /// An MSR-protocol reply had the wrong response code, echoed the wrong
    /// value, or set reserved bits.
    MsrProtocol = 0x0d,
    /// The hypervisor's GHCB protocol range does not include version 2.
    ProtocolVersion = 0x0e,
    /// CPUID hid SEV/SEV-ES/SNP or reported a C-bit that contradicts
    /// SEV_STATUS or the CPUID page.
    CpuidLies = 0x0f,
    /// The SNP CPUID page is malformed (count out of range).
    CpuidPageInvalid = 0x10,
    /// Registering the GHCB GPA failed.
    GhcbRegistration = 0x11,
    /// A page state change failed, went backwards or set reserved bits.
    PageStateChange = 0x12,
    /// PVALIDATE failed or reported that nothing changed.
    Pvalidate = 0x13,
    /// AP creation was refused or the AP jump table is bogus.
    ApCreation = 0x14,
    /// A #VC nested deeper than the backup GHCB allows.
    NestedVc = 0x15,
    /// The guest kernel panicked.
    Panic = 0x16,
    /// The launch parameters of an IGVM-launched stage (parameter area, memory map, command
    /// line) are malformed or leave no room for the kernel.
    LaunchParameters = 0x17,
    /// The stage could not unpack, check or load the kernel it carries.
    KernelLoad = 0x18,
    /// An exception the guest has no handler for (its register dump went to the console).
    UnexpectedException = 0x19,
    /// SEV-SNP is active, and the guest (the stage's EFI entry) supports SEV-ES only: it does
    /// not validate pages.
    SnpUnsupported = 0x1a,
    /// The stage could not build its own page tables (table pool exhausted, a range outside
    /// the firmware's memory map).
    StageMemory = 0x1b,
    /// The hypervisor's feature bitmap (HV_FEATURES) contradicts itself: SNP features without
    /// SNP (`hv_features::check`).
    HvFeatures = 0x1c,
    /// An event on an exception vector whose exceptions push an error code came without one:
    /// an external interrupt the hypervisor injected there (Heckler), which the guest must not
    /// take for a fault or a #VC (`x86::interrupts::InterruptFrame::lacks_its_error_code`).
    MissingErrorCode = 0x1d,
    /// An interrupt on a vector nothing of the guest's raises (such as 0x80): under SEV-ES only
    /// the hypervisor, which may inject any vector, can have sent it.
    UnexpectedInterrupt = 0x1e,
}

impl GuestReason {
    /// The variant with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        use GuestReason::*;
        const ALL: [GuestReason; 30] = [
            UnsupportedExit,
            ExitCodeMismatch,
            UserModeVc,
            DecodeFailed,
            MmioEncrypted,
            MmioUserMapping,
            UnsupportedMmio,
            BadHypervisorException,
            HypervisorError,
            MissingValidBit,
            MalformedReply,
            InvdRefused,
            MsrProtocol,
            ProtocolVersion,
            CpuidLies,
            CpuidPageInvalid,
            GhcbRegistration,
            PageStateChange,
            Pvalidate,
            ApCreation,
            NestedVc,
            Panic,
            LaunchParameters,
            KernelLoad,
            UnexpectedException,
            SnpUnsupported,
            StageMemory,
            HvFeatures,
            MissingErrorCode,
            UnexpectedInterrupt,
        ];
        ALL.into_iter().find(|r| *r as u8 == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test of this binary that settles a reason (the choice is program-wide).
    #[test]
    fn the_first_reason_settled_is_the_one_sent() {
        let first = TerminationReason::from(GuestReason::NestedVc);
        assert_eq!(settle(first), first);
        assert_eq!(settle(GhcbReason::ProtocolUnsupported.into()), first);
        assert_eq!(settle(TerminationReason::new(0xf, 0xff)), first);
    }

    #[test]
    fn guest_codes_round_trip_and_are_dense() {
        for code in 1..=0x1eu8 {
            let r = GuestReason::from_code(code).expect("codes 1..=0x1e are all defined");
            assert_eq!(r as u8, code);
            let t = TerminationReason::from(r);
            assert_eq!((t.set(), t.code()), (REASON_SET_GUEST, code));
            assert_eq!(t.guest_reason(), Some(r));
        }
        assert_eq!(GuestReason::from_code(0), None);
        assert_eq!(GuestReason::from_code(0x1f), None);
    }

    #[test]
    fn set_is_four_bits() {
        assert_eq!(TerminationReason::new(0x1f, 3).set(), 0xf);
        let t = TerminationReason::from(GhcbReason::ProtocolUnsupported);
        assert_eq!((t.set(), t.code()), (0, 1));
        assert_eq!(t.guest_reason(), None);
    }
}
