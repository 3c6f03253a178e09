//! Hypervisor feature bitmap, returned by the MSR protocol (0x080/0x081) and
//! by the HV_FEATURES NAE event (GHCB protocol version 2), and the guest's
//! policy on it: what each kind of guest needs ([`GuestKind::required`]), and
//! which bitmaps no hypervisor can mean ([`check`]).

use crate::sev_status::SevStatus;
use crate::termination::{GhcbReason, GuestReason, TerminationReason};

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

impl HvFeatures {
    /// The features that only make sense with SEV-SNP: the spec defines them as SNP features,
    /// so a hypervisor offering one without [`HvFeatures::SNP`] contradicts itself.
    pub const SNP_ONLY: Self = Self::SNP_AP_CREATION
        .union(Self::SNP_RESTRICTED_INJECTION)
        .union(Self::SNP_RESTRICTED_INJECTION_TIMER)
        .union(Self::SNP_MULTI_VMPL);
}

/// What a guest knows of the hypervisor's features, for its log lines: the bitmap HV_FEATURES
/// returned, or `None` under GHCB protocol version 1, which has no HV_FEATURES.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offered(pub Option<HvFeatures>);

impl core::fmt::Display for Offered {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(features) => write!(f, "hypervisor features {:#x}", features.bits()),
            None => write!(f, "no HV_FEATURES (GHCB protocol 1)"),
        }
    }
}

/// The kinds of guest this crate serves, told apart by SEV_STATUS: each needs something else of
/// the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKind {
    /// SEV-ES without SNP.
    SevEs,
    /// SEV-SNP.
    Snp,
}

impl GuestKind {
    /// The kind of guest whose SEV_STATUS is `status`.
    pub fn of(status: SevStatus) -> Self {
        if status.contains(SevStatus::SEV_SNP) {
            Self::Snp
        } else {
            Self::SevEs
        }
    }

    /// The features a guest of this kind cannot run without. SEV-ES: none (everything it uses,
    /// AP reset hold included, is in GHCB protocol version 2 itself). SNP: SNP itself, and the
    /// AP Creation NAE event, the only way to start an SNP guest's APs (the AP jump table is
    /// for SEV-ES).
    pub fn required(self) -> HvFeatures {
        match self {
            Self::SevEs => HvFeatures::empty(),
            Self::Snp => HvFeatures::SNP.union(HvFeatures::SNP_AP_CREATION),
        }
    }
}

/// Why a hypervisor's feature bitmap is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvFeaturesError {
    /// These features, which the guest needs, are not offered.
    Missing(HvFeatures),
    /// These SNP features are offered without SNP itself ([`HvFeatures::SNP_ONLY`]).
    Contradictory(HvFeatures),
}

impl HvFeaturesError {
    /// The termination reason for this refusal: the GHCB specification's own for SNP features
    /// the hypervisor lacks (every feature a guest can require is one), ours for a bitmap that
    /// contradicts itself.
    pub fn reason(self) -> TerminationReason {
        match self {
            Self::Missing(_) => GhcbReason::SnpUnsupported.into(),
            Self::Contradictory(_) => GuestReason::HvFeatures.into(),
        }
    }
}

/// Checks the bitmap `offered` for a `kind` guest: no SNP feature without SNP, and every
/// feature `kind` requires. Bits this crate does not name are kept: a newer hypervisor may set
/// them. Returns `offered`.
pub fn check(kind: GuestKind, offered: HvFeatures) -> Result<HvFeatures, HvFeaturesError> {
    if !offered.contains(HvFeatures::SNP) && offered.intersects(HvFeatures::SNP_ONLY) {
        return Err(HvFeaturesError::Contradictory(
            offered.intersection(HvFeatures::SNP_ONLY),
        ));
    }
    let missing = kind.required().difference(offered);
    if !missing.is_empty() {
        return Err(HvFeaturesError::Missing(missing));
    }
    Ok(offered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::termination::REASON_SET_GUEST;

    /// KVM's answer to every guest that speaks protocol 2: SNP and AP creation.
    const KVM: HvFeatures = HvFeatures::SNP.union(HvFeatures::SNP_AP_CREATION);

    #[test]
    fn offered_features_print_as_the_log_lines_say() {
        assert_eq!(format!("{}", Offered(Some(KVM))), "hypervisor features 0x3");
        assert_eq!(
            format!("{}", Offered(None)),
            "no HV_FEATURES (GHCB protocol 1)"
        );
    }

    #[test]
    fn bits_match_the_spec() {
        assert_eq!(HvFeatures::SNP.bits(), 1);
        assert_eq!(HvFeatures::SNP_AP_CREATION.bits(), 2);
        assert_eq!(HvFeatures::SNP_MULTI_VMPL.bits(), 1 << 5);
        assert_eq!(HvFeatures::SNP_ONLY.bits(), 0b10_1110);
    }

    #[test]
    fn the_guest_kind_follows_sev_status() {
        let es = SevStatus::SEV | SevStatus::SEV_ES;
        assert_eq!(GuestKind::of(es), GuestKind::SevEs);
        assert_eq!(GuestKind::of(es | SevStatus::SEV_SNP), GuestKind::Snp);
    }

    #[test]
    fn an_sev_es_guest_needs_nothing() {
        for offered in [
            HvFeatures::empty(),
            KVM,
            HvFeatures::from_bits_retain(1 << 40),
        ] {
            assert_eq!(check(GuestKind::SevEs, offered), Ok(offered), "{offered:?}");
        }
    }

    #[test]
    fn an_snp_guest_needs_snp_and_ap_creation() {
        assert_eq!(check(GuestKind::Snp, KVM), Ok(KVM));
        let more = KVM | HvFeatures::SNP_MULTI_VMPL | HvFeatures::from_bits_retain(1 << 51);
        assert_eq!(check(GuestKind::Snp, more), Ok(more));
        assert_eq!(
            check(GuestKind::Snp, HvFeatures::empty()),
            Err(HvFeaturesError::Missing(KVM))
        );
        assert_eq!(
            check(GuestKind::Snp, HvFeatures::SNP),
            Err(HvFeaturesError::Missing(HvFeatures::SNP_AP_CREATION))
        );
        let r = HvFeaturesError::Missing(HvFeatures::SNP).reason();
        assert_eq!((r.set(), r.code()), (0, GhcbReason::SnpUnsupported as u8));
    }

    #[test]
    fn snp_features_without_snp_are_refused_whatever_the_guest() {
        for kind in [GuestKind::SevEs, GuestKind::Snp] {
            for bit in HvFeatures::SNP_ONLY.iter() {
                assert_eq!(
                    check(kind, bit | HvFeatures::APIC_ID_LIST),
                    Err(HvFeaturesError::Contradictory(bit)),
                    "{kind:?} {bit:?}"
                );
            }
        }
        assert_eq!(
            check(GuestKind::SevEs, HvFeatures::APIC_ID_LIST),
            Ok(HvFeatures::APIC_ID_LIST),
            "not an SNP feature"
        );
        let r = HvFeaturesError::Contradictory(HvFeatures::SNP_AP_CREATION).reason();
        assert_eq!(r.guest_reason(), Some(GuestReason::HvFeatures));
        assert_eq!(r.set(), REASON_SET_GUEST);
    }
}
