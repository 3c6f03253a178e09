//! From the IGVM parameter area (`handoff::launch::ParamArea`, filled by the launcher: hostile
//! input) to the kernel's `BootInfo`: the command line, and the memory map with the places the
//! stage picks for the kernel image and its decompression buffer.
//!
//! The launcher's memory map is checked (entries in address order, not overlapping, within the
//! physical address space); RAM entries become usable regions except the stage itself (launch
//! GDT, page tables, parameter area and image: everything below the stage's end) and the kernel
//! image, which become bootloader regions. Other entries become reserved regions. The
//! decompression buffer stays usable: nothing needs it once the kernel runs.

use core::fmt;
use handoff::bootinfo::{BootInfo, KERNEL_PREFERRED_BASE, MAX_CMDLINE, MemoryKind, MemoryRegion};
use handoff::launch::{MEMORY_TYPE_RAM, MemoryMapEntry, ParamArea};
use handoff::payload::Header;

const PAGE: u64 = 4096;
/// The end of the launch tables' private identity map: the kernel must lie below it.
const PRIVATE_END: u64 = 3 << 30;
/// The end of the physical address space (52 bits).
const PHYS_END: u64 = 1 << 52;

/// Why the launch parameters cannot start the kernel.
#[derive(Debug)]
pub enum LaunchError {
    /// The command line is not NUL-terminated ASCII.
    Cmdline,
    /// The command line is longer than the `BootInfo` holds.
    CmdlineTooLong(usize),
    /// Memory map entry `index` leaves the physical address space.
    MapEntryOutOfRange(usize),
    /// Memory map entry `index` starts below the end of the previous one.
    MapOrder(usize),
    /// The memory map has more regions than the `BootInfo` holds.
    MapFull,
    /// No RAM below 3 GiB above the stage holds this many bytes for the kernel.
    NoRoom(u64),
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cmdline => write!(f, "the command line is not NUL-terminated ASCII"),
            Self::CmdlineTooLong(n) => {
                write!(
                    f,
                    "the command line has {n} bytes, at most {MAX_CMDLINE} fit"
                )
            }
            Self::MapEntryOutOfRange(i) => {
                write!(f, "memory map entry {i} leaves the physical address space")
            }
            Self::MapOrder(i) => {
                write!(
                    f,
                    "memory map entry {i} overlaps or precedes the one before it"
                )
            }
            Self::MapFull => write!(f, "the memory map has more regions than the BootInfo holds"),
            Self::NoRoom(n) => write!(
                f,
                "no RAM below {PRIVATE_END:#x} above the stage holds the kernel ({n} bytes)"
            ),
        }
    }
}

/// Where the kernel goes: its image, then its decompression buffer.
pub struct Placement {
    pub image: u64,
    pub elf: u64,
}

/// One checked memory map entry: `start .. end`, RAM or not.
#[derive(Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
    ram: bool,
}

/// Fills `info`'s command line and memory map from `params` for a stage ending at `stage_end`
/// and a kernel described by `header`; returns where the kernel goes.
pub fn fill(
    info: &mut BootInfo,
    params: &ParamArea,
    stage_end: u64,
    header: &Header,
) -> Result<Placement, LaunchError> {
    let line = params.cmdline().ok_or(LaunchError::Cmdline)?;
    if line.len() > MAX_CMDLINE {
        return Err(LaunchError::CmdlineTooLong(line.len()));
    }
    info.set_cmdline(line);

    let entries = params.memory_map();
    let mut ranges = [Range {
        start: 0,
        end: 0,
        ram: false,
    }; handoff::launch::PARAM_MEMORY_MAP_ENTRIES];
    let mut prev_end = 0;
    for (i, e) in entries.iter().enumerate() {
        let r = check(e).ok_or(LaunchError::MapEntryOutOfRange(i))?;
        if r.start < prev_end {
            return Err(LaunchError::MapOrder(i));
        }
        prev_end = r.end;
        ranges[i] = r;
    }
    let ranges = &ranges[..entries.len()];

    let image_len = header.image_span.next_multiple_of(PAGE);
    let need = image_len + header.uncompressed_len.next_multiple_of(PAGE);
    let stage_end = stage_end.next_multiple_of(PAGE);
    let base = place(ranges, stage_end, need).ok_or(LaunchError::NoRoom(need))?;

    let taken = [(0, stage_end), (base, base + image_len)];
    for r in ranges {
        if !r.ram {
            push(info, r.start, r.end, MemoryKind::RESERVED)?;
            continue;
        }
        let mut at = r.start;
        for &(t_start, t_end) in &taken {
            let (s, e) = (t_start.clamp(at, r.end), t_end.clamp(at, r.end));
            push(info, at, s, MemoryKind::USABLE)?;
            push(info, s, e, MemoryKind::BOOTLOADER)?;
            at = e;
        }
        push(info, at, r.end, MemoryKind::USABLE)?;
    }
    Ok(Placement {
        image: base,
        elf: base + image_len,
    })
}

/// The entry as a byte range, if it stays within the physical address space.
fn check(e: &MemoryMapEntry) -> Option<Range> {
    let start = e.starting_gpa_page_number.checked_mul(PAGE)?;
    let end = start.checked_add(e.number_of_pages.checked_mul(PAGE)?)?;
    (end <= PHYS_END).then_some(Range {
        start,
        end,
        ram: e.entry_type == MEMORY_TYPE_RAM,
    })
}

/// Where `need` bytes of RAM at or above `floor` and below the private map's end start: the
/// kernel's preferred base when it fits (debuggers know that address), else the lowest fit.
fn place(ranges: &[Range], floor: u64, need: u64) -> Option<u64> {
    let fits = |base: u64| {
        let end = base.checked_add(need)?;
        (base >= floor
            && end <= PRIVATE_END
            && ranges
                .iter()
                .any(|r| r.ram && r.start <= base && end <= r.end))
        .then_some(base)
    };
    fits(KERNEL_PREFERRED_BASE).or_else(|| {
        ranges
            .iter()
            .filter(|r| r.ram)
            .find_map(|r| fits(r.start.max(floor).next_multiple_of(PAGE)))
    })
}

/// Appends `start .. end` (nothing if empty) as `kind`.
fn push(info: &mut BootInfo, start: u64, end: u64, kind: MemoryKind) -> Result<(), LaunchError> {
    if start >= end {
        return Ok(());
    }
    let region = MemoryRegion {
        start,
        len: end - start,
        kind,
        _reserved: 0,
    };
    if info.push_region(region) {
        Ok(())
    } else {
        Err(LaunchError::MapFull)
    }
}
