//! The application processors, minimal on purpose. An AP starts at `_start` with its index in
//! RSI (the launch contract), on a stack of its own, and never raises #VC: it talks to the
//! simulator only through the GHCB MSR protocol and its own GHCB page, both automatic exits,
//! so it needs no IDT (an exception on an AP shuts it down, which the simulator reports).
//!
//! Once up it registers its GHCB, counts itself online and parks in AP reset hold, through
//! the MSR protocol or the GHCB's AP_HLT_LOOP event as [`PARK_WITH_HLT_LOOP`] says; each
//! start-up IPI that wakes it is counted in its [`wakes`] counter before it parks again.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use handoff::launch::{MAX_VCPUS, SHARED_ALIAS};
use sev::ghcb::Ghcb;
use sev::hw::{GhcbMsrRecord, HwGhcb, HwGhcbMsr};
use sev::msr_protocol::{self, GhcbMsr};
use sev::termination::{self, GuestReason};

/// Stack size of an AP.
pub const STACK_SIZE: usize = 16 * 1024;
const VCPUS: usize = MAX_VCPUS as usize;

#[repr(C, align(16))]
pub struct Stacks(pub [[u8; STACK_SIZE]; VCPUS]);

/// One stack per vCPU index (index 0, the boot vCPU, has its own and leaves its slot unused).
pub static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; VCPUS]);

#[repr(C, align(4096))]
struct Pages([Ghcb; VCPUS]);

/// One GHCB per AP (private view unused: APs reach theirs through the shared alias).
static mut GHCBS: Pages = Pages([const { Ghcb::new() }; VCPUS]);

static ONLINE: AtomicU64 = AtomicU64::new(0);
static WAKES: [AtomicU64; VCPUS] = [const { AtomicU64::new(0) }; VCPUS];

/// How APs park next: AP_HLT_LOOP through the GHCB (true) or reset hold through the MSR
/// protocol (false).
pub static PARK_WITH_HLT_LOOP: AtomicBool = AtomicBool::new(false);

/// APs that reported in.
pub fn online() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// Start-up IPIs that woke AP `index` from reset hold.
pub fn wakes(index: usize) -> u64 {
    WAKES[index].load(Ordering::Acquire)
}

/// GPA (= identity address) of AP `index`'s GHCB.
fn ghcb_gpa(index: usize) -> u64 {
    (&raw const GHCBS) as u64 + index as u64 * 4096
}

/// An AP's first Rust code (`index` from RSI, below [`MAX_VCPUS`], checked by `_start`).
pub extern "C" fn main(index: u64) -> ! {
    let index = index as usize;
    let record = GhcbMsrRecord::new();
    // SAFETY: CPL 0 in an SEV-ES guest; this AP's own record.
    let mut msr = unsafe { HwGhcbMsr::new(&record) };
    let gpa = ghcb_gpa(index);
    let fail = |msr: &mut HwGhcbMsr, r: GuestReason| -> ! {
        msr_protocol::terminate(msr, termination::settle(r.into()))
    };
    // An SEV-ES guest registers no GHCB GPA (an SEV-SNP request); the MSR names it.
    msr.write(gpa);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    loop {
        if PARK_WITH_HLT_LOOP.load(Ordering::Acquire) {
            // SAFETY: this AP's GHCB page, below 1 GiB, through the shared alias that maps it
            // decrypted; only this AP uses it.
            let page = unsafe { &mut *((SHARED_ALIAS + gpa) as *mut Ghcb) };
            // SAFETY: CPL 0 in an SEV-ES guest, the GPA registered above.
            let mut t = unsafe { HwGhcb::new(page, gpa, &record) };
            match sev::nae::ap_hlt_loop(&mut t) {
                Ok(true) => {}
                // Resumed without a start-up IPI: park again without counting.
                Ok(false) => continue,
                Err(e) => fail(&mut msr, e.reason()),
            }
        } else if let Err(e) = msr_protocol::ap_reset_hold(&mut msr) {
            fail(&mut msr, e.reason());
        }
        WAKES[index].fetch_add(1, Ordering::AcqRel);
    }
}
