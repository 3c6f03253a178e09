//! The time-stamp counter: the clock for log timestamps and boot-phase figures.

/// Reads the TSC.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is never set by us).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Polls of the condition per TSC read in [`spin_until`].
const POLLS_PER_READ: u32 = 256;

/// Spins until `done()` holds or `ticks` of TSC time have passed; returns whether it holds. The
/// TSC is read only every [`POLLS_PER_READ`] polls: a hypervisor may intercept RDTSC (under
/// SEV-ES each read is then a #VC round trip), and a waiting CPU should not flood it.
pub fn spin_until(ticks: u64, mut done: impl FnMut() -> bool) -> bool {
    let t0 = rdtsc();
    loop {
        for _ in 0..POLLS_PER_READ {
            if done() {
                return true;
            }
            core::hint::spin_loop();
        }
        if rdtsc().wrapping_sub(t0) > ticks {
            return done();
        }
    }
}
