//! Guest memory as the #VC core needs it: instruction bytes at RIP, the mapping of an address
//! (GPA and C-bit, for MMIO targets and string operands), and plain reads and writes for the
//! memory side of INS/OUTS and MOVS.
//!
//! The guest keeps the launch page tables (`handoff::launch`), which carry the C-bit in table
//! pointers and private leaves. They are walked with a C-bit mask of 0, so a leaf's address
//! keeps its C-bit and tells private from shared; table pointers lose it on the way to the
//! identity map that reaches them. Permissions come from the leaf alone: the launch tables put
//! no restrictions in upper levels.

use core::sync::atomic::{AtomicU64, Ordering};
use handoff::launch::SIM_C_BIT;
use sev::exception::{PF_FETCH, PF_PRESENT, PF_WRITE};
use sev::vc::{GuestMemory, InsnFetch, MAX_INSN_LEN, Mapping, PageFault, PageWalk};
use x86::paging::{ADDR_MASK, PAGE_4K, PageFlags, PageTables, Table, TableAccess};

/// The C-bit as an address mask.
const C_BIT: u64 = 1 << SIM_C_BIT;

/// The PML4's GPA, from CR3 at boot (the guest never switches tables).
static ROOT: AtomicU64 = AtomicU64::new(0);

/// The page of the last RIP [`InsnFetch::fetch`] found mapped (1, not a page address, before
/// the first). The launch tables never change, so a page found mapped stays mapped, and the
/// next #VC at that page (a loop of CPUIDs, say) fetches without walking the tables again: a
/// walk reads a table page per level, and under the simulator every page the #VC handler
/// touches costs QEMU a nested page walk, its TLB being flushed at each world switch.
static MAPPED_RIP_PAGE: AtomicU64 = AtomicU64::new(1);

/// Records the launch page tables' root. Call once, before the first #VC.
pub fn init() {
    // SAFETY: CPL 0; reading CR3 has no side effects (and is not intercepted under SEV-ES).
    let cr3 = unsafe { x86::cr::read_cr3() };
    ROOT.store(cr3 & ADDR_MASK & !C_BIT, Ordering::Release);
}

/// Reaches a table through the private identity map of 0..3 GiB: its pointer's C-bit removed.
struct IdentityPrivate;

// SAFETY: the launch tables lie in the first MiB of private memory (PAGE_TABLES_GPA), which the
// launch tables themselves identity-map; they are built once by the IGVM builder, measured, and
// never written by this guest or readable as plaintext by the hypervisor.
unsafe impl TableAccess for IdentityPrivate {
    fn table(&self, phys: u64) -> *mut Table {
        (phys & !C_BIT) as *mut Table
    }
}

/// The launch page tables, seen by the #VC core.
pub struct LaunchMemory {
    tables: PageTables<IdentityPrivate>,
}

impl LaunchMemory {
    pub fn new() -> Self {
        // SAFETY: ROOT is the PML4 of the live launch tables (recorded by `init`); nothing edits
        // them.
        let tables = unsafe { PageTables::new(ROOT.load(Ordering::Acquire), 0, IdentityPrivate) };
        Self { tables }
    }

    /// The mapping of every page `va .. va + len` touches, checked for `write`; the fault a CPU
    /// would raise otherwise.
    fn check(&mut self, va: u64, len: usize, write: bool) -> Result<(), PageFault> {
        if len == 0 {
            return Ok(());
        }
        let wbit = if write { PF_WRITE } else { 0 };
        let last_page = va.wrapping_add(len as u64 - 1) & !(PAGE_4K - 1);
        let mut at = va;
        loop {
            match self.translate(at) {
                None => {
                    return Err(PageFault {
                        address: at,
                        error_code: wbit,
                    });
                }
                Some(m) if write && !m.writable => {
                    return Err(PageFault {
                        address: at,
                        error_code: PF_PRESENT | wbit,
                    });
                }
                Some(_) => {}
            }
            if at & !(PAGE_4K - 1) == last_page {
                break;
            }
            at = (at & !(PAGE_4K - 1)).wrapping_add(PAGE_4K);
        }
        Ok(())
    }
}

impl PageWalk for LaunchMemory {
    fn translate(&mut self, va: u64) -> Option<Mapping> {
        let t = self.tables.translate(va)?;
        Some(Mapping {
            gpa: t.phys & !C_BIT,
            encrypted: t.phys & C_BIT != 0,
            user: t.flags.contains(PageFlags::USER),
            writable: t.flags.contains(PageFlags::WRITABLE),
        })
    }
}

impl LaunchMemory {
    /// Whether the page of `rip` is mapped, walking the tables only for another page than last
    /// time.
    fn rip_page_mapped(&mut self, rip: u64) -> bool {
        let page = rip & !(PAGE_4K - 1);
        if MAPPED_RIP_PAGE.load(Ordering::Relaxed) == page {
            return true;
        }
        let mapped = self.translate(rip).is_some();
        if mapped {
            MAPPED_RIP_PAGE.store(page, Ordering::Relaxed);
        }
        mapped
    }
}

impl InsnFetch for LaunchMemory {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; MAX_INSN_LEN]) -> Result<usize, PageFault> {
        for (n, byte) in buf.iter_mut().enumerate() {
            let va = rip.wrapping_add(n as u64);
            let mapped = if n == 0 {
                self.rip_page_mapped(va)
            } else {
                !va.is_multiple_of(PAGE_4K) || self.translate(va).is_some()
            };
            if !mapped {
                if n == 0 {
                    return Err(PageFault {
                        address: va,
                        error_code: PF_FETCH,
                    });
                }
                return Ok(n);
            }
            // SAFETY: the page holding `va` is mapped (checked above for each new page); code
            // bytes are only read.
            *byte = unsafe { (va as *const u8).read_volatile() };
        }
        Ok(MAX_INSN_LEN)
    }
}

impl GuestMemory for LaunchMemory {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), PageFault> {
        self.check(va, buf.len(), false)?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: every page of the range is mapped (checked above).
            *b = unsafe { (va.wrapping_add(i as u64) as *const u8).read_volatile() };
        }
        Ok(())
    }

    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), PageFault> {
        self.check(va, data.len(), true)?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: every page of the range is mapped writable (checked above); the interrupted
            // instruction was about to write there itself.
            unsafe { (va.wrapping_add(i as u64) as *mut u8).write_volatile(*b) };
        }
        Ok(())
    }
}
