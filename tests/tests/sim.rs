//! The SEV-ES simulator running its own test guest (`sim/guest`): one run per check of the
//! guest, so that a failure names the simulator path that broke, and the simulator's own
//! account of each run (its `SIM-COUNTERS` line) must show the exits and VMGEXITs the check
//! exists to drive. Then the runs that end otherwise (termination requests: status 37 with the
//! reason), the benchmarks and a trace.

use tests::{expect_failure, expect_status, expect_success, sim_run};
use xtask::qemu::{EXIT_GUEST_TERMINATED, EXIT_SIM_ERROR, Outcome};

/// The counters of vCPU 0's `SIM-COUNTERS` line, as `(name, value)`.
fn counters(out: &Outcome) -> Vec<(String, u64)> {
    vcpu_counters(out, 0)
}

/// The counters of vCPU `vcpu`'s `SIM-COUNTERS` line, as `(name, value)`.
fn vcpu_counters(out: &Outcome, vcpu: u32) -> Vec<(String, u64)> {
    let prefix = format!("SIM-COUNTERS vcpu={vcpu} ");
    let line = out
        .serial
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no SIM-COUNTERS line for vCPU {vcpu} in:\n{}", out.serial));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| {
            let v = v
                .parse()
                .unwrap_or_else(|_| panic!("SIM-COUNTERS: {k}={v} is not a number"));
            (k.to_string(), v)
        })
        .collect()
}

/// The counter `name` of the run (0 when the simulator left it out, as it does for zeros).
fn counter(out: &Outcome, name: &str) -> u64 {
    counters(out)
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or(0, |(_, v)| v)
}

/// Runs guest check `name` alone: it passes, and each of `drives` (a `SIM-COUNTERS` name such
/// as `exit.cpuid` or `vmgexit.nae.cpuid`) counted at least once.
fn check(name: &str, drives: &[&str]) -> Outcome {
    let out = sim_run(name, 1, &format!("test={name}"), "");
    expect_success(&out, &format!("TEST {name} PASS"));
    expect_success(&out, "1 passed, 0 failed");
    for c in drives {
        assert_ne!(
            counter(&out, c),
            0,
            "check {name} passed without the simulator counting {c}:\n{}",
            out.serial
        );
    }
    out
}

#[test]
fn cpuid_reports_sev_es_and_the_c_bit() {
    check("cpuid", &["exit.cpuid", "vmgexit.nae.cpuid"]);
}

#[test]
fn sev_status_reads_sev_and_sev_es_without_a_vc() {
    check("sev_status", &[]);
}

#[test]
fn ghcb_msr_is_a_plain_register() {
    check("ghcb_msr", &[]);
}

#[test]
fn msr_protocol_requests_are_answered() {
    check(
        "msr_protocol",
        &[
            "vmgexit.msr.sev_info",
            "vmgexit.msr.cpuid",
            "vmgexit.msr.hv_features",
        ],
    );
}

#[test]
fn port_io_including_rep_strings_is_forwarded_to_com1() {
    check("ioio", &["exit.ioio", "vmgexit.nae.ioio"]);
}

#[test]
fn msr_access_goes_through_the_ghcb() {
    check("msr", &["exit.msr", "vmgexit.nae.msr"]);
}

#[test]
fn mmio_reaches_the_hpet_and_the_ioapic() {
    check(
        "mmio",
        &[
            "exit.npf",
            "vmgexit.nae.mmio_read",
            "vmgexit.nae.mmio_write",
        ],
    );
}

#[test]
fn rdtsc_is_emulated_and_monotonic() {
    check("rdtsc", &["exit.rdtsc", "vmgexit.nae.rdtsc"]);
}

/// (QEMU's SVM reports an intercepted RDTSCP with RDTSC's exit code, so the simulator counts
/// the exit as `exit.rdtsc`; the #VC the guest gets, and so its NAE event, is RDTSCP's.)
#[test]
fn rdtscp_is_emulated_and_monotonic() {
    check("rdtscp", &["vmgexit.nae.rdtscp"]);
}

#[test]
fn rdpmc_is_emulated() {
    check("rdpmc", &["exit.rdpmc", "vmgexit.nae.rdpmc"]);
}

#[test]
fn dr7_reads_and_writes_round_trip() {
    check(
        "dr7",
        &["exit.dr7_read", "exit.dr7_write", "vmgexit.nae.dr7_write"],
    );
}

#[test]
fn wbinvd_is_emulated() {
    check("wbinvd", &["exit.wbinvd", "vmgexit.nae.wbinvd"]);
}

#[test]
fn monitor_and_mwait_are_emulated() {
    check(
        "monitor",
        &[
            "exit.monitor",
            "exit.mwait",
            "vmgexit.nae.monitor",
            "vmgexit.nae.mwait",
        ],
    );
}

#[test]
fn vmmcall_reaches_the_test_hypercalls() {
    check("vmmcall", &["exit.vmmcall", "vmgexit.nae.vmmcall"]);
}

#[test]
fn nae_events_without_a_vc_are_served() {
    check(
        "nae_events",
        &[
            "vmgexit.nae.ap_jump_table",
            "vmgexit.nae.hv_features",
            "vmgexit.nae.nmi_complete",
        ],
    );
}

#[test]
fn nmis_are_blocked_until_nmi_complete() {
    let out = check("nmi", &["vmgexit.nae.nmi_complete"]);
    assert_eq!(
        counter(&out, "nmi_injected"),
        2,
        "the check injects two NMIs:\n{}",
        out.serial
    );
}

#[test]
fn all_checks_pass_in_one_run() {
    let out = sim_run("all", 1, "test=all", "");
    expect_success(&out, "passed, 0 failed");
    assert!(!out.serial.contains(" FAIL"), "{}", out.serial);
}

#[test]
fn unknown_check_name_fails() {
    let out = sim_run("unknown-check", 1, "test=no_such_check", "");
    expect_failure(&out, "no test named `no_such_check`");
}

/// The guest's MSR-protocol termination request, with its own code (simguest's
/// `TERMINATE_MSR_CODE`), ends the run with 37 and the reason.
#[test]
fn termination_through_the_msr_protocol_ends_the_run_with_the_reason() {
    let out = sim_run("terminate", 1, "test=terminate", "");
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        "sim: guest requested termination: reason set 1 code 0xa5",
    );
    assert_eq!(counter(&out, "vmgexit.msr.terminate"), 1, "{}", out.serial);
}

/// The same through the GHCB's TERM_REQUEST event (simguest's `TERMINATE_GHCB_CODE`).
#[test]
fn termination_through_the_ghcb_ends_the_run_with_the_reason() {
    let out = sim_run("terminate-ghcb", 1, "test=terminate_ghcb", "");
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        "sim: guest requested termination: reason set 1 code 0xa6",
    );
    assert_eq!(counter(&out, "vmgexit.nae.terminate"), 1, "{}", out.serial);
}

/// INVD is intercepted (#VC 0x76) and the guest's #VC core refuses it by terminating.
#[test]
fn invd_is_refused_by_the_guest_with_a_termination() {
    let out = sim_run("invd", 1, "test=invd", "");
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        "reason set 1 code 0xc (InvdRefused)",
    );
    assert_eq!(counter(&out, "exit.invd"), 1, "{}", out.serial);
}

/// The simulator injects an interrupt on #VC at the guest's request (`INJECT_INTERRUPT`), as a
/// hostile hypervisor may: it arrives without the error code a #VC pushes, and the guest
/// refuses it by terminating instead of running its #VC core on the interrupted RIP.
#[test]
fn an_interrupt_injected_on_vc_is_refused_by_the_guest() {
    let out = sim_run("injected-vc", 1, "test=injected_vc", "");
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        "reason set 1 code 0x1d (MissingErrorCode)",
    );
}

/// A request the guest wrote only through the GHCB's private view cannot be read by the
/// simulator (on hardware it would read ciphertext): it says so, answers with the error reply
/// in the shared view, and the guest sees no answer.
#[test]
fn a_ghcb_left_encrypted_gets_no_answer() {
    let out = check("encrypted_ghcb", &["vmgexit.nae.invalid"]);
    expect_success(&out, "sim: vcpu 0: invalid GHCB request at ");
}

/// The `exits=` of the run's `SIM-BENCH` line, which must count `iterations` round trips.
fn bench_exits(out: &Outcome, iterations: u64) -> u64 {
    let line = out
        .serial
        .lines()
        .find_map(|l| l.trim().strip_prefix("SIM-BENCH "))
        .unwrap_or_else(|| panic!("no SIM-BENCH line in:\n{}", out.serial));
    let field = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("SIM-BENCH line without a number {key}=: {line}"))
    };
    assert_eq!(field("iterations"), iterations, "{line}");
    field("exits")
}

/// Each round trip of the guest's full #VC path costs two exits, the CPUID intercept and the
/// VMGEXIT: the GHCB MSR is not rewritten before each VMGEXIT (a third exit here, where QEMU
/// does not know the MSR). A handful more come from the hypercalls around the loop.
#[test]
fn bench_reports_its_round_trips() {
    let out = sim_run("bench", 1, "test=bench", "");
    expect_success(&out, "TEST bench PASS");
    let exits = bench_exits(&out, 20_000);
    assert!(
        (40_000..40_010).contains(&exits),
        "{exits} exits for 20000 round trips:\n{}",
        out.serial
    );
}

/// The platform benchmark: its minimal #VC handler answers every CPUID of the loop, with the
/// same two exits per round trip.
#[test]
fn bench_raw_reports_the_platform_round_trips() {
    let out = sim_run("bench-raw", 1, "test=bench_raw", "");
    expect_success(&out, "TEST bench_raw PASS");
    let exits = bench_exits(&out, 20_000);
    assert!(
        (40_000..40_010).contains(&exits),
        "{exits} exits for 20000 round trips:\n{}",
        out.serial
    );
}

/// With `trace` the simulator prints every VMGEXIT, MSR protocol and GHCB alike: one line per
/// request the counters show. (Only requests made while COM1 is in its normal state are
/// counted: while the guest programs the divisor latch, console output is not text. The
/// guest's own lines come out one character per VMGEXIT, interleaved with the trace.)
#[test]
fn trace_prints_every_vmgexit() {
    let out = sim_run("trace", 1, "test=msr_protocol", "trace");
    expect_success(&out, "sim: vmgexit vcpu=0 msr ");
    expect_success(&out, "sim: vmgexit vcpu=0 ghcb ");
    let traced = |what: &str| {
        out.serial
            .lines()
            .filter(|l| l.contains("sim: vmgexit vcpu=0 ") && l.contains(what))
            .count() as u64
    };
    let msr_requests: u64 = counters(&out)
        .iter()
        .filter(|(k, _)| k.starts_with("vmgexit.msr."))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        traced(" msr "),
        msr_requests,
        "one trace line per MSR-protocol request:\n{}",
        out.serial
    );
    assert_eq!(
        traced(" Cpuid {"),
        counter(&out, "vmgexit.nae.cpuid"),
        "one trace line per CPUID event:\n{}",
        out.serial
    );
}

/// The counter `name` of vCPU `vcpu` (0 when left out).
fn vcpu_counter(out: &Outcome, vcpu: u32, name: &str) -> u64 {
    vcpu_counters(out, vcpu)
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or(0, |(_, v)| v)
}

#[test]
fn aps_start_park_in_reset_hold_and_wake_on_4_vcpus() {
    let out = sim_run("smp", 4, "test=smp", "");
    expect_success(&out, "TEST smp PASS");
    expect_success(&out, "sim: guest: 256 MiB, 4 vCPU(s)");
    for ap in 1..4 {
        // One park at start-up and one after each of the 10 wake-ups, alternating the MSR
        // protocol's reset hold (first) and the GHCB's AP_HLT_LOOP.
        let (hold, hlt_loop) = (
            vcpu_counter(&out, ap, "vmgexit.msr.ap_reset_hold"),
            vcpu_counter(&out, ap, "vmgexit.nae.ap_hlt_loop"),
        );
        assert!(
            hold >= 6 && hlt_loop >= 5,
            "vCPU {ap}: {hold} reset holds, {hlt_loop} AP_HLT_LOOPs:\n{}",
            out.serial
        );
        assert_eq!(
            vcpu_counter(&out, ap, "vc_delivered"),
            0,
            "APs never raise #VC"
        );
    }
    assert!(
        counter(&out, "vmgexit.nae.msr") >= 2 * 3 * 11,
        "INIT and SIPI are ICR writes through the GHCB:\n{}",
        out.serial
    );
}

#[test]
fn an_nmi_ipi_to_self_is_delivered() {
    let out = check("nmi_ipi", &["vmgexit.nae.msr", "vmgexit.nae.nmi_complete"]);
    assert_eq!(counter(&out, "nmi_injected"), 1, "{}", out.serial);
}

#[test]
fn a_fixed_ipi_waits_for_the_interrupt_window() {
    check("fixed_ipi", &["vmgexit.nae.msr"]);
}

#[test]
fn a_vc_that_cannot_be_delivered_becomes_a_double_fault() {
    let out = sim_run("vc_double_fault", 1, "test=vc_double_fault", "");
    expect_success(&out, "TEST vc_double_fault PASS");
}

#[test]
fn a_double_fault_that_cannot_be_delivered_shuts_the_guest_down() {
    let out = sim_run("triple_fault", 1, "test=triple_fault", "");
    expect_status(
        &out,
        EXIT_SIM_ERROR,
        "guest triple fault: delivering vector 29 failed (vector 29 is beyond the IDT limit), \
         then delivering #DF failed (vector 8 is beyond the IDT limit): shutdown",
    );
    expect_status(&out, EXIT_SIM_ERROR, "sim: vcpu 0 state: RIP=");
}

/// GHCB GPA Registration is an SEV-SNP request: KVM terminates an SEV-ES guest that sends it,
/// and the simulator ends the run the same way, so that no guest passes here that dies on a
/// real host.
#[test]
fn ghcb_gpa_registration_from_an_sev_es_guest_ends_the_run() {
    let out = sim_run("ghcb_registration", 1, "test=ghcb_registration", "");
    expect_status(
        &out,
        EXIT_SIM_ERROR,
        "SNP-only MSR protocol request (GHCB GPA registration) from an SEV-ES guest",
    );
}

#[test]
fn an_undefined_msr_protocol_request_ends_the_run() {
    let out = sim_run("bad_msr_request", 1, "test=bad_msr_request", "");
    expect_status(
        &out,
        EXIT_SIM_ERROR,
        "sim: error: vcpu 0: invalid GHCB MSR protocol request 0xfff",
    );
}
