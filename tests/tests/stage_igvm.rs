//! The stage's IGVM entry on the SEV-ES simulator: launched from its IGVM file (`cargo xtask
//! build` makes it, entered at `_start_igvm`), the stage sets up its GDT/IDT, takes the early
//! #VC through the MSR protocol, registers its GHCB, builds the `BootInfo` from the IGVM
//! parameter area, and unpacks, loads and jumps to the kernel, with 1 and with 4 vCPUs (the APs
//! stay in the launch state: nothing wakes them yet).
//!
//! The kernel has no SEV-ES support yet (issue 5): right after the jump its serial set-up still
//! goes through the stage's IDT and GHCB, but the first #VC after it installs its own
//! descriptor tables cannot be delivered, so the simulator ends the run with its error status
//! and a `sim: error:` line. That is what these tests assert after the stage's own lines. With
//! issue 5 the kernel handles #VC itself and runs on, and these tests assert its `ready` and
//! its success exit instead.

use tests::{expect_status, sim_run_guest, stage_igvm};
use xtask::qemu::{EXIT_GUEST_TERMINATED, EXIT_SIM_ERROR};

/// Boots the stage's IGVM file on `cpus` vCPUs with a command line and checks every line the
/// stage prints, in order, then the simulator's end of the run.
fn stage_reaches_the_kernel(cpus: u32) {
    let cmdline = "log=debug";
    let out = sim_run_guest(
        &format!("stage-igvm-{cpus}cpu"),
        stage_igvm(),
        cpus,
        cmdline,
        "",
    );
    expect_status(&out, EXIT_SIM_ERROR, "sim: error: vcpu 0:");
    let expected = [
        "stage: started (IGVM, SEV-ES: GHCB protocol ".to_string(),
        format!("stage: {cpus} vCPUs, "),
        format!("command line `{cmdline}`"),
        "stage: kernel loaded at ".to_string(),
        "stage: jumping to the kernel".to_string(),
        "sim: error: vcpu 0:".to_string(),
    ];
    let mut rest = out.serial.as_str();
    for line in &expected {
        let at = rest
            .find(line.as_str())
            .unwrap_or_else(|| panic!("expected `{line}` next in:\n{}", out.serial));
        rest = &rest[at + line.len()..];
    }
    assert!(
        !out.serial.contains("stage: error"),
        "the stage reported an error:\n{}",
        out.serial
    );
}

#[test]
fn stage_reaches_the_kernel_with_1_vcpu() {
    stage_reaches_the_kernel(1);
}

#[test]
fn stage_reaches_the_kernel_with_4_vcpus() {
    stage_reaches_the_kernel(4);
}

/// Launch parameters the stage cannot use end in a termination request with the stage's own
/// reason and message, not in a hang: here a command line longer than the `BootInfo` holds
/// (the IGVM parameter area allows 4 KiB).
#[test]
fn unusable_launch_parameters_end_in_a_termination_request() {
    let cmdline = "x".repeat(handoff::bootinfo::MAX_CMDLINE + 1);
    let out = sim_run_guest("stage-igvm-long-cmdline", stage_igvm(), 1, &cmdline, "");
    expect_status(
        &out,
        EXIT_GUEST_TERMINATED,
        &format!(
            "stage: error: the command line has {} bytes, at most {} fit",
            cmdline.len(),
            handoff::bootinfo::MAX_CMDLINE
        ),
    );
    expect_status(&out, EXIT_GUEST_TERMINATED, "(LaunchParameters)");
}
