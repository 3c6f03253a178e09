//! Hypervisor feature bitmap, returned by the MSR protocol (0x080/0x081) and
//! by the HV_FEATURES NAE event.

bitflags::bitflags! {
    /// Features the hypervisor says it supports (GHCB spec, "Hypervisor
    /// Feature Support"). Unknown bits are kept: a newer hypervisor may set
    /// them and that is not an error.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct HvFeatures: u64 {
        /// SEV-SNP is supported (required for an SNP guest).
        const SNP = 1 << 0;
        /// SNP AP creation NAE event is supported.
        const SNP_AP_CREATION = 1 << 1;
        /// SNP restricted injection.
        const SNP_RESTRICTED_INJECTION = 1 << 2;
        /// SNP restricted injection timer.
        const SNP_RESTRICTED_INJECTION_TIMER = 1 << 3;
        /// APIC ID list NAE event.
        const APIC_ID_LIST = 1 << 4;
        /// SNP multi-VMPL support (run at VMPL).
        const SNP_MULTI_VMPL = 1 << 5;
    }
}

/// The MSR protocol carries the bitmap in `GHCBData[63:12]`, i.e. 52 bits.
pub const HV_FEATURES_MSR_MASK: u64 = (1 << 52) - 1;
