//! Helpers for the QEMU integration tests: boot the image `cargo xtask test` built (or build it)
//! with a command line and vCPU count, and look at what came out of the serial port.

use std::path::PathBuf;
use xtask::qemu::{self, Outcome, RunConfig};

/// The EFI image under test: `SEV_GUEST_EFI` (set by `cargo xtask test`) or a fresh debug build.
pub fn image() -> PathBuf {
    match std::env::var_os("SEV_GUEST_EFI") {
        Some(p) => p.into(),
        None => {
            xtask::build::build(xtask::build::Profile::Debug)
                .expect("build")
                .efi
        }
    }
}

/// Boots `efi` with `cpus` vCPUs and `cmdline`; `name` names the serial log under target/test-logs.
pub fn boot_image(name: &str, efi: PathBuf, cpus: u32, cmdline: &str) -> Outcome {
    let fw = qemu::ensure_prerequisites().expect("QEMU and OVMF");
    let log = xtask::target_dir().join(format!("test-logs/{name}.log"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let cfg = RunConfig::logged(&efi, cpus, cmdline, log);
    qemu::run(&cfg, &fw, false).expect("run QEMU")
}

/// Boots the image under test.
pub fn boot(name: &str, cpus: u32, cmdline: &str) -> Outcome {
    boot_image(name, image(), cpus, cmdline)
}

/// Asserts that the run ended in the guest's failure exit (not a hang, not a triple fault) and
/// that the serial output says `message`.
pub fn expect_failure(out: &Outcome, message: &str) {
    assert_eq!(
        out.status,
        Some(qemu::EXIT_FAILURE),
        "{}\n{}",
        out.describe(),
        out.serial
    );
    assert!(
        out.serial.contains(message),
        "expected `{message}` in:\n{}",
        out.serial
    );
}

/// Asserts that the run ended in the guest's success exit and the serial output says `message`.
pub fn expect_success(out: &Outcome, message: &str) {
    assert!(out.success(), "{}\n{}", out.describe(), out.serial);
    assert!(
        out.serial.contains(message),
        "expected `{message}` in:\n{}",
        out.serial
    );
}
