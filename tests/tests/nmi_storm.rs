//! NMIs under SEV-ES on the simulator, from the stage's IGVM file: the kernel's by-name cases of
//! `kernel/src/testing/nmi_storm.rs`, each on a fresh boot, with the simulator's own counts.
//!
//! - `nmi_worst_cases` (1 vCPU): NMIs placed by the simulator's `NMI_STORM` hypercall at the
//!   worst exits (right after NMI_COMPLETE, at a #VC's first instruction, right after a #VC's
//!   VMGEXIT, inside a console line) and by `NMI_AT` at each instruction of the NMI exit window,
//!   61 in all.
//! - `nmi_complete_refused` (1 vCPU): the simulator refuses an NMI_COMPLETE sent from a GHCB the
//!   NMI borrowed from an interrupted #VC; the guest says so and asks to be terminated with the
//!   hypervisor-error reason.
//! - `nmi_storm` (1 vCPU, 5,000 NMIs) and `nmi_storm_full` (4 vCPUs, 100,000 NMIs: issue 5's
//!   storm): every vCPU runs a checked CPUID/port/MMIO loop while the simulator injects NMIs at
//!   random exits, 0 to 12 after each NMI_COMPLETE; each NMI handler reads the HPET through a
//!   #VC of its own. Per vCPU the kernel's handler runs (its `NMI-STORM` line) must equal the
//!   simulator's `nmi_injected` and `vmgexit.nae.nmi_complete`: no NMI lost, none handled twice.
//!   The test prints the rate. On a 2-core host under TCG the full storm took 21.6 s (4,625
//!   NMIs/s over the 4 vCPUs) lightly loaded, 29.6 s with other builds running; 1 vCPU handles
//!   about 2,900 NMIs/s.

use tests::{expect_status, expect_success, sim_counter, sim_run_guest, stage_igvm, tagged_line};
use xtask::qemu::EXIT_GUEST_TERMINATED;

/// Boots `test=<case>` on `cpus` vCPUs and checks that it passed; returns the serial output and
/// how long the run took (s).
fn run_case(case: &str, cpus: u32) -> (String, f64) {
    let out = sim_run_guest(
        &format!("{case}-{cpus}cpu"),
        stage_igvm(),
        cpus,
        &format!("log=info test={case}"),
        "",
    );
    expect_success(&out, &format!("TEST {case} PASS"));
    (out.serial, out.elapsed.as_secs_f64())
}

/// The `NMI-STORM cpu=N ...` line of vCPU `cpu` as (key, value) pairs.
fn storm_line(serial: &str, cpu: u32) -> Vec<(String, u64)> {
    tagged_line(serial, &format!("NMI-STORM cpu={cpu} "))
}

fn value(pairs: &[(String, u64)], key: &str) -> u64 {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no `{key}=` in {pairs:?}"))
        .1
}

/// Checks every vCPU's storm against the simulator and prints the rate.
fn storm(case: &str, cpus: u32, total: u64) {
    let (serial, elapsed) = run_case(case, cpus);
    let mut longest_ms = 0;
    for cpu in 0..cpus {
        let line = storm_line(&serial, cpu);
        let nmis = value(&line, "nmis");
        assert_eq!(nmis, total / u64::from(cpus), "vCPU {cpu}: {line:?}");
        for (key, counter) in [
            ("injected", "nmi_injected"),
            ("completed", "vmgexit.nae.nmi_complete"),
        ] {
            assert_eq!(value(&line, key), nmis, "vCPU {cpu}: the guest's {key}");
            assert_eq!(
                sim_counter(&serial, cpu, counter),
                nmis,
                "vCPU {cpu}: the simulator's {counter} against the handler's runs"
            );
        }
        longest_ms = longest_ms.max(value(&line, "ms"));
    }
    println!(
        "{case}: {total} NMIs on {cpus} vCPUs in {:.1} s ({:.0} NMIs/s; run {elapsed:.1} s)",
        longest_ms as f64 / 1000.0,
        total as f64 * 1000.0 / longest_ms.max(1) as f64
    );
}

#[test]
fn nmis_at_the_worst_places() {
    let (serial, _) = run_case("nmi_worst_cases", 1);
    for counter in ["nmi_injected", "vmgexit.nae.nmi_complete"] {
        assert_eq!(sim_counter(&serial, 0, counter), 61, "{counter}");
    }
}

#[test]
fn a_refused_nmi_complete_ends_in_a_termination_request() {
    let case = "nmi_complete_refused";
    let out = sim_run_guest(case, stage_igvm(), 1, &format!("test={case}"), "");
    expect_status(&out, EXIT_GUEST_TERMINATED, "NMI_COMPLETE refused");
    expect_status(&out, EXIT_GUEST_TERMINATED, "code 0x9 (HypervisorError)");
}

#[test]
fn nmi_storm_on_one_vcpu() {
    storm("nmi_storm", 1, 5_000);
}

#[test]
fn nmi_storm_of_100_000_on_four_vcpus() {
    storm("nmi_storm_full", 4, 100_000);
}
