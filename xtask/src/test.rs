//! `cargo xtask test`: every suite, one summary.
//!
//! 1. host unit tests of the host-testable crates (`cargo test`),
//! 2. the in-kernel suite (`test=all`) booted in QEMU with 1 and with 4 vCPUs, and from the
//!    stage's IGVM file on the SEV-ES simulator with 1 vCPU,
//! 3. the kernel's QEMU integration tests in `tests/` (among them the stage's IGVM entry on the
//!    simulator, `stage_igvm.rs`),
//! 4. the simulator's integration tests (`tests/tests/sim.rs`) with its test guest,
//! 5. with `--fuzz`, a bounded run of every fuzz target.
//!
//! Progress is printed per test; the run ends with `N passed, N failed` and fails if any did.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use xtask::build::{Profile, build, build_sim};
use xtask::qemu::{self, RunConfig, SimFiles};
use xtask::{Result, root, target_dir};

#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn add(&mut self, name: &str, ok: bool, detail: &str) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        println!(
            "xtask: {name} ... {}{detail}",
            if ok { "ok" } else { "FAILED" }
        );
    }
}

/// Runs `cargo test` with `args`, echoing its output and adding up its `test result:` lines.
fn cargo_test(tally: &mut Tally, label: &str, args: &[&str], env: &[(&str, String)]) -> Result<()> {
    let mut c = xtask::cargo();
    c.arg("test").args(args).stdout(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().map_err(|e| e.to_string())?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(|l| l.ok())
    {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| {
                rest.split(';').find_map(|p| {
                    p.trim()
                        .strip_suffix(key)?
                        .trim()
                        .rsplit(' ')
                        .next()?
                        .parse::<u32>()
                        .ok()
                })
            };
            passed += num("passed").unwrap_or(0);
            failed += num("failed").unwrap_or(0);
        }
    }
    let ok = child.wait().map_err(|e| e.to_string())?.success();
    tally.passed += passed;
    tally.failed += failed;
    if !ok && failed == 0 {
        tally.failed += 1; // a build failure or crash counts as one failed test
    }
    println!(
        "xtask: {label}: {passed} passed, {failed} failed{}",
        if ok { "" } else { " (cargo test failed)" }
    );
    Ok(())
}

/// Serial log `name` of a suite run, under target/test-logs (the directory created).
fn suite_log(name: &str) -> Result<std::path::PathBuf> {
    let log = target_dir().join(format!("test-logs/{name}.log"));
    std::fs::create_dir_all(log.parent().unwrap()).map_err(|e| e.to_string())?;
    Ok(log)
}

/// Runs `cfg`, a boot with `test=all`, and tallies each `TEST <name> PASS|FAIL` line as
/// `<label> <name>`; a `TEST <name> SKIP <why>` line (a case that does not apply to the
/// platform) is shown and counts neither way.
fn kernel_suite(
    tally: &mut Tally,
    label: &str,
    cfg: &RunConfig,
    fw: &std::path::Path,
) -> Result<()> {
    let out = qemu::run(cfg, fw, false)?;
    let mut seen = 0;
    for line in out.serial.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some("TEST") {
            let (name, verdict) = (w.next().unwrap_or("?"), w.next().unwrap_or("?"));
            let rest: Vec<&str> = w.collect();
            if verdict == "SKIP" {
                println!("xtask: {label} {name} ... skipped: {}", rest.join(" "));
                continue;
            }
            seen += 1;
            tally.add(
                &format!("{label} {name}"),
                verdict == "PASS",
                &format!(" {}", rest.join(" ")),
            );
        }
    }
    let summary_ok = out.serial.lines().any(|l| l.ends_with(" passed, 0 failed"));
    let run_ok = out.success() && summary_ok && seen > 0;
    let log = cfg
        .serial_log
        .as_deref()
        .unwrap_or(std::path::Path::new("-"));
    tally.add(
        &format!("{label} run"),
        run_ok,
        &format!(
            " ({}, {:.1}s, log {})",
            out.describe(),
            out.elapsed.as_secs_f64(),
            log.display()
        ),
    );
    if !run_ok {
        println!("--- serial ---\n{}--- end ---", out.serial);
    }
    Ok(())
}

/// The integration test target of the simulator; it gets the simulator's artifacts.
const SIM_TESTS: &str = "sim";

/// The integration test targets of the kernel: every `tests/tests/*.rs` but the simulator's.
fn kernel_test_targets() -> Result<Vec<String>> {
    let dir = root().join("tests/tests");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".rs")?.to_string())
        })
        .filter(|n| n != SIM_TESTS)
        .collect();
    names.sort();
    Ok(names)
}

pub fn all(profile: Profile, fuzz: bool) -> Result<()> {
    let mut tally = Tally::default();
    cargo_test(
        &mut tally,
        "host unit tests",
        &[
            "--workspace",
            "--exclude",
            "tests",
            "--exclude",
            "kernel",
            "--exclude",
            "boot",
            "--exclude",
            "simguest",
        ],
        &[],
    )?;
    // The `sev::guest` glue (the stage's, the kernel's and the test guest's) needs its feature,
    // which no host-tested crate turns on.
    cargo_test(
        &mut tally,
        "host unit tests of sev::guest",
        &["-p", "sev", "--features", "guest", "--lib"],
        &[],
    )?;
    let fw = qemu::ensure_prerequisites()?;
    let a = build(profile)?;
    for cpus in [1, 4] {
        let log = suite_log(&format!("kernel-suite-{cpus}cpu"))?;
        let cfg = RunConfig::logged(&a.efi, cpus, "test=all", log);
        kernel_suite(&mut tally, &format!("kernel[{cpus} cpu]"), &cfg, &fw)?;
    }
    // The simulator is built before the kernel's integration tests: `stage_igvm.rs` boots the
    // stage's IGVM file on it, as does the kernel's suite under SEV-ES here.
    let sim_build = build_sim(profile);
    if let Ok(s) = &sim_build {
        let log = suite_log("kernel-suite-sev-es-sim-1cpu")?;
        let files = SimFiles {
            guest_igvm: a.stage_igvm.clone(),
            options: String::new(),
        };
        let cfg = RunConfig::logged(&s.sim_efi, 1, "test=all", log).on_sim(files);
        kernel_suite(&mut tally, "kernel[sev-es-sim 1 cpu]", &cfg, &fw)?;
    }
    let sim = sim_build.map(|s| {
        [
            ("SEV_SIM_EFI", s.sim_efi.display().to_string()),
            ("SEV_SIM_GUEST_IGVM", s.guest_igvm.display().to_string()),
        ]
    });
    let mut env = vec![
        ("SEV_GUEST_EFI", a.efi.display().to_string()),
        ("SEV_GUEST_PAYLOAD", a.payload.display().to_string()),
        ("SEV_GUEST_IGVM", a.stage_igvm.display().to_string()),
    ];
    if let Ok(sim_env) = &sim {
        env.extend(sim_env.iter().cloned());
    }
    let kernel_targets = kernel_test_targets()?;
    let mut args = vec!["-p", "tests"];
    for t in &kernel_targets {
        args.extend(["--test", t]);
    }
    args.extend(["--", "--test-threads=2"]);
    cargo_test(&mut tally, "integration tests", &args, &env)?;
    match sim {
        Ok(env) => cargo_test(
            &mut tally,
            "simulator integration tests",
            &["-p", "tests", "--test", SIM_TESTS, "--", "--test-threads=2"],
            &env,
        )?,
        Err(e) => tally.add("simulator build", false, &format!(": {e}")),
    }
    if fuzz {
        let st = Command::new("sh")
            .arg(root().join("sev/fuzz/run-all.sh"))
            .arg("30")
            .current_dir(root())
            .status();
        tally.add(
            "fuzz (sev, 30 s per target)",
            st.is_ok_and(|s| s.success()),
            "",
        );
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        Ok(())
    } else {
        Err(format!("{} failed", tally.failed))
    }
}
