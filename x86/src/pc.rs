//! The fixed MMIO devices of a PC machine (QEMU's q35 and pc, and what KVM hosts give an SEV
//! guest) at their standard addresses: the HPET and the IOAPIC. The kernel times its TSC on the
//! HPET and its tests reach both through #VC; the simulator forwards exactly these windows; the
//! simulator's test guest checks its MMIO #VCs on them. Under SEV-ES both devices belong to the
//! hypervisor: what they return is checked against what their specifications allow.

/// The HPET (IA-PC HPET specification 1.0a).
pub mod hpet {
    use core::fmt;

    /// The register block's base address.
    pub const BASE: u64 = 0xfed0_0000;
    /// The register block's size.
    pub const SIZE: u64 = 0x400;
    /// General capabilities and ID (64-bit, read-only): revision in bits 7:0, vendor ID in
    /// 31:16, the main counter's period in femtoseconds in 63:32.
    pub const CAPABILITIES: u64 = 0x000;
    /// General configuration: bit 0 ([`ENABLE`]) runs the main counter.
    pub const CONFIG: u64 = 0x010;
    /// [`CONFIG`]'s enable bit.
    pub const ENABLE: u64 = 1;
    /// The main counter.
    pub const COUNTER: u64 = 0x0f0;
    /// The longest counter period the specification allows: 100 ns, in femtoseconds.
    pub const MAX_PERIOD_FS: u64 = 100_000_000;

    /// Why a capabilities register value is not an HPET's.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum CapabilitiesError {
        /// Revision 0 (the specification says it must not be).
        NoRevision,
        /// Vendor ID 0 or 0xffff (nothing there, or all ones from an absent device).
        NoVendor(u16),
        /// A period of 0 or above [`MAX_PERIOD_FS`].
        BadPeriod(u64),
    }

    impl fmt::Display for CapabilitiesError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::NoRevision => write!(f, "revision 0"),
                Self::NoVendor(v) => write!(f, "vendor ID {v:#x}"),
                Self::BadPeriod(p) => write!(f, "period {p} fs outside 1..={MAX_PERIOD_FS}"),
            }
        }
    }

    /// The counter period in femtoseconds of the capabilities register value `cap`, if `cap`
    /// is what an HPET may report.
    pub fn period_fs(cap: u64) -> Result<u64, CapabilitiesError> {
        let (revision, vendor, period) = (cap as u8, (cap >> 16) as u16, cap >> 32);
        if revision == 0 {
            return Err(CapabilitiesError::NoRevision);
        }
        if vendor == 0 || vendor == 0xffff {
            return Err(CapabilitiesError::NoVendor(vendor));
        }
        if !(1..=MAX_PERIOD_FS).contains(&period) {
            return Err(CapabilitiesError::BadPeriod(period));
        }
        Ok(period)
    }
}

/// The IOAPIC (82093AA datasheet; QEMU's is version 0x20): an index register selects what the
/// data window shows.
pub mod ioapic {
    use core::fmt;

    /// The index register (32-bit), at the block's base.
    pub const INDEX: u64 = 0xfec0_0000;
    /// The data window (32-bit).
    pub const DATA: u64 = INDEX + 0x10;
    /// The register block's size.
    pub const SIZE: u64 = 0x20;
    /// Index of the version register: version in bits 7:0, highest redirection entry in 23:16.
    pub const VERSION: u32 = 1;

    /// A version register value that is no PC IOAPIC's.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VersionError(pub u32);

    impl fmt::Display for VersionError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let v = self.0;
            write!(
                f,
                "IOAPIC version register {v:#x}: version {:#x} (0x11 or 0x20 expected), {} redirection entries (24 or more expected)",
                v as u8,
                u32::from((v >> 16) as u8) + 1
            )
        }
    }

    /// Checks a version register value: version 0x11 (the 82093AA) or 0x20 (QEMU's), with a
    /// PC's 24 pins or more.
    pub fn check_version(v: u32) -> Result<(), VersionError> {
        let (version, max_entry) = (v as u8, (v >> 16) as u8);
        if matches!(version, 0x11 | 0x20) && max_entry >= 23 {
            Ok(())
        } else {
            Err(VersionError(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpet_capabilities_are_checked() {
        // QEMU's HPET: revision 1, vendor 0x8086, 10 ns.
        let qemu = 10_000_000u64 << 32 | 0x8086_a201;
        assert_eq!(hpet::period_fs(qemu), Ok(10_000_000));
        use hpet::CapabilitiesError::*;
        assert_eq!(hpet::period_fs(qemu & !0xff), Err(NoRevision));
        assert_eq!(hpet::period_fs(u64::MAX), Err(NoVendor(0xffff)));
        assert_eq!(hpet::period_fs(qemu & !0xffff_0000), Err(NoVendor(0)));
        assert_eq!(hpet::period_fs(qemu & 0xffff_ffff), Err(BadPeriod(0)));
        let slow = (hpet::MAX_PERIOD_FS + 1) << 32 | 0x8086_a201;
        assert_eq!(
            hpet::period_fs(slow),
            Err(BadPeriod(hpet::MAX_PERIOD_FS + 1))
        );
    }

    #[test]
    fn ioapic_versions_are_checked() {
        assert_eq!(ioapic::check_version(0x0017_0020), Ok(()));
        assert_eq!(ioapic::check_version(0x0017_0011), Ok(()));
        assert!(ioapic::check_version(0x0016_0020).is_err());
        assert!(ioapic::check_version(0x0017_0021).is_err());
        assert!(ioapic::check_version(u32::MAX).is_err());
    }
}
