//! The SEV_STATUS MSR: which SEV features are active for this guest. Read
//! with RDMSR; for SEV-ES/SNP guests the read is not intercepted, so its
//! value is trustworthy.

/// MSR number of SEV_STATUS.
pub const SEV_STATUS_MSR: u32 = 0xc001_0131;

bitflags::bitflags! {
    /// SEV_STATUS bits (APM vol. 2, "SEV_STATUS MSR").
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SevStatus: u64 {
        const SEV = 1 << 0;
        const SEV_ES = 1 << 1;
        const SEV_SNP = 1 << 2;
        const VTOM = 1 << 3;
        const REFLECT_VC = 1 << 4;
        const RESTRICTED_INJECTION = 1 << 5;
        const ALTERNATE_INJECTION = 1 << 6;
        const DEBUG_SWAP = 1 << 7;
        const PREVENT_HOST_IBS = 1 << 8;
        const BTB_ISOLATION = 1 << 9;
        const VMPL_SSS = 1 << 10;
        const SECURE_TSC = 1 << 11;
        const VMGEXIT_PARAMETER = 1 << 12;
        const IBS_VIRTUALIZATION = 1 << 14;
        const VMSA_REG_PROT = 1 << 16;
        const SMT_PROTECTION = 1 << 17;
        const SECURE_AVIC = 1 << 18;
    }
}

impl SevStatus {
    /// Decodes the MSR value, keeping bits this crate does not name.
    pub fn from_msr(v: u64) -> Self {
        Self::from_bits_retain(v)
    }

    /// The SEV_FEATURES bit pattern of the VMSA that produces this status
    /// (SEV_STATUS bits 2 and up are SEV_FEATURES bits 0 and up).
    pub fn sev_features(self) -> u64 {
        self.bits() >> 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmsa::SevFeatures;

    #[test]
    fn bits_match_apm() {
        assert_eq!(SevStatus::SEV_SNP.bits(), 4);
        assert_eq!(SevStatus::DEBUG_SWAP.bits(), 0x80);
        assert_eq!(SevStatus::SECURE_TSC.bits(), 0x800);
        assert_eq!(SevStatus::SMT_PROTECTION.bits(), 1 << 17);
        let s = SevStatus::from_msr(0x807);
        assert_eq!(
            SevFeatures::from_bits_retain(s.sev_features()),
            SevFeatures::SNP_ACTIVE | SevFeatures::SECURE_TSC
        );
    }
}
