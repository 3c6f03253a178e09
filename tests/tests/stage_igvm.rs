//! The stage and the kernel on the SEV-ES simulator: launched from the stage's IGVM file
//! (`cargo xtask build` makes it, entered at `_start_igvm`), the stage sets up its GDT/IDT,
//! takes the early #VC through the MSR protocol, registers its GHCB, builds the `BootInfo` from
//! the IGVM parameter area (with SEV_STATUS, the C-bit and the vCPU count), and unpacks, loads
//! and jumps to the kernel. The kernel loads its own IDT, builds its page tables (RAM private,
//! MMIO and its GHCB shared), registers its own GHCB, handles #VC through it, reaches `ready`
//! without ACPI and runs its test suite (the cases that need ACPI tables or the stage's on-demand
//! map say `SKIP` with the reason), ending through the debug-exit port the simulator forwards.
//!
//! The kernel's `nmi` case sends itself two NMIs in a row; each arrives inside the #VC handler
//! of the ICR write, borrows the GHCB from it and sends NMI_COMPLETE (the second NMI is only
//! injected once the first was completed): the simulator's counters show both.
//!
//! With 4 vCPUs the kernel starts the APs through the AP jump table: each parks in the stage
//! (AP Reset Hold), wakes into the kernel's trampoline, brings up its own GHCB and reports in;
//! the `smp_offline_online` case then parks and wakes every AP 100 times, which the simulator's
//! AP Reset Hold counters show.

use tests::{
    expect_in_order, expect_status, expect_success, sim_counter, sim_run_guest, stage_igvm,
};
use xtask::qemu::EXIT_GUEST_TERMINATED;

/// Boots the stage's IGVM file on `cpus` vCPUs with `test=all` and checks the stage's lines,
/// the kernel's SEV-ES bring-up, `ready`, the skipped and passed cases and the success exit.
fn kernel_runs_its_tests(cpus: u32) {
    let cmdline = "log=debug test=all";
    let out = sim_run_guest(
        &format!("stage-igvm-{cpus}cpu"),
        stage_igvm(),
        cpus,
        cmdline,
        "",
    );
    expect_success(&out, "sim: guest exit status 0x10");
    let expected = [
        "stage: started (IGVM, SEV-ES: GHCB protocol ".to_string(),
        format!("stage: {cpus} vCPUs, "),
        format!("command line `{cmdline}`"),
        "stage: kernel loaded at ".to_string(),
        "stage: jumping to the kernel".to_string(),
        "kernel at 0x4000000 ".to_string(),
        "SEV-ES (SEV_STATUS 0x3, C-bit 47): #VC through the kernel's GHCB at ".to_string(),
        "memory: ".to_string(),
        format!("SEV-ES: {cpus} vCPUs launched"),
        "cpu 0 (apic 0) online".to_string(),
    ];
    let aps = (1..cpus).map(|i| format!("cpu {i} (apic {i}) online"));
    let expected = expected.into_iter().chain(aps).chain([
        format!("{cpus} of {cpus} CPUs online"),
        "INFO  ready".to_string(),
        "TEST stage_page_tables SKIP ".to_string(),
        "TEST acpi_madt SKIP no ACPI tables on the IGVM path".to_string(),
        "TEST boot_info PASS".to_string(),
        "TEST paging PASS".to_string(),
        "TEST smp_all_online PASS".to_string(),
        "TEST smp_offline_online PASS".to_string(),
        "TEST nmi PASS".to_string(),
        "TEST nmi_nested PASS".to_string(),
        "25 passed, 0 failed".to_string(),
    ]);
    expect_in_order(&out.serial, &expected.collect::<Vec<_>>());
    for bad in ["stage: error", "FAIL", "sim: error", "refused"] {
        assert!(
            !out.serial.contains(bad),
            "unexpected `{bad}` in:\n{}",
            out.serial
        );
    }
    // The `nmi` case's two self-NMIs and `nmi_nested`'s two: all injected, all completed (no
    // other NMI happens).
    assert_eq!(
        sim_counter(&out.serial, 0, "nmi_injected"),
        4,
        "{}",
        out.serial
    );
    assert_eq!(
        sim_counter(&out.serial, 0, "vmgexit.nae.nmi_complete"),
        4,
        "{}",
        out.serial
    );
    // Each AP parked once on its way from the stage into the kernel, then once per
    // offline/online cycle; no one sent GHCB GPA Registration (an SEV-SNP request).
    for vcpu in 1..cpus {
        assert_eq!(
            sim_counter(&out.serial, vcpu, "vmgexit.msr.ap_reset_hold"),
            101,
            "{}",
            out.serial
        );
        assert_eq!(
            sim_counter(&out.serial, vcpu, "vmgexit.msr.register_ghcb_gpa"),
            0,
            "{}",
            out.serial
        );
    }
}

#[test]
fn kernel_reaches_ready_and_passes_its_tests_with_1_vcpu() {
    kernel_runs_its_tests(1);
}

#[test]
fn kernel_starts_parks_and_wakes_its_aps_with_4_vcpus() {
    kernel_runs_its_tests(4);
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

/// The simulator as a hostile hypervisor (`inject=` in `sim.cfg`) injects an external interrupt
/// into the stage, which cannot ask for it: on #VC's vector (at the stage's third exit, inside
/// its early #VC handling) the frame lacks the error code a #VC pushes and the stage ends with
/// `MissingErrorCode`; on a vector it never uses, with `UnexpectedException`. Both through a
/// termination request (the MSR protocol's: no GHCB yet, so no line either), never a #VC taken
/// for real or a hang.
#[test]
fn interrupts_injected_into_the_stage_end_in_a_termination_request() {
    for (vector, at, line) in [
        (29, 3, "reason set 1 code 0x1d (MissingErrorCode)"),
        (128, 3, "reason set 1 code 0x19 (UnexpectedException)"),
    ] {
        let out = sim_run_guest(
            &format!("stage-igvm-inject-{vector}"),
            stage_igvm(),
            1,
            "",
            &format!("inject={vector}@{at}"),
        );
        expect_status(&out, EXIT_GUEST_TERMINATED, line);
        assert!(
            !out.serial.contains("jumping to the kernel"),
            "vector {vector}: the stage went on:\n{}",
            out.serial
        );
    }
}
