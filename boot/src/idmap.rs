//! The stage's own page tables, filled on demand.
//!
//! After ExitBootServices the stage stops trusting the firmware's tables and switches to tables
//! of its own that map only its image, its stack, the descriptor tables and the `BootInfo`. Every
//! first touch of anything else is a page fault, and [`handle_page_fault`] identity-maps the
//! 2 MiB block around the address (4 KiB pages where a known region ends inside the block), as
//! Linux's decompressor does — but only for addresses the memory map knows as RAM or MMIO: a
//! stray pointer is a fatal error instead of a silent mapping. The kernel is entered on these
//! tables; everything it needs before its own tables (image, `.bss`, stack, `BootInfo`) has been
//! touched by the stage and so is mapped.
//!
//! Under SEV-ES ([`Encryption`]) every entry carries the C-bit except the leaves of MMIO and of
//! the GHCB page (`sev::guest::leaves` decides, for the fixed ranges and for every fault alike,
//! so a fault near the GHCB page cannot map it private again); the tables themselves and CR3
//! are private. Without SEV the C-bit is 0 and both kinds of leaf are mapped the same way.
//!
//! Table pages come from a pool in the stage's `.bss` (loader memory the kernel does not reuse).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use handoff::bootinfo::{BootInfo, MAX_MEMORY_REGIONS, MemoryKind, MemoryRegion};
use sev::guest::leaves;
use x86::paging::{FrameSource, Identity, MapError, PAGE_2M, PAGE_4K, PageTables, Table};

/// Page-table pages for the whole stage: a PML4, a PDPT and a PD per GiB touched, and a PT per
/// 2 MiB block that a region edge cuts.
const POOL_TABLES: usize = 64;

/// How much stack below the current stack pointer is mapped before the switch.
const STACK_RESERVE: u64 = 128 * 1024;

/// The stage's tables under SEV-ES.
#[derive(Clone, Copy, Debug)]
pub struct Encryption {
    /// The C-bit as an address mask.
    pub c_bit: u64,
    /// The page shared with the hypervisor (the GHCB), mapped without the C-bit.
    pub shared_page: u64,
}

/// Why an address could not be mapped.
#[derive(Clone, Copy, Debug)]
pub enum IdmapError {
    /// Not inside any region of the memory map.
    Unknown(u64),
    /// The fault was a protection violation on a present page, not a missing mapping.
    Protection {
        addr: u64,
        error_code: u64,
    },
    /// A fault while the mapper itself was running.
    Nested(u64),
    /// The on-demand tables are not set up.
    NotActive(u64),
    Map(MapError),
}

impl core::fmt::Display for IdmapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unknown(a) => write!(f, "{a:#x} is neither RAM nor MMIO in the memory map"),
            Self::Protection { addr, error_code } => {
                write!(
                    f,
                    "protection fault at {addr:#x} (error code {error_code:#x})"
                )
            }
            Self::Nested(a) => write!(f, "page fault at {a:#x} inside the identity mapper"),
            Self::NotActive(a) => write!(f, "page fault at {a:#x} before the stage's tables"),
            Self::Map(e) => write!(f, "identity map: {e} (pool of {POOL_TABLES} tables)"),
        }
    }
}

struct Pool {
    tables: [Table; POOL_TABLES],
    used: usize,
}

impl FrameSource for Pool {
    fn alloc_zeroed_table(&mut self) -> Option<u64> {
        let t = self.tables.get_mut(self.used)?;
        self.used += 1;
        // Zero already (.bss, never handed out twice), identity-mapped.
        Some(t as *mut Table as u64)
    }
}

struct State {
    tables: Option<PageTables<Identity>>,
    /// A copy of the memory map that decides what may be mapped.
    map: [MemoryRegion; MAX_MEMORY_REGIONS],
    map_len: usize,
    faults: usize,
    /// The shared page (start, end) under SEV-ES.
    shared: Option<(u64, u64)>,
}

/// Mapper state reached from the stage's main flow and from its #PF handler, on one CPU with
/// interrupts off; [`BUSY`] turns a fault inside the mapper into an error instead of a second
/// mutable borrow.
struct Shared<T>(UnsafeCell<T>);

// SAFETY: the stage runs on one CPU; access goes through `with_state`, which `BUSY` serialises.
unsafe impl<T> Sync for Shared<T> {}

/// Kept apart from [`STATE`] so that its all-zero initial value puts it in `.bss`, not in the
/// EFI image.
static POOL: Shared<Pool> = Shared(UnsafeCell::new(Pool {
    tables: [Table::EMPTY; POOL_TABLES],
    used: 0,
}));
static STATE: Shared<State> = Shared(UnsafeCell::new(State {
    tables: None,
    map: [MemoryRegion::EMPTY; MAX_MEMORY_REGIONS],
    map_len: 0,
    faults: 0,
    shared: None,
}));
static BUSY: AtomicBool = AtomicBool::new(false);

fn with_state<R>(addr: u64, f: impl FnOnce(&mut State, &mut Pool) -> R) -> Result<R, IdmapError> {
    if BUSY.swap(true, Ordering::Acquire) {
        return Err(IdmapError::Nested(addr));
    }
    // SAFETY: BUSY was clear, so no other reference to either exists (one CPU, and the only
    // re-entry path, a fault inside `f`, is refused above).
    let (state, pool) = unsafe { (&mut *STATE.0.get(), &mut *POOL.0.get()) };
    let r = f(state, pool);
    BUSY.store(false, Ordering::Release);
    Ok(r)
}

/// A descriptor-table register's base and limit, as `sgdt`/`sidt` store it.
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

fn descriptor_tables() -> [(u64, u64); 2] {
    let mut gdt = DescriptorPointer { limit: 0, base: 0 };
    let mut idt = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: sgdt/sidt only store 10 bytes each into the given locals.
    unsafe {
        core::arch::asm!("sgdt [{}]", "sidt [{}]", in(reg) &mut gdt, in(reg) &mut idt,
            options(nostack, preserves_flags))
    };
    let span = |p: DescriptorPointer| (p.base, p.base + p.limit as u64 + 1);
    [span(gdt), span(idt)]
}

/// Builds the stage's tables with its `image` (physical start, end), stack, the loaded GDT and
/// IDT and `info` mapped, with `encryption` under SEV-ES, and switches CR3 to them (which drops
/// the old tables' translations but global ones). From here on the memory map in `info` decides
/// what can be touched.
pub fn init(
    info: &mut BootInfo,
    image: (u64, u64),
    encryption: Option<Encryption>,
) -> Result<(), IdmapError> {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    let info_span = (
        info as *const BootInfo as u64,
        info as *const BootInfo as u64 + size_of::<BootInfo>() as u64,
    );
    let [gdt, idt] = descriptor_tables();
    let (cr3, pool) = with_state(0, |s, pool| {
        let map = info.memory_map();
        s.map[..map.len()].copy_from_slice(map);
        s.map_len = map.len();
        s.shared = encryption.map(|e| (e.shared_page, e.shared_page + PAGE_4K));
        let c_bit = encryption.map_or(0, |e| e.c_bit);
        let mut tables = PageTables::create(pool, c_bit, Identity).map_err(IdmapError::Map)?;
        for (start, end) in [image, info_span, gdt, idt] {
            map_run(&mut tables, pool, (start, end, false), s.shared)?;
        }
        // The stack as a fault would map it: a fault on the stack could not be handled.
        for addr in [rsp, rsp - STACK_RESERVE] {
            map_around(&mut tables, pool, &s.map[..s.map_len], s.shared, addr)?;
        }
        let cr3 = tables.cr3();
        s.tables = Some(tables);
        let pool_span = (
            &raw const pool.tables as u64,
            size_of_val(&pool.tables) as u64,
        );
        Ok((cr3, pool_span))
    })??;
    info.page_tables.cr3 = cr3;
    info.page_tables.pool_start = pool.0;
    info.page_tables.pool_len = pool.1;
    // SAFETY: the new tables map the code running (image), its data, its stack, the descriptor
    // tables the CPU uses for exceptions and the BootInfo; the rest faults into the handler.
    unsafe { x86::cr::write_cr3(cr3) };
    Ok(())
}

/// Handles a #PF at `addr` with `error_code`: maps the 2 MiB block around `addr`, clipped to the
/// run of memory-map regions of the same kind (RAM or MMIO) that contains it. An error is fatal.
pub fn handle_page_fault(addr: u64, error_code: u64) -> Result<(), IdmapError> {
    if error_code & 1 != 0 {
        return Err(IdmapError::Protection { addr, error_code });
    }
    with_state(addr, |s, pool| {
        let tables = s.tables.as_mut().ok_or(IdmapError::NotActive(addr))?;
        map_around(tables, pool, &s.map[..s.map_len], s.shared, addr)?;
        s.faults += 1;
        Ok(())
    })?
}

/// Maps the 2 MiB block around `addr`, clipped to the run of regions of `map` containing it.
fn map_around(
    tables: &mut PageTables<Identity>,
    pool: &mut Pool,
    map: &[MemoryRegion],
    shared: Option<(u64, u64)>,
    addr: u64,
) -> Result<(), IdmapError> {
    let (start, end, mmio) = known_run(map, addr).ok_or(IdmapError::Unknown(addr))?;
    let block = addr & !(PAGE_2M - 1);
    map_run(
        tables,
        pool,
        (start.max(block), end.min(block + PAGE_2M), mmio),
        shared,
    )
}

/// Maps `(start, end, mmio)`, RAM or MMIO, with the `shared` page in it without the C-bit.
fn map_run(
    tables: &mut PageTables<Identity>,
    pool: &mut Pool,
    (start, end, mmio): (u64, u64, bool),
    shared: Option<(u64, u64)>,
) -> Result<(), IdmapError> {
    for (s, e, leaf) in leaves(start, end, mmio, shared) {
        if s >= e {
            continue;
        }
        if leaf.shared() {
            tables.map_range_shared(pool, s, e, leaf.flags())
        } else {
            tables.map_range(pool, s, e, leaf.flags())
        }
        .map_err(IdmapError::Map)?;
    }
    Ok(())
}

/// The faults handled and the tables used so far.
pub fn stats() -> (usize, usize) {
    with_state(0, |s, pool| (s.faults, pool.used)).unwrap_or((0, 0))
}

/// The run of adjacent regions around `addr` that map alike (all RAM kinds, or MMIO), as
/// (start, end, whether MMIO); `None` when no region contains `addr`.
fn known_run(map: &[MemoryRegion], addr: u64) -> Option<(u64, u64, bool)> {
    let mmio = |r: &MemoryRegion| r.kind == MemoryKind::MMIO;
    let i = map.iter().position(|r| r.start <= addr && addr < r.end())?;
    let f = mmio(&map[i]);
    let mut start = map[i].start;
    for r in map[..i].iter().rev() {
        if r.end() != start || mmio(r) != f {
            break;
        }
        start = r.start;
    }
    let mut end = map[i].end();
    for r in &map[i + 1..] {
        if r.start != end || mmio(r) != f {
            break;
        }
        end = r.end();
    }
    Some((start, end, f))
}
