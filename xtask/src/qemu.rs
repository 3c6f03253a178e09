//! Finding (or installing) QEMU and OVMF, and running the kernel, or the simulator with a guest,
//! under QEMU TCG.

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

fn ovmf() -> Option<PathBuf> {
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
            Some(0) => "QEMU exited 0: triple fault or reset".into(),
            Some(s) => format!("QEMU exit status {s}"),
        }
    }
}

/// The QEMU command line for `cfg`, and the ESP directory it boots from (the caller removes it).
pub fn command(cfg: &RunConfig, firmware: &Path) -> Result<(Command, PathBuf)> {
    // Each run gets its own ESP directory, so runs can go in parallel.
    let esp = target_dir()
        .join("esp")
        .join(format!("{}-{}", std::process::id(), unique()));
    if let Err(e) = fill_esp(cfg, &esp) {
        let _ = std::fs::remove_dir_all(&esp);
        return Err(e);
    }
    let cpu = if cfg.sim.is_some() {
        SIM_CPU
    } else {
        "EPYC-Milan"
    };
    let mut c = Command::new(QEMU);
    c.args(["-machine", "q35", "-accel", "tcg", "-cpu", cpu])
        .args([
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
        .arg("-bios")
        .arg(firmware)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!("format=raw,file=fat:rw:{}", esp.display()));
    if cfg.sim.is_none() && !cfg.cmdline.is_empty() {
        // fw_cfg strings cannot contain commas unescaped: QEMU's option syntax doubles them.
        c.arg("-fw_cfg").arg(format!(
            "name=opt/sev-guest/cmdline,string={}",
            cfg.cmdline.replace(',', ",,")
        ));
    }
    match &cfg.serial_log {
        Some(p) => c.arg("-serial").arg(format!("file:{}", p.display())),
        None => c.args(["-serial", "stdio"]),
    };
    if let Some(port) = cfg.gdb_port {
        c.arg("-gdb").arg(format!("tcp::{port}")).arg("-S");
    }
    Ok((c, esp))
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
    let _ = std::fs::remove_dir_all(esp);
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
