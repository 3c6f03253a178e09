//! The kernel's #VC cases (`kernel/src/testing/sev_es.rs`) on the SEV-ES simulator, seen from
//! the simulator's side: every NAE event the cases make reaches it as many times as the cases
//! make it (its `SIM-COUNTERS` line), and each request the #VC core refuses ends the run in a
//! termination request with its own reason.

use tests::{expect_status, expect_success, sim_counter, sim_run_guest, stage_igvm};
use xtask::qemu::EXIT_GUEST_TERMINATED;

/// The kernel's #VC cases, which `test=all` runs after its own.
const CASES: [&str; 10] = [
    "vc_cpuid",
    "vc_ioio",
    "vc_mmio",
    "vc_msr",
    "vc_rdtsc",
    "vc_rdpmc",
    "vc_dr7",
    "vc_wbinvd",
    "vc_monitor_mwait",
    "ghcb_protocol",
];

/// `test=all` on 1 vCPU: the #VC cases pass, and the events that only they make arrive at the
/// simulator exactly as often as they make them. RDPMC: 2 reads of each of 6 counters.
/// WBINVD, MONITOR, MWAIT: once each. DR7: 2 writes through the GHCB, and 3 reads that are
/// intercepted but answered from the #VC core's own copy (no VMGEXIT). MMIO: 4 loads (HPET
/// qword and dword, IOAPIC data twice) and 2 REP MOVSD elements from the HPET are 6 reads; 2
/// stores to the IOAPIC index and 1 REP MOVSD element into it are 3 writes. CPUID through the
/// MSR protocol: 7 leaves of 4 registers each (the stage and the kernel make 8 such requests);
/// SEV information and GHCB registration once more than the stage and the kernel make them.
#[test]
fn every_nae_event_of_the_vc_cases_reaches_the_simulator() {
    let out = sim_run_guest("sev-es-vc-all", stage_igvm(), 1, "test=all", "");
    expect_success(&out, "sim: guest exit status 0x10");
    for case in CASES {
        let pass = format!("TEST {case} PASS");
        assert!(
            out.serial.contains(&pass),
            "expected `{pass}` in:\n{}",
            out.serial
        );
    }
    let exact = [
        ("vmgexit.nae.rdpmc", 12),
        ("vmgexit.nae.wbinvd", 1),
        ("vmgexit.nae.monitor", 1),
        ("vmgexit.nae.mwait", 1),
        ("vmgexit.nae.dr7_write", 2),
        ("exit.dr7_read", 3),
        ("vmgexit.nae.dr7_read", 0),
        ("vmgexit.nae.mmio_read", 6),
        ("vmgexit.nae.mmio_write", 3),
    ];
    for (name, n) in exact {
        assert_eq!(
            sim_counter(&out.serial, 0, name),
            n,
            "{name}:\n{}",
            out.serial
        );
    }
    let at_least = [
        ("vmgexit.msr.cpuid", 28),
        ("vmgexit.msr.sev_info", 3),
        ("vmgexit.msr.register_ghcb_gpa", 3),
        ("vmgexit.nae.rdtscp", 1),
    ];
    for (name, n) in at_least {
        let got = sim_counter(&out.serial, 0, name);
        assert!(
            got >= n,
            "{name} = {got}, expected at least {n}:\n{}",
            out.serial
        );
    }
}

/// Runs the kernel case `case`, which makes a request the #VC core refuses, and expects the
/// termination request with `reason` (the simulator names our reasons). The log is off: the
/// core reports a refusal on the log while it holds the GHCB, and a log line is a #VC of its
/// own, which the kernel's logger cannot yet tell to wait.
fn refused(case: &str, reason: &str) {
    let out = sim_run_guest(
        &format!("sev-es-{case}"),
        stage_igvm(),
        1,
        &format!("log=off test={case}"),
        "",
    );
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        &format!("sim: guest requested termination: reason set 1 code {reason}"),
    );
    assert_eq!(
        sim_counter(&out.serial, 0, "vmgexit.nae.terminate"),
        1,
        "the termination goes through the GHCB:\n{}",
        out.serial
    );
}

/// INVD would drop dirty lines of encrypted memory.
#[test]
fn invd_ends_in_a_termination_request() {
    refused("vc_invd", "0xc (InvdRefused)");
}

/// An OR into MMIO is not a move the core emulates.
#[test]
fn unsupported_mmio_ends_in_a_termination_request() {
    refused("vc_unsupported_mmio", "0x7 (UnsupportedMmio)");
}
