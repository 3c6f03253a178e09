//! 4-level x86-64 page tables: entries, an identity mapper and a page walk.
//!
//! Both binaries run identity-mapped, so the only mapping they ever build is virtual == physical.
//! The mapper is generic over where page-table pages come from ([`FrameSource`]: the stage's
//! static pool, the kernel's frame allocator) and over how a table is reached from its physical
//! address ([`TableAccess`]: [`Identity`] in both binaries, an arena on the host in tests).
//!
//! Every entry the mapper writes, leaf or not, has the `c_bit` mask OR-ed in: under SEV the
//! encryption bit must be set in the entries that point at private memory, including the tables
//! themselves. It is 0 without SEV. Pages shared with the hypervisor (MMIO, the GHCB) are
//! mapped with [`PageTables::map_range_shared`]: leaves without it (the tables pointing at them
//! keep it, they are private).

use bitflags::bitflags;

/// A 4 KiB page.
pub const PAGE_4K: u64 = 1 << 12;
/// A 2 MiB page (a PD-level leaf).
pub const PAGE_2M: u64 = 1 << 21;
/// A 1 GiB page (a PDPT-level leaf; only ever met in tables someone else built).
pub const PAGE_1G: u64 = 1 << 30;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// The physical-address bits of an entry (bits 12..52).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

bitflags! {
    /// Page-table entry flags (the bits outside [`ADDR_MASK`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct PageFlags: u64 {
        const PRESENT = 1 << 0;
        const WRITABLE = 1 << 1;
        const USER = 1 << 2;
        const WRITE_THROUGH = 1 << 3;
        const NO_CACHE = 1 << 4;
        const ACCESSED = 1 << 5;
        const DIRTY = 1 << 6;
        /// In a PDPT or PD entry: the entry is a 1 GiB or 2 MiB page, not a table.
        const HUGE = 1 << 7;
        const GLOBAL = 1 << 8;
        /// Needs EFER.NXE, otherwise the bit is reserved and faults.
        const NO_EXECUTE = 1 << 63;
    }
}

impl PageFlags {
    /// The bits that say what a mapping is, as opposed to what the CPU recorded about its use
    /// (accessed, dirty) or how it is encoded (huge): two leaves with equal `meaning()` map a page
    /// the same way.
    fn meaning(self) -> Self {
        self - (Self::ACCESSED | Self::DIRTY | Self::HUGE)
    }
}

/// One page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Entry(pub u64);

impl Entry {
    /// The not-present entry.
    pub const EMPTY: Self = Self(0);

    /// An entry pointing at `phys` with `flags`, plus the C-bit mask.
    pub const fn new(phys: u64, flags: PageFlags, c_bit: u64) -> Self {
        Self((phys & ADDR_MASK) | flags.bits() | c_bit)
    }

    /// The flag bits (the C-bit, being an address bit, is not among them).
    pub const fn flags(self) -> PageFlags {
        PageFlags::from_bits_truncate(self.0)
    }

    /// The physical address the entry points at, without the C-bit.
    pub const fn addr(self, c_bit: u64) -> u64 {
        self.0 & ADDR_MASK & !c_bit
    }

    pub const fn is_present(self) -> bool {
        self.0 & PageFlags::PRESENT.bits() != 0
    }

    /// A 1 GiB or 2 MiB leaf (meaningful in PDPT and PD entries only).
    pub const fn is_huge(self) -> bool {
        self.0 & PageFlags::HUGE.bits() != 0
    }
}

/// One page-table page.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(4096))]
pub struct Table(pub [Entry; ENTRIES]);

impl Table {
    pub const EMPTY: Self = Self([Entry::EMPTY; ENTRIES]);
}

/// Where new page-table pages come from.
pub trait FrameSource {
    /// A zero-filled, 4 KiB-aligned page for a table, by physical address; `None` when out of
    /// memory.
    fn alloc_zeroed_table(&mut self) -> Option<u64>;
}

/// How the mapper reaches a table from its physical address.
///
/// # Safety
/// For every physical address of a table in the hierarchy being walked, `table` returns a pointer
/// to that table that is valid for reads and writes, and nothing else accesses the tables while a
/// [`PageTables`] borrows them.
pub unsafe trait TableAccess {
    fn table(&self, phys: u64) -> *mut Table;
}

/// Tables reached at their physical address: the identity-mapped stage and kernel.
pub struct Identity;

// SAFETY: both binaries run identity-mapped, so a table's physical address is a valid pointer to
// it; exclusivity is the constructor's contract (`PageTables::new`).
unsafe impl TableAccess for Identity {
    fn table(&self, phys: u64) -> *mut Table {
        phys as *mut Table
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The frame source had no page left for a table.
    OutOfTables,
    /// The range is not canonical or goes past the 48-bit address space.
    BadRange { start: u64, end: u64 },
    /// A 1 GiB page someone else made covers `va` with other flags; splitting those is not
    /// supported (neither binary makes them).
    HugePage1G { va: u64 },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::OutOfTables => write!(f, "out of page-table pages"),
            Self::BadRange { start, end } => write!(f, "cannot map {start:#x}..{end:#x}"),
            Self::HugePage1G { va } => {
                write!(f, "{va:#x} is inside a 1 GiB page with other flags")
            }
        }
    }
}

/// The result of a page walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `va` maps to.
    pub phys: u64,
    /// Size of the page that maps it: [`PAGE_4K`], [`PAGE_2M`] or [`PAGE_1G`].
    pub page_size: u64,
    /// The leaf entry's flags.
    pub flags: PageFlags,
    /// The leaf carries the hierarchy's C-bit (always false when that is 0): private memory.
    pub encrypted: bool,
}

/// The end of the lower canonical half: identity maps live below it.
const LOWER_HALF_END: u64 = 1 << 47;

/// Index of `va` in the table at `level` (4 = PML4 ... 1 = PT).
const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Flags of the entries that point at a lower-level table: the leaves decide permissions.
const TABLE_FLAGS: PageFlags = PageFlags::PRESENT.union(PageFlags::WRITABLE);

/// A 4-level hierarchy, rooted at a PML4, that the mapper edits.
pub struct PageTables<A: TableAccess> {
    root: u64,
    c_bit: u64,
    access: A,
}

impl<A: TableAccess> PageTables<A> {
    /// Takes over the hierarchy rooted at `root` (the PML4's physical address, as in CR3 without
    /// the C-bit and flags).
    ///
    /// # Safety
    /// `root` is a valid PML4 whose tables `access` reaches, and nothing else edits the hierarchy
    /// while this value exists.
    pub unsafe fn new(root: u64, c_bit: u64, access: A) -> Self {
        Self {
            root,
            c_bit,
            access,
        }
    }

    /// A new, empty hierarchy with its PML4 from `frames`.
    pub fn create(frames: &mut impl FrameSource, c_bit: u64, access: A) -> Result<Self, MapError> {
        let root = frames.alloc_zeroed_table().ok_or(MapError::OutOfTables)?;
        // SAFETY: a fresh zeroed page is an empty PML4, ours alone (FrameSource contract and
        // TableAccess contract).
        Ok(unsafe { Self::new(root, c_bit, access) })
    }

    /// The PML4's physical address.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The value to load into CR3 for this hierarchy.
    pub fn cr3(&self) -> u64 {
        self.root | self.c_bit
    }

    fn entry(&self, table: u64, i: usize) -> Entry {
        // SAFETY: `table` is a table of this hierarchy (TableAccess contract), `i` < 512.
        unsafe { (*self.access.table(table)).0[i] }
    }

    fn set_entry(&mut self, table: u64, i: usize, e: Entry) {
        // SAFETY: as in `entry`; `&mut self` makes this the only writer.
        unsafe { (*self.access.table(table)).0[i] = e }
    }

    /// Walks `va` down the hierarchy: at most four reads, no loops over tables.
    pub fn translate(&self, va: u64) -> Option<Translation> {
        if va >= LOWER_HALF_END {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4u32).rev() {
            let e = self.entry(table, index(va, level));
            if !e.is_present() {
                return None;
            }
            let leaf_size = match level {
                1 => Some(PAGE_4K),
                2 | 3 if e.is_huge() => Some(1u64 << (12 + 9 * (level - 1))),
                _ => None,
            };
            if let Some(size) = leaf_size {
                // A huge leaf's bit 12 is its PAT bit, not an address bit.
                let base = e.addr(self.c_bit) & !(size - 1);
                return Some(Translation {
                    phys: base | (va & (size - 1)),
                    page_size: size,
                    flags: e.flags(),
                    encrypted: self.c_bit != 0 && e.0 & self.c_bit != 0,
                });
            }
            table = e.addr(self.c_bit);
        }
        None
    }

    /// Identity-maps `start..end` (widened to 4 KiB boundaries) with `flags` (PRESENT is
    /// implied).
    ///
    /// Uses a 2 MiB page for every 2 MiB-aligned block wholly inside the range and 4 KiB pages at
    /// the edges. What is already mapped the same way is left as is, so mapping a range twice is
    /// harmless; a page mapped with other flags takes the new ones, and a 2 MiB page that must
    /// change in part is split into 4 KiB pages first. Changing a live mapping does not flush
    /// the TLB: callers that do so on the active tables reload CR3 or `invlpg`.
    ///
    /// Returns the number of tables it allocated.
    pub fn map_range(
        &mut self,
        frames: &mut impl FrameSource,
        start: u64,
        end: u64,
        flags: PageFlags,
    ) -> Result<usize, MapError> {
        self.map(frames, start, end, flags, self.c_bit)
    }

    /// [`map_range`](Self::map_range) for memory shared with the hypervisor (MMIO, the GHCB):
    /// the leaves lack the C-bit, the tables above them keep it. Without SEV (a C-bit of 0) the
    /// same as `map_range`. A page mapped private before becomes shared, and the reverse.
    pub fn map_range_shared(
        &mut self,
        frames: &mut impl FrameSource,
        start: u64,
        end: u64,
        flags: PageFlags,
    ) -> Result<usize, MapError> {
        self.map(frames, start, end, flags, 0)
    }

    /// Whether `e`, a present leaf, maps its page with `flags` and the leaf C-bit `c`.
    fn same_leaf(&self, e: Entry, flags: PageFlags, c: u64) -> bool {
        e.flags().meaning() == flags.meaning() && e.0 & self.c_bit == c
    }

    /// The mapper behind `map_range` and `map_range_shared`: leaves get `c` (the C-bit or 0).
    fn map(
        &mut self,
        frames: &mut impl FrameSource,
        start: u64,
        end: u64,
        flags: PageFlags,
        c: u64,
    ) -> Result<usize, MapError> {
        let (start, end) = (start & !(PAGE_4K - 1), end.next_multiple_of(PAGE_4K));
        if start > end || end > LOWER_HALF_END {
            return Err(MapError::BadRange { start, end });
        }
        let flags = flags | PageFlags::PRESENT;
        let mut tables = 0;
        let mut va = start;
        while va < end {
            let block_end = (va | (PAGE_2M - 1)) + 1;
            let whole_block = va % PAGE_2M == 0 && block_end <= end;
            let pdpt = self.lower_table(frames, self.root, va, 4, &mut tables)?;
            let pdpte = self.entry(pdpt, index(va, 3));
            if pdpte.is_present() && pdpte.is_huge() && self.same_leaf(pdpte, flags, c) {
                // Already mapped the same way by a 1 GiB page.
                va = ((va | (PAGE_1G - 1)) + 1).min(end);
                continue;
            }
            let pd = self.lower_table(frames, pdpt, va, 3, &mut tables)?;
            let pde = self.entry(pd, index(va, 2));
            if whole_block && (!pde.is_present() || pde.is_huge()) {
                let e = Entry::new(va, flags | PageFlags::HUGE, c);
                if !pde.is_present() || !self.same_leaf(pde, flags, c) {
                    self.set_entry(pd, index(va, 2), e);
                }
                va = block_end;
                continue;
            }
            if pde.is_present() && pde.is_huge() && self.same_leaf(pde, flags, c) {
                // Already mapped the same way by a 2 MiB page: nothing to split.
                va = block_end.min(end);
                continue;
            }
            let pt = self.lower_table(frames, pd, va, 2, &mut tables)?;
            while va < block_end.min(end) {
                let pte = self.entry(pt, index(va, 1));
                if !pte.is_present() || !self.same_leaf(pte, flags, c) {
                    self.set_entry(pt, index(va, 1), Entry::new(va, flags, c));
                }
                va += PAGE_4K;
            }
        }
        Ok(tables)
    }

    /// The table that the entry for `va` in `table` (at `level`) points at, allocating an empty
    /// one when the entry is not present and splitting a 2 MiB page into 512 4 KiB pages of the
    /// same mapping when it is a leaf.
    fn lower_table(
        &mut self,
        frames: &mut impl FrameSource,
        table: u64,
        va: u64,
        level: u32,
        tables: &mut usize,
    ) -> Result<u64, MapError> {
        let i = index(va, level);
        let e = self.entry(table, i);
        if e.is_present() && !(level > 1 && e.is_huge()) {
            return Ok(e.addr(self.c_bit));
        }
        if e.is_present() && level == 3 {
            return Err(MapError::HugePage1G { va });
        }
        let new = frames.alloc_zeroed_table().ok_or(MapError::OutOfTables)?;
        *tables += 1;
        if e.is_present() {
            // Split a 2 MiB leaf: same addresses, flags and C-bit (private or shared), PAT bit
            // dropped (never set here).
            let base = e.addr(self.c_bit) & !(PAGE_2M - 1);
            let leaf = e.flags() - PageFlags::HUGE;
            let c = e.0 & self.c_bit;
            for j in 0..ENTRIES {
                let page = base + j as u64 * PAGE_4K;
                self.set_entry(new, j, Entry::new(page, leaf, c));
            }
        }
        self.set_entry(table, i, Entry::new(new, TABLE_FLAGS, self.c_bit));
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, UnsafeCell};

    /// Fake physical memory for page tables: table `k` lives at `BASE + k * 4096`.
    struct Arena {
        tables: Box<[UnsafeCell<Table>]>,
        next: Cell<usize>,
    }

    const BASE: u64 = 0x4000_0000;

    impl Arena {
        fn new(n: usize) -> Self {
            Self {
                tables: (0..n).map(|_| UnsafeCell::new(Table::EMPTY)).collect(),
                next: Cell::new(0),
            }
        }
        fn used(&self) -> usize {
            self.next.get()
        }
    }

    impl FrameSource for &Arena {
        fn alloc_zeroed_table(&mut self) -> Option<u64> {
            let k = self.next.get();
            (k < self.tables.len()).then(|| {
                self.next.set(k + 1);
                BASE + k as u64 * PAGE_4K
            })
        }
    }

    // SAFETY: addresses handed out by the arena index its boxed tables, which outlive the
    // tests' `PageTables`; tests are single-threaded over one arena.
    unsafe impl TableAccess for &Arena {
        fn table(&self, phys: u64) -> *mut Table {
            self.tables[((phys - BASE) / PAGE_4K) as usize].get()
        }
    }

    const RW: PageFlags = PageFlags::WRITABLE;
    const C_BIT: u64 = 1 << 51;

    fn tables(arena: &Arena, c_bit: u64) -> PageTables<&Arena> {
        PageTables::create(&mut { arena }, c_bit, arena).unwrap()
    }

    #[test]
    fn two_meg_inside_four_k_at_edges() {
        let arena = Arena::new(16);
        let mut pt = tables(&arena, 0);
        // 1 MiB .. 5 MiB + 4 KiB: 4 KiB pages for 1..2 MiB, 2 MiB pages for 2..4 MiB, 4 KiB for
        // 4..5 MiB+4K.
        let n = pt
            .map_range(&mut { &arena }, 0x10_0000, 0x50_1000, RW)
            .unwrap();
        assert_eq!(n, 4, "PDPT, PD and two PTs");
        assert_eq!(arena.used(), 5);
        let t = pt.translate(0x10_0123).unwrap();
        assert_eq!((t.phys, t.page_size), (0x10_0123, PAGE_4K));
        let t = pt.translate(0x2f_ffff).unwrap();
        assert_eq!((t.phys, t.page_size), (0x2f_ffff, PAGE_2M));
        assert!(t.flags.contains(PageFlags::WRITABLE | PageFlags::HUGE));
        let t = pt.translate(0x50_0fff).unwrap();
        assert_eq!((t.phys, t.page_size), (0x50_0fff, PAGE_4K));
        assert_eq!(pt.translate(0x50_1000), None);
        assert_eq!(pt.translate(0xf_ffff), None);
        assert_eq!(pt.translate(0x8000_0000), None);
    }

    #[test]
    fn idempotent_and_unaligned_bounds_widen() {
        let arena = Arena::new(16);
        let mut pt = tables(&arena, 0);
        pt.map_range(&mut { &arena }, 0x1234, 0x40_0001, RW)
            .unwrap();
        let used = arena.used();
        assert_eq!(pt.map_range(&mut { &arena }, 0, 0x40_2000, RW), Ok(0));
        assert_eq!(arena.used(), used);
        assert_eq!(pt.translate(0x1000).unwrap().phys, 0x1000);
        assert_eq!(pt.translate(0x40_0fff).unwrap().page_size, PAGE_4K);
        assert_eq!(pt.translate(0).unwrap().phys, 0);
        // Now the 4 KiB-mapped first block stays 4 KiB; the second is a 2 MiB page.
        assert_eq!(pt.translate(0x20_0000).unwrap().page_size, PAGE_2M);
        assert_eq!(pt.translate(0x1f_f000).unwrap().page_size, PAGE_4K);
    }

    #[test]
    fn four_k_with_other_flags_splits_a_two_meg_page() {
        let arena = Arena::new(16);
        let mut pt = tables(&arena, 0);
        pt.map_range(&mut { &arena }, 0x20_0000, 0x40_0000, RW)
            .unwrap();
        // Same flags inside a 2 MiB page: no split.
        assert_eq!(
            pt.map_range(&mut { &arena }, 0x30_0000, 0x30_1000, RW),
            Ok(0)
        );
        assert_eq!(pt.translate(0x30_0000).unwrap().page_size, PAGE_2M);
        // Other flags: split, only that page changes.
        let uc = RW | PageFlags::NO_CACHE;
        assert_eq!(
            pt.map_range(&mut { &arena }, 0x30_0000, 0x30_1000, uc),
            Ok(1)
        );
        let t = pt.translate(0x30_0010).unwrap();
        assert_eq!((t.phys, t.page_size), (0x30_0010, PAGE_4K));
        assert!(t.flags.contains(PageFlags::NO_CACHE));
        for va in [0x20_0000, 0x2f_f000, 0x30_1000, 0x3f_f000] {
            let t = pt.translate(va + 8).unwrap();
            assert_eq!((t.phys, t.page_size), (va + 8, PAGE_4K));
            assert_eq!(t.flags, PageFlags::PRESENT | RW);
        }
    }

    #[test]
    fn two_meg_with_other_flags_replaces_the_leaf() {
        let arena = Arena::new(16);
        let mut pt = tables(&arena, 0);
        pt.map_range(&mut { &arena }, 0, 0x20_0000, RW).unwrap();
        assert_eq!(
            pt.map_range(&mut { &arena }, 0, 0x20_0000, PageFlags::empty()),
            Ok(0)
        );
        let t = pt.translate(0x1000).unwrap();
        assert_eq!(t.page_size, PAGE_2M);
        assert!(!t.flags.contains(PageFlags::WRITABLE));
    }

    #[test]
    fn c_bit_in_every_entry_and_not_in_addresses() {
        let arena = Arena::new(16);
        let mut pt = tables(&arena, C_BIT);
        assert_eq!(pt.cr3(), BASE | C_BIT);
        pt.map_range(&mut { &arena }, 0x1_0000_0000, 0x1_0020_1000, RW)
            .unwrap();
        let t = pt.translate(0x1_0020_0042).unwrap();
        assert_eq!((t.phys, t.page_size), (0x1_0020_0042, PAGE_4K));
        assert_eq!(pt.translate(0x1_0000_0042).unwrap().phys, 0x1_0000_0042);
        let mut entries = 0;
        for table in arena.tables.iter().take(arena.used()) {
            // SAFETY: no PageTables access is in progress.
            for e in unsafe { &(*table.get()).0 } {
                if e.is_present() {
                    assert_ne!(e.0 & C_BIT, 0, "{e:x?}");
                    entries += 1;
                }
            }
        }
        assert_eq!(
            entries,
            3 + 2,
            "PML4, PDPT, PD->2M and PD->PT entries, one PTE"
        );
    }

    #[test]
    fn shared_leaves_lack_the_c_bit_and_tables_keep_it() {
        let arena = Arena::new(16);
        let mut pt = tables(&arena, C_BIT);
        let mmio = RW | PageFlags::NO_CACHE;
        // A shared 2 MiB block, and a shared 4 KiB page inside private 2 MiB pages (a GHCB).
        pt.map_range_shared(&mut { &arena }, 0xfec0_0000, 0xfee0_0000, mmio)
            .unwrap();
        pt.map_range(&mut { &arena }, 0x40_0000, 0x80_0000, RW)
            .unwrap();
        let used = arena.used();
        pt.map_range_shared(&mut { &arena }, 0x40_3000, 0x40_4000, RW)
            .unwrap();
        assert_eq!(arena.used(), used + 1, "the 2 MiB page was split once");
        let t = pt.translate(0xfed0_0010).unwrap();
        assert_eq!(
            (t.phys, t.page_size, t.encrypted),
            (0xfed0_0010, PAGE_2M, false)
        );
        let t = pt.translate(0x40_3008).unwrap();
        assert_eq!(
            (t.phys, t.page_size, t.encrypted),
            (0x40_3008, PAGE_4K, false)
        );
        for va in [0x40_2000, 0x40_4000, 0x5f_f000] {
            let t = pt.translate(va).unwrap();
            assert_eq!(
                (t.phys, t.page_size, t.encrypted),
                (va, PAGE_4K, true),
                "{va:#x}"
            );
        }
        assert!(pt.translate(0x60_0000).unwrap().encrypted);
        // Mapping the page private again restores the C-bit; shared again is a no-op.
        pt.map_range(&mut { &arena }, 0x40_3000, 0x40_4000, RW)
            .unwrap();
        assert!(pt.translate(0x40_3000).unwrap().encrypted);
        pt.map_range_shared(&mut { &arena }, 0x40_3000, 0x40_4000, RW)
            .unwrap();
        pt.map_range_shared(&mut { &arena }, 0x40_3000, 0x40_4000, RW)
            .unwrap();
        assert!(!pt.translate(0x40_3000).unwrap().encrypted);
        // Table pointers all keep the C-bit; without SEV, shared and private are the same.
        for table in arena.tables.iter().take(arena.used()) {
            // SAFETY: no PageTables access is in progress.
            for e in unsafe { &(*table.get()).0 } {
                let leaf = e.0 & ADDR_MASK & !C_BIT;
                if e.is_present() && (BASE..BASE + 16 * PAGE_4K).contains(&leaf) {
                    assert_ne!(e.0 & C_BIT, 0, "table pointer {e:x?}");
                }
            }
        }
        let plain = Arena::new(8);
        let mut pt = tables(&plain, 0);
        pt.map_range_shared(&mut { &plain }, 0, PAGE_2M, RW)
            .unwrap();
        let t = pt.translate(0x1000).unwrap();
        assert_eq!((t.phys, t.encrypted), (0x1000, false));
    }

    #[test]
    fn out_of_tables_and_bad_ranges_are_errors() {
        let arena = Arena::new(3);
        let mut pt = tables(&arena, 0);
        assert_eq!(
            pt.map_range(&mut { &arena }, 0, 0x1000, RW),
            Err(MapError::OutOfTables)
        );
        assert_eq!(
            pt.map_range(&mut { &arena }, 1 << 47, (1 << 47) + 0x1000, RW),
            Err(MapError::BadRange {
                start: 1 << 47,
                end: (1 << 47) + 0x1000
            })
        );
        assert_eq!(pt.translate(u64::MAX), None);
    }

    #[test]
    fn one_gig_pages_are_walked_and_not_split() {
        let arena = Arena::new(8);
        let mut pt = tables(&arena, 0);
        pt.map_range(&mut { &arena }, 0, 0x1000, RW).unwrap();
        // Turn PDPT entry 1 into a 1 GiB page as firmware would.
        let pdpt = pt.entry(pt.root(), 0).addr(0);
        let leaf = PageFlags::PRESENT | PageFlags::HUGE | RW;
        pt.set_entry(pdpt, 1, Entry::new(0x4000_0000, leaf, 0));
        let t = pt.translate(0x4123_4567).unwrap();
        assert_eq!((t.phys, t.page_size), (0x4123_4567, PAGE_1G));
        assert_eq!(
            pt.map_range(&mut { &arena }, 0x4000_0000, 0x8000_0000, RW),
            Ok(0)
        );
        assert_eq!(
            pt.map_range(
                &mut { &arena },
                0x4000_1000,
                0x4000_2000,
                PageFlags::empty()
            ),
            Err(MapError::HugePage1G { va: 0x4000_1000 })
        );
    }
}
