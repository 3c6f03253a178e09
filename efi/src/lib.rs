//! The few UEFI boot services the stage uses, over `uefi-raw`'s tables.

use core::ffi::c_void;
use handoff::bootinfo::{BootInfo, MemoryKind, MemoryRegion};
use uefi_raw::protocol::loaded_image::LoadedImageProtocol;
use uefi_raw::table::boot::{AllocateType, BootServices, MemoryDescriptor, MemoryType};
use uefi_raw::table::system::SystemTable;
use uefi_raw::{Guid, Handle, Status, guid};

/// ACPI 2.0+ RSDP configuration table.
const ACPI2_GUID: Guid = guid!("8868e871-e4f1-11d3-bc22-0080c73c8881");
/// ACPI 1.0 RSDP configuration table.
const ACPI1_GUID: Guid = guid!("eb9d2d30-2d88-11d3-9a16-0090273fc14d");
/// SEV-SNP confidential-computing blob.
const CC_BLOB_GUID: Guid = guid!("067b1f5f-cf26-44c5-8554-93d777912d42");

/// A UEFI call that failed, and which one.
#[derive(Debug)]
pub struct EfiError(pub &'static str, pub Status);

/// Where [`Firmware::allocate_pages`] puts an allocation.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    Anywhere,
    /// Ending at or below this address.
    Below(u64),
    /// At exactly this address.
    At(u64),
}

/// The firmware while boot services are still up.
pub struct Firmware {
    image: Handle,
    st: *mut SystemTable,
}

impl Firmware {
    /// # Safety
    /// `image` and `st` are the arguments the firmware passed to the entry point.
    pub unsafe fn new(image: Handle, st: *mut SystemTable) -> Self {
        Self { image, st }
    }

    fn bs(&self) -> &BootServices {
        // SAFETY: the system table and its boot services stay valid until ExitBootServices,
        // which consumes `self`.
        unsafe { &*(*self.st).boot_services }
    }

    /// Allocates `pages` 4 KiB pages of loader data where `place` says.
    pub fn allocate_pages(&self, pages: usize, place: Placement) -> Result<u64, EfiError> {
        let (ty, mut addr) = match place {
            Placement::Anywhere => (AllocateType::ANY_PAGES, 0),
            Placement::Below(max) => (AllocateType::MAX_ADDRESS, max),
            Placement::At(at) => (AllocateType::ADDRESS, at),
        };
        // SAFETY: a plain boot-service call with valid out-pointer.
        let s =
            unsafe { (self.bs().allocate_pages)(ty, MemoryType::LOADER_DATA, pages, &mut addr) };
        if s != Status::SUCCESS {
            return Err(EfiError("AllocatePages", s));
        }
        Ok(addr)
    }

    /// TSC ticks per second, measured across a 1 ms firmware stall (0 if the stall failed).
    pub fn tsc_hz(&self) -> u64 {
        let t0 = x86::tsc::rdtsc();
        // SAFETY: a plain boot-service call.
        let s = unsafe { (self.bs().stall)(1000) };
        if s != Status::SUCCESS {
            return 0;
        }
        (x86::tsc::rdtsc() - t0) * 1000
    }

    /// The physical address of the configuration table with `guid`, if present.
    fn config_table(&self, guid: &Guid) -> Option<u64> {
        // SAFETY: the firmware's configuration table array is valid while boot services are up.
        let st = unsafe { &*self.st };
        (0..st.number_of_configuration_table_entries)
            // SAFETY: index below the entry count.
            .map(|i| unsafe { &*st.configuration_table.add(i) })
            .find(|t| t.vendor_guid == *guid)
            .map(|t| t.vendor_table as u64)
    }

    /// The ACPI RSDP, preferring the 2.0 table.
    pub fn rsdp(&self) -> Option<u64> {
        self.config_table(&ACPI2_GUID)
            .or_else(|| self.config_table(&ACPI1_GUID))
    }

    /// The SEV-SNP CC blob, if the firmware published one.
    pub fn cc_blob(&self) -> Option<u64> {
        self.config_table(&CC_BLOB_GUID)
    }

    /// The LoadedImage protocol instance of the stage's own image.
    fn loaded_image(&self) -> Option<&LoadedImageProtocol> {
        let mut li: *mut c_void = core::ptr::null_mut();
        // SAFETY: HandleProtocol with our own image handle and a valid out-pointer.
        let s =
            unsafe { (self.bs().handle_protocol)(self.image, &LoadedImageProtocol::GUID, &mut li) };
        // SAFETY: on success the firmware returned a LoadedImage protocol instance for our image,
        // valid while boot services are up.
        (s == Status::SUCCESS && !li.is_null())
            .then(|| unsafe { &*(li as *const LoadedImageProtocol) })
    }

    /// Where the firmware loaded the stage (physical start, end), for its own page tables. The
    /// linker's `__image_base` cannot say: it is an absolute 0 in the static PIE.
    pub fn image_span(&self) -> Result<(u64, u64), EfiError> {
        let li = self
            .loaded_image()
            .ok_or(EfiError("HandleProtocol(LoadedImage)", Status::NOT_FOUND))?;
        Ok((li.image_base as u64, li.image_base as u64 + li.image_size))
    }

    /// Copies the image's load options (UCS-2) into `out` as ASCII, returning the length.
    /// Non-ASCII characters become '?'; the string ends at the first NUL.
    pub fn load_options(&self, out: &mut [u8]) -> usize {
        let Some(li) = self.loaded_image() else {
            return 0;
        };
        let units = li.load_options_size as usize / 2;
        let opts = li.load_options as *const u16;
        let mut n = 0;
        for i in 0..units.min(out.len()) {
            // SAFETY: i < load_options_size / 2, inside the firmware's buffer.
            let c = unsafe { opts.add(i).read_unaligned() };
            if c == 0 {
                break;
            }
            out[n] = if c < 0x80 { c as u8 } else { b'?' };
            n += 1;
        }
        n
    }

    /// Takes the memory map into `info` and exits boot services, retrying when the map changed
    /// between the two calls (the firmware may allocate in between).
    pub fn exit_boot_services(self, info: &mut BootInfo) -> Result<(), EfiError> {
        const BUF_PAGES: usize = 8;
        let buf = self.allocate_pages(BUF_PAGES, Placement::Anywhere)? as *mut MemoryDescriptor;
        for _ in 0..4 {
            let (mut size, mut key, mut dsize, mut ver) = (BUF_PAGES * 4096, 0usize, 0usize, 0u32);
            // SAFETY: the buffer is BUF_PAGES pages of loader data we own.
            let s = unsafe {
                (self.bs().get_memory_map)(&mut size, buf, &mut key, &mut dsize, &mut ver)
            };
            if s != Status::SUCCESS {
                return Err(EfiError("GetMemoryMap", s));
            }
            // SAFETY: same; `key` identifies this map. No boot service runs after this on success.
            let s = unsafe { (self.bs().exit_boot_services)(self.image, key) };
            if s == Status::SUCCESS {
                convert_map(buf as *const u8, size, dsize, info);
                return Ok(());
            }
            if s != Status::INVALID_PARAMETER {
                return Err(EfiError("ExitBootServices", s));
            }
        }
        Err(EfiError(
            "ExitBootServices (map kept changing)",
            Status::INVALID_PARAMETER,
        ))
    }
}

/// Converts the firmware's descriptors into the kernel's sorted, merged memory map.
fn convert_map(buf: *const u8, size: usize, dsize: usize, info: &mut BootInfo) {
    let mut descs: [(u64, u64, MemoryKind); handoff::bootinfo::MAX_MEMORY_REGIONS] =
        [(0, 0, MemoryKind::RESERVED); handoff::bootinfo::MAX_MEMORY_REGIONS];
    let mut n = 0;
    for i in 0..size / dsize {
        // SAFETY: i * dsize + size_of(descriptor) <= size: inside the map GetMemoryMap filled.
        let d = unsafe { (buf.add(i * dsize) as *const MemoryDescriptor).read_unaligned() };
        let kind = match d.ty {
            MemoryType::CONVENTIONAL
            | MemoryType::BOOT_SERVICES_CODE
            | MemoryType::BOOT_SERVICES_DATA => MemoryKind::USABLE,
            MemoryType::LOADER_CODE | MemoryType::LOADER_DATA => MemoryKind::BOOTLOADER,
            MemoryType::ACPI_RECLAIM => MemoryKind::ACPI_RECLAIMABLE,
            MemoryType::ACPI_NON_VOLATILE => MemoryKind::ACPI_NVS,
            MemoryType::MMIO | MemoryType::MMIO_PORT_SPACE => MemoryKind::MMIO,
            MemoryType::RUNTIME_SERVICES_CODE | MemoryType::RUNTIME_SERVICES_DATA => {
                MemoryKind::FIRMWARE_RUNTIME
            }
            _ => MemoryKind::RESERVED,
        };
        if n < descs.len() && d.page_count != 0 {
            descs[n] = (d.phys_start, d.page_count * 4096, kind);
            n += 1;
        }
    }
    descs[..n].sort_unstable_by_key(|d| d.0);
    for &(start, len, kind) in &descs[..n] {
        info.push_region(MemoryRegion {
            start,
            len,
            kind,
            _reserved: 0,
        });
    }
}
