//! `cargo xtask bench boot`: boot-phase times from the guest's TSC and the image sizes.
//!
//! The kernel prints one `BOOT-TIMES` line at `ready` with microseconds per phase, computed from
//! the TSC readings the stage recorded and the TSC frequency it measured; this reads that line
//! from a release boot with 1 and with 8 vCPUs, with the time from kernel entry until every CPU
//! reported in.

use xtask::build::{Profile, build};
use xtask::qemu::{self, RunConfig};
use xtask::{Result, target_dir};

fn boot_times(
    efi: &std::path::Path,
    fw: &std::path::Path,
    cpus: u32,
) -> Result<Vec<(String, u64)>> {
    let log = target_dir().join(format!("bench/boot-{cpus}cpu.log"));
    let cfg = RunConfig::logged(efi, cpus, "", log);
    let out = qemu::run(&cfg, fw, false)?;
    if !out.success() {
        return Err(format!(
            "boot with {cpus} vCPUs: {}\n{}",
            out.describe(),
            out.serial
        ));
    }
    let line = out
        .serial
        .lines()
        .find(|l| l.contains("BOOT-TIMES"))
        .ok_or("no BOOT-TIMES line from the kernel")?;
    let mut times: Vec<(String, u64)> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim_end_matches("us").parse().ok()?)))
        .collect();
    // `N of N CPUs online, T us after kernel entry`: the SMP figure.
    let online = format!("{cpus} of {cpus} CPUs online, ");
    let smp = out
        .serial
        .lines()
        .find_map(|l| {
            l.split_once(&online)?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no `{online}...` line from the kernel"))?;
    times.push(("kernel_to_all_cpus_online".into(), smp));
    Ok(times)
}

pub fn boot() -> Result<()> {
    let fw = qemu::ensure_prerequisites()?;
    std::fs::create_dir_all(target_dir().join("bench")).map_err(|e| e.to_string())?;
    let a = build(Profile::Release)?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (efi_size, payload_size) = (size(&a.efi), size(&a.payload));
    let mut json = format!(
        "{{\n  \"efi_image_bytes\": {efi_size},\n  \"kernel_payload_bytes\": {payload_size}"
    );
    println!("{:<34} {:>12}", "figure", "value");
    println!("{:<34} {:>9} KiB", "release EFI image", efi_size / 1024);
    println!(
        "{:<34} {:>9} KiB",
        "compressed kernel payload",
        payload_size / 1024
    );
    for cpus in [1, 8] {
        let times = boot_times(&a.efi, &fw, cpus)?;
        let mut entries = Vec::new();
        for (k, v) in &times {
            println!("{:<34} {:>9} us", format!("{k} ({cpus} vCPU)"), v);
            entries.push(format!("\"{k}\": {v}"));
        }
        json += &format!(",\n  \"boot_{cpus}cpu_us\": {{ {} }}", entries.join(", "));
    }
    json += "\n}\n";
    let path = target_dir().join("bench/boot.json");
    std::fs::write(&path, json).map_err(|e| e.to_string())?;
    println!("written {}", path.display());
    Ok(())
}
