//! Starting application processors (APs) with INIT-SIPI-SIPI through a real-mode trampoline,
//! for any program that runs on identity-mapped 4-level page tables: the kernel, and an EFI
//! application after ExitBootServices (on the firmware's page tables).
//!
//! The sequence, on the boot CPU, one AP at a time after the INITs:
//!
//! ```text
//! let mut t = unsafe { Trampoline::install(page, tsc_hz) }?;    // copy the code, check page/clock
//! t.send_init(&apic, ap_ids)?;                                  // INIT to every AP, 10 ms
//! for each AP: unsafe { t.start_ap(&apic, id, &ApParams::new(stack_top, entry, arg)) }
//! ```
//!
//! [`Trampoline::start_ap`] returns once the AP runs 64-bit code on its own stack and no longer
//! reads the parameter block, so the next AP can be started; what the AP does after that (and
//! how it tells the caller it is ready) is the caller's. Nothing here allocates, reads ACPI
//! tables or logs: the caller supplies the stacks, the APIC IDs and the reporting.
//!
//! # What the caller provides
//! - **A trampoline page**: a 4 KiB page below 1 MiB (a SIPI vector names a real-mode page),
//!   not page 0, identity-mapped writable in the caller's page tables when [`Trampoline::install`]
//!   runs, and identity-mapped executable in the page tables the APs load. The caller reserves
//!   it (an EFI application allocates it before ExitBootServices) and keeps it for as long as
//!   an AP may still run on the trampoline's GDT, i.e. until each AP loaded its own.
//! - **Page tables** ([`ApParams::cr3`]): a 4-level PML4 *below 4 GiB* (the trampoline loads
//!   CR3 in 32-bit mode) that identity-maps the trampoline page and maps the entry function,
//!   this module's code (the AP passes through it) and the AP's stack.
//! - **EFER** ([`ApParams::efer`]): written in 32-bit mode before paging is enabled. LME must be
//!   set; NXE must be set when the page tables use the NX bit (otherwise the first walk through
//!   such an entry faults with no IDT to take it). [`ApParams::new`] takes LME plus the calling
//!   CPU's NXE.
//! - **A stack per AP** ([`ApParams::stack_top`]): its 16-byte-aligned top, used by that AP only.
//! - **The APIC IDs** of the APs, and a [`LocalApic`] from [`LocalApic::enable`].
//! - **The TSC frequency**, which times the INIT/SIPI delays and the waits.
//!
//! # What the AP finds at its entry
//! `entry(arg)` runs in 64-bit mode with interrupts off (IF clear), on the given stack (RBP 0,
//! which ends frame-pointer backtraces), with CR3 and EFER as given, CR0 = PG|WP|NE|ET|MP|PE,
//! CR4 = PAE|OSFXSR|OSXMMEXCPT (SSE works, AVX does not), CS 0x18 and DS/ES/SS 0x10 of the
//! *trampoline page's GDT*, FS/GS null with base 0, no TSS, the reset IDTR (no IDT: an exception
//! or NMI before the caller loads its own IDT shuts the CPU down), and its APIC as INIT left it
//! (xAPIC mode unless the firmware had it in x2APIC mode).
//! The entry therefore first loads its own GDT/TSS and IDT (e.g. with [`crate::gdt`] and
//! [`crate::interrupts`]), then calls [`LocalApic::enable_this_cpu`].

mod trampoline;

use crate::apic::{ApicError, ICR_INIT, ICR_STARTUP, LocalApic};
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use trampoline::{PARAMS_OFFSET, Params};

/// EFER: long mode enable.
const EFER_LME: u64 = 1 << 8;
/// EFER: no-execute enable.
const EFER_NXE: u64 = 1 << 11;
/// EFER: SVM enable, which an SEV-ES guest must keep set (the hardware requires it of the
/// guest's EFER), so an AP takes it over from the calling CPU.
const EFER_SVME: u64 = 1 << 12;
/// The first address a SIPI vector cannot name.
const ONE_MIB: u64 = 1 << 20;

/// What one AP is started with.
#[derive(Clone, Copy, Debug)]
pub struct ApParams {
    /// Page-table root the AP loads: the table below 4 GiB, plus at most the bits of
    /// [`encryption_mask`](Self::encryption_mask) (the trampoline loads the low half in 32-bit
    /// mode and the whole value once in 64-bit mode).
    pub cr3: u64,
    /// The SEV C-bit as an address mask, 0 without SEV: the one bit `cr3` may have above 4 GiB.
    pub encryption_mask: u64,
    /// EFER the AP loads; LME set.
    pub efer: u64,
    /// Initial RSP: the top of a stack only this AP uses, 16-byte aligned.
    pub stack_top: u64,
    /// Where the AP goes, with `arg`; see the module documentation for the state it finds.
    pub entry: extern "C" fn(arg: u64) -> !,
    pub arg: u64,
}

impl ApParams {
    /// Parameters for an AP that runs on the calling CPU's page tables: its CR3, and EFER with
    /// LME and the calling CPU's NXE and SVME; no encryption bit (see
    /// [`with_encryption_mask`](Self::with_encryption_mask)).
    pub fn new(stack_top: u64, entry: extern "C" fn(u64) -> !, arg: u64) -> Self {
        // SAFETY: reading CR3 has no side effects.
        let cr3 = unsafe { crate::cr::read_cr3() };
        // SAFETY: EFER exists on every x86-64 CPU.
        let efer = unsafe { crate::msr::rdmsr(crate::msr::IA32_EFER) };
        Self {
            cr3,
            encryption_mask: 0,
            efer: EFER_LME | (efer & (EFER_NXE | EFER_SVME)),
            stack_top,
            entry,
            arg,
        }
    }

    /// The same, for page tables whose entries (and CR3) carry the SEV C-bit `mask`.
    pub fn with_encryption_mask(self, mask: u64) -> Self {
        Self {
            encryption_mask: mask,
            ..self
        }
    }

    /// What [`Trampoline::start_ap`] refuses: CR3 at or above 4 GiB (but for the encryption
    /// bit), EFER without LME, a stack top that is 0 or not 16-byte aligned. A caller can check
    /// before it resets any CPU.
    pub fn check(&self) -> Result<(), ApStartError> {
        if (self.cr3 & !self.encryption_mask) >> 32 != 0 {
            return Err(ApStartError::Cr3Above4GiB(self.cr3));
        }
        if self.efer & EFER_LME == 0 {
            return Err(ApStartError::EferWithoutLme(self.efer));
        }
        if self.stack_top == 0 || !self.stack_top.is_multiple_of(16) {
            return Err(ApStartError::BadStack(self.stack_top));
        }
        Ok(())
    }
}

/// Why an AP was not started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApStartError {
    /// The page is not a 4 KiB page in 4 KiB..1 MiB.
    BadTrampolinePage(u64),
    /// The trampoline loads CR3 in 32-bit mode.
    Cr3Above4GiB(u64),
    /// Without LME the trampoline cannot enter long mode.
    EferWithoutLme(u64),
    /// The stack top is 0 or not 16-byte aligned.
    BadStack(u64),
    /// The INIT/SIPI delays are measured with the TSC.
    NoTscFrequency,
    Ipi(ApicError),
    /// The AP did not reach its entry in time (1 s, or `wake_ap`'s timeout). Without SEV it
    /// was sent INIT again, so that it cannot start late on another AP's parameters.
    Timeout,
}

impl fmt::Display for ApStartError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::BadTrampolinePage(a) => write!(
                f,
                "no usable AP trampoline page (got {a:#x}; need a 4 KiB page below 1 MiB)"
            ),
            Self::Cr3Above4GiB(cr3) => write!(
                f,
                "CR3 {cr3:#x} is above 4 GiB; the AP trampoline loads it in 32-bit mode"
            ),
            Self::EferWithoutLme(efer) => {
                write!(
                    f,
                    "AP EFER {efer:#x} lacks LME; the AP cannot enter long mode"
                )
            }
            Self::BadStack(top) => write!(
                f,
                "AP stack top {top:#x} is not a non-zero, 16-byte aligned address"
            ),
            Self::NoTscFrequency => write!(f, "TSC frequency unknown: cannot time INIT/SIPI"),
            Self::Ipi(e) => write!(f, "IPI failed: {e:?}"),
            Self::Timeout => write!(f, "the AP did not reach its entry in time"),
        }
    }
}

/// The start-up code, copied to its page; starts one AP at a time (hence `&mut self`).
#[derive(Debug)]
pub struct Trampoline {
    page: u64,
    tsc_hz: u64,
}

impl Trampoline {
    /// Copies the start-up code to `page` after checking it and the clock.
    ///
    /// # Safety
    /// `page` is identity-mapped writable in the running page tables and reserved for AP
    /// start-up (see the module documentation): nothing else uses it while APs are started.
    pub unsafe fn install(page: u64, tsc_hz: u64) -> Result<Self, ApStartError> {
        if tsc_hz == 0 {
            return Err(ApStartError::NoTscFrequency);
        }
        let code = trampoline::code();
        if page == 0 || !page.is_multiple_of(4096) || page + 4096 > ONE_MIB || code.len() > 4096 {
            return Err(ApStartError::BadTrampolinePage(page));
        }
        // SAFETY: the caller guarantees the page is mapped, writable and ours; `code` fits.
        unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len()) };
        Ok(Self { page, tsc_hz })
    }

    /// Sends INIT to each of `apic_ids`, then waits the 10 ms the start-up protocol asks for
    /// before the first SIPI. Every AP is INITed before [`Trampoline::start_ap`]; doing all of
    /// them first keeps that wait to once per boot.
    pub fn send_init(
        &self,
        apic: &LocalApic,
        apic_ids: impl IntoIterator<Item = u32>,
    ) -> Result<(), ApStartError> {
        for id in apic_ids {
            apic.send_ipi(id, ICR_INIT, self.ms(10))
                .map_err(ApStartError::Ipi)?;
        }
        delay(self.ms(10));
        Ok(())
    }

    /// Starts the AP `apic_id`, which [`Trampoline::send_init`] reset: parameters, SIPI, 200 us,
    /// SIPI, then a wait of up to 1 s until the AP passed the trampoline (it runs on its own
    /// stack, about to call `params.entry`). An AP that does not arrive is sent INIT again and
    /// reported as [`ApStartError::Timeout`]; the next AP can be started either way.
    ///
    /// # Safety
    /// `params` describes page tables, a stack and an entry point that are valid for this AP as
    /// the module documentation says; the stack is used by nothing else.
    pub unsafe fn start_ap(
        &mut self,
        apic: &LocalApic,
        apic_id: u32,
        params: &ApParams,
    ) -> Result<(), ApStartError> {
        // SAFETY: the caller's contract is this function's.
        let arrived = unsafe { self.write_params(params) }?;
        let sipi = ICR_STARTUP | (self.page >> 12) as u32;
        let ipi = |icr| {
            apic.send_ipi(apic_id, icr, self.ms(10))
                .map_err(ApStartError::Ipi)
        };
        ipi(sipi)?;
        delay(self.ms(1) / 5);
        ipi(sipi)?;
        if !self.wait_arrival(arrived, self.tsc_hz) {
            ipi(ICR_INIT)?;
            return Err(ApStartError::Timeout);
        }
        Ok(())
    }

    /// The real-mode address of the start-up code as (CS, IP): what an SEV-ES guest puts in
    /// its AP jump table's reset vector, where a woken AP goes.
    pub fn reset_vector(&self) -> (u16, u16) {
        ((self.page >> 4) as u16, 0)
    }

    /// Starts the AP `apic_id` of an SEV-ES guest, which no INIT can reset: INIT and a
    /// start-up IPI start it the first time (at its launch state, which parks it) or wake it
    /// from AP Reset Hold, after which it goes through its AP jump table's reset vector to
    /// this code ([`reset_vector`](Self::reset_vector)). A pair that arrives while the AP is
    /// on its way to the hold is lost (the hypervisor cannot tell it apart from one to a
    /// running CPU), so it is repeated every `retry_ms` until the AP passed the trampoline, for
    /// up to `timeout_ms`; no INIT is needed before. [`ApStartError::Timeout`] if it did not arrive: the
    /// AP may still arrive later, on the parameters written here, so the caller must not start
    /// another AP with this trampoline then.
    ///
    /// # Safety
    /// As for [`start_ap`](Self::start_ap).
    pub unsafe fn wake_ap(
        &mut self,
        apic: &LocalApic,
        apic_id: u32,
        params: &ApParams,
        retry_ms: u64,
        timeout_ms: u64,
    ) -> Result<(), ApStartError> {
        // SAFETY: the caller's contract is this function's.
        let arrived = unsafe { self.write_params(params) }?;
        let sipi = ICR_STARTUP | (self.page >> 12) as u32;
        let t0 = crate::tsc::rdtsc();
        while crate::tsc::rdtsc() - t0 < self.ms(timeout_ms) {
            for icr in [ICR_INIT, sipi] {
                apic.send_ipi(apic_id, icr, self.ms(10))
                    .map_err(ApStartError::Ipi)?;
            }
            if self.wait_arrival(arrived, self.ms(retry_ms.max(1))) {
                return Ok(());
            }
        }
        Err(ApStartError::Timeout)
    }

    /// Checks `params` and writes them into the page for the next AP; returns its `arrived`
    /// flag.
    ///
    /// # Safety
    /// As for [`start_ap`](Self::start_ap).
    unsafe fn write_params(&self, params: &ApParams) -> Result<&AtomicU64, ApStartError> {
        params.check()?;
        let block = (self.page + PARAMS_OFFSET as u64) as *mut Params;
        let p = Params {
            cr3: params.cr3,
            efer: params.efer,
            stack_top: params.stack_top,
            entry: params.entry as usize as u64,
            arg: params.arg,
            arrive: arrive as *const () as u64,
            arrived: 0,
            claimed: 0,
        };
        // SAFETY: the parameter block is inside the installed page; the previous AP is past the
        // trampoline (it arrived, or was sent INIT again), so no CPU reads it now.
        unsafe { block.write_volatile(p) };
        // SAFETY: `arrived` is an aligned u64 inside the installed page, which lives as long as
        // `self`; the AP writes it only through an atomic store.
        Ok(unsafe { AtomicU64::from_ptr(&raw mut (*block).arrived) })
    }

    /// Waits up to `ticks` of TSC time for `arrived`.
    fn wait_arrival(&self, arrived: &AtomicU64, ticks: u64) -> bool {
        crate::tsc::spin_until(ticks, || arrived.load(Ordering::Acquire) != 0)
    }

    fn ms(&self, n: u64) -> u64 {
        self.tsc_hz / 1000 * n
    }
}

/// The trampoline's last step, on the AP's own stack in 64-bit mode: it has read everything it
/// needs from the page, so it says so (the boot CPU may now rewrite the parameters) and enters
/// the caller's code. Outside the page, so no instruction is fetched from it after the store.
extern "C" fn arrive(arg: u64, entry: extern "C" fn(u64) -> !, arrived: *mut u64) -> ! {
    // SAFETY: `arrived` points at the parameter block's aligned `arrived` word, which the boot
    // CPU only reads, atomically, while it waits.
    unsafe { AtomicU64::from_ptr(arrived) }.store(1, Ordering::Release);
    entry(arg)
}

fn delay(ticks: u64) {
    let t0 = crate::tsc::rdtsc();
    while crate::tsc::rdtsc() - t0 < ticks {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn never(_: u64) -> ! {
        unreachable!()
    }

    #[test]
    fn trampoline_code_fits_a_page_and_leaves_room_for_the_parameters() {
        let code = trampoline::code();
        assert!(code.len() <= 4096);
        assert_eq!(code[0], 0xeb, "a short jump over the parameter block");
        let params = &code[PARAMS_OFFSET..PARAMS_OFFSET + size_of::<Params>()];
        assert!(params.iter().all(|&b| b == 0));
        assert!(usize::from(code[1]) + 2 >= PARAMS_OFFSET + size_of::<Params>());
    }

    #[test]
    fn unusable_pages_and_clocks_are_refused_before_anything_is_written() {
        let install = |page, hz| {
            // SAFETY: every call below is refused before the copy.
            unsafe { Trampoline::install(page, hz) }.map(|_| ())
        };
        assert_eq!(install(0x8000, 0), Err(ApStartError::NoTscFrequency));
        for page in [0, 0x8010, 0xff000 + 0x1000, 0x1_0000_0000] {
            assert_eq!(
                install(page, 1_000_000_000),
                Err(ApStartError::BadTrampolinePage(page))
            );
        }
    }

    #[test]
    fn parameters_the_trampoline_cannot_use_are_refused() {
        let good = ApParams {
            cr3: 0x7000,
            encryption_mask: 0,
            efer: EFER_LME | EFER_NXE,
            stack_top: 0x10_0000,
            entry: never,
            arg: 0,
        };
        assert_eq!(good.check(), Ok(()));
        let cr3 = 0x1_0000_1000;
        assert_eq!(
            ApParams { cr3, ..good }.check(),
            Err(ApStartError::Cr3Above4GiB(cr3))
        );
        // An SEV C-bit in CR3 is fine, any other high bit is not.
        let c = 1 << 47;
        let sev = good.with_encryption_mask(c);
        assert_eq!(
            ApParams {
                cr3: c | 0x7000,
                ..sev
            }
            .check(),
            Ok(())
        );
        assert_eq!(
            ApParams {
                cr3: c | cr3,
                ..sev
            }
            .check(),
            Err(ApStartError::Cr3Above4GiB(c | cr3))
        );
        assert_eq!(
            ApParams {
                efer: EFER_NXE,
                ..good
            }
            .check(),
            Err(ApStartError::EferWithoutLme(EFER_NXE))
        );
        for top in [0, 0x10_0008] {
            assert_eq!(
                ApParams {
                    stack_top: top,
                    ..good
                }
                .check(),
                Err(ApStartError::BadStack(top))
            );
        }
    }
}
