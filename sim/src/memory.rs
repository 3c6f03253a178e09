//! Guest memory: a private and a shared copy of guest RAM, the nested page table that maps
//! them, and the walk of the guest's own page tables.
//!
//! On SEV-ES hardware a guest access with the C-bit set goes through the memory controller's
//! encryption with the guest's key; the hypervisor sees only ciphertext. Here the two views are
//! separate host memory: GPA `g` is backed by `shared + g`, GPA `g | C-bit` by `private + g`.
//! The simulator itself touches the private view only to load the launch image, to walk the
//! guest's page tables and to deliver exceptions (what the CPU does), never to serve requests.

use core::fmt;

/// Bits of a page-table entry that hold an address (below bit 52), before the C-bit is removed.
const ADDRESS_BITS: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const HUGE: u64 = 1 << 7;

/// Which copy of guest RAM an access reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Private,
    Shared,
}

/// Guest RAM: `size` bytes at GPA 0, backed twice.
pub struct GuestMemory {
    private: u64,
    shared: u64,
    size: u64,
    c_bit: u32,
}

/// A guest virtual address translated by the guest's page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest physical address, C-bit removed.
    pub gpa: u64,
    pub view: View,
}

/// Why a guest virtual address could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// CR3 lacks the C-bit: the simulator cannot model an unencrypted page-table walk.
    Cr3NotPrivate { cr3: u64 },
    /// A table pointer at `level` (4 = PML4) lacks the C-bit.
    TableNotPrivate { gva: u64, level: u8 },
    /// Not mapped (a #PF on hardware).
    NotPresent { gva: u64, level: u8 },
    /// A write to a read-only mapping (a #PF with CR0.WP on hardware).
    ReadOnly { gva: u64 },
    /// The translation leaves guest RAM.
    OutsideRam { gpa: u64 },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Cr3NotPrivate { cr3 } => write!(
                f,
                "CR3 {cr3:#x} lacks the C-bit; the simulator requires encrypted page tables \
                 (hardware walks them as private whatever CR3 says)"
            ),
            Self::TableNotPrivate { gva, level } => write!(
                f,
                "walking {gva:#x}: level-{level} table pointer lacks the C-bit; the simulator \
                 requires encrypted page tables"
            ),
            Self::NotPresent { gva, level } => {
                write!(f, "{gva:#x} is not mapped (level {level})")
            }
            Self::ReadOnly { gva } => write!(f, "{gva:#x} is mapped read-only"),
            Self::OutsideRam { gpa } => write!(f, "GPA {gpa:#x} is outside guest RAM"),
        }
    }
}

impl GuestMemory {
    /// # Safety
    /// `private` and `shared` are host-physical (identity-mapped) regions of `size` bytes each,
    /// 2 MiB aligned, owned by the simulator for good.
    pub unsafe fn new(private: u64, shared: u64, size: u64, c_bit: u32) -> Self {
        Self {
            private,
            shared,
            size,
            c_bit,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn c_mask(&self) -> u64 {
        1 << self.c_bit
    }

    pub fn c_bit(&self) -> u32 {
        self.c_bit
    }

    /// Host base address of `view`.
    pub fn base(&self, view: View) -> u64 {
        match view {
            View::Private => self.private,
            View::Shared => self.shared,
        }
    }

    /// The host address of `[gpa, gpa + len)` in `view`, if it lies in guest RAM.
    pub fn host(&self, gpa: u64, len: u64, view: View) -> Option<*mut u8> {
        let end = gpa.checked_add(len)?;
        (end <= self.size).then(|| (self.base(view) + gpa) as *mut u8)
    }

    /// Copies guest bytes out of `view`.
    pub fn read(&self, gpa: u64, out: &mut [u8], view: View) -> Result<(), WalkError> {
        let p = self
            .host(gpa, out.len() as u64, view)
            .ok_or(WalkError::OutsideRam { gpa })?;
        // SAFETY: inside the backing region (checked); the guest may change it concurrently
        // (another vCPU), which makes the bytes arbitrary but the copy sound.
        unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies bytes into `view`.
    pub fn write(&self, gpa: u64, data: &[u8], view: View) -> Result<(), WalkError> {
        let p = self
            .host(gpa, data.len() as u64, view)
            .ok_or(WalkError::OutsideRam { gpa })?;
        // SAFETY: inside the backing region, which only the guest and the simulator use.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    fn read_u64(&self, gpa: u64, view: View) -> Result<u64, WalkError> {
        let mut b = [0; 8];
        self.read(gpa, &mut b, view)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Translates `gva` through the guest's 4-level page tables at `cr3`, as the CPU would for
    /// a supervisor access (`write`: a write with CR0.WP set).
    pub fn translate(&self, cr3: u64, gva: u64, write: bool) -> Result<Translation, WalkError> {
        self.translate_in(cr3, gva, write, Npt::Split)
    }

    /// [`translate`](Self::translate) under the nested page table the vCPU runs on: under
    /// [`Npt::AllPrivate`] (paging off, or a CR3 without the C-bit: see [`NptRoots`]) every
    /// table and the leaf are private whatever their C-bits say, as the guest sees them then.
    pub fn translate_in(
        &self,
        cr3: u64,
        gva: u64,
        write: bool,
        npt: Npt,
    ) -> Result<Translation, WalkError> {
        let c = self.c_mask();
        let strict = npt == Npt::Split;
        if strict && cr3 & c == 0 {
            return Err(WalkError::Cr3NotPrivate { cr3 });
        }
        let mut table = cr3 & ADDRESS_BITS & !c;
        for level in (1..=4u8).rev() {
            let shift = 12 + 9 * (u32::from(level) - 1);
            let index = (gva >> shift) & 0x1ff;
            let entry = self.read_u64(table + index * 8, View::Private)?;
            if entry & PRESENT == 0 {
                return Err(WalkError::NotPresent { gva, level });
            }
            if write && entry & WRITABLE == 0 {
                return Err(WalkError::ReadOnly { gva });
            }
            let address = entry & ADDRESS_BITS & !c;
            let leaf = level == 1 || (level <= 3 && entry & HUGE != 0);
            if leaf {
                let page_mask = (1u64 << shift) - 1;
                let gpa = (address & !page_mask) | (gva & page_mask);
                let view = if entry & c != 0 || !strict {
                    View::Private
                } else {
                    View::Shared
                };
                if gpa >= self.size {
                    return Err(WalkError::OutsideRam { gpa });
                }
                return Ok(Translation { gpa, view });
            }
            if strict && entry & c == 0 {
                return Err(WalkError::TableNotPrivate { gva, level });
            }
            table = address;
        }
        unreachable!("level 1 is always a leaf")
    }

    /// Reads `out.len()` bytes at guest virtual `gva` (page by page).
    pub fn read_virt(&self, cr3: u64, gva: u64, out: &mut [u8]) -> Result<(), WalkError> {
        self.read_virt_in(cr3, gva, out, Npt::Split)
    }

    /// [`read_virt`](Self::read_virt) under the nested page table `npt` (see
    /// [`translate_in`](Self::translate_in)).
    pub fn read_virt_in(
        &self,
        cr3: u64,
        gva: u64,
        out: &mut [u8],
        npt: Npt,
    ) -> Result<(), WalkError> {
        let mut done = 0;
        while done < out.len() {
            let va = gva.wrapping_add(done as u64);
            let chunk = (4096 - (va & 0xfff) as usize).min(out.len() - done);
            let t = self.translate_in(cr3, va, false, npt)?;
            self.read(t.gpa, &mut out[done..done + chunk], t.view)?;
            done += chunk;
        }
        Ok(())
    }

    /// Writes `data` at guest virtual `gva` (page by page, each translated for a write).
    pub fn write_virt(&self, cr3: u64, gva: u64, data: &[u8]) -> Result<(), WalkError> {
        let mut done = 0;
        while done < data.len() {
            let va = gva.wrapping_add(done as u64);
            let chunk = (4096 - (va & 0xfff) as usize).min(data.len() - done);
            let t = self.translate(cr3, va, true)?;
            self.write(t.gpa, &data[done..done + chunk], t.view)?;
            done += chunk;
        }
        Ok(())
    }

    /// Builds the nested page tables (see [`NptRoots`]): GPA `g` maps the shared copy,
    /// `g | C-bit` the private copy, both with 2 MiB pages; nothing else is mapped, so every
    /// other GPA (MMIO) exits with a nested page fault. The all-private root shares the private
    /// half and maps `g` to the private copy too. `page` hands out zeroed 4 KiB pages.
    pub fn build_npt(&self, mut page: impl FnMut() -> u64) -> NptRoots {
        let split = self.build_split_npt(&mut page);
        let c_index = (self.c_mask() >> 39) & 0x1ff;
        // SAFETY: `split` is the PML4 just built (a page of `page`'s); entry `c_index` holds
        // the private half's PDPT.
        let private_pdpt = unsafe { (split as *const u64).add(c_index as usize).read_volatile() };
        let all_private = page();
        set_entry(all_private, 0, private_pdpt);
        set_entry(all_private, c_index, private_pdpt);
        NptRoots { split, all_private }
    }

    fn build_split_npt(&self, page: &mut impl FnMut() -> u64) -> u64 {
        // QEMU walks nested tables as user accesses: every level needs U (bit 2).
        const TABLE: u64 = 0x7;
        const LEAF_2M: u64 = 0x87;
        const GIB: u64 = 1 << 30;
        let pml4 = page();
        for view in [View::Shared, View::Private] {
            let gpa_base = if view == View::Private {
                self.c_mask()
            } else {
                0
            };
            let pdpt = page();
            set_entry(pml4, (gpa_base >> 39) & 0x1ff, pdpt | TABLE);
            for gib in 0..self.size.div_ceil(GIB) {
                let pd = page();
                set_entry(pdpt, ((gpa_base >> 30) + gib) & 0x1ff, pd | TABLE);
                let first = gib * 512;
                let last = (self.size >> 21).min(first + 512);
                for two_mib in first..last {
                    let host = self.base(view) + (two_mib << 21);
                    set_entry(pd, two_mib - first, host | LEAF_2M);
                }
            }
        }
        pml4
    }
}

/// Which nested page table a vCPU runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Npt {
    /// The C-bit picks the copy: the guest's normal state.
    Split,
    /// Every GPA reaches the private copy (see [`NptRoots`]).
    AllPrivate,
}

/// The two nested page tables (nCR3 values) the vCPUs switch between.
///
/// With paging off, hardware treats every guest access as private; with paging on, it walks
/// page tables and fetches instructions as private whatever the C-bit says, and only data
/// accesses follow the C-bit. QEMU's nested walk cannot tell those accesses apart, so the
/// simulator picks a table by guest state: [`Npt::AllPrivate`] while paging is off or CR3 lacks
/// the C-bit (the AP start-up path: real mode, then 32-bit code that can load only a 32-bit
/// CR3, until 64-bit code loads its full CR3), [`Npt::Split`] otherwise, where it requires the
/// C-bit on CR3 and every table level (`translate`). In the all-private state a guest cannot
/// reach shared memory, which such start-up code does not need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NptRoots {
    pub split: u64,
    pub all_private: u64,
}

impl NptRoots {
    /// The nCR3 of `npt`.
    pub fn root(&self, npt: Npt) -> u64 {
        match npt {
            Npt::Split => self.split,
            Npt::AllPrivate => self.all_private,
        }
    }
}

/// The table a vCPU with these control registers runs on (see [`NptRoots`]).
pub fn npt_for(cr0: u64, cr3: u64, c_mask: u64) -> Npt {
    const CR0_PG: u64 = 1 << 31;
    if cr0 & CR0_PG == 0 || cr3 & c_mask == 0 {
        Npt::AllPrivate
    } else {
        Npt::Split
    }
}

fn set_entry(table: u64, index: u64, value: u64) {
    // SAFETY: `table` is a page handed out by `build_npt`'s caller, identity-mapped and owned
    // by the nested page table; `index` < 512.
    unsafe {
        (table as *mut u64)
            .add(index as usize)
            .write_volatile(value)
    }
}
