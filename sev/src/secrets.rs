//! The SNP secrets page (SNP ABI 56860, "Secrets Page Format", version 3),
//! placed in guest memory by the firmware at launch: the VM platform
//! communication keys (VMPCKs) that encrypt guest messages, and the
//! SVSM-related fields.

use core::mem::{offset_of, size_of};

/// Length of a VMPCK.
pub const VMPCK_LEN: usize = 32;

/// The secrets page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct SecretsPage {
    pub version: u32,
    /// Bit 0: IMI_EN (the guest was migrated in by a migration agent).
    pub flags: u32,
    /// CPUID family/model/stepping of the platform.
    pub fms: u32,
    pub reserved_0x0c: u32,
    /// Guest OS-visible workarounds.
    pub gosvw: [u8; 16],
    pub vmpck0: [u8; VMPCK_LEN],
    pub vmpck1: [u8; VMPCK_LEN],
    pub vmpck2: [u8; VMPCK_LEN],
    pub vmpck3: [u8; VMPCK_LEN],
    /// Area reserved for the guest OS (message sequence numbers live here).
    pub os_area: [u8; 96],
    pub vmsa_tweak_bitmap: [u8; 64],
    pub svsm_base: u64,
    pub svsm_size: u64,
    pub svsm_caa: u64,
    pub svsm_max_version: u32,
    pub svsm_guest_vmpl: u8,
    pub reserved_0x15d: [u8; 3],
    /// Percentage decrease from nominal to mean TSC frequency.
    pub tsc_factor: u32,
    pub reserved_0x164: [u8; 3740],
}

const _: () = assert!(size_of::<SecretsPage>() == 4096);

impl SecretsPage {
    /// The VMPCK for `vmpl` (0..=3).
    pub fn vmpck(&self, vmpl: u8) -> Option<&[u8; VMPCK_LEN]> {
        match vmpl {
            0 => Some(&self.vmpck0),
            1 => Some(&self.vmpck1),
            2 => Some(&self.vmpck2),
            3 => Some(&self.vmpck3),
            _ => None,
        }
    }
}

/// Offset of the first VMPCK, for code that maps the page as bytes.
pub const VMPCK0_OFFSET: usize = offset_of!(SecretsPage, vmpck0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_snp_abi() {
        assert_eq!(offset_of!(SecretsPage, fms), 0x08);
        assert_eq!(offset_of!(SecretsPage, gosvw), 0x10);
        assert_eq!(VMPCK0_OFFSET, 0x20);
        assert_eq!(offset_of!(SecretsPage, vmpck3), 0x80);
        assert_eq!(offset_of!(SecretsPage, os_area), 0xa0);
        assert_eq!(offset_of!(SecretsPage, vmsa_tweak_bitmap), 0x100);
        assert_eq!(offset_of!(SecretsPage, svsm_base), 0x140);
        assert_eq!(offset_of!(SecretsPage, svsm_caa), 0x150);
        assert_eq!(offset_of!(SecretsPage, svsm_max_version), 0x158);
        assert_eq!(offset_of!(SecretsPage, svsm_guest_vmpl), 0x15c);
        assert_eq!(offset_of!(SecretsPage, tsc_factor), 0x160);
    }

    #[test]
    fn vmpck_selection() {
        // SAFETY: SecretsPage is plain integers and byte arrays; all-zero is valid.
        let mut p: SecretsPage = unsafe { core::mem::zeroed() };
        p.vmpck2[0] = 7;
        assert_eq!(p.vmpck(2).map(|k| k[0]), Some(7));
        assert_eq!(p.vmpck(4), None);
    }
}
