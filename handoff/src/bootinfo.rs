//! `BootInfo`: what the stage tells the kernel, at a stable, versioned layout.
//!
//! The kernel's entry point is called with the System V ABI as `entry(boot_info: *const BootInfo)`,
//! interrupts disabled, on the stage's identity-mapped page tables, which map at least the kernel
//! image and this structure. The kernel checks [`BootInfo::validate`] before using any field.
//! Version history: 1 — first layout; 2 — the SEV fields (`sev_status`, `c_bit`, `vp_count`),
//! which the EFI entry leaves at "none" and the IGVM entry fills; 3 — `ap_jump_table`.

/// "SEVBOOT" followed by a zero byte, little endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SEVBOOT\0");
/// Layout version; bumped on every incompatible change.
pub const VERSION: u32 = 3;
/// Where the stage loads the kernel when that memory is free (it is under OVMF/QEMU), so that
/// `cargo xtask run --gdb` can name the symbol offset in advance. Below 4 GiB, as required.
pub const KERNEL_PREFERRED_BASE: u64 = 0x400_0000;
/// SEV_STATUS bit 1: SEV-ES is active.
pub const SEV_STATUS_ES: u64 = 1 << 1;
/// Capacity of the memory map.
pub const MAX_MEMORY_REGIONS: usize = 256;
/// Capacity of the command line, in bytes.
pub const MAX_CMDLINE: usize = 1024;

/// Kind of a physical memory region (an open set: unknown values are treated as reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct MemoryKind(pub u32);

impl MemoryKind {
    /// Free RAM the kernel may allocate from.
    pub const USABLE: Self = Self(1);
    /// Not to be touched.
    pub const RESERVED: Self = Self(2);
    /// ACPI tables; reusable once parsed.
    pub const ACPI_RECLAIMABLE: Self = Self(3);
    /// ACPI NVS: firmware-owned.
    pub const ACPI_NVS: Self = Self(4);
    /// Memory-mapped I/O the firmware reported.
    pub const MMIO: Self = Self(5);
    /// Loaded by or for the stage: the kernel image, this structure, the AP trampoline page.
    pub const BOOTLOADER: Self = Self(6);
    /// Runtime-services memory: must stay mapped and untouched.
    pub const FIRMWARE_RUNTIME: Self = Self(7);
}

/// One physical memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: MemoryKind,
    pub _reserved: u32,
}

impl MemoryRegion {
    pub const EMPTY: Self = Self {
        start: 0,
        len: 0,
        kind: MemoryKind::RESERVED,
        _reserved: 0,
    };

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// TSC readings at the stage's milestones, for `cargo xtask bench boot`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Timestamps {
    pub efi_entry: u64,
    pub exit_boot_services: u64,
    pub decompressed: u64,
    pub kernel_entry: u64,
}

/// The stage's page-table state at hand-over.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct PageTableState {
    /// CR3 at hand-over.
    pub cr3: u64,
    /// The stage's page-table pool (physical start, length); reclaimable once the kernel runs on
    /// its own tables.
    pub pool_start: u64,
    pub pool_len: u64,
}

/// The structure handed to the kernel.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    /// `size_of::<BootInfo>()` as the stage knew it.
    pub size: u32,
    pub memory_map_len: u32,
    pub cmdline_len: u32,
    pub memory_map: [MemoryRegion; MAX_MEMORY_REGIONS],
    pub cmdline: [u8; MAX_CMDLINE],
    /// ACPI RSDP (physical), 0 if the firmware had none.
    pub rsdp: u64,
    /// SEV-SNP confidential-computing blob (physical), 0 if absent.
    pub cc_blob: u64,
    /// Where the kernel image was loaded (physical start, length).
    pub kernel_start: u64,
    pub kernel_len: u64,
    /// A 4 KiB page below 1 MiB reserved for the AP start-up trampoline, 0 if none was found.
    pub ap_trampoline: u64,
    /// TSC ticks per second, measured by the stage against a firmware stall; 0 if unknown.
    pub tsc_hz: u64,
    pub page_tables: PageTableState,
    pub timestamps: Timestamps,
    /// The SEV_STATUS MSR as the stage read it; 0 when the guest is not an SEV guest (the EFI
    /// entry, which runs without SEV).
    pub sev_status: u64,
    /// The C-bit as an address mask (the encryption bit of private page-table entries); 0
    /// without SEV.
    pub c_bit: u64,
    /// The number of vCPUs the launcher started the guest with (IGVM VP_COUNT); 0 when the
    /// ACPI tables say (the EFI entry).
    pub vp_count: u32,
    pub _reserved: u32,
    /// Under SEV-ES: a 4 KiB page below 4 GiB reserved for the AP jump table (its reset vector
    /// and the code that parks APs, `sev::guest::ApJumpTable`), on which the launch's APs park
    /// until the kernel wakes them; 0 without SEV-ES.
    pub ap_jump_table: u64,
}

/// Why the kernel refused a `BootInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    BadMagic,
    Version(u32),
    Size(u32),
    Bounds,
}

impl BootInfo {
    /// An empty structure with the header filled in.
    pub const fn new() -> Self {
        Self {
            magic: MAGIC,
            version: VERSION,
            size: core::mem::size_of::<Self>() as u32,
            memory_map_len: 0,
            cmdline_len: 0,
            memory_map: [MemoryRegion::EMPTY; MAX_MEMORY_REGIONS],
            cmdline: [0; MAX_CMDLINE],
            rsdp: 0,
            cc_blob: 0,
            kernel_start: 0,
            kernel_len: 0,
            ap_trampoline: 0,
            tsc_hz: 0,
            page_tables: PageTableState {
                cr3: 0,
                pool_start: 0,
                pool_len: 0,
            },
            timestamps: Timestamps {
                efi_entry: 0,
                exit_boot_services: 0,
                decompressed: 0,
                kernel_entry: 0,
            },
            sev_status: 0,
            c_bit: 0,
            vp_count: 0,
            _reserved: 0,
            ap_jump_table: 0,
        }
    }

    /// Whether the guest runs under SEV-ES (SEV_STATUS bit 1): every intercept is a #VC, memory
    /// is private unless mapped without [`c_bit`](Self::c_bit), and there are no ACPI tables.
    pub fn sev_es(&self) -> bool {
        self.sev_status & SEV_STATUS_ES != 0
    }

    /// Checks the header and the lengths, so that the accessors below cannot go out of bounds.
    pub fn validate(&self) -> Result<(), BootInfoError> {
        if self.magic != MAGIC {
            return Err(BootInfoError::BadMagic);
        }
        if self.version != VERSION {
            return Err(BootInfoError::Version(self.version));
        }
        if self.size as usize != core::mem::size_of::<Self>() {
            return Err(BootInfoError::Size(self.size));
        }
        if self.memory_map_len as usize > MAX_MEMORY_REGIONS
            || self.cmdline_len as usize > MAX_CMDLINE
        {
            return Err(BootInfoError::Bounds);
        }
        Ok(())
    }

    /// The memory map, sorted by start address.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.memory_map[..(self.memory_map_len as usize).min(MAX_MEMORY_REGIONS)]
    }

    /// The command line; invalid UTF-8 yields an empty line.
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..(self.cmdline_len as usize).min(MAX_CMDLINE)])
            .unwrap_or("")
    }

    /// Appends a region, merging it with the previous one when adjacent and of the same kind.
    /// Returns false when the map is full.
    pub fn push_region(&mut self, region: MemoryRegion) -> bool {
        let n = self.memory_map_len as usize;
        if let Some(last) = n.checked_sub(1).map(|i| &mut self.memory_map[i])
            && last.kind == region.kind
            && last.end() == region.start
        {
            last.len += region.len;
            return true;
        }
        if n == MAX_MEMORY_REGIONS {
            return false;
        }
        self.memory_map[n] = region;
        self.memory_map_len += 1;
        true
    }

    /// Whether the 4 KiB page at `gpa` lies in memory the firmware keeps for itself (reserved,
    /// ACPI NVS or runtime-services memory), below 4 GiB: where an SEV-ES firmware's AP jump
    /// table may be. The hypervisor names that page (AP_JUMP_TABLE GET), so the kernel writes
    /// to it only after this check: never into RAM it uses, the kernel, the stage's memory or
    /// a device.
    pub fn is_firmware_page(&self, gpa: u64) -> bool {
        const FIRMWARE: [MemoryKind; 3] = [
            MemoryKind::RESERVED,
            MemoryKind::ACPI_NVS,
            MemoryKind::FIRMWARE_RUNTIME,
        ];
        gpa != 0
            && gpa.is_multiple_of(4096)
            && gpa < 1 << 32
            && self
                .memory_map()
                .iter()
                .any(|r| FIRMWARE.contains(&r.kind) && r.start <= gpa && gpa + 4096 <= r.end())
    }

    /// Sets the command line, truncated to [`MAX_CMDLINE`] at a character boundary.
    pub fn set_cmdline(&mut self, s: &str) {
        let mut n = s.len().min(MAX_CMDLINE);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.cmdline[..n].copy_from_slice(&s.as_bytes()[..n]);
        self.cmdline_len = n as u32;
    }
}

impl Default for BootInfo {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_firmware_pages_below_4_gib_pass_as_a_firmware_jump_table() {
        let mut b = Box::new(BootInfo::new());
        for (start, len, kind) in [
            (0, 0x9_f000, MemoryKind::USABLE),
            (0x9_f000, 0x1000, MemoryKind::RESERVED),
            (0x10_0000, 0x10_0000, MemoryKind::BOOTLOADER),
            (0x7f00_0000, 0x4000, MemoryKind::ACPI_NVS),
            (0x7f00_4000, 0x2000, MemoryKind::FIRMWARE_RUNTIME),
            (0xfee0_0000, 0x1000, MemoryKind::MMIO),
            (0x1_0000_0000, 0x1000, MemoryKind::RESERVED),
        ] {
            assert!(b.push_region(MemoryRegion {
                start,
                len,
                kind,
                _reserved: 0
            }));
        }
        for ok in [0x9_f000, 0x7f00_0000, 0x7f00_3000, 0x7f00_5000] {
            assert!(b.is_firmware_page(ok), "{ok:#x}");
        }
        for bad in [
            0,             // page 0
            0x1000,        // usable RAM
            0x9_f800,      // not page-aligned
            0x10_0000,     // the stage's memory
            0xfee0_0000,   // a device
            0x7f00_6000,   // past the runtime region
            0x1_0000_0000, // reserved, but above 4 GiB
            0x2_0000_0000, // not in the map
        ] {
            assert!(!b.is_firmware_page(bad), "{bad:#x}");
        }
    }

    #[test]
    fn regions_merge_and_validate() {
        let mut b = Box::new(BootInfo::new());
        assert_eq!(b.validate(), Ok(()));
        assert!(b.push_region(MemoryRegion {
            start: 0,
            len: 0x1000,
            kind: MemoryKind::USABLE,
            _reserved: 0
        }));
        assert!(b.push_region(MemoryRegion {
            start: 0x1000,
            len: 0x1000,
            kind: MemoryKind::USABLE,
            _reserved: 0
        }));
        assert!(b.push_region(MemoryRegion {
            start: 0x3000,
            len: 0x1000,
            kind: MemoryKind::USABLE,
            _reserved: 0
        }));
        assert_eq!(b.memory_map().len(), 2);
        assert_eq!(b.memory_map()[0].len, 0x2000);
        b.set_cmdline("test=all log=debug");
        assert_eq!(b.cmdline(), "test=all log=debug");
        assert!(!b.sev_es(), "a new BootInfo says: no SEV");
        b.sev_status = 0b11;
        assert!(b.sev_es());
        b.memory_map_len = 1000;
        assert_eq!(b.validate(), Err(BootInfoError::Bounds));
        b.memory_map_len = 0;
        b.version = 9;
        assert_eq!(b.validate(), Err(BootInfoError::Version(9)));
    }
}
