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
use x86::paging::{ADDR_MASK, PAGE_4K, PageFlags, PageTables, Table, TableAccess};

use crate::exception::{PF_FETCH, PF_PRESENT, PF_WRITE};
use crate::vc::{GuestMemory, InsnFetch, MAX_INSN_LEN, Mapping, PageFault, PageWalk};

/// The live launch page tables of a guest that never switches tables (one per guest, in a
/// static, shared by its vCPUs).
pub struct LaunchTables {
    /// The PML4's GPA, from CR3.
    root: AtomicU64,
    /// The C-bit as an address mask.
    c_bit: AtomicU64,
    /// The page of the last RIP [`InsnFetch::fetch`] found mapped (1, not a page address,
    /// before the first). The launch tables never change, so a page found mapped stays mapped,
    /// and the next #VC at that page (a loop of CPUIDs, say) fetches without walking the
    /// tables: a walk is three table reads in pages of their own, and each page costs the
    /// simulator a nested walk after every world switch.
    mapped_rip_page: AtomicU64,
}

impl Default for LaunchTables {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchTables {
    /// Not yet recorded: call [`init`](Self::init) before the first #VC.
    pub const fn new() -> Self {
        Self {
            root: AtomicU64::new(0),
            c_bit: AtomicU64::new(0),
            mapped_rip_page: AtomicU64::new(1),
        }
    }

    /// Records the root of the tables in CR3, whose table pointers carry the C-bit at position
    /// `c_bit`.
    pub fn init(&self, c_bit: u32) {
        let c = 1u64 << c_bit;
        // SAFETY: CPL 0; reading CR3 has no side effects (and is not intercepted under SEV-ES).
        let cr3 = unsafe { x86::cr::read_cr3() };
        self.c_bit.store(c, Ordering::Release);
        self.root.store(cr3 & ADDR_MASK & !c, Ordering::Release);
    }

    /// The tables as the #VC core walks them.
    pub fn memory(&self) -> LaunchMemory<'_> {
        let c_bit = self.c_bit.load(Ordering::Acquire);
        // SAFETY: the root is the PML4 of the live launch tables (recorded by `init`); nothing
        // edits them.
        let tables = unsafe {
            PageTables::new(self.root.load(Ordering::Acquire), 0, IdentityPrivate(c_bit))
        };
        LaunchMemory {
            tables,
            c_bit,
            mapped_rip_page: &self.mapped_rip_page,
        }
    }
}

/// Reaches a table through the private identity map of 0..3 GiB: its pointer's C-bit removed.
struct IdentityPrivate(u64);

// SAFETY: the launch tables lie in the first MiB of private memory (PAGE_TABLES_GPA), which the
// launch tables themselves identity-map; they are built once by the IGVM builder, measured, and
// never written by the guest or readable as plaintext by the hypervisor.
unsafe impl TableAccess for IdentityPrivate {
    fn table(&self, phys: u64) -> *mut Table {
        (phys & !self.0) as *mut Table
    }
}

/// The launch page tables, seen by the #VC core.
pub struct LaunchMemory<'a> {
    tables: PageTables<IdentityPrivate>,
    c_bit: u64,
    mapped_rip_page: &'a AtomicU64,
}

impl LaunchMemory<'_> {
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

    /// Whether the page of `rip` is mapped, walking the tables only for another page than last
    /// time.
    fn rip_page_mapped(&mut self, rip: u64) -> bool {
        let page = rip & !(PAGE_4K - 1);
        if self.mapped_rip_page.load(Ordering::Relaxed) == page {
            return true;
        }
        let mapped = self.translate(rip).is_some();
        if mapped {
            self.mapped_rip_page.store(page, Ordering::Relaxed);
        }
        mapped
    }
}

impl PageWalk for LaunchMemory<'_> {
    fn translate(&mut self, va: u64) -> Option<Mapping> {
        let t = self.tables.translate(va)?;
        Some(Mapping {
            gpa: t.phys & !self.c_bit,
            encrypted: t.phys & self.c_bit != 0,
            user: t.flags.contains(PageFlags::USER),
            writable: t.flags.contains(PageFlags::WRITABLE),
        })
    }
}

impl InsnFetch for LaunchMemory<'_> {
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

impl GuestMemory for LaunchMemory<'_> {
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
