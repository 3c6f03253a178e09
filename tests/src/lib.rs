//! Helpers for the QEMU integration tests: boot the image `cargo xtask test` built (or build it)
//! with a command line and vCPU count, and look at what came out of the serial port.

use std::path::PathBuf;
use std::time::Duration;
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
    let cfg = RunConfig {
        efi,
        cpus,
        memory_mib: 512,
        cmdline: cmdline.into(),
        timeout: Duration::from_secs(120),
        gdb_port: None,
        serial_log: Some(log),
    };
    qemu::run(&cfg, &fw, false).expect("run QEMU")
}

/// Boots the image under test.
pub fn boot(name: &str, cpus: u32, cmdline: &str) -> Outcome {
    boot_image(name, image(), cpus, cmdline)
}
