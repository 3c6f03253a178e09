//! The few UEFI boot services our EFI applications use, over `uefi-raw`'s tables.
//!
//! Both the decompressor stage (`boot/`) and the simulator (`sim/`) are EFI applications that
//! collect what they need from the firmware and then exit boot services; this crate is the one
//! place that talks to the firmware for them, so both get the same checks.
#![cfg_attr(not(test), no_std)]

use core::ffi::c_void;
use core::mem::offset_of;
use core::ptr::{null, null_mut};
use handoff::bootinfo::{BootInfo, MemoryKind, MemoryRegion};
use uefi_raw::protocol::file_system::{
    FileAttribute, FileInfo, FileMode, FileProtocolV1, SimpleFileSystemProtocol,
};
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
/// EFI_MP_SERVICES_PROTOCOL (UEFI PI specification, volume 2, "MP Services Protocol").
const MP_SERVICES_GUID: Guid = guid!("3fdda605-a76e-4f46-ad29-12f4531b3d08");
/// More processors than any firmware reports: bounds the GetProcessorInfo loop.
const MAX_PROCESSORS: usize = 1 << 16;

/// A UEFI call that failed, and which one. Checks of what a call returned are reported as that
/// call failing, with the status that describes the problem (e.g. `Read (short)`).
#[derive(Debug)]
pub struct EfiError(pub &'static str, pub Status);

impl core::fmt::Display for EfiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "firmware call {} failed: {:?}", self.0, self.1)
    }
}

/// The longest path [`Firmware::read_file`] accepts, in characters (without the NUL).
pub const MAX_PATH: usize = 255;

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

    /// TSC ticks per second, measured across a firmware stall of `stall_us` microseconds (0 if
    /// the stall failed or `stall_us` is 0). The stall's own overhead counts as time, so the
    /// estimate runs high by roughly that overhead over `stall_us`: under QEMU's TCG a 1 ms
    /// stall reads 15-25 % fast, a 20 ms one about 1 %.
    pub fn tsc_hz(&self, stall_us: u64) -> u64 {
        if stall_us == 0 {
            return 0;
        }
        let t0 = rdtsc();
        // SAFETY: a plain boot-service call.
        let s = unsafe { (self.bs().stall)(stall_us as usize) };
        if s != Status::SUCCESS {
            return 0;
        }
        (rdtsc() - t0) * 1_000_000 / stall_us
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

    /// The local APIC IDs of the enabled processors, the boot (calling) processor first, from
    /// the firmware's MP Services protocol: what starting the other processors needs, without
    /// parsing ACPI tables. Returns how many IDs were written to `out`.
    ///
    /// The PI specification requires the protocol on every system with more than one logical
    /// processor (OVMF always installs it), so `LocateProtocol(MpServices)` failing with
    /// `NOT_FOUND` means the running processor is the only one. What the firmware reports is
    /// checked: one boot processor, distinct IDs that fit 32 bits, as many enabled processors
    /// as it counted, no more than `out` holds (else `BUFFER_TOO_SMALL`).
    pub fn processors(&self, out: &mut [u32]) -> Result<usize, EfiError> {
        let mut mp: *mut c_void = null_mut();
        // SAFETY: LocateProtocol with a GUID, no registration and a valid out-pointer.
        let s = unsafe { (self.bs().locate_protocol)(&MP_SERVICES_GUID, null(), &mut mp) };
        if s != Status::SUCCESS {
            return Err(EfiError("LocateProtocol(MpServices)", s));
        }
        if mp.is_null() {
            return Err(EfiError(
                "LocateProtocol(MpServices) (no instance)",
                Status::NOT_FOUND,
            ));
        }
        let mp = mp.cast::<MpServices>();
        let (mut total, mut enabled) = (0usize, 0usize);
        // SAFETY: `mp` is the protocol instance the firmware returned, valid while boot services
        // are up; we run on the boot processor; both out-pointers are valid.
        let s = unsafe { ((*mp).get_number_of_processors)(mp, &mut total, &mut enabled) };
        if s != Status::SUCCESS {
            return Err(EfiError("GetNumberOfProcessors", s));
        }
        collect_processors(total, enabled, out, |i| {
            let mut info = ProcessorInformation::default();
            // SAFETY: as above; `info` is large enough for the PI 1.7 layout with the extended
            // information, which the firmware fills only when asked for it.
            let s = unsafe { ((*mp).get_processor_info)(mp, i, &mut info) };
            (s == Status::SUCCESS).then_some(info).ok_or(s)
        })
    }

    /// The LoadedImage protocol instance of the running image.
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

    /// Where the firmware loaded the running image (physical start, end), for its own page
    /// tables. The linker's `__image_base` cannot say: it is an absolute 0 in the static PIE.
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

    /// Reads the file at `path` on the volume the running image was loaded from (the boot
    /// disk's ESP), so an EFI application can take its inputs from the files next to it.
    ///
    /// `path` is printable ASCII, relative to the volume's root; '/' is accepted for '\\'.
    /// Returns `Ok(None)` when the file does not exist. The contents go to fresh loader-data
    /// pages, which the firmware's memory map (and so [`BootInfo`]) keeps reporting as
    /// bootloader memory after ExitBootServices, hence `'static`. The size the file system
    /// reports is input like any other: it is checked against `max_len` before anything is
    /// allocated, and every Read against what was asked.
    pub fn read_file(&self, path: &str, max_len: usize) -> Result<Option<&'static [u8]>, EfiError> {
        let name = ucs2_path(path)?;
        let Some(file) = self.boot_volume()?.open(&name)? else {
            return Ok(None);
        };
        let size = file.size()?;
        if size > max_len as u64 {
            return Err(EfiError(
                "GetInfo (file larger than the limit)",
                Status::BAD_BUFFER_SIZE,
            ));
        }
        let len = size as usize;
        if len == 0 {
            return Ok(Some(&[]));
        }
        let pages = len.div_ceil(4096);
        let addr = self.allocate_pages(pages, Placement::Anywhere)?;
        // SAFETY: freshly allocated loader-data pages, at least `len` bytes, ours alone from now
        // on and never freed on success.
        let buf = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) };
        if let Err(e) = file.read_exact(buf) {
            // SAFETY: the pages allocated above; `buf` is not used after this. A failure to free
            // only leaks them, and the read error is the one worth reporting.
            let _ = unsafe { (self.bs().free_pages)(addr, pages) };
            return Err(e);
        }
        Ok(Some(buf))
    }

    /// The root directory of the file system on the device the running image was loaded from.
    fn boot_volume(&self) -> Result<File, EfiError> {
        let li = self
            .loaded_image()
            .ok_or(EfiError("HandleProtocol(LoadedImage)", Status::NOT_FOUND))?;
        let mut fs: *mut c_void = null_mut();
        // SAFETY: HandleProtocol with the firmware's own device handle and a valid out-pointer.
        let s = unsafe {
            (self.bs().handle_protocol)(li.device_handle, &SimpleFileSystemProtocol::GUID, &mut fs)
        };
        if s != Status::SUCCESS {
            return Err(EfiError("HandleProtocol(SimpleFileSystem)", s));
        }
        if fs.is_null() {
            return Err(EfiError(
                "HandleProtocol(SimpleFileSystem) (no instance)",
                Status::NOT_FOUND,
            ));
        }
        let fs = fs.cast::<SimpleFileSystemProtocol>();
        let mut root = null_mut();
        // SAFETY: `fs` is the SimpleFileSystem instance the firmware returned, valid while boot
        // services are up; `root` is a valid out-pointer.
        let s = unsafe { ((*fs).open_volume)(fs, &mut root) };
        File::opened("OpenVolume", s, root)
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

/// The start of EFI_MP_SERVICES_PROTOCOL: the two calls [`Firmware::processors`] makes (the
/// firmware's table goes on with StartupAllAPs and others, never touched through this view).
#[repr(C)]
struct MpServices {
    get_number_of_processors:
        unsafe extern "efiapi" fn(*mut MpServices, *mut usize, *mut usize) -> Status,
    get_processor_info:
        unsafe extern "efiapi" fn(*mut MpServices, usize, *mut ProcessorInformation) -> Status,
}

/// EFI_PROCESSOR_INFORMATION, with the PI 1.7 extended location at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct ProcessorInformation {
    /// The local APIC ID on x86.
    processor_id: u64,
    status_flag: u32,
    location: [u32; 3],
    extended_location: [u32; 6],
}

/// StatusFlag: this is the boot processor.
const PROCESSOR_AS_BSP: u32 = 1 << 0;
/// StatusFlag: the processor is enabled.
const PROCESSOR_ENABLED: u32 = 1 << 1;

/// Writes the APIC IDs of the enabled processors among the `total` that `info` describes to
/// `out`, boot processor first, checking what the firmware said (see [`Firmware::processors`]).
fn collect_processors(
    total: usize,
    enabled: usize,
    out: &mut [u32],
    mut info: impl FnMut(usize) -> Result<ProcessorInformation, Status>,
) -> Result<usize, EfiError> {
    if total > MAX_PROCESSORS || enabled == 0 || enabled > total {
        return Err(EfiError(
            "GetNumberOfProcessors (implausible count)",
            Status::DEVICE_ERROR,
        ));
    }
    if enabled > out.len() {
        return Err(EfiError(
            "GetNumberOfProcessors (more processors than room)",
            Status::BUFFER_TOO_SMALL,
        ));
    }
    // Slot 0 is kept for the boot processor; the others follow in the firmware's order.
    let (mut n, mut bsp) = (1, None);
    for i in 0..total {
        let p = info(i).map_err(|s| EfiError("GetProcessorInfo", s))?;
        if p.status_flag & PROCESSOR_ENABLED == 0 {
            continue;
        }
        let bad = |what| Err(EfiError(what, Status::DEVICE_ERROR));
        let Ok(id) = u32::try_from(p.processor_id) else {
            return bad("GetProcessorInfo (APIC ID above 32 bits)");
        };
        if bsp == Some(id) || out[1..n].contains(&id) {
            return bad("GetProcessorInfo (two processors with one APIC ID)");
        }
        if p.status_flag & PROCESSOR_AS_BSP != 0 {
            if bsp.is_some() {
                return bad("GetProcessorInfo (two boot processors)");
            }
            bsp = Some(id);
        } else {
            if n == enabled {
                return bad("GetProcessorInfo (more enabled processors than counted)");
            }
            out[n] = id;
            n += 1;
        }
    }
    let Some(bsp) = bsp else {
        return Err(EfiError(
            "GetProcessorInfo (no enabled boot processor)",
            Status::DEVICE_ERROR,
        ));
    };
    if n != enabled {
        return Err(EfiError(
            "GetProcessorInfo (fewer enabled processors than counted)",
            Status::DEVICE_ERROR,
        ));
    }
    out[0] = bsp;
    Ok(n)
}

/// Reads the TSC. The intrinsic, not `x86::tsc`: depending on the `x86` crate would link its
/// freestanding runtime (`rust_eh_personality`) into this crate's host test binary whenever a
/// workspace-wide build turns on `x86/rt`, clashing with std's.
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (neither the firmware nor our applications set CR4.TSD).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// `path` as the NUL-terminated UCS-2 name File.Open takes, with '/' turned into '\\'.
fn ucs2_path(path: &str) -> Result<[u16; MAX_PATH + 1], EfiError> {
    if path.is_empty() || path.len() > MAX_PATH || !path.bytes().all(|c| (0x20..0x7f).contains(&c))
    {
        return Err(EfiError(
            "Open (path empty, too long or not printable ASCII)",
            Status::INVALID_PARAMETER,
        ));
    }
    let mut name = [0u16; MAX_PATH + 1];
    for (n, c) in name.iter_mut().zip(path.bytes()) {
        *n = u16::from(if c == b'/' { b'\\' } else { c });
    }
    Ok(name)
}

/// An open file or directory of a SimpleFileSystem. Closed when dropped, so that every error
/// path releases it. Only lives inside [`Firmware::read_file`], i.e. while boot services are up.
struct File(*mut FileProtocolV1);

impl File {
    /// Wraps the handle `call` returned with status `s`.
    fn opened(
        call: &'static str,
        s: Status,
        handle: *mut FileProtocolV1,
    ) -> Result<Self, EfiError> {
        if s != Status::SUCCESS {
            return Err(EfiError(call, s));
        }
        if handle.is_null() {
            return Err(EfiError(call, Status::DEVICE_ERROR));
        }
        Ok(Self(handle))
    }

    fn protocol(&self) -> &FileProtocolV1 {
        // SAFETY: a non-null handle the firmware opened, valid until we close it in `drop`.
        unsafe { &*self.0 }
    }

    /// Opens `name` (NUL-terminated UCS-2, relative to this directory) read-only; `None` when
    /// it does not exist.
    fn open(&self, name: &[u16; MAX_PATH + 1]) -> Result<Option<Self>, EfiError> {
        let mut handle = null_mut();
        // SAFETY: an open directory handle, a NUL-terminated name (`ucs2_path` leaves at least
        // the last element 0) and a valid out-pointer.
        let s = unsafe {
            (self.protocol().open)(
                self.0,
                &mut handle,
                name.as_ptr(),
                FileMode::READ,
                FileAttribute::empty(),
            )
        };
        if s == Status::NOT_FOUND {
            return Ok(None);
        }
        Self::opened("Open", s, handle).map(Some)
    }

    /// The file's size from its EFI_FILE_INFO; a directory is an error (reading one would
    /// return directory entries, not contents).
    fn size(&self) -> Result<u64, EfiError> {
        // EFI_FILE_INFO with a name of up to 255 characters and its NUL, FAT's longest name.
        const INFO_LEN: usize = size_of::<FileInfo>() + 2 * 256;
        let mut info = [0u8; INFO_LEN];
        let mut len = INFO_LEN;
        // SAFETY: an open file handle, the FileInfo GUID, and a buffer of `len` bytes. The fields
        // are read below as plain bytes, so the buffer's alignment does not matter.
        let s = unsafe {
            (self.protocol().get_info)(self.0, &FileInfo::ID, &mut len, info.as_mut_ptr().cast())
        };
        if s != Status::SUCCESS {
            return Err(EfiError("GetInfo", s));
        }
        if !(size_of::<FileInfo>()..=INFO_LEN).contains(&len) {
            return Err(EfiError("GetInfo (bad length)", Status::BAD_BUFFER_SIZE));
        }
        let field = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&info[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let attribute = FileAttribute::from_bits_retain(field(offset_of!(FileInfo, attribute)));
        if attribute.contains(FileAttribute::DIRECTORY) {
            return Err(EfiError("Open (a directory)", Status::INVALID_PARAMETER));
        }
        Ok(field(offset_of!(FileInfo, file_size)))
    }

    /// Fills `buf` from the current position. Read may return less than asked only at the end
    /// of the file, so a file that ends before `buf` is full (it shrank, or its size lied) is
    /// an error, as is a Read claiming more than it was asked for.
    fn read_exact(&self, buf: &mut [u8]) -> Result<(), EfiError> {
        let mut done = 0;
        while done < buf.len() {
            let rest = &mut buf[done..];
            let mut n = rest.len();
            // SAFETY: an open file handle and a buffer of `n` bytes.
            let s = unsafe { (self.protocol().read)(self.0, &mut n, rest.as_mut_ptr().cast()) };
            if s != Status::SUCCESS {
                return Err(EfiError("Read", s));
            }
            if n == 0 {
                return Err(EfiError("Read (file ended early)", Status::END_OF_FILE));
            }
            if n > rest.len() {
                return Err(EfiError("Read (more than asked)", Status::BAD_BUFFER_SIZE));
            }
            done += n;
        }
        Ok(())
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // SAFETY: the handle is open and not used after this. Close of a read-only file has no
        // failure to report (the specification defines only EFI_SUCCESS).
        let _ = unsafe { (self.protocol().close)(self.0) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_becomes_nul_terminated_ucs2_with_backslashes() {
        let name = ucs2_path("EFI/BOOT/x.efi").unwrap();
        assert_eq!(name[..15], b"EFI\\BOOT\\x.efi\0".map(u16::from));
        assert!(name[15..].iter().all(|&c| c == 0));
        let name = ucs2_path("\\sim.cfg").unwrap();
        assert_eq!(name[..9], b"\\sim.cfg\0".map(u16::from));
    }

    /// Processor `i` of a list: (APIC ID, StatusFlag).
    fn cpus(list: &[(u64, u32)]) -> impl FnMut(usize) -> Result<ProcessorInformation, Status> {
        move |i| {
            list.get(i)
                .map(|&(id, flags)| ProcessorInformation {
                    processor_id: id,
                    status_flag: flags,
                    ..Default::default()
                })
                .ok_or(Status::NOT_FOUND)
        }
    }

    const AP: u32 = PROCESSOR_ENABLED | 4;
    const BSP: u32 = AP | PROCESSOR_AS_BSP;

    #[test]
    fn processors_boot_cpu_first_disabled_ones_left_out() {
        let list = [(1, AP), (0, BSP), (2, 4), (300, AP)];
        let mut out = [0u32; 4];
        assert_eq!(collect_processors(4, 3, &mut out, cpus(&list)).unwrap(), 3);
        assert_eq!(out[..3], [0, 1, 300]);
        let mut one = [0u32; 1];
        assert_eq!(
            collect_processors(1, 1, &mut one, cpus(&[(5, BSP)])).unwrap(),
            1
        );
        assert_eq!(one, [5]);
    }

    #[test]
    fn processor_lists_that_do_not_add_up_are_refused() {
        let mut out = [0u32; 8];
        let mut check = |total, enabled, list: &[(u64, u32)], what: &str| {
            let e = collect_processors(total, enabled, &mut out, cpus(list)).unwrap_err();
            assert!(e.0.contains(what), "{} for {list:?}", e.0);
        };
        check(2, 2, &[(0, BSP), (0, AP)], "one APIC ID");
        check(2, 2, &[(0, BSP), (1, BSP)], "two boot processors");
        check(
            3,
            3,
            &[(0, AP), (1, AP), (2, 4)],
            "no enabled boot processor",
        );
        check(2, 2, &[(0, BSP), (1 << 32, AP)], "above 32 bits");
        check(
            3,
            2,
            &[(0, BSP), (1, AP), (2, AP)],
            "more enabled processors",
        );
        check(2, 2, &[(0, BSP), (1, 4)], "fewer enabled processors");
        check(3, 3, &[(0, BSP), (1, AP)], "GetProcessorInfo");
        check(2, 0, &[], "implausible");
        check(1, 2, &[], "implausible");
        check(MAX_PROCESSORS + 1, 1, &[], "implausible");
        check(9, 9, &[], "more processors than room");
    }

    #[test]
    fn bad_paths_are_rejected() {
        assert!(ucs2_path("").is_err());
        assert!(ucs2_path("a\0b").is_err());
        assert!(ucs2_path("caf\u{e9}").is_err());
        assert!(ucs2_path(&"a".repeat(MAX_PATH)).is_ok());
        assert!(ucs2_path(&"a".repeat(MAX_PATH + 1)).is_err());
    }
}
