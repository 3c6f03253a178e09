//! Every MSR-protocol message against the reference hypervisor, and the
//! lies a guest must refuse (scenario 9) or survive (scenario 15).
#![allow(clippy::field_reassign_with_default)] // the model is configured field by field

mod common;

use common::{RefHv, expect_termination};
use sev::hv_features::HvFeatures;
use sev::msr_protocol::{
    self, GFN_NONE, GhcbVersion, MsrProtocolError, MsrRequest, MsrResponse, PageAssignment, SevInfo,
};
use sev::psc::PscOp;
use sev::termination::{GhcbReason, GuestReason, TerminationReason};

/// The highest version both sides speak: 2 from a version 2 hypervisor, 1 from a version 1
/// hypervisor; a range without 1 or 2 is refused.
#[test]
fn negotiates_the_highest_common_version() {
    let mut hv = RefHv::default();
    assert_eq!(
        msr_protocol::negotiate(&mut hv),
        Ok(SevInfo {
            min: 1,
            max: 2,
            cbit: 51,
            version: GhcbVersion::V2
        })
    );
    hv.proto = (1, 1);
    assert_eq!(
        msr_protocol::negotiate(&mut hv),
        Ok(SevInfo {
            min: 1,
            max: 1,
            cbit: 51,
            version: GhcbVersion::V1
        })
    );
    hv.proto = (3, 4);
    assert_eq!(
        msr_protocol::negotiate(&mut hv),
        Err(MsrProtocolError::VersionUnsupported { min: 3, max: 4 })
    );
    hv.proto = (3, 2);
    assert!(msr_protocol::negotiate(&mut hv).is_err(), "inverted range");
}

#[test]
fn cpuid_reads_all_four_registers() {
    let mut hv = RefHv::default();
    let want = hv.cpuid[&(0x8000_001f, 0)];
    assert_eq!(msr_protocol::cpuid(&mut hv, 0x8000_001f), Ok(want));
    assert_eq!(hv.exits, 4);
}

#[test]
fn cpuid_register_echo_is_checked() {
    let mut hv = RefHv::default();
    hv.msr_lie = Some(Box::new(|req, v| match req {
        // Answer EBX requests with the EAX register tag.
        MsrRequest::Cpuid { .. } if (v >> 30) & 3 == 1 => v & !(3 << 30),
        _ => v,
    }));
    assert_eq!(
        msr_protocol::cpuid(&mut hv, 0),
        Err(MsrProtocolError::WrongRegister)
    );
}

#[test]
fn ghcb_registration_checks_the_echoed_gfn() {
    let mut hv = RefHv::default();
    assert_eq!(msr_protocol::register_ghcb(&mut hv, 0x7000_0000), Ok(()));
    assert_eq!(hv.registered_gfn, Some(0x70000));
    hv.msr_lie = Some(Box::new(|_, _| {
        MsrResponse::RegisterGhcbGpa { gfn: GFN_NONE }.encode()
    }));
    let e = msr_protocol::register_ghcb(&mut hv, 0x7000_0000).unwrap_err();
    assert_eq!(
        e,
        MsrProtocolError::WrongGfn {
            expected: 0x70000,
            got: GFN_NONE
        }
    );
    assert_eq!(e.reason(), GuestReason::GhcbRegistration);
}

#[test]
fn preferred_gpa_and_features_and_vmpl() {
    let mut hv = RefHv::default();
    assert_eq!(
        msr_protocol::preferred_ghcb_gpa(&mut hv),
        Ok(Some(common::GHCB_GPA))
    );
    hv.msr_lie = Some(Box::new(|_, _| {
        MsrResponse::PreferredGhcbGpa { gfn: None }.encode()
    }));
    assert_eq!(msr_protocol::preferred_ghcb_gpa(&mut hv), Ok(None));
    hv.msr_lie = None;
    assert_eq!(
        msr_protocol::hv_features(&mut hv),
        Ok(HvFeatures::SNP | HvFeatures::SNP_AP_CREATION)
    );
    assert_eq!(msr_protocol::run_vmpl(&mut hv, 2), Ok(()));
    assert_eq!(hv.vmpl_runs, vec![2]);
    hv.msr_lie = Some(Box::new(|_, _| MsrResponse::RunVmpl { error: 9 }.encode()));
    assert_eq!(
        msr_protocol::run_vmpl(&mut hv, 2),
        Err(MsrProtocolError::RunVmpl(9))
    );
}

#[test]
fn page_state_change_and_its_errors() {
    let mut hv = RefHv::default();
    assert_eq!(
        msr_protocol::page_state_change(&mut hv, 0x5000, PageAssignment::Shared),
        Ok(())
    );
    assert_eq!(hv.page_states[&5], PscOp::Shared);
    hv.msr_lie = Some(Box::new(|_, _| {
        MsrResponse::PageStateChange { error: 1 }.encode()
    }));
    assert_eq!(
        msr_protocol::page_state_change(&mut hv, 0x5000, PageAssignment::Private),
        Err(MsrProtocolError::PageStateChange(1))
    );
    // Reserved bits 31:12 set in an otherwise successful response.
    hv.msr_lie = Some(Box::new(|_, v| v | 1 << 20));
    assert!(matches!(
        msr_protocol::page_state_change(&mut hv, 0x5000, PageAssignment::Private),
        Err(MsrProtocolError::ReservedBits(_))
    ));
}

#[test]
fn ap_reset_hold_retries_until_woken() {
    let mut hv = RefHv::default();
    let mut calls = 0;
    hv.msr_lie = Some(Box::new(move |_, v| {
        calls += 1;
        // Two spurious returns, then a wake-up.
        if calls < 3 { v & 0xfff } else { v }
    }));
    assert_eq!(msr_protocol::ap_reset_hold(&mut hv), Ok(()));
    assert_eq!(hv.exits, 3);
}

#[test]
fn wrong_response_code_is_refused() {
    let mut hv = RefHv::default();
    hv.msr_lie = Some(Box::new(|_, _| {
        MsrResponse::HvFeatures(HvFeatures::empty()).encode()
    }));
    assert_eq!(
        msr_protocol::negotiate(&mut hv),
        Err(MsrProtocolError::WrongResponse {
            expected: 1,
            got: 0x81
        })
    );
    hv.msr_lie = Some(Box::new(|_, _| 0x0fe));
    assert_eq!(
        msr_protocol::hv_features(&mut hv),
        Err(MsrProtocolError::WrongResponse {
            expected: 0x81,
            got: 0xfe
        })
    );
}

#[test]
fn request_restores_the_previous_msr_value() {
    let mut hv = RefHv::default();
    hv.msr_value = common::GHCB_GPA;
    msr_protocol::hv_features(&mut hv).unwrap();
    assert_eq!(hv.msr_value, common::GHCB_GPA);
}

#[test]
fn termination_never_returns_and_carries_the_reason() {
    let r = expect_termination(|| {
        let mut hv = RefHv::default();
        msr_protocol::terminate(&mut hv, GuestReason::MsrProtocol.into())
    });
    assert_eq!(r, TerminationReason::from(GuestReason::MsrProtocol));
    let r = expect_termination(|| {
        let mut hv = RefHv::default();
        msr_protocol::terminate(&mut hv, GhcbReason::ProtocolUnsupported.into())
    });
    assert_eq!((r.set(), r.code()), (0, 1));
}

#[test]
fn termination_repeats_if_the_hypervisor_resumes() {
    // A hypervisor that ignores termination and resumes the guest: the
    // guest keeps asking. Count exits, then stop the loop from the model.
    struct Stubborn {
        value: u64,
        asks: usize,
    }
    impl msr_protocol::GhcbMsr for Stubborn {
        fn read(&mut self) -> u64 {
            self.value
        }
        fn write(&mut self, v: u64) {
            self.value = v;
        }
        fn vmgexit(&mut self) {
            assert_eq!(
                MsrRequest::decode(self.value),
                Ok(MsrRequest::Terminate(GuestReason::Panic.into()))
            );
            self.asks += 1;
            self.value = 0;
            if self.asks == 5 {
                std::panic::panic_any(common::Terminated(GuestReason::Panic.into()));
            }
        }
    }
    let r = expect_termination(|| {
        let mut s = Stubborn { value: 0, asks: 0 };
        msr_protocol::terminate(&mut s, GuestReason::Panic.into())
    });
    assert_eq!(r.guest_reason(), Some(GuestReason::Panic));
}
