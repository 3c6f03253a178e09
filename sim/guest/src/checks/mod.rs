//! The checks: one per SEV-ES semantic of the simulator, each printing `TEST <name> PASS` or
//! `TEST <name> FAIL: <why>`, then `<n> passed, <m> failed`.
//!
//! Most checks execute an instruction that the simulator must turn into a #VC and assert the
//! exit code and the number of #VCs it took ([`expect_vcs`]), then what the emulated
//! instruction returned. The checks in [`BY_NAME_ONLY`] end the run themselves (termination,
//! a GHCB the simulator must refuse) or are benchmarks: `test=<name>` runs them, `all` does not.

use alloc::string::String;
use core::ops::RangeInclusive;
use core::sync::atomic::{Ordering, compiler_fence};
use sev::exit_code::ExitCode;
use x86::qemu::ExitStatus;

use crate::vc;

/// Returns `Err` with a formatted reason unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(alloc::format!($($why)+));
        }
    };
}

mod bench;
mod cpuid;
mod encrypted_ghcb;
mod faults;
pub use faults::double_fault;
mod ending;
mod ghcb_v1;
mod instructions;
mod ioio;
mod mmio;
mod msr_protocol;
mod msrs;
mod nae_events;
mod nmi;
mod smp;
mod vmmcall;

/// Ok, or why the check failed.
pub type Outcome = Result<(), String>;
type Check = fn() -> Outcome;

/// The checks `test=all` runs, in this order.
const ALL: &[(&str, Check)] = &[
    ("cpuid", cpuid::cpuid),
    ("sev_status", msrs::sev_status),
    ("ghcb_msr", msrs::ghcb_msr),
    ("msr_protocol", msr_protocol::msr_protocol),
    ("ioio", ioio::ioio),
    ("msr", msrs::msr),
    ("mmio", mmio::mmio),
    ("rdtsc", instructions::rdtsc),
    ("rdtscp", instructions::rdtscp),
    ("rdpmc", instructions::rdpmc),
    ("dr7", instructions::dr7),
    ("wbinvd", instructions::wbinvd),
    ("monitor", instructions::monitor_mwait),
    ("vmmcall", vmmcall::vmmcall),
    ("nae_events", nae_events::nae_events),
    ("nmi", nmi::nmi),
    ("nmi_ipi", smp::nmi_ipi),
    ("fixed_ipi", smp::fixed_ipi),
    ("encrypted_ghcb", encrypted_ghcb::encrypted_ghcb),
];

/// Checks that end the run, and the benchmarks: they run only when named.
const BY_NAME_ONLY: &[(&str, Check)] = &[
    ("terminate", ending::terminate),
    ("terminate_ghcb", ending::terminate_ghcb),
    ("invd", ending::invd),
    ("injected_vc", ending::injected_vc),
    ("bench", bench::bench),
    ("bench_raw", bench::bench_raw),
    ("smp", smp::smp),
    ("vc_double_fault", faults::vc_double_fault),
    ("triple_fault", faults::triple_fault),
    ("bad_msr_request", faults::bad_msr_request),
    ("ghcb_registration", faults::ghcb_registration),
    ("ghcb_v1", ghcb_v1::ghcb_v1),
    ("ghcb_version_field", ghcb_v1::ghcb_version_field),
];

/// Runs the checks `selection` names (`all` or one name) and returns the run's exit status.
pub fn run(selection: &str) -> ExitStatus {
    x86::testing::run("simguest", selection, ALL, BY_NAME_ONLY, |check| check())
}

/// The #VCs something took.
#[derive(Clone, Copy, Debug)]
pub struct Vcs {
    pub taken: u64,
    /// Error code of the last one (meaningless when none was taken).
    pub last: u64,
}

impl Vcs {
    /// Checks that `what` took a number of #VCs in `count`, the last with `code`.
    pub fn expect(self, what: &str, code: ExitCode, count: RangeInclusive<u64>) -> Outcome {
        ensure!(
            count.contains(&self.taken),
            "{what}: {} #VC(s), expected {count:?}",
            self.taken
        );
        ensure!(
            self.taken == 0 || self.last == code.raw(),
            "{what}: #VC error code {:#x}, expected {:#x} ({code:?})",
            self.last,
            code.raw()
        );
        Ok(())
    }
}

/// Runs `f` and counts the #VCs it takes.
pub fn counting<T>(f: impl FnOnce() -> T) -> (T, Vcs) {
    let before = vc::count();
    compiler_fence(Ordering::SeqCst);
    let value = f();
    compiler_fence(Ordering::SeqCst);
    let vcs = Vcs {
        taken: vc::count() - before,
        last: vc::last_error(),
    };
    (value, vcs)
}

/// Runs `f`, which must take exactly `n` #VCs with exit code `code`.
pub fn expect_vcs<T>(
    what: &str,
    code: ExitCode,
    n: u64,
    f: impl FnOnce() -> T,
) -> Result<T, String> {
    let (value, vcs) = counting(f);
    vcs.expect(what, code, n..=n)?;
    Ok(value)
}

/// Runs `f`, which must take exactly one #VC with exit code `code`.
pub fn one_vc<T>(what: &str, code: ExitCode, f: impl FnOnce() -> T) -> Result<T, String> {
    expect_vcs(what, code, 1, f)
}

/// Runs `f`, which must take no #VC at all.
pub fn no_vc<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    let (value, vcs) = counting(f);
    ensure!(
        vcs.taken == 0,
        "{what}: took {} #VC(s) (last error code {:#x}), expected none",
        vcs.taken,
        vcs.last
    );
    Ok(value)
}
