//! The hardware side of the transports, for the stages: the GHCB MSR and
//! VMGEXIT on a real (or simulated) SEV-ES/SNP vCPU. Nothing here but
//! [`GhcbMsrRecord`] runs on the host: RDMSR/WRMSR of the GHCB MSR and
//! VMGEXIT fault outside a guest.
//!
//! The GHCB GPA is written to the GHCB MSR only when the MSR may hold
//! something else, which a per-CPU [`GhcbMsrRecord`] tracks. On hardware that
//! WRMSR costs nothing, but under a hypervisor that has to intercept the MSR
//! (the simulator on QEMU's SVM, which does not know it) every write is a
//! world switch: a third of a #VC round trip.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::ghcb::{Ghcb, GhcbTransport};
use crate::msr_protocol::{GHCB_MSR, GhcbMsr, GhcbVersion};

/// VMGEXIT: `rep vmmcall`. The hypervisor cannot change our registers (they
/// live in the encrypted VMSA), only memory it shares with us.
///
/// # Safety
/// Only in an SEV-ES/SNP guest at CPL 0, with the GHCB MSR holding a request
/// or the registered GHCB GPA.
unsafe fn vmgexit() {
    // SAFETY: per the caller; `rep vmmcall` only exits to the hypervisor,
    // which may write shared memory (hence no `nomem`).
    unsafe {
        asm!(
            ".byte 0xf3, 0x0f, 0x01, 0xd9",
            options(nostack, preserves_flags)
        )
    }
}

/// # Safety
/// CPL 0 in an SEV-ES/SNP guest.
unsafe fn rdmsr_ghcb() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the caller; the GHCB MSR exists in SEV-ES/SNP guests.
    unsafe {
        asm!("rdmsr", in("ecx") GHCB_MSR, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// CPL 0 in an SEV-ES/SNP guest.
unsafe fn wrmsr_ghcb(v: u64) {
    // SAFETY: per the caller; writing the GHCB MSR has no effect on memory.
    unsafe {
        asm!("wrmsr", in("ecx") GHCB_MSR, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags));
    }
}

/// What one CPU's GHCB MSR is known to hold, shared by that CPU's
/// [`HwGhcbMsr`] and [`HwGhcb`].
///
/// Every read and write through [`HwGhcbMsr`] records the value; its
/// VMGEXIT (an MSR-protocol request) forgets it, because the hypervisor
/// answers in the MSR. [`HwGhcb`] writes the GHCB GPA only when the record
/// does not already name it, and a GHCB VMGEXIT keeps the record: the
/// hypervisor answers in the GHCB page and has no business with the MSR. One
/// that changes it anyway does not see our next request; the request's reply
/// check then finds no answer (a request starts with an empty valid bitmap
/// and no exit code), which is no more than such a hypervisor could do by
/// ignoring the request.
///
/// Code that writes the GHCB MSR by other means (a raw WRMSR) must
/// [`forget`](Self::forget) what the record says, or leave the MSR holding
/// it. Nested users of the MSR protocol on one CPU (an NMI handler inside
/// the #VC handler) must restore the MSR, as `msr_protocol::request` does.
#[derive(Debug)]
pub struct GhcbMsrRecord(AtomicU64);

/// The record's "unknown": never a GHCB GPA, which is page-aligned.
const UNKNOWN: u64 = u64::MAX;

impl Default for GhcbMsrRecord {
    fn default() -> Self {
        Self::new()
    }
}

impl GhcbMsrRecord {
    /// A record that knows nothing (as at boot: the MSR holds whatever the
    /// launch or the firmware left there).
    pub const fn new() -> Self {
        Self(AtomicU64::new(UNKNOWN))
    }

    /// Forgets what the MSR holds: the next GHCB VMGEXIT writes the GPA.
    pub fn forget(&self) {
        self.0.store(UNKNOWN, Ordering::Relaxed);
    }

    fn note(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Calls `write(gpa)` unless the MSR is known to hold `gpa` (a GHCB
    /// GPA, page-aligned), and records `gpa`.
    fn ensure_gpa(&self, gpa: u64, write: impl FnOnce(u64)) {
        debug_assert!(gpa & 0xfff == 0, "a GHCB GPA is page-aligned");
        if self.0.load(Ordering::Relaxed) != gpa {
            write(gpa);
            self.note(gpa);
        }
    }
}

/// The GHCB MSR of this CPU.
pub struct HwGhcbMsr<'a> {
    record: &'a GhcbMsrRecord,
}

impl<'a> HwGhcbMsr<'a> {
    /// # Safety
    /// The caller runs at CPL 0 in an SEV-ES/SNP guest, `record` is this
    /// CPU's, and nothing else on this CPU uses the GHCB MSR while the
    /// returned value is in use.
    pub unsafe fn new(record: &'a GhcbMsrRecord) -> Self {
        Self { record }
    }
}

impl GhcbMsr for HwGhcbMsr<'_> {
    fn read(&mut self) -> u64 {
        // SAFETY: guaranteed by `HwGhcbMsr::new`'s caller.
        let v = unsafe { rdmsr_ghcb() };
        self.record.note(v);
        v
    }
    fn write(&mut self, value: u64) {
        // SAFETY: guaranteed by `HwGhcbMsr::new`'s caller.
        unsafe { wrmsr_ghcb(value) };
        self.record.note(value);
    }
    fn vmgexit(&mut self) {
        self.record.forget();
        // SAFETY: guaranteed by `HwGhcbMsr::new`'s caller.
        unsafe { vmgexit() }
    }
}

/// A registered GHCB page of this CPU.
pub struct HwGhcb<'a> {
    page: &'a mut Ghcb,
    gpa: u64,
    record: &'a GhcbMsrRecord,
    version: GhcbVersion,
}

impl<'a> HwGhcb<'a> {
    /// The GHCB at `gpa`, for protocol version 2 (see
    /// [`with_version`](Self::with_version)).
    ///
    /// # Safety
    /// The caller runs at CPL 0 in an SEV-ES/SNP guest; `page` is mapped
    /// decrypted at guest-physical address `gpa`, which is registered with
    /// the hypervisor for this CPU (always under SNP); `record` is this
    /// CPU's; nothing else on this CPU uses the GHCB or the GHCB MSR
    /// meanwhile (see [`crate::vc::GhcbNesting`]).
    pub unsafe fn new(page: &'a mut Ghcb, gpa: u64, record: &'a GhcbMsrRecord) -> Self {
        Self {
            page,
            gpa,
            record,
            version: GhcbVersion::MAX,
        }
    }

    /// This GHCB's requests carry `version`, the one negotiated with the
    /// hypervisor.
    pub fn with_version(self, version: GhcbVersion) -> Self {
        Self { version, ..self }
    }
}

impl GhcbTransport for HwGhcb<'_> {
    fn ghcb(&mut self) -> &mut Ghcb {
        self.page
    }
    fn ghcb_gpa(&self) -> u64 {
        self.gpa
    }
    fn protocol_version(&self) -> GhcbVersion {
        self.version
    }
    fn vmgexit(&mut self) {
        // SAFETY: guaranteed by `HwGhcb::new`'s caller. The hypervisor finds
        // the request through the MSR, which holds the GPA once this ran.
        self.record
            .ensure_gpa(self.gpa, |gpa| unsafe { wrmsr_ghcb(gpa) });
        // SAFETY: as above.
        unsafe { vmgexit() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPA: u64 = 0x12_3000;

    /// The GPA writes `HwGhcb::vmgexit` would make with `record`.
    fn gpa_writes(record: &GhcbMsrRecord) -> Vec<u64> {
        let mut w = Vec::new();
        record.ensure_gpa(GPA, |v| w.push(v));
        w
    }

    #[test]
    fn the_gpa_is_written_once_while_only_ghcb_exits_happen() {
        let r = GhcbMsrRecord::new();
        assert_eq!(gpa_writes(&r), [GPA], "at boot the MSR holds anything");
        for _ in 0..3 {
            assert_eq!(gpa_writes(&r), [], "a GHCB exit keeps the MSR");
        }
        r.note(GPA + 0x1000);
        assert_eq!(gpa_writes(&r), [GPA], "another page in the MSR");
    }

    /// `msr_protocol::request`'s sequence: read (the GPA), write the
    /// request, exit, read the response, write the saved value back.
    #[test]
    fn an_msr_protocol_request_that_restores_the_gpa_costs_no_write() {
        let r = GhcbMsrRecord::new();
        let _ = gpa_writes(&r);
        r.note(GPA);
        r.note(0x12);
        r.forget();
        r.note(0x13);
        r.note(GPA);
        assert_eq!(gpa_writes(&r), []);
    }

    #[test]
    fn an_msr_protocol_exit_without_restore_forces_a_write() {
        let r = GhcbMsrRecord::new();
        let _ = gpa_writes(&r);
        r.note(0x12);
        assert_eq!(gpa_writes(&r), [GPA], "a request left in the MSR");
        r.forget();
        assert_eq!(gpa_writes(&r), [GPA], "the hypervisor's answer in the MSR");
    }

    #[test]
    fn a_ghcb_carries_the_version_it_is_given() {
        let record = GhcbMsrRecord::new();
        let mut page = Ghcb::new();
        // SAFETY: only the version is looked at: nothing reaches the MSR, VMGEXIT or the page.
        let ghcb = unsafe { HwGhcb::new(&mut page, GPA, &record) };
        assert_eq!(ghcb.protocol_version(), GhcbVersion::V2);
        let ghcb = ghcb.with_version(GhcbVersion::V1);
        assert_eq!(
            (ghcb.protocol_version(), ghcb.ghcb_gpa()),
            (GhcbVersion::V1, GPA)
        );
    }

    #[test]
    fn forget_and_the_unknown_marker_never_match_a_gpa() {
        let r = GhcbMsrRecord::default();
        r.note(GPA);
        r.forget();
        assert_eq!(gpa_writes(&r), [GPA]);
        assert_ne!(UNKNOWN & 0xfff, 0, "UNKNOWN is not page-aligned");
    }
}
