//! The kernel's #VC cases (`kernel/src/testing/sev_es.rs`) on the SEV-ES simulator, seen from
//! the simulator's side: every NAE event the cases make reaches it as many times as the cases
//! make it (its `SIM-COUNTERS` line), and each request the #VC core refuses ends the run in a
//! termination request with its own reason, as does each interrupt the simulator injects as a
//! hostile hypervisor (Heckler) on a vector the kernel must not take it on. Also the console's
//! cost under SEV-ES: one VMGEXIT per line.

use tests::{
    boot, expect_failure, expect_in_order, expect_status, expect_success, sim_counter,
    sim_run_guest, stage_igvm,
};
use xtask::qemu::{EXIT_GUEST_TERMINATED, Outcome};

/// The kernel's #VC cases, which `test=all` runs after its own.
const CASES: [&str; 12] = [
    "vc_cpuid",
    "vc_ioio",
    "vc_mmio",
    "vc_msr",
    "vc_rdtsc",
    "vc_rdpmc",
    "vc_dr7",
    "vc_db",
    "vc_wbinvd",
    "vc_monitor_mwait",
    "vc_vmmcall",
    "ghcb_protocol",
];

/// `test=all` on 1 vCPU: the #VC cases pass, and the events that only they make arrive at the
/// simulator exactly as often as they make them. RDPMC: 2 reads of each of 6 counters.
/// WBINVD, MONITOR, MWAIT: once each. DR7: 2 writes through the GHCB, and 3 reads that are
/// intercepted but answered from the #VC core's own copy (no VMGEXIT). #DB: the 3 single-steps
/// of `vc_db`, intercepted and delivered as #VC, and not its ICEBP, which the #DB intercept does
/// not cover (nothing else in the kernel raises #DB). MMIO, at least (the
/// kernel's TSC calibration reads the HPET too): 4 loads (HPET qword and dword, IOAPIC data
/// twice) and 2 REP MOVSD elements from the HPET are 6 reads; 2 stores to the IOAPIC index and
/// 1 REP MOVSD element into it are 3 writes. CPUID through the
/// MSR protocol: 7 leaves of 4 registers each (the stage and the kernel make 8 such requests);
/// SEV information once more than the stage and the kernel make it. HV_FEATURES: once by the
/// stage and once by the kernel (`GhcbChannel::establish`), once by `ghcb_protocol`.
/// VMMCALL: 3 hypercalls.
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
        ("exit.db", 3),
        ("vmgexit.msr.hv_features", 3),
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
        ("vmgexit.nae.mmio_read", 6),
        ("vmgexit.nae.mmio_write", 3),
        ("vmgexit.msr.cpuid", 28),
        ("vmgexit.msr.sev_info", 3),
        ("vmgexit.nae.rdtscp", 1),
        ("vmgexit.nae.vmmcall", 3),
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

/// Runs the kernel case `case` (1 vCPU, `log=debug`) on the simulator and expects it to end in
/// a termination request with our reason `reason` (code `code`: the simulator names our
/// reasons); returns the run for the caller's checks of how it got there.
fn terminated(case: &str, reason: &str, code: u8) -> Outcome {
    let out = sim_run_guest(
        &format!("sev-es-{case}"),
        stage_igvm(),
        1,
        &format!("log=debug test={case}"),
        "",
    );
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        &format!("sim: guest requested termination: reason set 1 code {code:#x} ({reason})"),
    );
    out
}

/// Runs the kernel case `case`, whose #VC (exit code `exit`) makes a request the #VC core
/// refuses, and expects the kernel's line naming the refusal (logged from inside the #VC
/// handler, itself a #VC that borrows the GHCB) and the termination request through the GHCB
/// with the reason `reason` (code `code`: the simulator names our reasons).
fn refused(case: &str, exit: u64, reason: &str, code: u8) {
    let out = terminated(case, reason, code);
    let line = format!("ERROR #VC exit code {exit:#x} at RIP ");
    assert!(
        out.serial
            .lines()
            .any(|l| l.contains(&line) && l.ends_with(&format!(": {reason}"))),
        "expected `{line}...: {reason}` in:\n{}",
        out.serial
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
    refused("vc_invd", 0x76, "InvdRefused", 0xc);
}

/// An MSR the simulator refuses comes back as #GP (the GHCB's exception reply), which the #VC
/// core hands back to the kernel, which expects none: the #VC handler names it, dumps the
/// registers and terminates through the GHCB (`GhcbChannel::raised_fatal`).
#[test]
fn an_exception_handed_back_by_the_vc_core_ends_in_a_termination_request() {
    let out = terminated("vc_msr_refused", "UnexpectedException", 0x19);
    expect_in_order(
        &out.serial,
        &[
            "sim: vcpu 0: refused RDMSR 0x40001234: #GP".to_string(),
            "kernel: #VC exit code 0x7c at RIP ".to_string(),
            " raised Gp(0)".to_string(),
            "EXCEPTION #VC".to_string(),
        ],
    );
    assert_eq!(
        sim_counter(&out.serial, 0, "vmgexit.nae.terminate"),
        1,
        "the termination goes through the GHCB:\n{}",
        out.serial
    );
}

/// An OR into MMIO is not a move the core emulates.
#[test]
fn unsupported_mmio_ends_in_a_termination_request() {
    refused("vc_unsupported_mmio", 0x400, "UnsupportedMmio", 0x7);
}

/// Runs the kernel case `case`, in which the simulator, as a hostile hypervisor, injects an
/// interrupt the kernel must not take (`kernel::testing::sev_es::injected`), and expects the
/// kernel's line `line` naming the vector, the register dump, and the termination request with
/// the reason `reason` (code `code`). The interrupt arrives right after the hypercall's
/// VMGEXIT, inside the #VC handler, which holds the GHCB: the lines go through the GHCB borrowed
/// from it (as an NMI there would), the request through the MSR protocol.
fn injected(case: &str, line: &str, reason: &str, code: u8) {
    let out = terminated(case, reason, code);
    for expected in [line, "RFLAGS=0x"] {
        assert!(
            out.serial.contains(expected),
            "expected `{expected}` in:\n{}",
            out.serial
        );
    }
    assert_eq!(
        sim_counter(&out.serial, 0, "vmgexit.msr.terminate"),
        1,
        "the termination goes through the MSR protocol:\n{}",
        out.serial
    );
}

/// An interrupt on #PF pushes no error code: the kernel does not take it for a page fault.
#[test]
fn an_interrupt_injected_on_page_fault_ends_in_a_termination_request() {
    injected(
        "injected_pf",
        "kernel: vector 14 arrived without the error code its exceptions push",
        "MissingErrorCode",
        0x1d,
    );
}

/// An interrupt on #VC pushes no error code: the kernel does not take the interrupted RIP for
/// an exit code.
#[test]
fn an_interrupt_injected_on_vc_ends_in_a_termination_request() {
    injected(
        "injected_vc",
        "kernel: vector 29 arrived without the error code its exceptions push",
        "MissingErrorCode",
        0x1d,
    );
}

/// Nothing of the kernel's raises vector 0x80: only the hypervisor can have sent it.
#[test]
fn an_interrupt_injected_on_an_unused_vector_ends_in_a_termination_request() {
    injected(
        "injected_0x80",
        "kernel: interrupt on vector 0x80, which nothing of the kernel's raises",
        "UnexpectedInterrupt",
        0x1e,
    );
}

/// Without SEV-ES nobody injects, but a software `int` builds the same frames: the same lines,
/// the register dump and the failure exit.
#[test]
fn without_sev_es_the_same_frames_end_in_the_failure_exit() {
    for (case, line) in [
        (
            "injected_pf",
            "kernel: vector 14 arrived without the error code",
        ),
        (
            "injected_vc",
            "kernel: vector 29 arrived without the error code",
        ),
        (
            "injected_0x80",
            "kernel: interrupt on vector 0x80, which nothing",
        ),
    ] {
        let out = boot(&format!("plain-{case}"), 1, &format!("test={case}"));
        expect_failure(&out, line);
        expect_failure(&out, "RFLAGS=0x");
    }
}

/// The guest's console lines in `serial`: what was printed between the simulator's launch line
/// and its counters, less the simulator's own lines.
fn guest_lines(serial: &str) -> u64 {
    serial
        .lines()
        .skip_while(|l| !l.starts_with("SIM-LAUNCH"))
        .skip(1)
        .take_while(|l| !l.starts_with("SIM-COUNTERS"))
        .filter(|l| !l.starts_with("sim:"))
        .count() as u64
}

/// Under SEV-ES a console line is one string OUT through the GHCB's shared buffer, one VMGEXIT
/// (`x86::serial::use_string_output`, switched on with the GHCB): a boot with `log=debug`
/// prints more lines than one with `log=info` and takes exactly as many more IOIO VMGEXITs.
/// Besides one per line, a boot makes only the stage's UART set-up (22; the kernel adopts it)
/// and the debug exit: 23 in all; byte by byte with line-status polling it was two per byte.
#[test]
fn a_console_line_costs_one_vmgexit() {
    let run = |level: &str| {
        let out = sim_run_guest(
            &format!("sev-es-console-{level}"),
            stage_igvm(),
            1,
            &format!("log={level}"),
            "",
        );
        expect_success(&out, "sim: guest exit status 0x10");
        let (lines, ioio) = (
            guest_lines(&out.serial),
            sim_counter(&out.serial, 0, "vmgexit.nae.ioio"),
        );
        assert!(
            ioio <= lines + 32,
            "log={level}: {ioio} IOIO VMGEXITs for {lines} lines:\n{}",
            out.serial
        );
        (lines, ioio)
    };
    let (info_lines, info_ioio) = run("info");
    let (debug_lines, debug_ioio) = run("debug");
    assert!(
        debug_lines > info_lines,
        "log=debug printed {debug_lines} lines, log=info {info_lines}"
    );
    assert_eq!(
        debug_ioio - info_ioio,
        debug_lines - info_lines,
        "IOIO VMGEXITs {info_ioio} -> {debug_ioio} for lines {info_lines} -> {debug_lines}"
    );
}
