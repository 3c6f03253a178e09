//! Finding (or installing) QEMU and OVMF, and running the kernel, or the simulator with a guest,
//! under QEMU TCG; and the QEMU/KVM command line of an SEV-ES or SEV-SNP guest on a real AMD
//! host, with the checks that host must pass first.

use crate::{Result, target_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use x86::qemu::ExitStatus;

/// Oldest QEMU whose TCG SVM the simulator is known to work on.
const MIN_QEMU: (u32, u32) = (10, 0);
const QEMU: &str = "qemu-system-x86_64";
const OVMF_CANDIDATES: &[&str] = &["/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd"];
/// Status QEMU ends with when the kernel (or the simulator's guest) reports success through
/// isa-debug-exit.
pub const EXIT_SUCCESS: i32 = ExitStatus::Success.qemu_status();
/// ... when it reports failure.
pub const EXIT_FAILURE: i32 = ExitStatus::Failure.qemu_status();
/// ... when the simulator ended the run on the guest's GHCB termination request.
pub const EXIT_GUEST_TERMINATED: i32 = ExitStatus::GuestTerminated.qemu_status();
/// ... when the simulator ended the run on an error (triple fault, protocol violation, an IGVM
/// file it refuses).
pub const EXIT_SIM_ERROR: i32 = ExitStatus::SimError.qemu_status();
/// ... when the simulator found that QEMU lost a vCPU's guest state: the run is void.
pub const EXIT_VOID_RUN: i32 = ExitStatus::VoidRun.qemu_status();
/// The CPU of a simulator run: SVM with nested paging for the simulator, and 48 physical
/// address bits so that the simulated C-bit (bit 47) is a valid address bit.
const SIM_CPU: &str = "EPYC-Milan,+svm,+npt,phys-bits=48";
/// QEMU memory of a simulator run: the simulator, and the guest's private and shared backing.
pub const SIM_MEMORY_MIB: u32 = 2048;

fn qemu_version() -> Option<(u32, u32)> {
    let out = Command::new(QEMU).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

/// The first OVMF image found at the usual places.
pub fn ovmf() -> Option<PathBuf> {
    OVMF_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Makes sure QEMU >= 10.0 and OVMF are present. When missing and running as root, installs
/// them with apt (QEMU 10 comes from Debian's bookworm-backports suite, added by copying the
/// machine's own Debian sources entry with the suite changed); otherwise prints what to run.
pub fn ensure_prerequisites() -> Result<PathBuf> {
    let qemu_ok = qemu_version().is_some_and(|v| v >= MIN_QEMU);
    if qemu_ok && let Some(fw) = ovmf() {
        return Ok(fw);
    }
    let cmds = "apt-get update && apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86 && apt-get install -y --no-install-recommends ovmf";
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !is_root {
        return Err(format!(
            "QEMU >= {}.{} and OVMF are needed. Add Debian's bookworm-backports suite to your apt sources, then run as root:\n  {cmds}",
            MIN_QEMU.0, MIN_QEMU.1
        ));
    }
    eprintln!(
        "xtask: QEMU >= {}.{} or OVMF missing; installing them with apt",
        MIN_QEMU.0, MIN_QEMU.1
    );
    add_backports_suite()?;
    let st = Command::new("sh")
        .args(["-c", cmds])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if !st.is_ok_and(|s| s.success()) {
        return Err(format!("installing QEMU/OVMF failed: {cmds}"));
    }
    match (qemu_version(), ovmf()) {
        (Some(v), Some(fw)) if v >= MIN_QEMU => Ok(fw),
        _ => Err("QEMU >= 10.0 / OVMF still missing after installation".into()),
    }
}

/// Writes `/etc/apt/sources.list.d/bookworm-backports.sources`: the machine's Debian entry for
/// the `bookworm` suite, with the suite changed. No host name is invented here.
fn add_backports_suite() -> Result<()> {
    let target = Path::new("/etc/apt/sources.list.d/bookworm-backports.sources");
    if target.exists() {
        return Ok(());
    }
    let src = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .map_err(|e| format!("reading Debian's apt sources to add bookworm-backports: {e}"))?;
    let stanza = src
        .split("\n\n")
        .find(|s| {
            s.lines()
                .any(|l| l.starts_with("Suites:") && l.split_whitespace().any(|w| w == "bookworm"))
        })
        .ok_or("no Debian sources entry for the bookworm suite found")?;
    let entry: Vec<String> = stanza
        .lines()
        .map(|l| {
            if l.starts_with("Suites:") {
                "Suites: bookworm-backports".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(target, entry.join("\n") + "\n")
        .map_err(|e| format!("{}: {e}", target.display()))
}

/// What the simulator gets besides its EFI application: the guest and the options.
#[derive(Debug, Clone)]
pub struct SimFiles {
    /// The guest's IGVM file (`guest.igvm` on the boot disk).
    pub guest_igvm: PathBuf,
    /// The simulator's options (`sim.cfg`), e.g. `mem=256 trace`.
    pub options: String,
}

/// A run under KVM on an AMD host, the guest protected by SEV-ES or SEV-SNP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmSev {
    /// SEV-SNP (`sev-snp-guest`) instead of SEV-ES (`sev-guest` with the ES policy bit).
    pub snp: bool,
    /// The host's C-bit position (CPUID 0x8000001F EBX[5:0]); QEMU refuses any other, and an
    /// IGVM file's launch page tables must be built with it.
    pub c_bit: u32,
    /// Boot from this IGVM file (QEMU's `igvm-cfg` object) instead of OVMF and the stage on
    /// the ESP.
    pub igvm: Option<PathBuf>,
}

/// SEV guest policy of a `kvm-sev-es` run: NODBG (bit 0) | ES (bit 2), "SEV-ES required".
const SEV_ES_POLICY: &str = "0x5";
/// Physical address bits the host loses to memory encryption (CPUID 0x8000001F EBX[11:6]),
/// 1 on every EPYC generation so far.
const REDUCED_PHYS_BITS: u32 = 1;
/// The CPU model of a KVM run: a fixed EPYC model rather than `host`, so that SNP's CPUID
/// table holds only what the firmware accepts.
const KVM_CPU: &str = "EPYC-v4";

/// One QEMU run of the kernel, or of the simulator with a guest.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The EFI application OVMF boots: the stage, or the simulator.
    pub efi: PathBuf,
    pub cpus: u32,
    pub memory_mib: u32,
    /// The kernel's command line (fw_cfg), or the simulator guest's (`cmdline.txt`).
    pub cmdline: String,
    pub timeout: Duration,
    /// Start QEMU's gdb stub on this TCP port, halted at reset.
    pub gdb_port: Option<u16>,
    /// Serial to this file instead of stdio.
    pub serial_log: Option<PathBuf>,
    /// Run `efi` as the simulator with this guest.
    pub sim: Option<SimFiles>,
    /// Run under KVM with SEV-ES/SNP instead of TCG.
    pub kvm: Option<KvmSev>,
    /// TCG only: QEMU's `-icount shift=N`, a deterministic clock that advances 2^N ns per guest
    /// instruction (with 0, the TSC counts instructions).
    pub icount_shift: Option<u32>,
}

impl RunConfig {
    /// A test or bench run: 512 MiB, 120 s timeout, serial to `log`.
    pub fn logged(efi: &Path, cpus: u32, cmdline: &str, log: PathBuf) -> Self {
        RunConfig {
            efi: efi.to_path_buf(),
            cpus,
            memory_mib: 512,
            cmdline: cmdline.into(),
            timeout: Duration::from_secs(120),
            gdb_port: None,
            serial_log: Some(log),
            sim: None,
            kvm: None,
            icount_shift: None,
        }
    }

    /// The same run with `efi` as the simulator running `files`' guest, with
    /// [`SIM_MEMORY_MIB`] of memory.
    pub fn on_sim(self, files: SimFiles) -> Self {
        RunConfig {
            memory_mib: SIM_MEMORY_MIB,
            sim: Some(files),
            ..self
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status; None when the timeout killed it.
    pub status: Option<i32>,
    pub elapsed: Duration,
    /// The serial output (only when it went to a file).
    pub serial: String,
}

impl Outcome {
    /// Whether the kernel reported success. A plain exit 0 (triple fault under -no-reboot) is not.
    pub fn success(&self) -> bool {
        self.status == Some(EXIT_SUCCESS)
    }

    /// Describes the end for a message.
    pub fn describe(&self) -> String {
        match self.status {
            None => "timed out".into(),
            Some(EXIT_SUCCESS) => "success".into(),
            Some(EXIT_FAILURE) => "guest reported failure".into(),
            Some(EXIT_GUEST_TERMINATED) => "simulator: guest requested termination".into(),
            Some(EXIT_SIM_ERROR) => "simulator error".into(),
            Some(EXIT_VOID_RUN) => "void run: QEMU lost a vCPU's guest state".into(),
            Some(0) => "QEMU exited 0: triple fault or reset".into(),
            Some(s) => format!("QEMU exit status {s}"),
        }
    }
}

/// The QEMU command line for `cfg`, and the ESP directory it boots from (the caller removes it;
/// none when booting from an IGVM file).
pub fn command(cfg: &RunConfig, firmware: &Path) -> Result<(Command, Option<PathBuf>)> {
    let igvm = cfg.kvm.as_ref().and_then(|k| k.igvm.as_ref());
    let esp = match igvm {
        Some(_) => None,
        None => {
            // Each run gets its own ESP directory, so runs can go in parallel.
            let esp = target_dir()
                .join("esp")
                .join(format!("{}-{}", std::process::id(), unique()));
            if let Err(e) = fill_esp(cfg, &esp) {
                let _ = std::fs::remove_dir_all(&esp);
                return Err(e);
            }
            Some(esp)
        }
    };
    Ok((command_line(cfg, firmware, esp.as_deref()), esp))
}

/// The QEMU command line for `cfg` booting `firmware` with the ESP directory `esp` (none: the
/// IGVM file of `cfg.kvm` is the whole boot image).
fn command_line(cfg: &RunConfig, firmware: &Path, esp: Option<&Path>) -> Command {
    let mut c = Command::new(QEMU);
    match &cfg.kvm {
        None => {
            let cpu = if cfg.sim.is_some() {
                SIM_CPU
            } else {
                "EPYC-Milan"
            };
            c.args(["-machine", "q35", "-accel", "tcg", "-cpu", cpu]);
            if let Some(shift) = cfg.icount_shift {
                c.arg("-icount").arg(format!("shift={shift}"));
            }
        }
        Some(kvm) => {
            let mut machine = String::from("q35,confidential-guest-support=sev0");
            if kvm.igvm.is_some() {
                machine += ",igvm-cfg=igvm0";
            }
            let sev = if kvm.snp {
                format!(
                    "sev-snp-guest,id=sev0,cbitpos={},reduced-phys-bits={REDUCED_PHYS_BITS}",
                    kvm.c_bit
                )
            } else {
                format!(
                    "sev-guest,id=sev0,policy={SEV_ES_POLICY},cbitpos={},reduced-phys-bits={REDUCED_PHYS_BITS}",
                    kvm.c_bit
                )
            };
            c.args(["-machine", &machine, "-accel", "kvm", "-cpu", KVM_CPU])
                .args(["-object", &sev]);
            if let Some(igvm) = &kvm.igvm {
                c.arg("-object")
                    .arg(format!("igvm-cfg,id=igvm0,file={}", igvm.display()));
            }
        }
    }
    c.args([
        "-smp",
        &cfg.cpus.to_string(),
        "-m",
        &format!("{}M", cfg.memory_mib),
    ])
    .args([
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-net",
        "none",
    ])
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    // With an IGVM file QEMU refuses firmware: the file is the whole boot image.
    if let Some(esp) = esp {
        c.arg("-bios")
            .arg(firmware)
            .arg("-drive")
            .arg(format!("format=raw,file=fat:rw:{}", esp.display()));
        if cfg.sim.is_none() && !cfg.cmdline.is_empty() {
            // fw_cfg strings cannot contain commas unescaped: QEMU's option syntax doubles them.
            c.arg("-fw_cfg").arg(format!(
                "name=opt/sev-guest/cmdline,string={}",
                cfg.cmdline.replace(',', ",,")
            ));
        }
    }
    match &cfg.serial_log {
        Some(p) => c.arg("-serial").arg(format!("file:{}", p.display())),
        None => c.args(["-serial", "stdio"]),
    };
    if let Some(port) = cfg.gdb_port {
        c.arg("-gdb").arg(format!("tcp::{port}")).arg("-S");
    }
    c
}

/// What [`kvm_host_problems`] looks at on the host.
#[derive(Debug, Default)]
pub struct HostProbe {
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// `/sys/module/kvm_amd/parameters/sev_es`, if readable.
    pub sev_es: Option<String>,
    /// `/sys/module/kvm_amd/parameters/sev_snp`, if readable.
    pub sev_snp: Option<String>,
    /// The output of `qemu-system-x86_64 -object help` (the object types it was built with),
    /// if it ran.
    pub qemu_objects: Option<String>,
    /// The firmware a boot through OVMF uses, if one was found.
    pub firmware: Option<PathBuf>,
}

impl HostProbe {
    /// Looks at this host; `firmware` is the OVMF image the run would use.
    pub fn this_host(firmware: Option<PathBuf>) -> Self {
        let param = |name: &str| {
            std::fs::read_to_string(format!("/sys/module/kvm_amd/parameters/{name}"))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let qemu_objects = Command::new(QEMU)
            .args(["-object", "help"])
            .stdin(Stdio::null())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        HostProbe {
            dev_kvm: Path::new("/dev/kvm").exists(),
            sev_es: param("sev_es"),
            sev_snp: param("sev_snp"),
            qemu_objects,
            firmware,
        }
    }
}

/// What this host lacks to run `kvm`, one sentence each; empty when it can run it.
pub fn kvm_host_problems(kvm: &KvmSev, host: &HostProbe) -> Vec<String> {
    let mut problems = Vec::new();
    if !host.dev_kvm {
        problems.push("/dev/kvm is missing: KVM is needed (an AMD host with SVM enabled in its firmware and the kvm_amd module loaded)".to_string());
    }
    // Boolean module parameters read `Y`/`N`; older kernels made them integers.
    let on = |v: &Option<String>| v.as_deref().is_some_and(|v| v == "Y" || v == "1");
    let (param, what) = if kvm.snp {
        (&host.sev_snp, "SEV-SNP")
    } else {
        (&host.sev_es, "SEV-ES")
    };
    let name = if kvm.snp { "sev_snp" } else { "sev_es" };
    if !on(param) {
        let seen = match param {
            Some(v) => format!("reads `{v}`"),
            None => "is missing".to_string(),
        };
        problems.push(format!(
            "/sys/module/kvm_amd/parameters/{name} {seen}: the host needs a CPU with {what} enabled in its firmware and a kernel that enables it (kvm_amd {name}=1{})",
            if kvm.snp {
                ", Linux >= 6.11 for SNP guests"
            } else {
                ""
            }
        ));
    }
    let objects = host.qemu_objects.as_deref().unwrap_or("");
    let object = if kvm.snp {
        "sev-snp-guest"
    } else {
        "sev-guest"
    };
    match &host.qemu_objects {
        None => problems.push(format!("{QEMU} did not run: QEMU is needed")),
        Some(_) if !objects.lines().any(|l| l.trim() == object) => problems.push(format!(
            "{QEMU} has no `{object}` object: a QEMU built with SEV support is needed{}",
            if kvm.snp { " (>= 9.1 for SNP)" } else { "" }
        )),
        Some(_) => {}
    }
    if kvm.igvm.is_some() {
        if host.qemu_objects.is_some() && !objects.lines().any(|l| l.trim() == "igvm-cfg") {
            problems.push(format!(
                "{QEMU} has no `igvm-cfg` object: booting from IGVM needs a QEMU built with IGVM support (configure --enable-igvm; Debian's QEMU 10.0 has none)"
            ));
        }
    } else if host.firmware.is_none() {
        problems.push(
            "no OVMF image found: pass --firmware PATH to an OVMF build with SEV-ES/SNP support"
                .to_string(),
        );
    }
    problems
}

/// Puts what OVMF boots on the ESP directory `esp`: the EFI application as the default boot
/// entry and, for a simulator run, the guest (`guest.igvm`), the simulator's options (`sim.cfg`)
/// and the guest's command line (`cmdline.txt`) at the root.
fn fill_esp(cfg: &RunConfig, esp: &Path) -> Result<()> {
    let boot = esp.join("EFI/BOOT");
    std::fs::create_dir_all(&boot).map_err(|e| format!("{}: {e}", boot.display()))?;
    let copy = |from: &Path, to: PathBuf| {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|e| format!("{}: {e}", from.display()))
    };
    copy(&cfg.efi, boot.join("BOOTX64.EFI"))?;
    if let Some(sim) = &cfg.sim {
        copy(&sim.guest_igvm, esp.join("guest.igvm"))?;
        for (name, text) in [("sim.cfg", &sim.options), ("cmdline.txt", &cfg.cmdline)] {
            std::fs::write(esp.join(name), text).map_err(|e| format!("{name}: {e}"))?;
        }
    }
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Prints the command as a shell line.
pub fn shell_line(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains([' ', '\'', '"']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs QEMU and waits for it, killing it at the timeout.
pub fn run(cfg: &RunConfig, firmware: &Path, verbose: bool) -> Result<Outcome> {
    let (mut c, esp) = command(cfg, firmware)?;
    if verbose {
        eprintln!("xtask: {}", shell_line(&c));
    }
    if cfg.serial_log.is_some() {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
    }
    let start = Instant::now();
    let mut child = c.spawn().map_err(|e| format!("starting {QEMU}: {e}"))?;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st.code();
        }
        if start.elapsed() > cfg.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(esp) = esp {
        let _ = std::fs::remove_dir_all(esp);
    }
    let serial = match &cfg.serial_log {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => String::new(),
    };
    Ok(Outcome {
        status,
        elapsed: start.elapsed(),
        serial,
    })
}

/// The C-bit position of this host's CPU (CPUID 0x8000001F EBX[5:0]) when it reports SEV
/// (EAX bit 1); none on other CPUs.
pub fn host_c_bit() -> Option<u32> {
    use std::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 CPU and only reads.
    let max_extended = __cpuid(0x8000_0000).eax;
    if max_extended < 0x8000_001f {
        return None;
    }
    let leaf = __cpuid(0x8000_001f);
    (leaf.eax & 0b10 != 0).then_some(leaf.ebx & 0x3f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The value after the first `flag` in `args`.
    fn after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    }

    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn kvm_cfg(snp: bool, igvm: Option<&str>) -> RunConfig {
        RunConfig {
            kvm: Some(KvmSev {
                snp,
                c_bit: 51,
                igvm: igvm.map(PathBuf::from),
            }),
            serial_log: None,
            ..RunConfig::logged(Path::new("stage.efi"), 2, "log=debug,x", "log".into())
        }
    }

    #[test]
    fn tcg_runs_keep_their_command_line() {
        let cfg = RunConfig::logged(Path::new("k.efi"), 4, "test=all", "s.log".into());
        let a = args(&command_line(
            &cfg,
            Path::new("OVMF.fd"),
            Some(Path::new("esp")),
        ));
        assert_eq!(after(&a, "-machine"), Some("q35"));
        assert_eq!(after(&a, "-accel"), Some("tcg"));
        assert_eq!(after(&a, "-cpu"), Some("EPYC-Milan"));
        assert_eq!(after(&a, "-bios"), Some("OVMF.fd"));
        assert_eq!(after(&a, "-drive"), Some("format=raw,file=fat:rw:esp"));
        assert_eq!(
            after(&a, "-fw_cfg"),
            Some("name=opt/sev-guest/cmdline,string=test=all")
        );
        assert!(values(&a, "-object").is_empty());
        let sim = cfg.on_sim(SimFiles {
            guest_igvm: "g.igvm".into(),
            options: String::new(),
        });
        let a = args(&command_line(
            &sim,
            Path::new("OVMF.fd"),
            Some(Path::new("esp")),
        ));
        assert_eq!(after(&a, "-cpu"), Some(SIM_CPU));
        assert_eq!(after(&a, "-m"), Some("2048M"));
        assert_eq!(
            after(&a, "-fw_cfg"),
            None,
            "the simulator's guest gets cmdline.txt"
        );
        assert_eq!(after(&a, "-icount"), None);
        let counted = RunConfig {
            icount_shift: Some(0),
            ..sim
        };
        let a = args(&command_line(
            &counted,
            Path::new("OVMF.fd"),
            Some(Path::new("esp")),
        ));
        assert_eq!(after(&a, "-icount"), Some("shift=0"));
        assert_eq!(after(&a, "-accel"), Some("tcg"));
    }

    #[test]
    fn kvm_sev_es_through_ovmf() {
        let cfg = kvm_cfg(false, None);
        let a = args(&command_line(
            &cfg,
            Path::new("/fw/OVMF.fd"),
            Some(Path::new("esp")),
        ));
        assert_eq!(
            after(&a, "-machine"),
            Some("q35,confidential-guest-support=sev0")
        );
        assert_eq!(after(&a, "-accel"), Some("kvm"));
        assert_eq!(after(&a, "-cpu"), Some("EPYC-v4"));
        assert_eq!(
            values(&a, "-object"),
            ["sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1"]
        );
        assert_eq!(after(&a, "-bios"), Some("/fw/OVMF.fd"));
        assert_eq!(after(&a, "-drive"), Some("format=raw,file=fat:rw:esp"));
        assert_eq!(
            after(&a, "-fw_cfg"),
            Some("name=opt/sev-guest/cmdline,string=log=debug,,x")
        );
        assert_eq!(after(&a, "-smp"), Some("2"));
        assert_eq!(after(&a, "-serial"), Some("stdio"));
        assert!(a.iter().any(|x| x == "-no-reboot"));
    }

    #[test]
    fn kvm_snp_through_ovmf() {
        let cfg = kvm_cfg(true, None);
        let a = args(&command_line(
            &cfg,
            Path::new("OVMF.fd"),
            Some(Path::new("esp")),
        ));
        assert_eq!(
            values(&a, "-object"),
            ["sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1"]
        );
        assert_eq!(after(&a, "-bios"), Some("OVMF.fd"));
    }

    #[test]
    fn kvm_sev_es_from_igvm_has_no_firmware() {
        let cfg = kvm_cfg(false, Some("/img/sev-guest-cbit51.igvm"));
        let a = args(&command_line(&cfg, Path::new("OVMF.fd"), None));
        assert_eq!(
            after(&a, "-machine"),
            Some("q35,confidential-guest-support=sev0,igvm-cfg=igvm0")
        );
        assert_eq!(
            values(&a, "-object"),
            [
                "sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1",
                "igvm-cfg,id=igvm0,file=/img/sev-guest-cbit51.igvm"
            ]
        );
        for flag in ["-bios", "-drive", "-fw_cfg", "-pflash"] {
            assert_eq!(after(&a, flag), None, "{flag} with an IGVM file");
        }
    }

    fn good_host() -> HostProbe {
        HostProbe {
            dev_kvm: true,
            sev_es: Some("Y".into()),
            sev_snp: Some("1".into()),
            qemu_objects: Some(
                "List of user creatable objects:\n  igvm-cfg\n  sev-guest\n  sev-snp-guest\n"
                    .into(),
            ),
            firmware: Some("OVMF.fd".into()),
        }
    }

    #[test]
    fn a_capable_host_has_no_problems() {
        for snp in [false, true] {
            assert_eq!(
                kvm_host_problems(&kvm_cfg(snp, None).kvm.unwrap(), &good_host()),
                Vec::<String>::new()
            );
        }
        let igvm = kvm_cfg(false, Some("x.igvm")).kvm.unwrap();
        let host = HostProbe {
            firmware: None,
            ..good_host()
        };
        assert!(
            kvm_host_problems(&igvm, &host).is_empty(),
            "IGVM needs no firmware"
        );
    }

    #[test]
    fn what_the_host_lacks_is_named() {
        let es = kvm_cfg(false, None).kvm.unwrap();
        let snp = kvm_cfg(true, None).kvm.unwrap();
        let igvm = kvm_cfg(false, Some("x.igvm")).kvm.unwrap();
        let one = |kvm: &KvmSev, host: HostProbe| {
            let p = kvm_host_problems(kvm, &host);
            assert_eq!(p.len(), 1, "{p:?}");
            p[0].clone()
        };
        let p = one(
            &es,
            HostProbe {
                dev_kvm: false,
                ..good_host()
            },
        );
        assert!(p.contains("/dev/kvm is missing"), "{p}");
        let p = one(
            &es,
            HostProbe {
                sev_es: Some("N".into()),
                ..good_host()
            },
        );
        assert!(
            p.contains("sev_es reads `N`") && p.contains("kvm_amd sev_es=1"),
            "{p}"
        );
        let p = one(
            &es,
            HostProbe {
                sev_es: None,
                ..good_host()
            },
        );
        assert!(p.contains("sev_es is missing"), "{p}");
        let p = one(
            &snp,
            HostProbe {
                sev_snp: Some("0".into()),
                ..good_host()
            },
        );
        assert!(p.contains("kvm_amd sev_snp=1"), "{p}");
        let p = one(
            &snp,
            HostProbe {
                qemu_objects: Some("  sev-guest\n".into()),
                ..good_host()
            },
        );
        assert!(
            p.contains("no `sev-snp-guest` object") && p.contains("9.1"),
            "{p}"
        );
        let p = one(
            &igvm,
            HostProbe {
                qemu_objects: Some("  sev-guest\n".into()),
                ..good_host()
            },
        );
        assert!(p.contains("no `igvm-cfg` object"), "{p}");
        let p = one(
            &es,
            HostProbe {
                qemu_objects: None,
                ..good_host()
            },
        );
        assert!(p.contains("QEMU is needed"), "{p}");
        let p = one(
            &es,
            HostProbe {
                firmware: None,
                ..good_host()
            },
        );
        assert!(p.contains("--firmware PATH"), "{p}");
        // This machine's case: no KVM, no kvm_amd.
        let p = kvm_host_problems(
            &es,
            &HostProbe {
                dev_kvm: false,
                sev_es: None,
                ..good_host()
            },
        );
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
