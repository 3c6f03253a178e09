//! Helpers for the QEMU integration tests: boot the image `cargo xtask test` built (or build it)
//! with a command line and vCPU count, or run the simulator with its test guest or the stage's
//! IGVM file, and look at how the run ended and what came out of the serial port.

use std::path::PathBuf;
use std::sync::OnceLock;
use xtask::build::{Profile, build_sim};
use xtask::qemu::{self, Outcome, RunConfig, SimFiles};

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

/// The serial log `name` under target/test-logs (the directory created).
fn log_path(name: &str) -> PathBuf {
    let log = xtask::target_dir().join(format!("test-logs/{name}.log"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    log
}

/// Runs `cfg`. A simulator run that comes back void (QEMU's TCG lost a vCPU's guest state, which
/// the simulator detects and reports with its own status: `sim::vcpu::SimError`) says nothing
/// about the guest and is run again, at most [`VOID_RUN_RETRIES`] times, saying so.
fn run(cfg: &RunConfig) -> Outcome {
    let fw = qemu::ensure_prerequisites().expect("QEMU and OVMF");
    let mut out = qemu::run(cfg, &fw, false).expect("run QEMU");
    for _ in 0..VOID_RUN_RETRIES {
        if out.status != Some(qemu::EXIT_VOID_RUN) {
            break;
        }
        eprintln!("void run (QEMU lost a vCPU's guest state), running again");
        out = qemu::run(cfg, &fw, false).expect("run QEMU");
    }
    out
}

/// How often a void simulator run is repeated.
const VOID_RUN_RETRIES: u32 = 5;

/// Boots `efi` with `cpus` vCPUs and `cmdline`; `name` names the serial log under target/test-logs.
pub fn boot_image(name: &str, efi: PathBuf, cpus: u32, cmdline: &str) -> Outcome {
    run(&RunConfig::logged(&efi, cpus, cmdline, log_path(name)))
}

/// Boots the image under test.
pub fn boot(name: &str, cpus: u32, cmdline: &str) -> Outcome {
    boot_image(name, image(), cpus, cmdline)
}

/// The simulator EFI application and its test guest's IGVM file under test:
/// `SEV_SIM_EFI` and `SEV_SIM_GUEST_IGVM` (set by `cargo xtask test`), or a fresh debug build,
/// made once per test process so that parallel tests do not rewrite the files under each other.
pub fn sim_artifacts() -> (PathBuf, PathBuf) {
    static ARTIFACTS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ARTIFACTS
        .get_or_init(|| {
            match (
                std::env::var_os("SEV_SIM_EFI"),
                std::env::var_os("SEV_SIM_GUEST_IGVM"),
            ) {
                (Some(efi), Some(igvm)) => (efi.into(), igvm.into()),
                (None, None) => {
                    let a = build_sim(Profile::Debug).expect("build the simulator");
                    (a.sim_efi, a.guest_igvm)
                }
                _ => panic!("set both SEV_SIM_EFI and SEV_SIM_GUEST_IGVM, or neither"),
            }
        })
        .clone()
}

/// The stage's IGVM file under test: `SEV_GUEST_IGVM` (set by `cargo xtask test`) or a fresh
/// debug build, made once per test process.
pub fn stage_igvm() -> PathBuf {
    static IGVM: OnceLock<PathBuf> = OnceLock::new();
    IGVM.get_or_init(|| match std::env::var_os("SEV_GUEST_IGVM") {
        Some(p) => p.into(),
        None => {
            xtask::build::build(Profile::Debug)
                .expect("build")
                .stage_igvm
        }
    })
    .clone()
}

/// Runs the simulator on `cpus` vCPUs with its test guest, the guest command line `cmdline`
/// and the simulator options `sim_options` (`sim.cfg`); the serial log is
/// target/test-logs/sim-`name`.log.
pub fn sim_run(name: &str, cpus: u32, cmdline: &str, sim_options: &str) -> Outcome {
    sim_run_guest(name, sim_artifacts().1, cpus, cmdline, sim_options)
}

/// [`sim_run`] with another guest: the IGVM file `guest_igvm` (e.g. [`stage_igvm`]).
pub fn sim_run_guest(
    name: &str,
    guest_igvm: PathBuf,
    cpus: u32,
    cmdline: &str,
    sim_options: &str,
) -> Outcome {
    let (efi, _) = sim_artifacts();
    let files = SimFiles {
        guest_igvm,
        options: sim_options.into(),
    };
    let log = log_path(&format!("sim-{name}"));
    run(&RunConfig::logged(&efi, cpus, cmdline, log).on_sim(files))
}

/// Asserts that QEMU ended with `status` (e.g. [`qemu::EXIT_GUEST_TERMINATED`],
/// [`qemu::EXIT_SIM_ERROR`]) and that the serial output says `message`.
pub fn expect_status(out: &Outcome, status: i32, message: &str) {
    assert_eq!(
        out.status,
        Some(status),
        "expected status {status}, got: {}\n{}",
        out.describe(),
        out.serial
    );
    assert!(
        out.serial.contains(message),
        "expected `{message}` in:\n{}",
        out.serial
    );
}

/// Asserts that the run ended in the guest's failure exit (not a hang, not a triple fault) and
/// that the serial output says `message`.
pub fn expect_failure(out: &Outcome, message: &str) {
    expect_status(out, qemu::EXIT_FAILURE, message);
}

/// Asserts that the run ended in the guest's success exit and the serial output says `message`.
pub fn expect_success(out: &Outcome, message: &str) {
    expect_status(out, qemu::EXIT_SUCCESS, message);
}

/// Asserts that `lines` appear in `serial` in this order.
pub fn expect_in_order(serial: &str, lines: &[String]) {
    let mut rest = serial;
    for line in lines {
        let at = rest
            .find(line.as_str())
            .unwrap_or_else(|| panic!("expected `{line}` next in:\n{serial}"));
        rest = &rest[at + line.len()..];
    }
}

/// The `key=number` pairs of the first line of `serial` that starts with `prefix` (a
/// machine-readable line such as `SIM-COUNTERS vcpu=0 ...`); panics naming the prefix if there
/// is none.
pub fn tagged_line(serial: &str, prefix: &str) -> Vec<(String, u64)> {
    let line = serial
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{serial}"));
    line[prefix.len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
        .collect()
}

/// The value of counter `name` in the simulator's `SIM-COUNTERS vcpu={vcpu} ` line of `serial`
/// (0 when the line leaves it out, as it does for zero event counters).
pub fn sim_counter(serial: &str, vcpu: u32, name: &str) -> u64 {
    tagged_line(serial, &format!("SIM-COUNTERS vcpu={vcpu} "))
        .into_iter()
        .find(|(k, _)| k == name)
        .map_or(0, |(_, v)| v)
}
