//! The IGVM launch contract: where `cargo xtask`'s IGVM builder puts things in guest physical
//! memory, and the CPU state a guest launched from that IGVM file starts in. The builder
//! (xtask), the simulator's tests and every IGVM-launched guest (the simulator's test guest,
//! later the stage's IGVM entry) agree on these values through this one module.
//!
//! # Guest physical layout
//! | GPA | what |
//! |---|---|
//! | [`GDT_GPA`] | a GDT: null, 64-bit code ([`CODE_SELECTOR`]), data ([`DATA_SELECTOR`]) |
//! | [`PAGE_TABLES_GPA`] | the launch page tables ([`PAGE_TABLE_PAGES`] pages), see below |
//! | [`PARAM_GPA`] | the parameter area filled by the launcher: [`ParamArea`] |
//! | [`IMAGE_GPA`] | the guest ELF, loaded and relocated to this base, .bss zeroed |
//!
//! Everything the file describes is private (encrypted) memory.
//!
//! # Launch page tables (4-level, the C-bit set on every table pointer)
//! | GVA | GPA | C-bit |
//! |---|---|---|
//! | 0 .. 3 GiB | identity (2 MiB pages) | set: private |
//! | 3 .. 4 GiB | identity (2 MiB pages, PCD/PWT) | clear: shared (MMIO) |
//! | [`SHARED_ALIAS`] + 0 .. 1 GiB | 0 .. 1 GiB (2 MiB pages) | clear: shared |
//!
//! # Entry state (the VMSA of vCPU 0)
//! 64-bit long mode, CPL 0, paging on with CR3 = [`PAGE_TABLES_GPA`] | C-bit, CR0 =
//! [`ENTRY_CR0`], CR4 = [`ENTRY_CR4`], EFER = [`ENTRY_EFER`], GDTR at [`GDT_GPA`], IDTR
//! empty (limit 0: the guest loads its own IDT before anything can raise #VC), RFLAGS = 2
//! (interrupts off), RIP = the ELF entry point, RSP = 0 (the guest sets its own stack),
//! RDI = [`PARAM_GPA`], RSI = the vCPU's index, XCR0 = 1. Every vCPU up to [`MAX_VCPUS`] has
//! this state; an application processor starts in it at its first start-up IPI (INIT, SIPI:
//! SEV-ES state cannot be set by the hypervisor, so the SIPI vector is ignored) and tells
//! itself apart by RSI.

/// The C-bit position the simulator reports (CPUID 0x8000001F EBX[5:0]) and the builder uses
/// for the simulator. Real AMD hosts use 51 (Milan, Genoa).
pub const SIM_C_BIT: u32 = 47;

/// GPA of the launch GDT (one page).
pub const GDT_GPA: u64 = 0x1000;
/// 64-bit code selector in the launch GDT.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data selector in the launch GDT.
pub const DATA_SELECTOR: u16 = 0x10;
/// The launch GDT's descriptors: null, 64-bit code, data.
pub const GDT: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];

/// GPA of the launch PML4; the other tables follow it.
pub const PAGE_TABLES_GPA: u64 = 0x2000;
/// PML4, two PDPTs, four identity PDs (0..4 GiB), one shared-alias PD.
pub const PAGE_TABLE_PAGES: u64 = 8;

/// A page the launch leaves to the guest below 1 MiB for its AP start-up trampoline (a
/// real-mode reset vector can only name such a page).
pub const AP_TRAMPOLINE_GPA: u64 = 0xb000;
/// A page the launch leaves to the guest for its AP jump table.
pub const AP_JUMP_TABLE_GPA: u64 = 0xc000;

// Both pages lie between the launch page tables and the parameter area.
const _: () = assert!(
    PAGE_TABLES_GPA + PAGE_TABLE_PAGES * 4096 <= AP_TRAMPOLINE_GPA
        && AP_TRAMPOLINE_GPA + 4096 <= AP_JUMP_TABLE_GPA
        && AP_JUMP_TABLE_GPA + 4096 <= PARAM_GPA
);

/// GPA of the parameter area ([`ParamArea`]).
pub const PARAM_GPA: u64 = 0x1_0000;
/// Size of the parameter area.
pub const PARAM_AREA_SIZE: u64 = 3 * 4096;
/// Offset of the vCPU count (u32, IGVM VP_COUNT parameter).
pub const PARAM_VP_COUNT_OFFSET: u32 = 0;
/// Offset of the command line (NUL-terminated ASCII, IGVM COMMAND_LINE parameter).
pub const PARAM_CMDLINE_OFFSET: u32 = 0x1000;
/// Maximum command line length including the NUL.
pub const PARAM_CMDLINE_SIZE: usize = 0x1000;
/// Offset of the memory map (IGVM MEMORY_MAP parameter: 24-byte entries, see [`MemoryMapEntry`],
/// ended by an entry with zero pages or by the end of the page).
pub const PARAM_MEMORY_MAP_OFFSET: u32 = 0x2000;
/// Maximum number of memory map entries.
pub const PARAM_MEMORY_MAP_ENTRIES: usize = 4096 / size_of::<MemoryMapEntry>();

/// GPA where the guest ELF is loaded.
pub const IMAGE_GPA: u64 = 0x10_0000;
/// GPA the builder names for the VMSA of vCPU `i`: `VMSA_GPA + i * 4096`, outside guest RAM
/// (SEV-ES keeps VMSAs outside guest memory; the launcher does not write them there).
pub const VMSA_GPA: u64 = 0xfff0_0000;
/// The builder gives every vCPU up to this many the entry state (the launcher uses those its
/// VM has).
pub const MAX_VCPUS: u16 = 16;

/// Where the shared alias of GPA 0 .. 1 GiB starts in the guest's virtual address space.
pub const SHARED_ALIAS: u64 = 0x80_0000_0000;
/// Size of the shared alias window.
pub const SHARED_ALIAS_SIZE: u64 = 1 << 30;

/// CR0 at entry: PG | WP | NE | ET | MP | PE.
pub const ENTRY_CR0: u64 = 0x8001_0033;
/// CR4 at entry: OSXMMEXCPT | OSFXSR | PAE.
pub const ENTRY_CR4: u64 = 0x620;
/// EFER at entry: SVME (required by SEV-ES) | NXE | LMA | LME.
pub const ENTRY_EFER: u64 = 0x1d00;

/// One entry of the IGVM memory map parameter (`IGVM_VHS_MEMORY_MAP_ENTRY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryMapEntry {
    pub starting_gpa_page_number: u64,
    pub number_of_pages: u64,
    /// 0 = memory, 1 = platform reserved, 2 = persistent, 3 = VTL2 protectable.
    pub entry_type: u16,
    pub flags: u16,
    pub reserved: u32,
}

/// `MemoryMapEntry::entry_type` of ordinary RAM.
pub const MEMORY_TYPE_RAM: u16 = 0;

/// The parameter area as the guest sees it at [`PARAM_GPA`].
#[repr(C, align(4096))]
pub struct ParamArea {
    pub vp_count: u32,
    _pad: [u8; PARAM_CMDLINE_OFFSET as usize - 4],
    pub cmdline: [u8; PARAM_CMDLINE_SIZE],
    pub memory_map: [MemoryMapEntry; PARAM_MEMORY_MAP_ENTRIES],
    _tail: [u8; 4096 - PARAM_MEMORY_MAP_ENTRIES * size_of::<MemoryMapEntry>()],
}

impl ParamArea {
    /// The command line up to its first NUL, if it is ASCII.
    pub fn cmdline(&self) -> Option<&str> {
        let len = self.cmdline.iter().position(|&b| b == 0)?;
        let s = &self.cmdline[..len];
        s.is_ascii().then(|| core::str::from_utf8(s).ok())?
    }

    /// The memory map entries before the first empty one.
    pub fn memory_map(&self) -> &[MemoryMapEntry] {
        let n = self
            .memory_map
            .iter()
            .position(|e| e.number_of_pages == 0)
            .unwrap_or(PARAM_MEMORY_MAP_ENTRIES);
        &self.memory_map[..n]
    }
}

const _: () = {
    assert!(size_of::<MemoryMapEntry>() == 24);
    assert!(size_of::<ParamArea>() as u64 == PARAM_AREA_SIZE);
    assert!(core::mem::offset_of!(ParamArea, cmdline) == PARAM_CMDLINE_OFFSET as usize);
    assert!(core::mem::offset_of!(ParamArea, memory_map) == PARAM_MEMORY_MAP_OFFSET as usize);
    assert!(PAGE_TABLES_GPA + PAGE_TABLE_PAGES * 4096 <= PARAM_GPA);
    assert!(PARAM_GPA + PARAM_AREA_SIZE <= IMAGE_GPA);
    assert!(VMSA_GPA + MAX_VCPUS as u64 * 4096 <= 1 << 32);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_and_memory_map_end_where_the_launcher_says() {
        // SAFETY: ParamArea is plain integers; all-zero is a valid value.
        let mut p: ParamArea = unsafe { core::mem::zeroed() };
        assert_eq!(p.cmdline(), Some(""));
        assert!(p.memory_map().is_empty());
        p.cmdline[..7].copy_from_slice(b"test=vc");
        assert_eq!(p.cmdline(), Some("test=vc"));
        p.cmdline = [b'x'; PARAM_CMDLINE_SIZE];
        assert_eq!(p.cmdline(), None, "no NUL: refused");
        p.memory_map[0].number_of_pages = 16;
        p.memory_map[1].number_of_pages = 1;
        assert_eq!(p.memory_map().len(), 2);
    }
}
