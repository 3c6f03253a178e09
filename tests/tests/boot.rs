//! The image boots under QEMU + OVMF and reaches `ready`, whatever the vCPU count; bad input on
//! the command line gets a clear message.

use tests::boot;

#[test]
fn boots_to_ready_with_1_cpu() {
    let out = boot("ready-1cpu", 1, "");
    assert!(out.success(), "{}\n{}", out.describe(), out.serial);
    assert!(out.serial.contains("INFO  ready"), "{}", out.serial);
    assert!(out.serial.contains("BOOT-TIMES "), "{}", out.serial);
}

#[test]
fn unknown_option_gets_a_clear_message() {
    let out = boot("unknown-option", 1, "frobnicate=7 log=info");
    assert!(out.success(), "{}\n{}", out.describe(), out.serial);
    assert!(
        out.serial
            .contains("unknown command-line option `frobnicate=7`"),
        "no message about the unknown option:\n{}",
        out.serial
    );
}

#[test]
fn unknown_test_name_fails() {
    let out = boot("unknown-test", 1, "test=no_such_test");
    assert_eq!(
        out.status,
        Some(xtask::qemu::EXIT_FAILURE),
        "{}\n{}",
        out.describe(),
        out.serial
    );
    assert!(
        out.serial.contains("no test named `no_such_test`"),
        "{}",
        out.serial
    );
}
