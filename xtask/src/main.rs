//! `cargo xtask`: build, run, test and benchmark the kernel and the simulator. Run
//! `cargo xtask help`.

mod bench;
mod test;

use std::process::{ExitCode, Stdio};
use std::time::Duration;
use xtask::Result;
use xtask::build::{Profile, build, build_sim};
use xtask::qemu::{self, RunConfig, SimFiles};

const USAGE: &str = "\
usage: cargo xtask <command> [options]
  build [--release]                 build the EFI image (target/image/<profile>/sev-guest.efi)
  run   [--release] [--platform plain|sev-es-sim] [--guest simguest|kernel]
        [--sim-options \"...\"] [--cpus N] [--memory MIB] [--cmdline \"...\"] [--timeout SECS] [--gdb]
                                    boot it under QEMU TCG + OVMF, serial on stdio; with
                                    sev-es-sim, the simulator running its test guest instead, or
                                    with --guest kernel the stage's IGVM file (stage + kernel)
                                    (--sim-options: sim.cfg, e.g. \"mem=256 trace\"; --cmdline:
                                    the guest's; memory default 2048 MiB)
  test  [--release] [--fuzz]        host unit tests, in-kernel suite on 1 and 4 vCPUs, integration
                                    tests of the kernel and of the simulator
  bench boot                        boot-time phases (guest TSC) and image sizes -> target/bench/boot.json
  bench vc                          host cost of #VC decode+emulate -> target/bench/vc.json
  bench sim                         simulator #VC round trips and launch time -> target/bench/sim.json
  bench sev-es                      VMGEXITs of a kernel boot on the simulator -> target/bench/sev-es.json
  clippy                            clippy on the host crates and on the freestanding binaries (warnings are errors)
  prereqs                           find (or, as root, install) QEMU >= 10.0 and OVMF";

struct Args(Vec<String>);

impl Args {
    fn flag(&mut self, name: &str) -> bool {
        let had = self.0.iter().any(|a| a == name);
        self.0.retain(|a| a != name);
        had
    }
    fn value(&mut self, name: &str) -> Result<Option<String>> {
        let Some(i) = self.0.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.0.len() {
            return Err(format!("{name} needs a value"));
        }
        let v = self.0.remove(i + 1);
        self.0.remove(i);
        Ok(Some(v))
    }
    fn number(&mut self, name: &str, default: u32) -> Result<u32> {
        match self.value(name)? {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: `{v}` is not a number")),
            None => Ok(default),
        }
    }
    fn finish(self) -> Result<()> {
        match self.0.first() {
            Some(a) => Err(format!("unknown argument `{a}`\n{USAGE}")),
            None => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    let cmd = if all.is_empty() {
        String::from("help")
    } else {
        all.remove(0)
    };
    let res = dispatch(&cmd, Args(all));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cmd: &str, mut args: Args) -> Result<()> {
    let profile = if args.flag("--release") {
        Profile::Release
    } else {
        Profile::Debug
    };
    match cmd {
        "build" => {
            args.finish()?;
            let a = build(profile)?;
            let size = std::fs::metadata(&a.efi).map(|m| m.len()).unwrap_or(0);
            println!("{} ({} KiB)", a.efi.display(), size / 1024);
            Ok(())
        }
        "run" => run(profile, args),
        "test" => {
            let fuzz = args.flag("--fuzz");
            args.finish()?;
            test::all(profile, fuzz)
        }
        "bench" => {
            let what = args.0.first().cloned().unwrap_or_default();
            args.0.retain(|a| *a != what);
            args.finish()?;
            match what.as_str() {
                "boot" => bench::boot(),
                "sim" => bench::sim(),
                "sev-es" => bench::sev_es(),
                "vc" => cargo_status(&[
                    "run",
                    "--release",
                    "--quiet",
                    "-p",
                    "sev",
                    "--example",
                    "vc_bench",
                ]),
                _ => Err(format!("bench what?\n{USAGE}")),
            }
        }
        "clippy" => {
            args.finish()?;
            cargo_status(&[
                "clippy",
                "--quiet",
                "--workspace",
                "--exclude",
                "kernel",
                "--exclude",
                "boot",
                "--exclude",
                "simguest",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            let st = xtask::build::freestanding_cargo(
                "clippy",
                &["kernel", "boot", "sim", "simguest"],
                &["sim/freestanding"],
            )
            .args(["--", "-D", "warnings"])
            .status()
            .map_err(|e| e.to_string())?;
            if st.success() {
                Ok(())
            } else {
                Err("clippy found problems in kernel/boot/sim/simguest".into())
            }
        }
        "prereqs" => {
            args.finish()?;
            let fw = qemu::ensure_prerequisites()?;
            println!("QEMU ok, OVMF at {}", fw.display());
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    }
}

/// What `cargo xtask run` boots.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Platform {
    /// The kernel directly on QEMU + OVMF.
    Plain,
    /// The SEV-ES simulator running a guest.
    SevEsSim,
}

/// The simulator's guest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SimGuest {
    /// Its own test guest (`sim/guest`).
    TestGuest,
    /// The stage's IGVM file: the stage, which starts the kernel.
    Kernel,
}

fn run(profile: Profile, mut args: Args) -> Result<()> {
    let platform = match args.value("--platform")?.as_deref() {
        None | Some("plain") => Platform::Plain,
        Some("sev-es-sim") => Platform::SevEsSim,
        Some(other) => {
            return Err(format!(
                "--platform: `{other}` is neither `plain` nor `sev-es-sim`"
            ));
        }
    };
    let sim_options = args.value("--sim-options")?;
    if platform == Platform::Plain && sim_options.is_some() {
        return Err("--sim-options needs --platform sev-es-sim".into());
    }
    let guest = match args.value("--guest")?.as_deref() {
        None | Some("simguest") => SimGuest::TestGuest,
        Some("kernel") => SimGuest::Kernel,
        Some(other) => {
            return Err(format!(
                "--guest: `{other}` is neither `simguest` nor `kernel`"
            ));
        }
    };
    if platform == Platform::Plain && guest != SimGuest::TestGuest {
        return Err("--guest needs --platform sev-es-sim".into());
    }
    let cpus = args.number("--cpus", 1)?;
    let default_memory = match platform {
        Platform::Plain => 512,
        Platform::SevEsSim => qemu::SIM_MEMORY_MIB,
    };
    let memory_mib = args.number("--memory", default_memory)?;
    let timeout = Duration::from_secs(args.number("--timeout", 300)?.into());
    let cmdline = args.value("--cmdline")?.unwrap_or_default();
    let gdb = args.flag("--gdb");
    args.finish()?;
    let fw = qemu::ensure_prerequisites()?;
    let gdb_port = gdb.then_some(1234);
    if gdb {
        println!("xtask: QEMU waits for gdb; in another terminal run:");
    }
    let (efi, sim) = match platform {
        Platform::Plain => {
            let a = build(profile)?;
            if gdb {
                println!(
                    "  gdb -ex 'target remote :1234' -ex 'add-symbol-file {} -o {:#x}'",
                    a.kernel_elf.display(),
                    handoff::bootinfo::KERNEL_PREFERRED_BASE
                );
                println!("  (the stage prints a different address if that memory was taken)");
            }
            (a.efi, None)
        }
        Platform::SevEsSim => {
            let a = build_sim(profile)?;
            let (guest_elf, guest_igvm) = match guest {
                SimGuest::TestGuest => (a.guest_elf, a.guest_igvm),
                SimGuest::Kernel => {
                    let k = build(profile)?;
                    (k.stage_elf, k.stage_igvm)
                }
            };
            if gdb {
                // While the guest runs, the gdb stub shows its (L2) state.
                println!(
                    "  gdb -ex 'target remote :1234' -ex 'add-symbol-file {} -o {:#x}'",
                    guest_elf.display(),
                    handoff::launch::IMAGE_GPA
                );
                println!(
                    "  (the guest's symbols; the simulator's are in {}, relocated to where OVMF loaded it)",
                    a.sim_elf.display()
                );
            }
            let files = SimFiles {
                guest_igvm,
                options: sim_options.unwrap_or_default(),
            };
            (a.sim_efi, Some(files))
        }
    };
    let cfg = RunConfig {
        efi,
        cpus,
        memory_mib,
        cmdline,
        timeout,
        gdb_port,
        serial_log: None,
        sim,
    };
    let out = qemu::run(&cfg, &fw, true)?;
    println!(
        "xtask: {} after {:.1}s",
        out.describe(),
        out.elapsed.as_secs_f64()
    );
    if out.success() {
        Ok(())
    } else {
        Err(out.describe())
    }
}

fn cargo_status(args: &[&str]) -> Result<()> {
    let st = xtask::cargo()
        .args(args)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed", args.join(" ")))
    }
}
