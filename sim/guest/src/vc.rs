//! The #VC handler (vector 29). Before the GHCB is registered only CPUID can be handled, through
//! the GHCB MSR protocol (`sev::vc::handle_vc_early`); afterwards everything the #VC core
//! emulates goes through the GHCB (`sev::vc::handle_vc`), both through the channel's
//! `sev::guest::GhcbChannel::handle_vc`. Whatever the core refuses terminates the run with the
//! core's reason: through the GHCB once it exists, else the MSR protocol.
//!
//! The handler records how many #VCs it took and the last error code, which is what the checks
//! assert on. It never prints (a print is port I/O, itself a #VC) except on its way to a fatal
//! exit, after it has released the channel.

use core::sync::atomic::{AtomicU64, Ordering};
use sev::vc::VcConfig;
use x86::interrupts::InterruptFrame;

use crate::ghcb;
use crate::memory;
use sev::guest::SimHypercalls;

static COUNT: AtomicU64 = AtomicU64::new(0);
static LAST_ERROR: AtomicU64 = AtomicU64::new(0);

/// #VCs taken so far.
pub fn count() -> u64 {
    COUNT.load(Ordering::Acquire)
}

/// The error code (exit code) of the last #VC.
pub fn last_error() -> u64 {
    LAST_ERROR.load(Ordering::Acquire)
}

/// Handles one #VC: called by the interrupt dispatch with the saved frame. No check expects an
/// exception from a #VC: one handed back is reported (where and which) and ends the run with the
/// dump (`GhcbChannel::raised_fatal`).
pub fn handle(frame: &mut InterruptFrame) {
    LAST_ERROR.store(frame.error_code, Ordering::Release);
    COUNT.fetch_add(1, Ordering::AcqRel);
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &SimHypercalls,
    };
    if let Some(e) = ghcb::CHANNEL.handle_vc(frame, &memory::TABLES, &cfg) {
        ghcb::CHANNEL.raised_fatal(frame, e, "")
    }
}
