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
  run   [--release] [--platform sev-es-sim|plain|kvm-sev-es|kvm-snp] [--cpus N] [--memory MIB]
        [--cmdline \"...\"] [--timeout SECS] [--gdb]
                                    boot under QEMU, serial on stdio. sev-es-sim (the default):
                                    the SEV-ES simulator on TCG running [--guest kernel|simguest]
                                    (the stage's IGVM file with the kernel, or the simulator's
                                    test guest; --sim-options \"mem=256 trace\": its sim.cfg);
                                    plain: the kernel on TCG + OVMF without SEV; kvm-sev-es,
                                    kvm-snp: QEMU/KVM on an AMD host [--boot ovmf|igvm]
                                    [--firmware OVMF.fd] [--cbit N (default: the host's, else 51)],
                                    printed, and run only where the host can (--cmdline: the
                                    guest's; memory default 2048 MiB on the simulator, else 512)
  test  [--release] [--fuzz]        host unit tests, in-kernel suite on 1 and 4 vCPUs, integration
                                    tests of the kernel and of the simulator
  bench boot                        boot-time phases (guest TSC) and image sizes -> target/bench/boot.json
  bench vc                          host cost of #VC decode+emulate -> target/bench/vc.json
  bench sim                         simulator #VC round trips and launch time -> target/bench/sim.json
  bench sev-es                      VMGEXITs of a kernel boot on the simulator, and the guest-side
                                    #VC cost by event under -icount -> target/bench/sev-es.json
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Platform {
    /// The kernel directly on QEMU + OVMF, without SEV.
    Plain,
    /// The SEV-ES simulator running a guest (the default).
    SevEsSim,
    /// QEMU/KVM on an AMD host, the guest under SEV-ES.
    KvmSevEs,
    /// QEMU/KVM on an AMD host, the guest under SEV-SNP.
    KvmSnp,
}

impl Platform {
    fn parse(name: Option<&str>) -> Result<Self> {
        Ok(match name {
            None | Some("sev-es-sim") => Platform::SevEsSim,
            Some("plain") => Platform::Plain,
            Some("kvm-sev-es") => Platform::KvmSevEs,
            Some("kvm-snp") => Platform::KvmSnp,
            Some(other) => {
                return Err(format!(
                    "--platform: `{other}` is none of sev-es-sim, plain, kvm-sev-es, kvm-snp"
                ));
            }
        })
    }

    fn is_kvm(self) -> bool {
        matches!(self, Platform::KvmSevEs | Platform::KvmSnp)
    }
}

/// The simulator's guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimGuest {
    /// Its own test guest (`sim/guest`).
    TestGuest,
    /// The stage's IGVM file: the stage, which starts the kernel (the default).
    Kernel,
}

/// How a KVM run boots the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvmBoot {
    /// OVMF (an SEV-capable build) loads the stage's EFI application from the ESP.
    Ovmf,
    /// QEMU loads the stage's IGVM file itself, no firmware.
    Igvm,
}

/// The C-bit position a KVM run uses when neither `--cbit` nor the host's CPUID gives one: the
/// position on EPYC Milan and Genoa.
const DEFAULT_KVM_C_BIT: u32 = 51;

/// The options of `cargo xtask run`, checked against each other.
#[derive(Debug, PartialEq, Eq)]
struct RunOptions {
    platform: Platform,
    guest: SimGuest,
    sim_options: Option<String>,
    boot: KvmBoot,
    firmware: Option<std::path::PathBuf>,
    c_bit: Option<u32>,
    cpus: u32,
    memory_mib: u32,
    timeout: Duration,
    cmdline: String,
    gdb: bool,
}

impl RunOptions {
    fn parse(args: &mut Args) -> Result<Self> {
        let platform = Platform::parse(args.value("--platform")?.as_deref())?;
        let only = |opt: &str, ok: bool, needs: &str| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(format!("{opt} needs {needs}"))
            }
        };
        let sim = platform == Platform::SevEsSim;
        let kvm = platform.is_kvm();
        let sim_options = args.value("--sim-options")?;
        only(
            "--sim-options",
            sim_options.is_none() || sim,
            "--platform sev-es-sim",
        )?;
        let guest = args.value("--guest")?;
        only("--guest", guest.is_none() || sim, "--platform sev-es-sim")?;
        let guest = match guest.as_deref() {
            None | Some("kernel") => SimGuest::Kernel,
            Some("simguest") => SimGuest::TestGuest,
            Some(other) => {
                return Err(format!(
                    "--guest: `{other}` is neither `kernel` nor `simguest`"
                ));
            }
        };
        let boot = args.value("--boot")?;
        only("--boot", boot.is_none() || kvm, "a kvm platform")?;
        let boot = match boot.as_deref() {
            None | Some("ovmf") => KvmBoot::Ovmf,
            Some("igvm") => KvmBoot::Igvm,
            Some(other) => return Err(format!("--boot: `{other}` is neither `ovmf` nor `igvm`")),
        };
        if platform == Platform::KvmSnp && boot == KvmBoot::Igvm {
            return Err(
                "--boot igvm: the stage's IGVM file describes the SEV-ES platform only; \
                 kvm-snp boots through OVMF"
                    .into(),
            );
        }
        let firmware = args.value("--firmware")?.map(std::path::PathBuf::from);
        only(
            "--firmware",
            firmware.is_none() || (kvm && boot == KvmBoot::Ovmf),
            "a kvm platform booting through OVMF",
        )?;
        let c_bit = args.value("--cbit")?;
        only("--cbit", c_bit.is_none() || kvm, "a kvm platform")?;
        let c_bit = c_bit
            .map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|b| (32..=51).contains(b))
                    .ok_or(format!("--cbit: `{v}` is not a bit position in 32..=51"))
            })
            .transpose()?;
        let cpus = args.number("--cpus", 1)?;
        let default_memory = match platform {
            Platform::SevEsSim => qemu::SIM_MEMORY_MIB,
            _ => 512,
        };
        let memory_mib = args.number("--memory", default_memory)?;
        let timeout = Duration::from_secs(args.number("--timeout", 300)?.into());
        let cmdline = args.value("--cmdline")?.unwrap_or_default();
        if boot == KvmBoot::Igvm && !cmdline.is_empty() {
            return Err("--cmdline: QEMU's IGVM loader passes no command line; \
                 boot through OVMF for one"
                .into());
        }
        let gdb = args.flag("--gdb");
        only(
            "--gdb",
            !gdb || !kvm,
            "TCG (an SEV-ES guest's registers are encrypted)",
        )?;
        Ok(RunOptions {
            platform,
            guest,
            sim_options,
            boot,
            firmware,
            c_bit,
            cpus,
            memory_mib,
            timeout,
            cmdline,
            gdb,
        })
    }
}

fn run(profile: Profile, mut args: Args) -> Result<()> {
    let o = RunOptions::parse(&mut args)?;
    args.finish()?;
    if o.platform.is_kvm() {
        return run_kvm(profile, o);
    }
    let fw = qemu::ensure_prerequisites()?;
    let gdb_port = o.gdb.then_some(1234);
    if o.gdb {
        println!("xtask: QEMU waits for gdb; in another terminal run:");
    }
    let (efi, sim) = match o.platform {
        Platform::Plain => {
            let a = build(profile)?;
            if o.gdb {
                println!(
                    "  gdb -ex 'target remote :1234' -ex 'add-symbol-file {} -o {:#x}'",
                    a.kernel_elf.display(),
                    handoff::bootinfo::KERNEL_PREFERRED_BASE
                );
                println!("  (the stage prints a different address if that memory was taken)");
            }
            (a.efi, None)
        }
        _ => {
            let a = build_sim(profile)?;
            let (guest_elf, guest_igvm) = match o.guest {
                SimGuest::TestGuest => (a.guest_elf, a.guest_igvm),
                SimGuest::Kernel => {
                    let k = build(profile)?;
                    (k.stage_elf, k.stage_igvm)
                }
            };
            if o.gdb {
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
                options: o.sim_options.unwrap_or_default(),
            };
            (a.sim_efi, Some(files))
        }
    };
    let cfg = RunConfig {
        efi,
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        cmdline: o.cmdline,
        timeout: o.timeout,
        gdb_port,
        serial_log: None,
        sim,
        kvm: None,
        icount_shift: None,
    };
    finish_run(&cfg, &fw)
}

/// Runs `cfg` with its serial on stdio and reports how it ended.
fn finish_run(cfg: &RunConfig, fw: &std::path::Path) -> Result<()> {
    let out = qemu::run(cfg, fw, true)?;
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

/// `run --platform kvm-sev-es|kvm-snp`: builds the stage (and, for `--boot igvm`, its IGVM file
/// with the host's C-bit), prints the QEMU/KVM command line, and runs it when this host can:
/// otherwise it stops with what the host lacks.
fn run_kvm(profile: Profile, o: RunOptions) -> Result<()> {
    let c_bit = o
        .c_bit
        .or_else(qemu::host_c_bit)
        .unwrap_or(DEFAULT_KVM_C_BIT);
    let a = build(profile)?;
    let igvm = match o.boot {
        KvmBoot::Ovmf => None,
        KvmBoot::Igvm => Some(stage_igvm_for_c_bit(&a, c_bit)?),
    };
    if igvm.is_some() {
        println!(
            "xtask: note: the IGVM file follows the simulator's launch contract; QEMU's IGVM \
             loader also wants every VMSA at 0xfffffffff000, refuses the COMMAND_LINE \
             directive and leaves the parameter area unencrypted (see README)"
        );
    }
    let firmware = o.firmware.or_else(qemu::ovmf);
    let kvm = qemu::KvmSev {
        snp: o.platform == Platform::KvmSnp,
        c_bit,
        igvm,
    };
    let cfg = RunConfig {
        efi: a.efi,
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        cmdline: o.cmdline,
        timeout: o.timeout,
        gdb_port: None,
        serial_log: None,
        sim: None,
        kvm: Some(kvm.clone()),
        icount_shift: None,
    };
    let problems = qemu::kvm_host_problems(&kvm, &qemu::HostProbe::this_host(firmware.clone()));
    // Without a firmware image the command line names the one the user is to supply.
    let fw = firmware.unwrap_or_else(|| "OVMF.fd".into());
    if problems.is_empty() {
        return finish_run(&cfg, &fw);
    }
    // The ESP directory stays, so the printed line runs as it is once the host is ready.
    let (c, esp) = qemu::command(&cfg, &fw)?;
    println!("xtask: the QEMU/KVM command line:");
    println!("  {}", qemu::shell_line(&c));
    if let Some(esp) = esp {
        println!("  (ESP directory {} kept for it)", esp.display());
    }
    Err(format!(
        "not run: this host cannot run an SEV guest:\n  - {}",
        problems.join("\n  - ")
    ))
}

/// The stage's IGVM file with its launch page tables built for the C-bit at `c_bit`, beside
/// the simulator's (`sev-guest-cbit<N>.igvm`).
fn stage_igvm_for_c_bit(a: &xtask::build::Artifacts, c_bit: u32) -> Result<std::path::PathBuf> {
    let stage =
        std::fs::read(&a.stage_elf).map_err(|e| format!("{}: {e}", a.stage_elf.display()))?;
    let entry = xtask::igvm::symbol_address(&stage, xtask::build::STAGE_IGVM_ENTRY)?;
    let bytes = xtask::igvm::build_sev_es(&stage, xtask::igvm::Entry::At(entry), c_bit)?;
    let path = a
        .stage_igvm
        .with_file_name(format!("sev-guest-cbit{c_bit}.igvm"));
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<RunOptions> {
        let mut args = Args(line.split_whitespace().map(String::from).collect());
        let o = RunOptions::parse(&mut args)?;
        args.finish()?;
        Ok(o)
    }

    #[test]
    fn the_simulator_running_the_kernel_is_the_default() {
        let o = parse("").unwrap();
        assert_eq!(o.platform, Platform::SevEsSim);
        assert_eq!(o.guest, SimGuest::Kernel);
        assert_eq!(o.memory_mib, qemu::SIM_MEMORY_MIB);
        assert_eq!(
            parse("--guest simguest").unwrap().guest,
            SimGuest::TestGuest
        );
        let plain = parse("--platform plain --cpus 4").unwrap();
        assert_eq!(
            (plain.platform, plain.cpus, plain.memory_mib),
            (Platform::Plain, 4, 512)
        );
    }

    #[test]
    fn kvm_platforms_take_boot_firmware_and_c_bit() {
        let o = parse("--platform kvm-sev-es").unwrap();
        assert_eq!((o.boot, o.c_bit, o.firmware), (KvmBoot::Ovmf, None, None));
        let o = parse("--platform kvm-sev-es --boot igvm --cbit 47").unwrap();
        assert_eq!((o.boot, o.c_bit), (KvmBoot::Igvm, Some(47)));
        let o = parse("--platform kvm-snp --firmware /fw/OVMF.amdsev.fd").unwrap();
        assert_eq!(o.platform, Platform::KvmSnp);
        assert_eq!(o.firmware, Some("/fw/OVMF.amdsev.fd".into()));
    }

    #[test]
    fn options_that_do_not_fit_the_platform_are_refused() {
        let err = |line: &str, what: &str| {
            let e = parse(line).unwrap_err();
            assert!(e.contains(what), "`{line}`: {e}");
        };
        err(
            "--platform sev",
            "none of sev-es-sim, plain, kvm-sev-es, kvm-snp",
        );
        err(
            "--platform plain --guest kernel",
            "--guest needs --platform sev-es-sim",
        );
        err(
            "--platform kvm-snp --sim-options trace",
            "--sim-options needs",
        );
        err("--boot igvm", "--boot needs a kvm platform");
        err("--platform plain --cbit 51", "--cbit needs a kvm platform");
        err("--firmware OVMF.fd", "--firmware needs");
        err(
            "--platform kvm-sev-es --boot igvm --firmware x",
            "--firmware needs",
        );
        err("--platform kvm-sev-es --cbit 52", "not a bit position");
        err(
            "--platform kvm-sev-es --boot pxe",
            "neither `ovmf` nor `igvm`",
        );
        err("--platform kvm-snp --boot igvm", "SEV-ES platform only");
        err(
            "--platform kvm-sev-es --boot igvm --cmdline log=debug",
            "no command line",
        );
        err("--platform kvm-sev-es --gdb", "--gdb needs TCG");
        err(
            "--platform plain --frobnicate",
            "unknown argument `--frobnicate`",
        );
    }
}
