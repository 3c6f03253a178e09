//! `cargo xtask bench boot`: boot-phase times from the guest's TSC and the image sizes.
//!
//! The kernel prints one `BOOT-TIMES` line at `ready` with microseconds per phase, computed from
//! the TSC readings the stage recorded and the TSC frequency it measured; this reads that line
//! from a release boot with 1 and with 8 vCPUs, with the time from kernel entry until every CPU
//! reported in.
//!
//! `cargo xtask bench sim`: the simulator's #VC round trip rate and its launch time, from the
//! `SIM-BENCH` and `SIM-LAUNCH` lines it prints for a release run of its test guest with the
//! command line `bench` on one vCPU.

use xtask::build::{Profile, build, build_sim};
use xtask::qemu::{self, RunConfig, SimFiles};
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

/// Issue 4's targets: #VC round trips (guest -> simulator -> guest) per second, at least ...
const SIM_ROUND_TRIPS_TARGET: u64 = 40_000;
/// ... and time from the simulator's EFI entry to the guest's first instruction, at most.
const SIM_LAUNCH_TARGET_US: u64 = 1_000_000;

/// The `key=value` words after the word `tag` in the last line of `serial` that has it.
fn tagged<'a>(serial: &'a str, tag: &str) -> Result<Vec<(&'a str, &'a str)>> {
    let line = serial
        .lines()
        .rfind(|l| l.split_whitespace().any(|w| w == tag))
        .ok_or_else(|| format!("no {tag} line in the serial output"))?;
    Ok(line
        .split_whitespace()
        .skip_while(|w| *w != tag)
        .filter_map(|w| w.split_once('='))
        .collect())
}

/// The number `key` of a line read by [`tagged`].
fn number(fields: &[(&str, &str)], tag: &str, key: &str) -> Result<u64> {
    let v = fields
        .iter()
        .find(|(k, _)| *k == key)
        .ok_or_else(|| format!("{tag} line without {key}="))?
        .1;
    v.parse()
        .map_err(|_| format!("{tag} line: {key}={v} is not a number"))
}

/// What the simulator reported for one bench run.
#[derive(Debug, PartialEq, Eq)]
struct SimBench {
    iterations: u64,
    exits: u64,
    /// Host TSC ticks between BENCH_START and BENCH_END.
    tsc: u64,
    tsc_hz: u64,
    efi_to_guest_us: u64,
}

impl SimBench {
    fn parse(serial: &str) -> Result<Self> {
        let bench = tagged(serial, "SIM-BENCH")?;
        let launch = tagged(serial, "SIM-LAUNCH")?;
        let b = |key| number(&bench, "SIM-BENCH", key);
        let r = SimBench {
            iterations: b("iterations")?,
            exits: b("exits")?,
            tsc: b("tsc")?,
            tsc_hz: b("tsc_hz")?,
            efi_to_guest_us: number(&launch, "SIM-LAUNCH", "efi_to_guest_us")?,
        };
        if r.iterations == 0 || r.tsc == 0 || r.tsc_hz == 0 {
            return Err(format!(
                "SIM-BENCH line with a zero iteration count, TSC delta or TSC rate: {r:?}"
            ));
        }
        Ok(r)
    }

    /// Guest -> simulator -> guest round trips per second.
    fn round_trips_per_s(&self) -> u64 {
        let r = u128::from(self.iterations) * u128::from(self.tsc_hz) / u128::from(self.tsc);
        u64::try_from(r).unwrap_or(u64::MAX)
    }
}

pub fn sim() -> Result<()> {
    let fw = qemu::ensure_prerequisites()?;
    std::fs::create_dir_all(target_dir().join("bench")).map_err(|e| e.to_string())?;
    let a = build_sim(Profile::Release)?;
    let log = target_dir().join("bench/sim.log");
    let files = SimFiles {
        guest_igvm: a.guest_igvm,
        options: String::new(),
    };
    let cfg = RunConfig::logged(&a.sim_efi, 1, "test=bench", log.clone()).on_sim(files);
    let out = qemu::run(&cfg, &fw, false)?;
    if !out.success() {
        return Err(format!(
            "simulator bench run: {} (log {})\n{}",
            out.describe(),
            log.display(),
            out.serial
        ));
    }
    let r = SimBench::parse(&out.serial).map_err(|e| format!("{e} (log {})", log.display()))?;
    let rate = r.round_trips_per_s();
    let verdict = |ok| if ok { "met" } else { "NOT met" };
    println!("{:<34} {:>12}", "figure", "value");
    println!("{:<34} {:>12}", "iterations", r.iterations);
    println!(
        "{:<34} {:>12.2}",
        "exits per iteration",
        r.exits as f64 / r.iterations as f64
    );
    println!(
        "{:<34} {:>10}/s  (target >= {SIM_ROUND_TRIPS_TARGET}/s: {})",
        "#VC round trips",
        rate,
        verdict(rate >= SIM_ROUND_TRIPS_TARGET)
    );
    println!(
        "{:<34} {:>9} us  (target <= {SIM_LAUNCH_TARGET_US} us: {})",
        "EFI entry to guest entry",
        r.efi_to_guest_us,
        verdict(r.efi_to_guest_us <= SIM_LAUNCH_TARGET_US)
    );
    let json = format!(
        "{{\n  \"iterations\": {},\n  \"exits\": {},\n  \"tsc\": {},\n  \"tsc_hz\": {},\n  \"round_trips_per_s\": {rate},\n  \"efi_to_guest_us\": {}\n}}\n",
        r.iterations, r.exits, r.tsc, r.tsc_hz, r.efi_to_guest_us
    );
    let path = target_dir().join("bench/sim.json");
    std::fs::write(&path, json).map_err(|e| e.to_string())?;
    println!("written {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "sim: loading guest.igvm\n\
        SIM-LAUNCH efi_to_guest_us=250000\n\
        noise SIM-BENCHX iterations=1\n\
        sim: SIM-BENCH iterations=100000 exits=200000 tsc=2000000000 tsc_hz=1000000000\n\
        SIM-COUNTERS vcpu=0 exit.cpuid=3\n";

    #[test]
    fn sim_bench_lines_are_read_wherever_they_are() {
        let r = SimBench::parse(GOOD).unwrap();
        assert_eq!(
            r,
            SimBench {
                iterations: 100_000,
                exits: 200_000,
                tsc: 2_000_000_000,
                tsc_hz: 1_000_000_000,
                efi_to_guest_us: 250_000,
            }
        );
        assert_eq!(r.round_trips_per_s(), 50_000);
    }

    #[test]
    fn missing_or_bad_sim_bench_figures_are_named() {
        let e = SimBench::parse("SIM-LAUNCH efi_to_guest_us=1\n").unwrap_err();
        assert!(e.contains("no SIM-BENCH line"), "{e}");
        let e = SimBench::parse(&GOOD.replace("SIM-LAUNCH", "LAUNCH")).unwrap_err();
        assert!(e.contains("no SIM-LAUNCH line"), "{e}");
        let e = SimBench::parse(&GOOD.replace(" exits=200000", "")).unwrap_err();
        assert!(e.contains("SIM-BENCH line without exits="), "{e}");
        let e = SimBench::parse(&GOOD.replace("tsc=2000000000", "tsc=2e9")).unwrap_err();
        assert!(e.contains("tsc=2e9 is not a number"), "{e}");
        let e = SimBench::parse(&GOOD.replace("tsc=2000000000", "tsc=0")).unwrap_err();
        assert!(e.contains("zero"), "{e}");
    }
}
