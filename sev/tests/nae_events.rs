//! Every NAE event through `sev::nae` against the reference hypervisor, and
//! the reply validation: missing valid bits (scenario 7), exception replies
//! (scenario 6), error replies, page-state-change lies (scenario 12), bogus
//! AP jump table values (scenario 14).
#![allow(clippy::field_reassign_with_default)] // the model is configured field by field

mod common;

use common::{GHCB_GPA, Vcpu, expect_termination};
use sev::exception::Exception;
use sev::exit_code::ApCreationOp;
use sev::ghcb::{GhcbField, GhcbTransport};
use sev::host::{self, HostError, NaeRequest};
use sev::hv_features::HvFeatures;
use sev::ioio::IoioInfo;
use sev::msr_protocol::GhcbVersion;
use sev::nae::{self, GuestRequestError, NaeError, PscCallError};
use sev::psc::{PscDescriptor, PscEntry, PscError, PscOp};
use sev::termination::GuestReason;

#[test]
fn register_events() {
    let mut v = Vcpu::default();
    assert_eq!(
        nae::cpuid(&mut v, 0, 0, 1),
        Ok([0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65])
    );
    assert!(matches!(
        v.hv.requests.last(),
        Some(NaeRequest::Cpuid {
            leaf: 0,
            subleaf: 0,
            xcr0: 1
        })
    ));
    assert_eq!(nae::rdmsr(&mut v, 0x1b), Ok(0xfee0_0900));
    assert_eq!(nae::wrmsr(&mut v, 0xc000_0103, 0x1_0000_0002), Ok(()));
    assert_eq!(v.hv.msrs[&0xc000_0103], 0x1_0000_0002);
    assert_eq!(nae::rdtsc(&mut v), Ok(1_001_000));
    assert_eq!(nae::rdtscp(&mut v), Ok((1_002_000, 3)));
    assert_eq!(nae::rdpmc(&mut v, 0), Ok(42));
    assert_eq!(nae::write_dr7(&mut v, 0x401), Ok(()));
    assert_eq!(v.hv.dr7, 0x401);
    assert_eq!(nae::wbinvd(&mut v), Ok(()));
    assert_eq!(nae::monitor(&mut v, 0xffff_8000_0000_1000, 0, 0), Ok(()));
    assert_eq!(nae::mwait(&mut v, 0x20, 1), Ok(()));
    assert_eq!(v.hv.monitors, vec![(0xffff_8000_0000_1000, 0, 0)]);
    assert_eq!(v.hv.mwaits, vec![(0x20, 1)]);
    assert_eq!(v.hv.wbinvd, 1);
    assert!(v.hv.host_errors.is_empty());
}

#[test]
fn msr_exceptions_are_forwarded() {
    let mut v = Vcpu::default();
    assert_eq!(
        nae::rdmsr(&mut v, 0xdead),
        Err(NaeError::Exception(Exception::Gp(0)))
    );
    assert_eq!(
        nae::wrmsr(&mut v, 0x10, 0),
        Err(NaeError::Exception(Exception::Gp(0)))
    );
    assert_eq!(
        nae::rdpmc(&mut v, 9),
        Err(NaeError::Exception(Exception::Gp(0)))
    );
}

#[test]
fn port_io() {
    let mut v = Vcpu::default();
    v.hv.ports.insert(0x3fd, 0x1_2360);
    assert_eq!(nae::io_in(&mut v, 0x3fd, 1), Ok(0x60));
    assert_eq!(nae::io_in(&mut v, 0x3fd, 2), Ok(0x2360));
    assert_eq!(nae::io_out(&mut v, 0x3f8, 1, 0x1141), Ok(()));
    assert_eq!(v.hv.port_log, vec![(0x3f8, 1, 0x41)]);
    // A hypervisor returning more than the access width is truncated.
    v.hv.ghcb_lie = Some(Box::new(|_, g| g.set(GhcbField::Rax, u64::MAX)));
    assert_eq!(nae::io_in(&mut v, 0x60, 1), Ok(0xff));
}

#[test]
fn string_io_through_the_shared_buffer() {
    let mut v = Vcpu::default();
    v.hv.port_fifo.insert(0x1f0, (1..=4).collect());
    let info = IoioInfo {
        string: true,
        rep: true,
        ..IoioInfo::port(0x1f0, 2, true)
    };
    let mut data = [0u8; 8];
    assert_eq!(nae::io_string(&mut v, info, 4, &mut data), Ok(()));
    assert_eq!(data, [1, 0, 2, 0, 3, 0, 4, 0]);
    let out = IoioInfo {
        input: false,
        ..info
    };
    let mut src = [9, 0, 8, 0];
    assert_eq!(nae::io_string(&mut v, out, 2, &mut src), Ok(()));
    assert_eq!(v.hv.port_log, vec![(0x1f0, 2, 9), (0x1f0, 2, 8)]);
    let mut big = [0u8; 2034];
    assert_eq!(
        nae::io_string(&mut v, info, 1017, &mut big),
        Err(NaeError::TooLarge)
    );
}

#[test]
fn mmio_read_write() {
    let mut v = Vcpu::default();
    let gpa = common::MMIO_GPA + 0x30;
    assert_eq!(nae::mmio_write(&mut v, gpa, &[1, 2, 3, 4]), Ok(()));
    let mut out = [0u8; 4];
    assert_eq!(nae::mmio_read(&mut v, gpa, &mut out), Ok(()));
    assert_eq!(out, [1, 2, 3, 4]);
    assert_eq!(v.hv.mmio_log.len(), 2);
}

#[test]
fn ap_and_vmpl_events() {
    let mut v = Vcpu::default();
    assert_eq!(nae::nmi_complete(&mut v), Ok(()));
    assert_eq!(v.hv.nmi_completes, 1);
    assert_eq!(nae::ap_hlt_loop(&mut v), Ok(true));
    v.hv.hlt_wake = false;
    assert_eq!(nae::ap_hlt_loop(&mut v), Ok(false));
    assert_eq!(nae::ap_jump_table_set(&mut v, 0x9000), Ok(()));
    assert_eq!(nae::ap_jump_table_get(&mut v), Ok(0x9000));
    for op in [
        ApCreationOp::Create,
        ApCreationOp::CreateOnInit,
        ApCreationOp::Destroy,
    ] {
        assert_eq!(nae::ap_creation(&mut v, op, 3, 0x8_0000, 1), Ok(()));
    }
    assert_eq!(
        v.hv.ap_creations,
        vec![
            (ApCreationOp::Create, 3, 0x8_0000, Some(1)),
            (ApCreationOp::CreateOnInit, 3, 0x8_0000, Some(1)),
            (ApCreationOp::Destroy, 3, 0x8_0000, Some(1)),
        ]
    );
    assert_eq!(nae::run_vmpl(&mut v, 1), Ok(()));
    assert_eq!(v.hv.vmpl_runs, vec![1]);
    assert_eq!(
        nae::hv_features(&mut v),
        Ok(HvFeatures::SNP | HvFeatures::SNP_AP_CREATION)
    );
}

#[test]
fn ap_creation_failure_is_reported() {
    let mut v = Vcpu::default();
    v.hv.ghcb_lie = Some(Box::new(|_, g| {
        host::reply_error(g, HostError::InvalidInput)
    }));
    assert_eq!(
        nae::ap_creation(&mut v, ApCreationOp::Create, 1, 0x8_0000, 1),
        Err(NaeError::HypervisorError(5))
    );
}

#[test]
fn guest_requests() {
    let mut v = Vcpu::default();
    assert_eq!(nae::guest_request(&mut v, 0x1000, 0x2000), Ok(()));
    v.hv.fw_status = 0x16;
    assert_eq!(
        nae::guest_request(&mut v, 0x1000, 0x2000),
        Err(GuestRequestError::Firmware(0x16))
    );
    v.hv.fw_status = 0;
    v.hv.cert_pages = 4;
    assert_eq!(
        nae::ext_guest_request(&mut v, 0x1000, 0x2000, 0x3000, 1),
        Err(GuestRequestError::CertsTooSmall(4))
    );
    assert_eq!(
        nae::ext_guest_request(&mut v, 0x1000, 0x2000, 0x3000, 4),
        Ok(())
    );
    // "Too small" with a page count that is not larger is a lie.
    v.hv.ghcb_lie = Some(Box::new(|_, g| {
        host::reply_ok(g, 1 << 32, &[(GhcbField::Rbx, 1)])
    }));
    assert_eq!(
        nae::ext_guest_request(&mut v, 0x1000, 0x2000, 0x3000, 1),
        Err(GuestRequestError::Nae(NaeError::Malformed))
    );
    v.hv.ghcb_lie = Some(Box::new(|_, g| host::reply_ok(g, 2 << 32, &[])));
    assert_eq!(
        nae::guest_request(&mut v, 0x1000, 0x2000),
        Err(GuestRequestError::Vmm(nae::VMM_ERR_BUSY))
    );
}

fn psc_desc(n: u64) -> PscDescriptor {
    let entries: Vec<_> = (0..n)
        .map(|g| PscEntry::new(0x100 + g, PscOp::Shared, false))
        .collect();
    PscDescriptor::new(&entries).unwrap()
}

#[test]
fn page_state_change_in_several_rounds() {
    let mut v = Vcpu::default();
    v.hv.psc_per_round = 10;
    assert_eq!(nae::page_state_change(&mut v, &psc_desc(253)), Ok(()));
    assert_eq!(v.hv.page_states.len(), 253);
    assert_eq!(v.hv.exits, 26);
}

#[test]
fn page_state_change_lies() {
    // Claims to work but never moves cur_entry: bounded, then refused.
    let mut v = Vcpu::default();
    v.hv.psc_per_round = 1;
    v.hv.ghcb_lie = Some(Box::new(|_, g| g.write_shared(0, &[0, 0]).unwrap()));
    assert_eq!(
        nae::page_state_change(&mut v, &psc_desc(3)),
        Err(PscCallError::Psc(PscError::NoProgress))
    );
    // Sets reserved header bits.
    let mut v = Vcpu::default();
    v.hv.ghcb_lie = Some(Box::new(|_, g| g.write_shared(4, &[1]).unwrap()));
    assert_eq!(
        nae::page_state_change(&mut v, &psc_desc(3)),
        Err(PscCallError::Psc(PscError::ReservedBits))
    );
    // Changes end_entry.
    let mut v = Vcpu::default();
    v.hv.ghcb_lie = Some(Box::new(|_, g| g.write_shared(2, &[9, 0]).unwrap()));
    assert_eq!(
        nae::page_state_change(&mut v, &psc_desc(3)),
        Err(PscCallError::Psc(PscError::WentBackwards))
    );
    // Reports an error.
    let mut v = Vcpu::default();
    v.hv.ghcb_lie = Some(Box::new(|_, g| g.set(GhcbField::SwExitInfo2, 0x100 << 32)));
    assert_eq!(
        nae::page_state_change(&mut v, &psc_desc(3)),
        Err(PscCallError::Psc(PscError::HypervisorError(0x100 << 32)))
    );
}

#[test]
fn page_state_change_that_never_finishes_is_bounded() {
    let mut v = Vcpu::default();
    v.hv.psc_per_round = 0;
    assert_eq!(
        nae::page_state_change(&mut v, &psc_desc(3)),
        Err(PscCallError::Psc(PscError::NoProgress))
    );
    assert_eq!(v.hv.exits, 4);
}

#[test]
fn page_state_change_going_backwards_is_refused() {
    let mut v = Vcpu::default();
    v.hv.psc_per_round = 2;
    let mut round = 0;
    v.hv.ghcb_lie = Some(Box::new(move |_, g| {
        round += 1;
        if round == 2 {
            g.write_shared(0, &[1, 0]).unwrap();
        }
    }));
    assert_eq!(
        nae::page_state_change(&mut v, &psc_desc(6)),
        Err(PscCallError::Psc(PscError::WentBackwards))
    );
}

#[test]
fn missing_valid_bits_are_refused() {
    type Call = fn(&mut Vcpu) -> Result<(), NaeError>;
    let cases: [(GhcbField, Call); 6] = [
        (GhcbField::Rbx, |v| nae::cpuid(v, 0, 0, 1).map(drop)),
        (GhcbField::Rdx, |v| nae::rdmsr(v, 0x1b).map(drop)),
        (GhcbField::Rcx, |v| nae::rdtscp(v).map(drop)),
        (GhcbField::Rax, |v| nae::io_in(v, 0x60, 1).map(drop)),
        (GhcbField::SwExitInfo2, |v| {
            nae::ap_jump_table_get(v).map(drop)
        }),
        (GhcbField::SwExitInfo1, |v| nae::wbinvd(v)),
    ];
    for (field, call) in cases {
        let mut v = Vcpu::default();
        v.hv.ghcb_lie = Some(Box::new(move |_, g| g.invalidate(field)));
        let e = call(&mut v).unwrap_err();
        assert_eq!(e, NaeError::MissingValid(field), "{field:?}");
        assert_eq!(e.reason(), GuestReason::MissingValidBit);
    }
}

#[test]
fn only_gp_and_ud_exceptions_are_accepted() {
    let inject = |e: Exception| {
        let mut v = Vcpu::default();
        v.hv.ghcb_lie = Some(Box::new(move |_, g| host::reply_exception(g, e)));
        nae::rdtsc(&mut v).map(drop)
    };
    assert_eq!(
        inject(Exception::Ud),
        Err(NaeError::Exception(Exception::Ud))
    );
    assert_eq!(
        inject(Exception::Gp(8)),
        Err(NaeError::Exception(Exception::Gp(8)))
    );
    for bad in [
        Exception::Db,
        Exception::Ac,
        Exception::Pf {
            address: 0,
            error_code: 0,
        },
    ] {
        let e = inject(bad).unwrap_err();
        assert!(matches!(e, NaeError::BadException(_)), "{bad:?}");
        assert_eq!(e.reason(), GuestReason::BadHypervisorException);
    }
}

#[test]
fn bad_exit_info_1_is_refused() {
    for info1 in [3u64, 0xffff_ffff] {
        let mut v = Vcpu::default();
        v.hv.ghcb_lie = Some(Box::new(move |_, g| g.set(GhcbField::SwExitInfo1, info1)));
        assert_eq!(nae::wbinvd(&mut v), Err(NaeError::Malformed));
    }
}

#[test]
fn host_parse_errors_reach_the_guest() {
    let mut v = Vcpu::default();
    // A scratch pointer outside the shared buffer, written by hand.
    let g = v.ghcb();
    g.prepare(2);
    g.set(GhcbField::SwExitCode, 0x8000_0001);
    g.set(GhcbField::SwExitInfo1, common::MMIO_GPA);
    g.set(GhcbField::SwExitInfo2, 8);
    g.set(GhcbField::SwScratch, GHCB_GPA);
    v.vmgexit();
    assert_eq!(v.hv.host_errors, vec![HostError::InvalidScratch]);
    let s = v.ghcb.snapshot();
    assert_eq!(
        nae::check_reply(&s),
        Err(NaeError::HypervisorError(HostError::InvalidScratch.code()))
    );
}

#[test]
fn term_request_never_returns() {
    let r = expect_termination(|| {
        let mut v = Vcpu::default();
        nae::terminate(&mut v, GuestReason::PageStateChange.into())
    });
    assert_eq!(r.guest_reason(), Some(GuestReason::PageStateChange));
}

/// Every request carries the transport's negotiated protocol version in the GHCB's protocol
/// version field: a guest on a version 1 hypervisor says 1.
#[test]
fn requests_carry_the_negotiated_version() {
    struct OnVersion1(Vcpu);
    impl GhcbTransport for OnVersion1 {
        fn ghcb(&mut self) -> &mut sev::ghcb::Ghcb {
            self.0.ghcb()
        }
        fn ghcb_gpa(&self) -> u64 {
            self.0.ghcb_gpa()
        }
        fn vmgexit(&mut self) {
            self.0.vmgexit()
        }
        fn protocol_version(&self) -> GhcbVersion {
            GhcbVersion::V1
        }
    }
    let mut v2 = Vcpu::default();
    nae::wbinvd(&mut v2).unwrap();
    assert_eq!(v2.ghcb.protocol_version(), 2);
    let mut v1 = OnVersion1(Vcpu::default());
    v1.0.ghcb.set_protocol_version(2);
    nae::wbinvd(&mut v1).unwrap();
    assert_eq!(v1.0.ghcb.protocol_version(), 1);
    assert_eq!(v1.0.hv.requests, [NaeRequest::Wbinvd]);
}
