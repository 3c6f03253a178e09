//! The image boots under QEMU + OVMF and reaches `ready`, whatever the vCPU count; bad input on
//! the command line gets a clear message.

use tests::{boot, expect_failure, expect_success};

/// Boots with `cpus` vCPUs: `ready` is reached and every CPU reports in by name.
fn boots_with(cpus: u32) {
    let out = boot(&format!("ready-{cpus}cpu"), cpus, "");
    expect_success(&out, "INFO  ready");
    expect_success(&out, "BOOT-TIMES ");
    expect_success(&out, &format!("{cpus} of {cpus} CPUs online"));
    for cpu in 0..cpus {
        expect_success(&out, &format!("cpu {cpu} (apic "));
    }
}

#[test]
fn boots_to_ready_with_1_cpu() {
    boots_with(1);
}

#[test]
fn boots_to_ready_with_4_cpus() {
    boots_with(4);
}

#[test]
fn boots_to_ready_with_8_cpus() {
    boots_with(8);
}

#[test]
fn unknown_option_gets_a_clear_message() {
    let out = boot("unknown-option", 1, "frobnicate=7 log=info");
    expect_success(&out, "unknown command-line option `frobnicate=7`");
}

#[test]
fn unknown_test_name_fails() {
    let out = boot("unknown-test", 1, "test=no_such_test");
    expect_failure(&out, "no test named `no_such_test`");
}
