//! NAE event exit codes (SW_EXITCODE) and the sub-operation encodings some of
//! them carry in SW_EXITINFO1. Values are from the GHCB specification and
//! APM vol. 2 appendix C (SVM intercept codes), which SEV-ES reuses both as
//! the #VC error code and as SW_EXITCODE.

use crate::termination::TerminationReason;

/// A NAE event (or #VC cause) this crate knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum ExitCode {
    ReadDr7 = 0x27,
    WriteDr7 = 0x37,
    /// #DB intercept (#VC when DebugSwap is off): forwarded, never sent.
    ExceptionDb = 0x41,
    /// #AC intercept: forwarded to the guest's #AC handler, never sent.
    ExceptionAc = 0x51,
    Rdtsc = 0x6e,
    Rdpmc = 0x6f,
    Cpuid = 0x72,
    Invd = 0x76,
    Ioio = 0x7b,
    Msr = 0x7c,
    Vmmcall = 0x81,
    Rdtscp = 0x87,
    Wbinvd = 0x89,
    /// MONITOR and MONITORX share this code.
    Monitor = 0x8a,
    /// MWAIT and MWAITX share this code.
    Mwait = 0x8b,
    /// Nested page fault: the #VC cause for MMIO (reserved-bit NPF).
    Npf = 0x400,
    MmioRead = 0x8000_0001,
    MmioWrite = 0x8000_0002,
    NmiComplete = 0x8000_0003,
    ApHltLoop = 0x8000_0004,
    ApJumpTable = 0x8000_0005,
    SnpPsc = 0x8000_0010,
    SnpGuestRequest = 0x8000_0011,
    SnpExtGuestRequest = 0x8000_0012,
    SnpApCreation = 0x8000_0013,
    SnpRunVmpl = 0x8000_0018,
    HvFeatures = 0x8000_fffd,
    TermRequest = 0x8000_fffe,
    /// Sent by a guest to report a #VC it cannot handle.
    UnsupportedEvent = 0x8000_ffff,
}

impl ExitCode {
    const ALL: [ExitCode; 29] = [
        Self::ReadDr7,
        Self::WriteDr7,
        Self::ExceptionDb,
        Self::ExceptionAc,
        Self::Rdtsc,
        Self::Rdpmc,
        Self::Cpuid,
        Self::Invd,
        Self::Ioio,
        Self::Msr,
        Self::Vmmcall,
        Self::Rdtscp,
        Self::Wbinvd,
        Self::Monitor,
        Self::Mwait,
        Self::Npf,
        Self::MmioRead,
        Self::MmioWrite,
        Self::NmiComplete,
        Self::ApHltLoop,
        Self::ApJumpTable,
        Self::SnpPsc,
        Self::SnpGuestRequest,
        Self::SnpExtGuestRequest,
        Self::SnpApCreation,
        Self::SnpRunVmpl,
        Self::HvFeatures,
        Self::TermRequest,
        Self::UnsupportedEvent,
    ];

    /// The exit code with this raw value, if this crate knows it.
    pub fn from_raw(raw: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u64 == raw)
    }

    /// The raw SW_EXITCODE value.
    pub const fn raw(self) -> u64 {
        self as u64
    }
}

/// SW_EXITINFO1 of AP_JUMP_TABLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum ApJumpTableOp {
    /// Set the jump table GPA (SW_EXITINFO2).
    Set = 0,
    /// Get the jump table GPA (returned in SW_EXITINFO2).
    Get = 1,
}

/// `SW_EXITINFO1[31:0]` of SNP_AP_CREATION.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ApCreationOp {
    /// Use the VMSA when the AP next receives INIT.
    CreateOnInit = 0,
    /// Start the AP now with the VMSA.
    Create = 1,
    /// Stop the AP and forget its VMSA.
    Destroy = 2,
}

impl ApCreationOp {
    /// Decodes `SW_EXITINFO1[31:0]`.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::CreateOnInit),
            1 => Some(Self::Create),
            2 => Some(Self::Destroy),
            _ => None,
        }
    }

    /// SW_EXITINFO1 for this operation on the AP with `apic_id`.
    pub fn exit_info1(self, apic_id: u32) -> u64 {
        (apic_id as u64) << 32 | self as u64
    }
}

/// SW_EXITINFO1 of TERM_REQUEST: reason set in bits 3:0, code in bits 11:4.
pub fn term_request_info1(reason: TerminationReason) -> u64 {
    reason.set() as u64 | (reason.code() as u64) << 4
}

/// Decodes SW_EXITINFO1 of TERM_REQUEST; `None` if bits 63:12 are set.
pub fn term_request_reason(info1: u64) -> Option<TerminationReason> {
    (info1 >> 12 == 0).then(|| TerminationReason::new((info1 & 0xf) as u8, (info1 >> 4) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_svm_h() {
        let expect = [
            (ExitCode::ReadDr7, 0x27),
            (ExitCode::WriteDr7, 0x37),
            (ExitCode::ExceptionDb, 0x41),
            (ExitCode::ExceptionAc, 0x51),
            (ExitCode::Rdtsc, 0x6e),
            (ExitCode::Rdpmc, 0x6f),
            (ExitCode::Cpuid, 0x72),
            (ExitCode::Invd, 0x76),
            (ExitCode::Ioio, 0x7b),
            (ExitCode::Msr, 0x7c),
            (ExitCode::Vmmcall, 0x81),
            (ExitCode::Rdtscp, 0x87),
            (ExitCode::Wbinvd, 0x89),
            (ExitCode::Monitor, 0x8a),
            (ExitCode::Mwait, 0x8b),
            (ExitCode::Npf, 0x400),
            (ExitCode::MmioRead, 0x8000_0001),
            (ExitCode::MmioWrite, 0x8000_0002),
            (ExitCode::NmiComplete, 0x8000_0003),
            (ExitCode::ApHltLoop, 0x8000_0004),
            (ExitCode::ApJumpTable, 0x8000_0005),
            (ExitCode::SnpPsc, 0x8000_0010),
            (ExitCode::SnpGuestRequest, 0x8000_0011),
            (ExitCode::SnpExtGuestRequest, 0x8000_0012),
            (ExitCode::SnpApCreation, 0x8000_0013),
            (ExitCode::SnpRunVmpl, 0x8000_0018),
            (ExitCode::HvFeatures, 0x8000_fffd),
            (ExitCode::TermRequest, 0x8000_fffe),
            (ExitCode::UnsupportedEvent, 0x8000_ffff),
        ];
        assert_eq!(expect.len(), ExitCode::ALL.len());
        for (c, v) in expect {
            assert_eq!(c.raw(), v);
            assert_eq!(ExitCode::from_raw(v), Some(c));
        }
        assert_eq!(ExitCode::from_raw(0x73), None);
    }

    #[test]
    fn sub_encodings() {
        assert_eq!(ApCreationOp::Destroy.exit_info1(7), 0x7_0000_0002);
        assert_eq!(ApCreationOp::from_raw(3), None);
        let r = TerminationReason::new(1, 0x5a);
        assert_eq!(term_request_info1(r), 0x5a1);
        assert_eq!(term_request_reason(0x5a1), Some(r));
        assert_eq!(term_request_reason(0x1000), None);
    }
}
