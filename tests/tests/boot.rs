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

#[test]
fn kernel_page_fault_dumps_registers_and_fails() {
    let out = boot("page-fault", 1, "test=page_fault");
    expect_failure(&out, "EXCEPTION #PF (page fault, vector 14) error code 0x0");
    expect_failure(&out, "CR2=0x00007fffdeadb000 RIP=0x");
    for reg in ["RAX=0x", "RBX=0x", "R15=0x", "RSP=0x", "RFLAGS=0x"] {
        expect_failure(&out, reg);
    }
}
