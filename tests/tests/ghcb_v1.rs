//! GHCB protocol version 1: the simulator with `ghcb_max=1` offers only version 1 and serves the
//! guest as a version 1 hypervisor would (it does not know HV_FEATURES or the MSR protocol's AP
//! Reset Hold, and every GHCB request must say version 1).
//!
//! The stage and the kernel negotiate version 1 instead of refusing the hypervisor: no
//! HV_FEATURES, the AP jump table passes straight through to the reset vector, so the APs come
//! online on their first INIT-SIPI without AP Reset Hold, and CPU offline is refused with a
//! typed error (logged once at boot). The simulator's test guest shows what a version 1
//! hypervisor does with version 2 requests.

use tests::{
    expect_in_order, expect_status, expect_success, sim_counter, sim_run, sim_run_guest, stage_igvm,
};
use xtask::qemu::EXIT_SIM_ERROR;

const V1: &str = "ghcb_max=1";

/// 4 vCPUs, `test=all`: every CPU online, every case passes (`smp_offline_online` checks the
/// refusal instead of the cycles), and no vCPU sent a version 2 request (the simulator would
/// have ended the run for an MSR-protocol one, and answered an event as invalid).
#[test]
fn kernel_runs_on_a_version_1_hypervisor_without_cpu_offline() {
    let cpus = 4;
    let out = sim_run_guest("ghcb-v1-kernel", stage_igvm(), cpus, "test=all", V1);
    expect_success(&out, "sim: guest exit status 0x10");
    let mut expected = vec![
        "stage: started (IGVM, SEV-ES: GHCB protocol 1 of 1..=1, C-bit 47, no HV_FEATURES \
         (GHCB protocol 1))"
            .to_string(),
        "#VC through the kernel's GHCB at ".to_string(),
        "GHCB protocol 1, no HV_FEATURES (GHCB protocol 1)".to_string(),
        "GHCB protocol v1: CPU offline unavailable".to_string(),
        "cpu 0 (apic 0) online".to_string(),
    ];
    expected.extend((1..cpus).map(|i| format!("cpu {i} (apic {i}) online")));
    expected.push(format!("{cpus} of {cpus} CPUs online"));
    expected.push("INFO  ready".to_string());
    expected.extend((1..cpus).map(|i| {
        format!("refused: cpu {i} cannot go offline: GHCB protocol 1 has no AP Reset Hold")
    }));
    expected.extend([
        format!(
            "GHCB protocol 1: offline refused for each of {} APs, all still online",
            cpus - 1
        ),
        "TEST smp_offline_online PASS".to_string(),
        "TEST ghcb_protocol PASS".to_string(),
        " passed, 0 failed".to_string(),
    ]);
    expect_in_order(&out.serial, &expected);
    for bad in [
        "stage: error",
        "FAIL",
        "sim: error",
        "invalid event",
        "refused (",
    ] {
        assert!(
            !out.serial.contains(bad),
            "unexpected `{bad}` in:\n{}",
            out.serial
        );
    }
    for vcpu in 0..cpus {
        for counter in [
            "vmgexit.msr.hv_features",
            "vmgexit.nae.hv_features",
            "vmgexit.msr.ap_reset_hold",
            "vmgexit.nae.ap_hlt_loop",
        ] {
            assert_eq!(
                sim_counter(&out.serial, vcpu, counter),
                0,
                "vCPU {vcpu} {counter}\n{}",
                out.serial
            );
        }
    }
    // The APs did come through the stage and the jump table: each asked for SEV information
    // (its own GHCB bring-up) and served the test's work.
    for vcpu in 1..cpus {
        assert!(
            sim_counter(&out.serial, vcpu, "vmgexit.msr.sev_info") >= 1,
            "vCPU {vcpu}\n{}",
            out.serial
        );
    }
}

/// The test guest on a version 1 hypervisor: it negotiated version 1 and says so in its GHCB
/// requests; HV_FEATURES as an event gets the invalid-event error, and through the MSR
/// protocol it ends the run.
#[test]
fn a_version_1_hypervisor_refuses_version_2_requests() {
    let out = sim_run("ghcb_v1", 1, "test=ghcb_v1", V1);
    assert!(
        out.serial
            .contains("simguest: GHCB protocol 1 (hypervisor offers 1..=1, C-bit 47)"),
        "{}",
        out.serial
    );
    assert!(
        out.serial.contains(
            "sim: vcpu 0: event 0x8000fffd is GHCB protocol 2, the request says 1: invalid event"
        ),
        "{}",
        out.serial
    );
    expect_status(
        &out,
        EXIT_SIM_ERROR,
        "sim: error: vcpu 0: MSR protocol request HvFeatures is GHCB protocol 2; this \
         hypervisor offers at most 1",
    );
}

/// A GHCB request that claims a version the hypervisor does not offer ends the run.
#[test]
fn a_request_for_an_unoffered_version_ends_the_run() {
    let out = sim_run("ghcb_version_field", 1, "test=ghcb_version_field", V1);
    expect_status(
        &out,
        EXIT_SIM_ERROR,
        "sim: error: vcpu 0: GHCB request with protocol version 2; this hypervisor offers 1..=1",
    );
}
