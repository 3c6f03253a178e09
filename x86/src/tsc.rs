//! The time-stamp counter: the clock for log timestamps and boot-phase figures.

/// Reads the TSC.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is never set by us).
    unsafe { core::arch::x86_64::_rdtsc() }
}
