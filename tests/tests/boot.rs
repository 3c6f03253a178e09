//! The image boots under QEMU + OVMF and reaches `ready`, whatever the vCPU count; bad input on
//! the command line gets a clear message.

use tests::{boot, expect_failure, expect_success};

#[test]
fn boots_to_ready_with_1_cpu() {
    let out = boot("ready-1cpu", 1, "");
    expect_success(&out, "INFO  ready");
    expect_success(&out, "BOOT-TIMES ");
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
