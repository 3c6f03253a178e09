//! Physical memory and the kernel's own page tables.
//!
//! The kernel is entered on the stage's tables, which map only what the stage touched. [`init`]
//! builds the kernel's identity map of every region of the memory map (RAM write-back, MMIO
//! uncached) plus the local APIC / IOAPIC / HPET window, and switches CR3 to it. Until then no
//! other memory can be touched, so the tables are built from a pool of pages in the kernel's own
//! `.bss` (mapped, since the stage's ELF loader zeroed it); frames from the allocator are used
//! once the new tables are live. Under SEV-ES (a C-bit in the `BootInfo`) RAM is mapped private,
//! MMIO and the kernel's GHCB pages shared (leaves without the C-bit). The PML4 must be below 4 GiB because the AP trampoline loads
//! CR3 in 32-bit mode: when the pool is not, the PML4 is copied to a low frame.

pub mod frames;

use core::fmt;
use handoff::bootinfo::{BootInfo, MemoryKind};
use spin::Mutex;
use x86::paging::{
    FrameSource, Identity, MapError, PAGE_4K, PageFlags, PageTables, Table, Translation,
};

/// Page-table pages available before the kernel's tables are live: with 2 MiB pages one PD maps
/// 1 GiB, so this covers tens of GiB of RAM plus the 4 KiB tables at region edges.
const BOOT_POOL_TABLES: usize = 64;

/// The uncached window with the IOAPIC (0xFEC00000), HPET (0xFED00000), local APIC (0xFEE00000)
/// and the firmware flash.
const MMIO_WINDOW: (u64, u64) = (0xfec0_0000, 0x1_0000_0000);

const RAM: PageFlags = PageFlags::WRITABLE;
const MMIO: PageFlags = PageFlags::WRITABLE.union(PageFlags::NO_CACHE);

/// Why the kernel's tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    NoUsableRam,
    Map(MapError),
    /// [`map`] before [`init`].
    NotInitialised,
    /// The PML4 (in the kernel image) is not below 4 GiB, where the stage is asked to load it.
    Pml4Above4GiB(u64),
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoUsableRam => write!(f, "the memory map has no usable RAM above 1 MiB"),
            Self::Map(e) => write!(f, "kernel page tables: {e}"),
            Self::NotInitialised => write!(f, "kernel page tables not set up yet"),
            Self::Pml4Above4GiB(a) => write!(
                f,
                "PML4 at {a:#x}: the kernel image must be below 4 GiB (APs load CR3 in 32-bit mode)"
            ),
        }
    }
}

#[repr(C)]
struct BootPool {
    tables: [Table; BOOT_POOL_TABLES],
    used: usize,
}

/// The page-table pages [`init`] builds with; part of the kernel image's `.bss`.
static BOOT_POOL: Mutex<BootPool> = Mutex::new(BootPool {
    tables: [Table::EMPTY; BOOT_POOL_TABLES],
    used: 0,
});

impl FrameSource for BootPool {
    fn alloc_zeroed_table(&mut self) -> Option<u64> {
        let t = self.tables.get_mut(self.used)?;
        self.used += 1;
        // Zero already (.bss), and identity-mapped: the address is the physical one.
        Some(t as *mut Table as u64)
    }
}

/// The kernel's page tables, once [`init`] has switched to them.
static KERNEL_TABLES: Mutex<Option<PageTables<Identity>>> = Mutex::new(None);

/// Sets up the frame allocator and switches to the kernel's own page tables. Called once by the
/// boot CPU, before anything touches memory outside the kernel image and the `BootInfo`.
pub fn init(info: &BootInfo) -> Result<Summary, MemoryError> {
    let frames = frames::init(info);
    if frames == 0 {
        return Err(MemoryError::NoUsableRam);
    }
    let mut pool = BOOT_POOL.lock();
    // Under SEV the C-bit goes into CR3, every table pointer and every private leaf.
    let mut tables =
        PageTables::create(&mut *pool, info.c_bit, Identity).map_err(MemoryError::Map)?;
    // Runs of adjacent regions that take the same flags are mapped as one range, so that only
    // their outer edges need 4 KiB pages. Page 0 stays unmapped to catch null pointers.
    let mut run: Option<(u64, u64, PageFlags)> = None;
    let kinds = info.memory_map().iter().map(|r| {
        let flags = if r.kind == MemoryKind::MMIO {
            MMIO
        } else {
            RAM
        };
        (r.start.max(PAGE_4K), r.end(), flags)
    });
    for (start, end, flags) in kinds.chain([(MMIO_WINDOW.0, MMIO_WINDOW.1, MMIO)]) {
        match run {
            Some((s, e, f)) if e == start && f == flags => run = Some((s, end, f)),
            _ => {
                if let Some((s, e, f)) = run.replace((start, end, flags)) {
                    map_initial(&mut tables, &mut pool, s, e, f)?;
                }
            }
        }
    }
    if let Some((s, e, f)) = run {
        map_initial(&mut tables, &mut pool, s, e, f)?;
    }
    if crate::sev::active() {
        // The GHCBs: the hypervisor reads and writes them, so their (identity) mappings are
        // shared.
        for ghcb in crate::sev::ghcb_pages() {
            tables
                .map_range_shared(&mut *pool, ghcb, ghcb + PAGE_4K, RAM)
                .map_err(MemoryError::Map)?;
        }
    }
    if tables.root() >> 32 != 0 {
        return Err(MemoryError::Pml4Above4GiB(tables.root()));
    }
    // SAFETY: the new tables identity-map all RAM (this code, its stack, the BootInfo) and the
    // MMIO in use, exactly as the stage's did, private under SEV (the C-bit in CR3, every table
    // pointer and RAM leaf) but for the GHCBs, which nothing uses before `crate::sev::init`.
    unsafe { x86::cr::write_cr3(tables.cr3()) };
    let summary = Summary {
        usable_bytes: frames as u64 * PAGE_4K,
        root: tables.root(),
        tables: pool.used,
    };
    *KERNEL_TABLES.lock() = Some(tables);
    Ok(summary)
}

/// What [`init`] built, for the log (under SEV-ES the logger starts after it).
pub struct Summary {
    usable_bytes: u64,
    root: u64,
    tables: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "memory: {} MiB usable, kernel page tables at {:#x} ({} tables)",
            self.usable_bytes >> 20,
            self.root,
            self.tables
        )
    }
}

/// Maps one run of [`init`]: MMIO shared with the hypervisor (no C-bit: the simulator forwards
/// the HPET and IOAPIC; without SEV shared and private are the same), RAM private.
fn map_initial(
    tables: &mut PageTables<Identity>,
    pool: &mut BootPool,
    start: u64,
    end: u64,
    flags: PageFlags,
) -> Result<(), MemoryError> {
    if flags == MMIO {
        tables.map_range_shared(pool, start, end, flags)
    } else {
        tables.map_range(pool, start, end, flags)
    }
    .map(|_| ())
    .map_err(MemoryError::Map)
}

/// Identity-maps `start..end` with `flags` on the live kernel tables (new tables come from the
/// frame allocator) and flushes the TLB, since existing mappings may change.
pub fn map(start: u64, end: u64, flags: PageFlags) -> Result<(), MemoryError> {
    let mut guard = KERNEL_TABLES.lock();
    let tables = guard.as_mut().ok_or(MemoryError::NotInitialised)?;
    tables
        .map_range(&mut frames::Frames, start, end, flags)
        .map_err(MemoryError::Map)?;
    // SAFETY: reloading the live tables' root only flushes non-global TLB entries.
    unsafe { x86::cr::write_cr3(tables.cr3()) };
    Ok(())
}

/// Walks the kernel's tables (None before [`init`] or when `va` is not mapped).
pub fn translate(va: u64) -> Option<Translation> {
    KERNEL_TABLES.lock().as_ref()?.translate(va)
}

/// The kernel's PML4 (physical), once [`init`] ran.
pub fn root() -> Option<u64> {
    KERNEL_TABLES.lock().as_ref().map(|t| t.root())
}
