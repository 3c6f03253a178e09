//! The hardware side of the transports, for the stages: the GHCB MSR and
//! VMGEXIT on a real (or simulated) SEV-ES/SNP vCPU. Nothing here runs on the
//! host: RDMSR/WRMSR of the GHCB MSR and VMGEXIT fault outside a guest.

use core::arch::asm;

use crate::ghcb::{Ghcb, GhcbTransport};
use crate::msr_protocol::{GHCB_MSR, GhcbMsr};

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

/// The GHCB MSR of this CPU.
pub struct HwGhcbMsr(());

impl HwGhcbMsr {
    /// # Safety
    /// The caller runs at CPL 0 in an SEV-ES/SNP guest, and nothing else on
    /// this CPU uses the GHCB MSR while the returned value is in use.
    pub unsafe fn new() -> Self {
        Self(())
    }
}

impl GhcbMsr for HwGhcbMsr {
    fn read(&mut self) -> u64 {
        // SAFETY: guaranteed by `HwGhcbMsr::new`'s caller.
        unsafe { rdmsr_ghcb() }
    }
    fn write(&mut self, value: u64) {
        // SAFETY: guaranteed by `HwGhcbMsr::new`'s caller.
        unsafe { wrmsr_ghcb(value) }
    }
    fn vmgexit(&mut self) {
        // SAFETY: guaranteed by `HwGhcbMsr::new`'s caller.
        unsafe { vmgexit() }
    }
}

/// A registered GHCB page of this CPU.
pub struct HwGhcb<'a> {
    page: &'a mut Ghcb,
    gpa: u64,
}

impl<'a> HwGhcb<'a> {
    /// # Safety
    /// The caller runs at CPL 0 in an SEV-ES/SNP guest; `page` is mapped
    /// decrypted at guest-physical address `gpa`, which is registered with
    /// the hypervisor for this CPU (always under SNP); nothing else on this
    /// CPU uses the GHCB or the GHCB MSR meanwhile (see
    /// [`crate::vc::GhcbNesting`]).
    pub unsafe fn new(page: &'a mut Ghcb, gpa: u64) -> Self {
        Self { page, gpa }
    }
}

impl GhcbTransport for HwGhcb<'_> {
    fn ghcb(&mut self) -> &mut Ghcb {
        self.page
    }
    fn ghcb_gpa(&self) -> u64 {
        self.gpa
    }
    fn vmgexit(&mut self) {
        // SAFETY: guaranteed by `HwGhcb::new`'s caller: the MSR must hold the
        // GHCB GPA for the hypervisor to find the request.
        unsafe {
            wrmsr_ghcb(self.gpa);
            vmgexit();
        }
    }
}
