//! CPUID facts about SEV: leaf 0x8000001F decoding, its consistency with
//! SEV_STATUS (scenario 10), and the SNP CPUID page, whose entries were
//! checked by the firmware at launch and are therefore the only CPUID source
//! an SNP guest trusts.

use core::mem::{offset_of, size_of};

use crate::sev_status::SevStatus;

/// The memory-encryption leaf.
pub const SEV_CPUID_LEAF: u32 = 0x8000_001f;

bitflags::bitflags! {
    /// CPUID 0x8000001F EAX.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SevCpuidFeatures: u32 {
        const SME = 1 << 0;
        const SEV = 1 << 1;
        const PAGE_FLUSH_MSR = 1 << 2;
        const SEV_ES = 1 << 3;
        const SEV_SNP = 1 << 4;
        const VMPL = 1 << 5;
        const RMPQUERY = 1 << 6;
        const VMPL_SSS = 1 << 7;
        const SECURE_TSC = 1 << 8;
        const TSC_AUX_VIRTUALIZATION = 1 << 9;
        const HW_CACHE_COHERENCY = 1 << 10;
        const HOST_64BIT_ONLY = 1 << 11;
        const RESTRICTED_INJECTION = 1 << 12;
        const ALTERNATE_INJECTION = 1 << 13;
        const DEBUG_SWAP = 1 << 14;
        const PREVENT_HOST_IBS = 1 << 15;
        const VTE = 1 << 16;
        const VMGEXIT_PARAMETER = 1 << 17;
        const VIRTUAL_TOM_MSR = 1 << 18;
        const IBS_VIRTUALIZATION = 1 << 19;
        const VMSA_REG_PROT = 1 << 24;
        const SMT_PROTECTION = 1 << 25;
    }
}

/// Decoded CPUID 0x8000001F.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevCpuid {
    pub features: SevCpuidFeatures,
    /// `EBX[5:0]`: position of the C-bit in a page table entry.
    pub cbit: u8,
    /// `EBX[11:6]`: physical address bits lost when encryption is on.
    pub phys_addr_reduction: u8,
    /// `EBX[15:12]`: number of VMPLs.
    pub vmpl_count: u8,
    /// ECX: number of encrypted guests supported simultaneously.
    pub max_encrypted_guests: u32,
    /// EDX: minimum ASID of an SEV (not SEV-ES) guest.
    pub min_sev_asid: u32,
}

/// Why CPUID contradicts what the guest knows for certain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidMismatch {
    /// SEV_STATUS shows a feature CPUID denies.
    HiddenFeature,
    /// The C-bit is out of the architectural range (32..=51) or differs from
    /// the value the guest was told by a trusted source.
    CBit,
}

impl SevCpuid {
    /// Decodes EAX..EDX of leaf 0x8000001F.
    pub fn from_regs([eax, ebx, ecx, edx]: [u32; 4]) -> Self {
        Self {
            features: SevCpuidFeatures::from_bits_retain(eax),
            cbit: (ebx & 0x3f) as u8,
            phys_addr_reduction: (ebx >> 6 & 0x3f) as u8,
            vmpl_count: (ebx >> 12 & 0xf) as u8,
            max_encrypted_guests: ecx,
            min_sev_asid: edx,
        }
    }

    /// Checks CPUID against SEV_STATUS (an MSR the hypervisor cannot
    /// intercept for an SEV-ES guest) and, when known, a trusted C-bit (from
    /// the SNP CPUID page, or the launch configuration).
    pub fn check(&self, status: SevStatus, trusted_cbit: Option<u8>) -> Result<(), CpuidMismatch> {
        let needs = [
            (SevStatus::SEV, SevCpuidFeatures::SEV),
            (SevStatus::SEV_ES, SevCpuidFeatures::SEV_ES),
            (SevStatus::SEV_SNP, SevCpuidFeatures::SEV_SNP),
        ];
        if needs
            .iter()
            .any(|(s, f)| status.contains(*s) && !self.features.contains(*f))
        {
            return Err(CpuidMismatch::HiddenFeature);
        }
        if !(32..=51).contains(&self.cbit) || trusted_cbit.is_some_and(|c| c != self.cbit) {
            return Err(CpuidMismatch::CBit);
        }
        Ok(())
    }
}

/// Whether a CPUID answer denies SEV: the extended range stops before
/// 0x8000001F, or that leaf lacks the SEV bit. A #VC only happens in an
/// SEV-ES guest, so such an answer can only be a hypervisor trying to steer
/// the guest onto its non-SEV paths (scenario 10).
pub fn hides_sev(leaf: u32, out: [u32; 4]) -> bool {
    match leaf {
        0x8000_0000 => out[0] < SEV_CPUID_LEAF,
        SEV_CPUID_LEAF => {
            !SevCpuidFeatures::from_bits_retain(out[0]).contains(SevCpuidFeatures::SEV)
        }
        _ => false,
    }
}

/// One entry of the SNP CPUID page (SNP ABI, "CPUID_FUNCTION").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SnpCpuidFunction {
    pub eax_in: u32,
    pub ecx_in: u32,
    pub xcr0_in: u64,
    pub xss_in: u64,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub reserved: u64,
}

/// Most entries of the CPUID page.
pub const SNP_CPUID_MAX_FUNCTIONS: usize = 64;

/// The SNP CPUID page contents (the table at the start of the page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SnpCpuidTable {
    pub count: u32,
    pub reserved1: u32,
    pub reserved2: u64,
    pub functions: [SnpCpuidFunction; SNP_CPUID_MAX_FUNCTIONS],
}

const _: () = {
    assert!(size_of::<SnpCpuidFunction>() == 48);
    assert!(offset_of!(SnpCpuidTable, functions) == 16);
    assert!(size_of::<SnpCpuidTable>() == 16 + 64 * 48);
};

/// The CPUID page is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidPageInvalid;

/// Leaves whose output depends on ECX (Linux's list of indexed functions).
pub fn is_indexed_leaf(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xb
            | 0xd
            | 0xf
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1d
            | 0x1e
            | 0x1f
            | 0x24
            | 0x8000_001d
            | 0x8000_0020
            | 0x8000_0026
    )
}

impl Default for SnpCpuidTable {
    fn default() -> Self {
        Self {
            count: 0,
            reserved1: 0,
            reserved2: 0,
            functions: [SnpCpuidFunction::default(); SNP_CPUID_MAX_FUNCTIONS],
        }
    }
}

impl SnpCpuidTable {
    /// Checks the entry count (the only field whose bad value could make a
    /// lookup read past the table).
    pub fn validate(&self) -> Result<(), CpuidPageInvalid> {
        if self.count as usize > SNP_CPUID_MAX_FUNCTIONS {
            Err(CpuidPageInvalid)
        } else {
            Ok(())
        }
    }

    /// The entries in use (empty if the count is invalid).
    pub fn entries(&self) -> &[SnpCpuidFunction] {
        self.functions
            .get(..self.count as usize)
            .unwrap_or_default()
    }

    /// Looks up a function: ECX matters for indexed leaves; for leaf 0xD
    /// the entry must also be for the given XCR0 and XSS.
    pub fn lookup(&self, leaf: u32, subleaf: u32, xcr0: u64, xss: u64) -> Option<[u32; 4]> {
        self.entries()
            .iter()
            .find(|f| {
                f.eax_in == leaf
                    && (!is_indexed_leaf(leaf) || f.ecx_in == subleaf)
                    && (leaf != 0xd || (f.xcr0_in == xcr0 && f.xss_in == xss))
            })
            .map(|f| [f.eax, f.ebx, f.ecx, f.edx])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sev_hiding_answers() {
        assert!(hides_sev(0x8000_0000, [0x8000_0008, 0, 0, 0]));
        assert!(!hides_sev(0x8000_0000, [0x8000_0021, 0, 0, 0]));
        assert!(hides_sev(SEV_CPUID_LEAF, [0x1, 51, 0, 0]));
        assert!(!hides_sev(SEV_CPUID_LEAF, [0x2, 51, 0, 0]));
        assert!(!hides_sev(0, [0; 4]));
    }

    #[test]
    fn leaf_8000001f_decoding() {
        let c = SevCpuid::from_regs([0x1_001f, 51 | 1 << 6 | 4 << 12, 509, 1]);
        assert!(c.features.contains(
            SevCpuidFeatures::SEV | SevCpuidFeatures::SEV_ES | SevCpuidFeatures::SEV_SNP
        ));
        assert!(c.features.contains(SevCpuidFeatures::VTE));
        assert_eq!((c.cbit, c.phys_addr_reduction, c.vmpl_count), (51, 1, 4));
        assert_eq!((c.max_encrypted_guests, c.min_sev_asid), (509, 1));
    }

    #[test]
    fn consistency_with_sev_status() {
        let c = SevCpuid::from_regs([0b1010, 47, 0, 0]);
        let es = SevStatus::SEV | SevStatus::SEV_ES;
        assert_eq!(c.check(es, None), Ok(()));
        assert_eq!(c.check(es, Some(47)), Ok(()));
        assert_eq!(c.check(es, Some(51)), Err(CpuidMismatch::CBit));
        assert_eq!(
            c.check(es | SevStatus::SEV_SNP, None),
            Err(CpuidMismatch::HiddenFeature)
        );
        let hidden = SevCpuid::from_regs([0, 47, 0, 0]);
        assert_eq!(
            hidden.check(SevStatus::SEV, None),
            Err(CpuidMismatch::HiddenFeature)
        );
        let bad_cbit = SevCpuid::from_regs([0b1010, 12, 0, 0]);
        assert_eq!(bad_cbit.check(es, None), Err(CpuidMismatch::CBit));
    }

    #[test]
    fn cpuid_page_layout_and_lookup() {
        assert_eq!(offset_of!(SnpCpuidFunction, xcr0_in), 8);
        assert_eq!(offset_of!(SnpCpuidFunction, eax), 24);
        assert_eq!(offset_of!(SnpCpuidFunction, edx), 36);
        let mut t = SnpCpuidTable::default();
        let f = |eax_in, ecx_in, xcr0_in, eax| SnpCpuidFunction {
            eax_in,
            ecx_in,
            xcr0_in,
            eax,
            ..Default::default()
        };
        t.functions[0] = f(0, 0, 0, 0x10);
        t.functions[1] = f(7, 1, 0, 0x71);
        t.functions[2] = f(0xd, 0, 3, 0xd3);
        t.functions[3] = f(1, 9, 0, 0x1);
        t.count = 4;
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.lookup(0, 5, 1, 0), Some([0x10, 0, 0, 0]));
        assert_eq!(t.lookup(7, 0, 1, 0), None);
        assert_eq!(t.lookup(7, 1, 1, 0).map(|r| r[0]), Some(0x71));
        assert_eq!(t.lookup(0xd, 0, 1, 0), None);
        assert_eq!(t.lookup(0xd, 0, 3, 0).map(|r| r[0]), Some(0xd3));
        assert_eq!(
            t.lookup(1, 0, 1, 0).map(|r| r[0]),
            Some(1),
            "leaf 1 ignores ECX"
        );
        t.count = 65;
        assert_eq!(t.validate(), Err(CpuidPageInvalid));
        assert!(t.entries().is_empty());
        assert_eq!(t.lookup(0, 0, 1, 0), None);
    }
}
