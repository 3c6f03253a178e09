//! `cargo xtask build`: kernel ELF -> LZ4 payload -> embedded into the stage -> PE32+ EFI image
//! and, entered at the stage's IGVM entry, an SEV-ES IGVM file for the simulator; and the simulator: its ELF -> PE32+ EFI image, its test guest's ELF -> SEV-ES IGVM file.
//!
//! The freestanding binaries are built for the host triple with the flags below (see
//! README "Building freestanding on the linux-gnu target"). Naming `--target` explicitly keeps
//! these flags away from build scripts and proc-macros, which run on the host.

use crate::{Result, root, target_dir};
use std::path::PathBuf;
use std::process::Command;

/// The only target installed; with `x86_64-unknown-none` available, this is the one line to change.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Code-generation and link flags of the freestanding binaries.
fn rustflags() -> String {
    let ld = root().join("linker.ld");
    [
        "-Cpanic=abort",
        "-Ctarget-feature=+crt-static",
        "-Crelocation-model=pie",
        "-Cno-redzone=yes",
        "-Cforce-frame-pointers=yes",
        "-Clink-arg=-nostartfiles",
        "-Clink-arg=-nostdlib",
        &format!("-Clink-arg=-Wl,-T,{}", ld.display()),
        "-Clink-arg=-Wl,--no-dynamic-linker",
        "-Clink-arg=-Wl,-z,norelro",
        "-Clink-arg=-Wl,-z,nognustack",
        "-Clink-arg=-Wl,--build-id=none",
        "-Clink-arg=-Wl,-z,max-page-size=0x1000",
    ]
    .join(" ")
}

/// Debug or release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The kernel ELF (with symbols, for gdb).
    pub kernel_elf: PathBuf,
    /// The packed kernel embedded into the stage.
    pub payload: PathBuf,
    /// The stage ELF (with symbols).
    pub stage_elf: PathBuf,
    /// The bootable EFI application.
    pub efi: PathBuf,
    /// The stage as an SEV-ES IGVM file for the simulator, entered at `_start_igvm`.
    pub stage_igvm: PathBuf,
}

/// The stage's IGVM entry symbol (`boot/src/igvm/mod.rs`).
pub const STAGE_IGVM_ENTRY: &str = "_start_igvm";

/// `cargo <subcommand>` for the freestanding `packages` with `features` (`package/feature`),
/// with their target and flags.
pub fn freestanding_cargo(subcommand: &str, packages: &[&str], features: &[&str]) -> Command {
    let mut c = crate::cargo();
    c.args([subcommand, "--quiet", "--target", TARGET]);
    for p in packages {
        c.args(["--package", p]);
    }
    if !features.is_empty() {
        c.arg("--features").arg(features.join(","));
    }
    c.arg("--target-dir")
        .arg(target_dir().join("freestanding"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            rustflags(),
        );
    c
}

/// Builds the freestanding binary of `package` (named like the package) and returns its path.
fn cargo_build(
    package: &str,
    features: &[&str],
    profile: Profile,
    env: &[(&str, &PathBuf)],
) -> Result<PathBuf> {
    let mut c = freestanding_cargo("build", &[package], features);
    if profile == Profile::Release {
        c.arg("--release");
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let st = c.status().map_err(|e| format!("running cargo: {e}"))?;
    if !st.success() {
        return Err(format!("building {package} failed"));
    }
    Ok(target_dir().join(format!("freestanding/{TARGET}/{}/{package}", profile.dir())))
}

/// Builds kernel and stage and writes the EFI image and the stage's IGVM file.
pub fn build(profile: Profile) -> Result<Artifacts> {
    let kernel_elf = cargo_build("kernel", &[], profile, &[])?;
    let elf = std::fs::read(&kernel_elf).map_err(|e| format!("{}: {e}", kernel_elf.display()))?;
    let span = handoff::elf::Elf::parse(&elf)
        .map_err(|e| format!("kernel ELF: {e}"))?
        .span();
    let compressed = lz4_flex::block::compress(&elf);
    let out_dir = image_dir(profile)?;
    let payload = out_dir.join("kernel.payload");
    std::fs::write(&payload, handoff::payload::pack(&elf, &compressed, span))
        .map_err(|e| e.to_string())?;
    let stage_elf = cargo_build("boot", &[], profile, &[("KERNEL_PAYLOAD", &payload)])?;
    let stage = std::fs::read(&stage_elf).map_err(|e| e.to_string())?;
    let efi = out_dir.join("sev-guest.efi");
    std::fs::write(&efi, crate::elf2efi::elf_to_efi(&stage)?).map_err(|e| e.to_string())?;
    let entry = crate::igvm::symbol_address(&stage, STAGE_IGVM_ENTRY)?;
    let igvm = crate::igvm::build_sev_es(
        &stage,
        crate::igvm::Entry::At(entry),
        handoff::launch::SIM_C_BIT,
    )?;
    let stage_igvm = out_dir.join("sev-guest.igvm");
    std::fs::write(&stage_igvm, igvm).map_err(|e| e.to_string())?;
    Ok(Artifacts {
        kernel_elf,
        payload,
        stage_elf,
        efi,
        stage_igvm,
    })
}

/// `target/image/<profile>`, created.
fn image_dir(profile: Profile) -> Result<PathBuf> {
    let dir = target_dir().join(format!("image/{}", profile.dir()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// What a simulator build produced.
#[derive(Debug, Clone)]
pub struct SimArtifacts {
    /// The simulator ELF (with symbols).
    pub sim_elf: PathBuf,
    /// The simulator as an EFI application.
    pub sim_efi: PathBuf,
    /// The test guest ELF (with symbols).
    pub guest_elf: PathBuf,
    /// The test guest as an SEV-ES IGVM file for the simulator's C-bit.
    pub guest_igvm: PathBuf,
}

/// Builds the simulator EFI application and its test guest's IGVM file.
pub fn build_sim(profile: Profile) -> Result<SimArtifacts> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let write = |p: &PathBuf, data: Vec<u8>| {
        std::fs::write(p, data).map_err(|e| format!("{}: {e}", p.display()))
    };
    let out_dir = image_dir(profile)?;
    let sim_elf = cargo_build("sim", &["sim/freestanding"], profile, &[])?;
    let sim_efi = out_dir.join("sev-sim.efi");
    write(&sim_efi, crate::elf2efi::elf_to_efi(&read(&sim_elf)?)?)?;
    let guest_elf = cargo_build("simguest", &[], profile, &[])?;
    let guest_igvm = out_dir.join("simguest.igvm");
    let igvm = crate::igvm::build_sev_es(
        &read(&guest_elf)?,
        crate::igvm::Entry::Elf,
        handoff::launch::SIM_C_BIT,
    )?;
    write(&guest_igvm, igvm)?;
    Ok(SimArtifacts {
        sim_elf,
        sim_efi,
        guest_elf,
        guest_igvm,
    })
}
