//! IGVM file loading: parses an IGVM file (the microsoft/igvm format, structures from
//! `igvm_defs`) for the SEV-ES platform and drives the launch through a [`LaunchTarget`].
//!
//! The file is untrusted input. Every offset, length, count and index is checked before use, all
//! arithmetic is checked, nothing panics, and the work is bounded: by the file's size for the
//! headers, by [`MAX_PAGES`] for guest pages and by [`MAX_PARAMETER_AREAS`] /
//! [`MAX_PARAMETER_AREA_BYTES`] for parameter areas.
//!
//! # What is loaded
//! The file's SEV-ES platform header (exactly one; platform version 1, no VTLs, no shared GPA
//! boundary) gives the compatibility mask; every header carrying a mask that does not include it
//! is skipped. Directives are carried out in file order:
//!
//! | directive | effect |
//! |---|---|
//! | `PAGE_DATA` | one 4 KiB private page: the 4096 bytes at its file offset, or zeroes without one |
//! | `PARAMETER_AREA` | declares a buffer of N bytes (initially zero, or from the file) |
//! | `VP_COUNT_PARAMETER` | `LaunchParams::vp_count` as a little-endian u32 into an area |
//! | `MEMORY_MAP` | `LaunchParams::ram` as `IGVM_VHS_MEMORY_MAP_ENTRY`s (sorted, type MEMORY), then one zero entry if it fits |
//! | `COMMAND_LINE` | `LaunchParams::cmdline` and a NUL into an area |
//! | `PARAMETER_INSERT` | copies an area into private pages at a GPA; the area is gone afterwards |
//! | `VP_CONTEXT` | the 4096-byte VMSA of one vCPU to [`LaunchTarget::vp_context`] |
//! | `REQUIRED_MEMORY` | checks that the range lies in `LaunchParams::ram` |
//!
//! # Decisions where the format leaves room
//! - `GUEST_POLICY` is accepted and ignored: the format defines its meaning for SEV-SNP and TDX
//!   only, and it restricts what the platform firmware lets the host do (debugging, migration);
//!   the simulator has no such firmware and offers none of that.
//! - `VERSION_STRING` is informational and ignored.
//! - Page data with a file offset is always a whole page of the file (the format gives it no
//!   length; builders pad short data with zeroes); data cut off by the end of the file is
//!   refused, not zero-filled.
//! - Headers whose type has [`IGVM_VHT_OPTIONAL_BIT`] set are skipped, as the format allows.
//! - A page may be loaded once: a second load of the same GPA is an error (on hardware it would
//!   silently replace launch-measured contents; here it is always a builder bug).
//! - The VP context's GPA is checked for alignment only: SEV-ES keeps the VMSA outside guest
//!   memory (see `handoff::launch::VMSA_GPA`).
//! - Parameters that the simulator cannot provide (ACPI tables, device tree, MMIO ranges,
//!   environment info) are refused even before their area is inserted: they carry no
//!   compatibility mask, so they are meant for every platform the file supports.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use core::mem::{offset_of, size_of};

use igvm_defs::{
    IGVM_FIXED_HEADER, IGVM_FIXED_HEADER_V2, IGVM_FORMAT_VERSION_1, IGVM_FORMAT_VERSION_2,
    IGVM_MAGIC_VALUE, IGVM_SEV_ES_PLATFORM_VERSION, IGVM_VHS_CCA_POLICY, IGVM_VHS_ERROR_RANGE,
    IGVM_VHS_GUEST_POLICY, IGVM_VHS_MEMORY_MAP_ENTRY, IGVM_VHS_PAGE_DATA,
    IGVM_VHS_PAGE_TABLE_RELOCATION, IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_AREA,
    IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_RELOCATABLE_REGION, IGVM_VHS_REQUIRED_MEMORY,
    IGVM_VHS_SNP_ID_BLOCK, IGVM_VHS_SUPPORTED_PLATFORM, IGVM_VHS_VARIABLE_HEADER,
    IGVM_VHS_VBS_MEASUREMENT, IGVM_VHS_VP_CONTEXT, IGVM_VHT_OPTIONAL_BIT, IGVM_VHT_RANGE_DIRECTIVE,
    IGVM_VHT_RANGE_INIT, IGVM_VHT_RANGE_PLATFORM, IgvmArchitecture, IgvmPageDataFlags,
    IgvmPageDataType, IgvmPlatformType, IgvmVariableHeaderType as Vht, MemoryMapEntryType,
    PAGE_SIZE_4K,
};
use zerocopy::{FromBytes, IntoBytes};

/// What loading asks of the launcher.
pub trait LaunchTarget {
    /// Copies `data` (at most 4096 bytes) into private guest memory at the page-aligned `gpa`;
    /// the rest of the page becomes zero.
    fn write_page(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutsideGuestMemory>;
    /// The VMSA (SEV-ES save area, 4096 bytes, layout `sev::vmsa::Vmsa`) of vCPU `vp_index`.
    fn vp_context(&mut self, vp_index: u16, vmsa: &[u8; 4096]);
}

/// [`LaunchTarget::write_page`] was asked for a page that is not guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutsideGuestMemory {
    pub gpa: u64,
}

/// What the launcher fills into the file's parameter areas.
#[derive(Debug, Clone, Copy)]
pub struct LaunchParams<'a> {
    pub vp_count: u32,
    /// guest RAM as (gpa, len) ranges
    pub ram: &'a [(u64, u64)],
    pub cmdline: &'a str,
}

/// What a successful load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSummary {
    /// Pages written through [`LaunchTarget::write_page`] (page data and inserted parameter areas).
    pub pages: u64,
    /// VMSAs handed to [`LaunchTarget::vp_context`].
    pub vp_contexts: u16,
}

/// At most this many pages are loaded (1 GiB): the guest images this simulator runs are a few
/// MiB, and the set of loaded pages is kept to reject double loads.
pub const MAX_PAGES: u64 = 1 << 18;
/// At most this many parameter areas may be declared.
pub const MAX_PARAMETER_AREAS: usize = 64;
/// At most this many bytes of parameter areas in all (they are buffered until inserted).
pub const MAX_PARAMETER_AREA_BYTES: u64 = 4 << 20;

const PAGE_SIZE: u64 = PAGE_SIZE_4K;
/// `IGVM_VHT_CORIM_DOCUMENT` and `IGVM_VHT_CORIM_SIGNATURE`: named by `igvm_defs` only with its
/// `corim` feature; both are `IGVM_VHS_CORIM_DATA` (mask, file offset, size, reserved).
const VHT_CORIM_DOCUMENT: u32 = 0x104;
const VHT_CORIM_SIGNATURE: u32 = 0x105;
const CORIM_DATA_SIZE: usize = 16;

/// Why a file could not be loaded. Each message names the problem in the file (or in the
/// launcher's parameters) so that the file can be rebuilt or the options changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgvmError {
    /// The file does not start with the IGVM magic.
    BadMagic { magic: u32 },
    /// A fixed-header value this loader does not know (format version, architecture, page size).
    UnsupportedFormat { what: &'static str, value: u32 },
    /// The fixed header's total file size differs from the file's length.
    SizeMismatch { header: u32, actual: usize },
    /// The CRC-32 over the fixed and variable headers does not match the stored one.
    BadChecksum { stored: u32, computed: u32 },
    /// A structural error at byte `offset` of the file.
    Malformed {
        offset: usize,
        problem: &'static str,
    },
    /// The file lists no SEV-ES platform; `found` is what it lists.
    NoSevEsPlatform { found: Vec<IgvmPlatformType> },
    /// The SEV-ES platform header has a version other than 1.
    SevEsPlatformVersion { version: u16 },
    /// The file needs something the simulator does not provide.
    Unsupported {
        what: &'static str,
        header_type: u32,
    },
    /// A compatibility mask that is zero or names a platform the file did not declare.
    InvalidCompatibilityMask { offset: usize, mask: u32 },
    /// A parameter directive names an area index that was never declared.
    UndeclaredParameterArea { index: u32 },
    /// A parameter area index is declared a second time.
    DuplicateParameterArea { index: u32 },
    /// A parameter area is used after it was inserted into guest memory.
    ParameterAreaInserted { index: u32 },
    /// A parameter does not fit in its area at the given byte offset.
    ParameterOutOfArea {
        index: u32,
        byte_offset: u32,
        len: u64,
        area_size: u64,
    },
    /// The command line (plus its NUL) does not fit where the file puts it.
    CommandLineTooLong { len: usize, room: u64 },
    /// The command line has non-ASCII characters or a NUL.
    CommandLineNotAscii,
    /// The guest RAM ranges do not fit the file's memory map parameter.
    MemoryMapTooLarge { ranges: usize, room: u64 },
    /// Two VP contexts for the same vCPU.
    DuplicateVpContext { vp_index: u16 },
    /// Memory the file requires is not guest RAM.
    RequiredMemoryMissing { gpa: u64, size: u64 },
    /// The same page is loaded twice.
    PageLoadedTwice { gpa: u64 },
    /// The file loads a page outside guest memory.
    OutsideGuestMemory { gpa: u64 },
    /// A bound on the work a file may ask for.
    Limit { what: &'static str, limit: u64 },
    /// The launcher's RAM ranges are not page aligned, overflow or overlap.
    InvalidRam { gpa: u64, len: u64 },
}

impl fmt::Display for IgvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic { magic } => write!(
                f,
                "not an IGVM file (starts with {:02x?}, not \"IGVM\")",
                magic.to_le_bytes()
            ),
            Self::UnsupportedFormat { what, value } => write!(
                f,
                "unsupported IGVM {what} {value:#x} (this loader reads format versions 1 and 2, \
                 x86-64, 4 KiB pages)"
            ),
            Self::SizeMismatch { header, actual } => write!(
                f,
                "the IGVM file is {actual} bytes but its header says {header}: it was truncated \
                 or altered on the way"
            ),
            Self::BadChecksum { stored, computed } => write!(
                f,
                "IGVM header checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
                 the file is corrupt"
            ),
            Self::Malformed { offset, problem } => {
                write!(f, "malformed IGVM file at byte {offset:#x}: {problem}")
            }
            Self::NoSevEsPlatform { found } => {
                write!(f, "the IGVM file does not support SEV-ES (it lists ")?;
                if found.is_empty() {
                    write!(f, "no platform")?;
                }
                for (i, p) in found.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    match platform_name(*p) {
                        Some(name) => write!(f, "{sep}{name}")?,
                        None => write!(f, "{sep}unknown platform {:#x}", p.0)?,
                    }
                }
                write!(f, "); build it for the SEV_ES platform")
            }
            Self::SevEsPlatformVersion { version } => write!(
                f,
                "the IGVM file's SEV-ES platform version is {version}, this loader knows version \
                 {IGVM_SEV_ES_PLATFORM_VERSION}"
            ),
            Self::Unsupported { what, header_type } => write!(
                f,
                "the IGVM file needs {what} (header type {header_type:#x}), which the SEV-ES \
                 simulator does not support; build the file without it"
            ),
            Self::InvalidCompatibilityMask { offset, mask } => write!(
                f,
                "malformed IGVM file at byte {offset:#x}: compatibility mask {mask:#x} names no \
                 declared platform"
            ),
            Self::UndeclaredParameterArea { index } => write!(
                f,
                "the IGVM file uses parameter area {index} without declaring it first"
            ),
            Self::DuplicateParameterArea { index } => {
                write!(f, "the IGVM file declares parameter area {index} twice")
            }
            Self::ParameterAreaInserted { index } => write!(
                f,
                "the IGVM file uses parameter area {index} after inserting it into guest memory"
            ),
            Self::ParameterOutOfArea {
                index,
                byte_offset,
                len,
                area_size,
            } => write!(
                f,
                "the IGVM file puts a {len}-byte parameter at offset {byte_offset:#x} of parameter \
                 area {index}, which is only {area_size:#x} bytes"
            ),
            Self::CommandLineTooLong { len, room } => write!(
                f,
                "the command line is {len} bytes but the IGVM file has room for {} (plus the NUL); \
                 shorten it",
                room.saturating_sub(1)
            ),
            Self::CommandLineNotAscii => {
                write!(f, "the command line must be ASCII without NUL characters")
            }
            Self::MemoryMapTooLarge { ranges, room } => write!(
                f,
                "guest RAM has {ranges} ranges but the IGVM file's memory map has room for {room}"
            ),
            Self::DuplicateVpContext { vp_index } => {
                write!(f, "the IGVM file has two VP contexts for vCPU {vp_index}")
            }
            Self::RequiredMemoryMissing { gpa, size } => write!(
                f,
                "the IGVM file requires memory at {gpa:#x}..{:#x}, which is not guest RAM; give \
                 the guest more memory (mem=<MiB>)",
                gpa.saturating_add(*size)
            ),
            Self::PageLoadedTwice { gpa } => {
                write!(f, "the IGVM file loads the page at {gpa:#x} twice")
            }
            Self::OutsideGuestMemory { gpa } => write!(
                f,
                "the IGVM file loads the page at {gpa:#x}, outside guest memory; give the guest \
                 more memory (mem=<MiB>)"
            ),
            Self::Limit { what, limit } => write!(
                f,
                "the IGVM file asks for more than {limit} {what}, the simulator's limit"
            ),
            Self::InvalidRam { gpa, len } => write!(
                f,
                "guest RAM range {gpa:#x} + {len:#x} is not page aligned or overlaps another"
            ),
        }
    }
}

/// The `igvm_defs` name of a platform type.
fn platform_name(p: IgvmPlatformType) -> Option<&'static str> {
    Some(match p {
        IgvmPlatformType::NATIVE => "NATIVE",
        IgvmPlatformType::VSM_ISOLATION => "VSM_ISOLATION",
        IgvmPlatformType::SEV_SNP => "SEV_SNP",
        IgvmPlatformType::TDX => "TDX",
        IgvmPlatformType::SEV => "SEV",
        IgvmPlatformType::SEV_ES => "SEV_ES",
        IgvmPlatformType::CCA => "CCA",
        _ => return None,
    })
}

/// Loads `file` for SEV-ES: writes its pages and parameter areas through `target`, hands over
/// its VMSAs, and fills the parameters from `params`. Stops at the first problem; what was
/// written until then is left to the caller (it will not run the guest).
pub fn load(
    file: &[u8],
    params: &LaunchParams,
    target: &mut impl LaunchTarget,
) -> Result<LoadSummary, IgvmError> {
    let layout = check_fixed_header(file)?;
    let mut headers = Headers {
        file,
        pos: layout.variable_start,
        end: layout.data_start,
    };
    let mut loader = Loader {
        file,
        data_start: layout.data_start,
        params,
        ram: sorted_ram(params.ram)?,
        target,
        platforms: Vec::new(),
        declared_masks: 0,
        sev_es_mask: 0,
        areas: BTreeMap::new(),
        area_bytes: 0,
        pages: PageSet::default(),
        vps: BTreeSet::new(),
        summary: LoadSummary {
            pages: 0,
            vp_contexts: 0,
        },
    };
    let mut section = Section::Platform;
    while let Some(h) = headers.next_header()? {
        if h.typ & IGVM_VHT_OPTIONAL_BIT != 0 {
            continue;
        }
        let next = if IGVM_VHT_RANGE_PLATFORM.contains(&h.typ) {
            Section::Platform
        } else if IGVM_VHT_RANGE_INIT.contains(&h.typ) {
            Section::Initialization
        } else if IGVM_VHT_RANGE_DIRECTIVE.contains(&h.typ) {
            Section::Directive
        } else {
            return Err(IgvmError::Unsupported {
                what: "an unknown variable header type",
                header_type: h.typ,
            });
        };
        if next < section {
            return Err(malformed(
                h.offset,
                "a header of an earlier section (platform, initialization, directive) follows a \
                 later one",
            ));
        }
        if section == Section::Platform && next != Section::Platform {
            loader.require_sev_es()?;
        }
        section = next;
        match section {
            Section::Platform => loader.platform(&h)?,
            Section::Initialization => loader.initialization(&h)?,
            Section::Directive => loader.directive(&h)?,
        }
    }
    if section == Section::Platform {
        loader.require_sev_es()?;
    }
    Ok(loader.summary)
}

/// Where the parts of a file are, once its fixed header is checked.
struct Layout {
    variable_start: usize,
    /// The end of the variable headers and the start of the file data.
    data_start: usize,
}

/// Checks the fixed header (magic, version, sizes, checksum) and returns the file's layout.
fn check_fixed_header(file: &[u8]) -> Result<Layout, IgvmError> {
    let Ok((v1, _)) = IGVM_FIXED_HEADER::read_from_prefix(file) else {
        return Err(malformed(
            0,
            "the file is shorter than the IGVM fixed header",
        ));
    };
    if v1.magic != IGVM_MAGIC_VALUE {
        return Err(IgvmError::BadMagic { magic: v1.magic });
    }
    let fixed_len = match v1.format_version {
        IGVM_FORMAT_VERSION_1 => size_of::<IGVM_FIXED_HEADER>(),
        IGVM_FORMAT_VERSION_2 => {
            let Ok((v2, _)) = IGVM_FIXED_HEADER_V2::read_from_prefix(file) else {
                return Err(malformed(
                    0,
                    "the file is shorter than the version 2 fixed header",
                ));
            };
            if v2.architecture != IgvmArchitecture::X64 {
                return Err(IgvmError::UnsupportedFormat {
                    what: "architecture",
                    value: v2.architecture.0,
                });
            }
            if u64::from(v2.page_size) != PAGE_SIZE {
                return Err(IgvmError::UnsupportedFormat {
                    what: "page size",
                    value: v2.page_size,
                });
            }
            size_of::<IGVM_FIXED_HEADER_V2>()
        }
        version => {
            return Err(IgvmError::UnsupportedFormat {
                what: "format version",
                value: version,
            });
        }
    };
    if usize::try_from(v1.total_file_size) != Ok(file.len()) {
        return Err(IgvmError::SizeMismatch {
            header: v1.total_file_size,
            actual: file.len(),
        });
    }
    let variable_start = v1.variable_header_offset as usize;
    if variable_start < fixed_len || !variable_start.is_multiple_of(8) {
        return Err(malformed(
            offset_of!(IGVM_FIXED_HEADER, variable_header_offset),
            "the variable headers must start 8-byte aligned after the fixed header",
        ));
    }
    let Some(variable) = variable_start
        .checked_add(v1.variable_header_size as usize)
        .and_then(|end| file.get(variable_start..end))
    else {
        return Err(malformed(
            offset_of!(IGVM_FIXED_HEADER, variable_header_size),
            "the variable headers run past the end of the file",
        ));
    };
    // The checksum is a CRC-32 (IEEE, as `handoff::crc32`) over the fixed header, with its
    // checksum field taken as zero, followed by the variable headers.
    let mut covered = Vec::with_capacity(fixed_len + variable.len());
    covered.extend_from_slice(&file[..fixed_len]);
    let field = offset_of!(IGVM_FIXED_HEADER, checksum);
    covered[field..field + 4].fill(0);
    covered.extend_from_slice(variable);
    let computed = handoff::crc32::crc32(&covered);
    if computed != v1.checksum {
        return Err(IgvmError::BadChecksum {
            stored: v1.checksum,
            computed,
        });
    }
    Ok(Layout {
        variable_start,
        data_start: variable_start + variable.len(),
    })
}

/// The launcher's RAM ranges as sorted, non-overlapping, non-empty `[start, end)` pairs.
fn sorted_ram(ram: &[(u64, u64)]) -> Result<Vec<(u64, u64)>, IgvmError> {
    let mut ranges = Vec::with_capacity(ram.len());
    for &(gpa, len) in ram {
        let end = gpa.checked_add(len);
        match end {
            Some(end) if gpa.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE) => {
                if len != 0 {
                    ranges.push((gpa, end));
                }
            }
            _ => return Err(IgvmError::InvalidRam { gpa, len }),
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(IgvmError::InvalidRam {
                gpa: pair[1].0,
                len: pair[1].1 - pair[1].0,
            });
        }
    }
    Ok(ranges)
}

fn malformed(offset: usize, problem: &'static str) -> IgvmError {
    IgvmError::Malformed { offset, problem }
}

/// The three sections of the variable headers, which appear in this order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Platform,
    Initialization,
    Directive,
}

/// One variable header: its type and its body (without padding).
struct Header<'f> {
    /// File offset of the header's type field, for messages.
    offset: usize,
    typ: u32,
    body: &'f [u8],
}

impl Header<'_> {
    /// The body as `T`, whose size it must have.
    fn read<T: FromBytes>(&self) -> Result<T, IgvmError> {
        T::read_from_bytes(self.body)
            .map_err(|_| malformed(self.offset, "the header's length does not match its type"))
    }

    /// The compatibility mask at `at` in a body of `len` bytes (for headers that are only
    /// checked for whether they apply).
    fn mask_at(&self, len: usize, at: usize) -> Result<u32, IgvmError> {
        if self.body.len() != len {
            return Err(malformed(
                self.offset,
                "the header's length does not match its type",
            ));
        }
        u32::read_from_prefix(&self.body[at..])
            .map(|(mask, _)| mask)
            .map_err(|_| malformed(self.offset, "the header's length does not match its type"))
    }
}

/// Walks the variable headers: each is a type and a length followed by that many bytes, zero
/// padded to the next multiple of 8.
struct Headers<'f> {
    file: &'f [u8],
    pos: usize,
    end: usize,
}

impl<'f> Headers<'f> {
    fn next_header(&mut self) -> Result<Option<Header<'f>>, IgvmError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let offset = self.pos;
        let section = &self.file[self.pos..self.end];
        let Ok((vh, rest)) = IGVM_VHS_VARIABLE_HEADER::read_from_prefix(section) else {
            return Err(malformed(
                offset,
                "a header is cut off by the end of the headers",
            ));
        };
        let len = vh.length as usize;
        let Some(padded) = len.checked_next_multiple_of(8).and_then(|p| rest.get(..p)) else {
            return Err(malformed(
                offset,
                "a header runs past the end of the headers",
            ));
        };
        let (body, padding) = padded.split_at(len);
        if padding.iter().any(|&b| b != 0) {
            return Err(malformed(offset, "the padding after a header is not zero"));
        }
        self.pos = offset + size_of::<IGVM_VHS_VARIABLE_HEADER>() + padded.len();
        Ok(Some(Header {
            offset,
            typ: vh.typ.0,
            body,
        }))
    }
}

/// The guest pages loaded so far as merged `[start, end)` ranges: contiguous loads (the common
/// case) keep it to a few entries.
#[derive(Default)]
struct PageSet {
    ranges: BTreeMap<u64, u64>,
}

impl PageSet {
    /// Adds the page `[gpa, end)`; false if it is already there.
    fn insert(&mut self, gpa: u64, end: u64) -> bool {
        let below = self.ranges.range(..=gpa).next_back().map(|(&s, &e)| (s, e));
        if below.is_some_and(|(_, e)| e > gpa) {
            return false;
        }
        let new_end = self.ranges.remove(&end).unwrap_or(end);
        match below {
            Some((start, e)) if e == gpa => self.ranges.insert(start, new_end),
            _ => self.ranges.insert(gpa, new_end),
        };
        true
    }
}

struct Loader<'a, 'f, T> {
    file: &'f [u8],
    data_start: usize,
    params: &'a LaunchParams<'a>,
    /// `params.ram`, sorted.
    ram: Vec<(u64, u64)>,
    target: &'a mut T,
    /// Platform types in file order (at most 32: each has its own mask bit).
    platforms: Vec<IgvmPlatformType>,
    declared_masks: u32,
    /// The SEV-ES platform's mask bit; 0 until seen.
    sev_es_mask: u32,
    /// Declared parameter areas by index; `None` once inserted (the index is spent).
    areas: BTreeMap<u32, Option<Vec<u8>>>,
    area_bytes: u64,
    pages: PageSet,
    vps: BTreeSet<u16>,
    summary: LoadSummary,
}

impl<'f, T: LaunchTarget> Loader<'_, 'f, T> {
    fn require_sev_es(&self) -> Result<(), IgvmError> {
        if self.sev_es_mask == 0 {
            return Err(IgvmError::NoSevEsPlatform {
                found: self.platforms.clone(),
            });
        }
        Ok(())
    }

    /// Whether a header with `mask` applies to SEV-ES.
    fn applies(&self, h: &Header, mask: u32) -> Result<bool, IgvmError> {
        if mask == 0 || mask & !self.declared_masks != 0 {
            return Err(IgvmError::InvalidCompatibilityMask {
                offset: h.offset,
                mask,
            });
        }
        Ok(mask & self.sev_es_mask != 0)
    }

    /// Refuses a header that applies to SEV-ES.
    fn refuse_if_applies(&self, h: &Header, mask: u32) -> Result<(), IgvmError> {
        if self.applies(h, mask)? {
            return Err(IgvmError::Unsupported {
                what: header_name(h.typ),
                header_type: h.typ,
            });
        }
        Ok(())
    }

    fn platform(&mut self, h: &Header) -> Result<(), IgvmError> {
        if h.typ != Vht::IGVM_VHT_SUPPORTED_PLATFORM.0 {
            return Err(IgvmError::Unsupported {
                what: "an unknown platform header type",
                header_type: h.typ,
            });
        }
        let p: IGVM_VHS_SUPPORTED_PLATFORM = h.read()?;
        if p.compatibility_mask.count_ones() != 1 {
            return Err(malformed(
                h.offset,
                "a platform's compatibility mask must have exactly one bit set",
            ));
        }
        if p.compatibility_mask & self.declared_masks != 0 {
            return Err(malformed(
                h.offset,
                "two platforms share a compatibility mask",
            ));
        }
        self.declared_masks |= p.compatibility_mask;
        self.platforms.push(p.platform_type);
        if p.platform_type != IgvmPlatformType::SEV_ES {
            return Ok(());
        }
        if self.sev_es_mask != 0 {
            return Err(malformed(h.offset, "a second SEV-ES platform header"));
        }
        if p.platform_version != IGVM_SEV_ES_PLATFORM_VERSION {
            return Err(IgvmError::SevEsPlatformVersion {
                version: p.platform_version,
            });
        }
        if p.highest_vtl != 0 {
            return Err(IgvmError::Unsupported {
                what: "virtual trust levels (highest_vtl != 0) on SEV-ES",
                header_type: h.typ,
            });
        }
        if p.shared_gpa_boundary != 0 {
            return Err(IgvmError::Unsupported {
                what: "a shared GPA boundary (SEV-ES shares memory through the C-bit)",
                header_type: h.typ,
            });
        }
        self.sev_es_mask = p.compatibility_mask;
        Ok(())
    }

    fn initialization(&mut self, h: &Header) -> Result<(), IgvmError> {
        match Vht(h.typ) {
            Vht::IGVM_VHT_GUEST_POLICY => {
                let policy: IGVM_VHS_GUEST_POLICY = h.read()?;
                if policy.reserved != 0 {
                    return Err(malformed(h.offset, "a reserved field is not zero"));
                }
                // Checked, then ignored: see the module documentation.
                self.applies(h, policy.compatibility_mask)?;
                Ok(())
            }
            Vht::IGVM_VHT_VERSION_STRING => Ok(()),
            Vht::IGVM_VHT_RELOCATABLE_REGION => {
                let r: IGVM_VHS_RELOCATABLE_REGION = h.read()?;
                self.refuse_if_applies(h, r.compatibility_mask)
            }
            Vht::IGVM_VHT_PAGE_TABLE_RELOCATION_REGION => {
                let r: IGVM_VHS_PAGE_TABLE_RELOCATION = h.read()?;
                self.refuse_if_applies(h, r.compatibility_mask)
            }
            Vht::IGVM_VHT_CCA_POLICY => {
                let p: IGVM_VHS_CCA_POLICY = h.read()?;
                self.refuse_if_applies(h, p.compatibility_mask)
            }
            Vht(VHT_CORIM_DOCUMENT | VHT_CORIM_SIGNATURE) => {
                self.refuse_if_applies(h, h.mask_at(CORIM_DATA_SIZE, 0)?)
            }
            _ => Err(IgvmError::Unsupported {
                what: "an unknown initialization header type",
                header_type: h.typ,
            }),
        }
    }

    fn directive(&mut self, h: &Header) -> Result<(), IgvmError> {
        match Vht(h.typ) {
            Vht::IGVM_VHT_PAGE_DATA => self.page_data(h),
            Vht::IGVM_VHT_PARAMETER_AREA => self.parameter_area(h),
            Vht::IGVM_VHT_VP_COUNT_PARAMETER => {
                let p: IGVM_VHS_PARAMETER = h.read()?;
                let count = self.params.vp_count.to_le_bytes();
                self.tail(p, count.len())?[..count.len()].copy_from_slice(&count);
                Ok(())
            }
            Vht::IGVM_VHT_MEMORY_MAP => self.memory_map(h),
            Vht::IGVM_VHT_COMMAND_LINE => self.command_line(h),
            Vht::IGVM_VHT_PARAMETER_INSERT => self.parameter_insert(h),
            Vht::IGVM_VHT_VP_CONTEXT => self.vp_context(h),
            Vht::IGVM_VHT_REQUIRED_MEMORY => {
                let r: IGVM_VHS_REQUIRED_MEMORY = h.read()?;
                if !self.applies(h, r.compatibility_mask)? {
                    return Ok(());
                }
                if r.reserved != 0 {
                    return Err(malformed(h.offset, "a reserved field is not zero"));
                }
                let size = u64::from(r.number_of_bytes);
                if !r.gpa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
                    return Err(malformed(h.offset, "required memory is not page aligned"));
                }
                let end = r.gpa.checked_add(size);
                if !end.is_some_and(|end| ram_covers(&self.ram, r.gpa, end)) {
                    return Err(IgvmError::RequiredMemoryMissing { gpa: r.gpa, size });
                }
                Ok(())
            }
            Vht::IGVM_VHT_ERROR_RANGE => {
                let r: IGVM_VHS_ERROR_RANGE = h.read()?;
                self.refuse_if_applies(h, r.compatibility_mask)
            }
            Vht::IGVM_VHT_SNP_ID_BLOCK => {
                let b: IGVM_VHS_SNP_ID_BLOCK = h.read()?;
                self.refuse_if_applies(h, b.compatibility_mask)
            }
            Vht::IGVM_VHT_VBS_MEASUREMENT => {
                let m: IGVM_VHS_VBS_MEASUREMENT = h.read()?;
                self.refuse_if_applies(h, m.compatibility_mask)
            }
            // Parameters the simulator does not provide, the reserved type and unknown types.
            _ => Err(IgvmError::Unsupported {
                what: header_name(h.typ),
                header_type: h.typ,
            }),
        }
    }

    fn page_data(&mut self, h: &Header) -> Result<(), IgvmError> {
        let p: IGVM_VHS_PAGE_DATA = h.read()?;
        if !self.applies(h, p.compatibility_mask)? {
            return Ok(());
        }
        if p.reserved != 0 {
            return Err(malformed(h.offset, "a reserved field is not zero"));
        }
        let unsupported = |what| IgvmError::Unsupported {
            what,
            header_type: h.typ,
        };
        if p.flags.is_2mb_page() {
            return Err(unsupported("2 MiB page data (IGVM_VHT_PAGE_DATA)"));
        }
        if p.flags.shared() {
            return Err(unsupported(
                "shared (host-visible) page data (IGVM_VHT_PAGE_DATA)",
            ));
        }
        // Only the flags above and `unmeasured` (which needs nothing here) are defined.
        let known = IgvmPageDataFlags::new()
            .with_is_2mb_page(true)
            .with_unmeasured(true)
            .with_shared(true);
        if p.flags.into_bits() & !known.into_bits() != 0 {
            return Err(unsupported(
                "undefined page data flags (IGVM_VHT_PAGE_DATA)",
            ));
        }
        match p.data_type {
            IgvmPageDataType::NORMAL => {}
            IgvmPageDataType::SECRETS => {
                return Err(unsupported("an SEV-SNP secrets page (IGVM_VHT_PAGE_DATA)"));
            }
            IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF => {
                return Err(unsupported("an SEV-SNP CPUID page (IGVM_VHT_PAGE_DATA)"));
            }
            _ => {
                return Err(unsupported(
                    "an undefined page data type (IGVM_VHT_PAGE_DATA)",
                ));
            }
        }
        let data = match p.file_offset {
            0 => &[][..],
            offset => self.file_data(h, offset, PAGE_SIZE as usize)?,
        };
        self.load_page(h, p.gpa, data)
    }

    fn parameter_area(&mut self, h: &Header) -> Result<(), IgvmError> {
        let a: IGVM_VHS_PARAMETER_AREA = h.read()?;
        if !a.number_of_bytes.is_multiple_of(PAGE_SIZE) {
            return Err(malformed(
                h.offset,
                "a parameter area's size is not page aligned",
            ));
        }
        if self.areas.contains_key(&a.parameter_area_index) {
            return Err(IgvmError::DuplicateParameterArea {
                index: a.parameter_area_index,
            });
        }
        if self.areas.len() >= MAX_PARAMETER_AREAS {
            return Err(IgvmError::Limit {
                what: "parameter areas",
                limit: MAX_PARAMETER_AREAS as u64,
            });
        }
        let total = self.area_bytes.saturating_add(a.number_of_bytes);
        if total > MAX_PARAMETER_AREA_BYTES {
            return Err(IgvmError::Limit {
                what: "bytes of parameter areas",
                limit: MAX_PARAMETER_AREA_BYTES,
            });
        }
        // Bounded by MAX_PARAMETER_AREA_BYTES above.
        let size = a.number_of_bytes as usize;
        let data = match a.file_offset {
            0 => alloc::vec![0; size],
            offset => self.file_data(h, offset, size)?.to_vec(),
        };
        self.area_bytes = total;
        self.areas.insert(a.parameter_area_index, Some(data));
        Ok(())
    }

    /// The bytes from the parameter's offset to the end of its area, at least `min_len`.
    fn tail(&mut self, p: IGVM_VHS_PARAMETER, min_len: usize) -> Result<&mut [u8], IgvmError> {
        let index = p.parameter_area_index;
        let data = self
            .areas
            .get_mut(&index)
            .ok_or(IgvmError::UndeclaredParameterArea { index })?
            .as_mut()
            .ok_or(IgvmError::ParameterAreaInserted { index })?;
        let area_size = data.len() as u64;
        match data.get_mut(p.byte_offset as usize..) {
            Some(tail) if tail.len() >= min_len => Ok(tail),
            _ => Err(IgvmError::ParameterOutOfArea {
                index,
                byte_offset: p.byte_offset,
                len: min_len as u64,
                area_size,
            }),
        }
    }

    fn memory_map(&mut self, h: &Header) -> Result<(), IgvmError> {
        let p: IGVM_VHS_PARAMETER = h.read()?;
        let entry_size = size_of::<IGVM_VHS_MEMORY_MAP_ENTRY>();
        // The entries, then an empty entry that ends the map (if it fits; else the area's end
        // does).
        let ranges = self.ram.len();
        let mut bytes = alloc::vec![0u8; (ranges + 1) * entry_size];
        for (&(start, end), out) in self.ram.iter().zip(bytes.chunks_exact_mut(entry_size)) {
            let entry = IGVM_VHS_MEMORY_MAP_ENTRY {
                starting_gpa_page_number: start / PAGE_SIZE,
                number_of_pages: (end - start) / PAGE_SIZE,
                entry_type: MemoryMapEntryType::MEMORY,
                flags: 0,
                reserved: 0,
            };
            out.copy_from_slice(entry.as_bytes());
        }
        let tail = self.tail(p, 0)?;
        let room = tail.len() / entry_size;
        if ranges > room {
            return Err(IgvmError::MemoryMapTooLarge {
                ranges,
                room: room as u64,
            });
        }
        let len = bytes.len().min(room * entry_size);
        tail[..len].copy_from_slice(&bytes[..len]);
        Ok(())
    }

    fn command_line(&mut self, h: &Header) -> Result<(), IgvmError> {
        let p: IGVM_VHS_PARAMETER = h.read()?;
        let cmdline = self.params.cmdline.as_bytes();
        if !cmdline.is_ascii() || cmdline.contains(&0) {
            return Err(IgvmError::CommandLineNotAscii);
        }
        let tail = self.tail(p, 0)?;
        if cmdline.len() >= tail.len() {
            return Err(IgvmError::CommandLineTooLong {
                len: cmdline.len(),
                room: tail.len() as u64,
            });
        }
        tail[..cmdline.len()].copy_from_slice(cmdline);
        tail[cmdline.len()] = 0;
        Ok(())
    }

    fn parameter_insert(&mut self, h: &Header) -> Result<(), IgvmError> {
        let ins: IGVM_VHS_PARAMETER_INSERT = h.read()?;
        if !self.applies(h, ins.compatibility_mask)? {
            return Ok(());
        }
        let index = ins.parameter_area_index;
        let data = self
            .areas
            .get_mut(&index)
            .ok_or(IgvmError::UndeclaredParameterArea { index })?
            .take()
            .ok_or(IgvmError::ParameterAreaInserted { index })?;
        let mut gpa = ins.gpa;
        for page in data.chunks(PAGE_SIZE as usize) {
            self.load_page(h, gpa, page)?;
            // No wrap: `load_page` refuses the last page of the address space.
            gpa = gpa.wrapping_add(PAGE_SIZE);
        }
        Ok(())
    }

    fn vp_context(&mut self, h: &Header) -> Result<(), IgvmError> {
        let vp: IGVM_VHS_VP_CONTEXT = h.read()?;
        if !self.applies(h, vp.compatibility_mask)? {
            return Ok(());
        }
        if vp.reserved != 0 {
            return Err(malformed(h.offset, "a reserved field is not zero"));
        }
        if !vp.gpa.get().is_multiple_of(PAGE_SIZE) {
            return Err(malformed(h.offset, "a VMSA's GPA is not page aligned"));
        }
        if vp.file_offset == 0 {
            return Err(malformed(h.offset, "a VP context without data"));
        }
        let vmsa: &[u8; 4096] = self
            .file_data(h, vp.file_offset, PAGE_SIZE as usize)?
            .try_into()
            .map_err(|_| malformed(h.offset, "a VMSA is not 4096 bytes"))?;
        if !self.vps.insert(vp.vp_index) {
            return Err(IgvmError::DuplicateVpContext {
                vp_index: vp.vp_index,
            });
        }
        self.summary.vp_contexts =
            self.summary
                .vp_contexts
                .checked_add(1)
                .ok_or(IgvmError::Limit {
                    what: "VP contexts",
                    limit: u16::MAX.into(),
                })?;
        // A file may describe more vCPUs than this launch has (one file serves any count up
        // to its own): the contexts beyond are checked but not used.
        if u32::from(vp.vp_index) < self.params.vp_count {
            self.target.vp_context(vp.vp_index, vmsa);
        }
        Ok(())
    }

    /// Loads `data` (at most a page) into the private page at `gpa`, once.
    fn load_page(&mut self, h: &Header, gpa: u64, data: &[u8]) -> Result<(), IgvmError> {
        if !gpa.is_multiple_of(PAGE_SIZE) {
            return Err(malformed(h.offset, "a page's GPA is not page aligned"));
        }
        if self.summary.pages >= MAX_PAGES {
            return Err(IgvmError::Limit {
                what: "pages",
                limit: MAX_PAGES,
            });
        }
        let end = gpa
            .checked_add(PAGE_SIZE)
            .ok_or(IgvmError::OutsideGuestMemory { gpa })?;
        if !self.pages.insert(gpa, end) {
            return Err(IgvmError::PageLoadedTwice { gpa });
        }
        self.target
            .write_page(gpa, data)
            .map_err(|e| IgvmError::OutsideGuestMemory { gpa: e.gpa })?;
        self.summary.pages += 1;
        Ok(())
    }

    /// `len` bytes of file data at `file_offset`, which must lie in the file data section.
    fn file_data(&self, h: &Header, file_offset: u32, len: usize) -> Result<&'f [u8], IgvmError> {
        let start = file_offset as usize;
        if start < self.data_start {
            return Err(malformed(
                h.offset,
                "file data offset points into the headers",
            ));
        }
        start
            .checked_add(len)
            .and_then(|end| self.file.get(start..end))
            .ok_or(malformed(
                h.offset,
                "file data runs past the end of the file",
            ))
    }
}

/// Whether `[start, end)` lies in the sorted, non-overlapping `ram` (possibly across adjacent
/// ranges).
fn ram_covers(ram: &[(u64, u64)], start: u64, end: u64) -> bool {
    let mut covered = start;
    for &(s, e) in ram {
        if covered >= end {
            break;
        }
        if s <= covered && covered < e {
            covered = e;
        }
    }
    covered >= end
}

/// The `igvm_defs` name of a variable header type, for messages.
fn header_name(typ: u32) -> &'static str {
    match Vht(typ) {
        Vht::IGVM_VHT_SUPPORTED_PLATFORM => "IGVM_VHT_SUPPORTED_PLATFORM",
        Vht::IGVM_VHT_GUEST_POLICY => "IGVM_VHT_GUEST_POLICY",
        Vht::IGVM_VHT_RELOCATABLE_REGION => "IGVM_VHT_RELOCATABLE_REGION",
        Vht::IGVM_VHT_PAGE_TABLE_RELOCATION_REGION => "IGVM_VHT_PAGE_TABLE_RELOCATION_REGION",
        Vht(VHT_CORIM_DOCUMENT) => "IGVM_VHT_CORIM_DOCUMENT",
        Vht(VHT_CORIM_SIGNATURE) => "IGVM_VHT_CORIM_SIGNATURE",
        Vht::IGVM_VHT_CCA_POLICY => "IGVM_VHT_CCA_POLICY",
        Vht::IGVM_VHT_VERSION_STRING => "IGVM_VHT_VERSION_STRING",
        Vht::IGVM_VHT_PARAMETER_AREA => "IGVM_VHT_PARAMETER_AREA",
        Vht::IGVM_VHT_PAGE_DATA => "IGVM_VHT_PAGE_DATA",
        Vht::IGVM_VHT_PARAMETER_INSERT => "IGVM_VHT_PARAMETER_INSERT",
        Vht::IGVM_VHT_VP_CONTEXT => "IGVM_VHT_VP_CONTEXT",
        Vht::IGVM_VHT_REQUIRED_MEMORY => "IGVM_VHT_REQUIRED_MEMORY",
        Vht::RESERVED_DO_NOT_USE => "RESERVED_DO_NOT_USE",
        Vht::IGVM_VHT_VP_COUNT_PARAMETER => "IGVM_VHT_VP_COUNT_PARAMETER",
        Vht::IGVM_VHT_SRAT => "IGVM_VHT_SRAT",
        Vht::IGVM_VHT_MADT => "IGVM_VHT_MADT",
        Vht::IGVM_VHT_MMIO_RANGES => "IGVM_VHT_MMIO_RANGES",
        Vht::IGVM_VHT_SNP_ID_BLOCK => "IGVM_VHT_SNP_ID_BLOCK",
        Vht::IGVM_VHT_MEMORY_MAP => "IGVM_VHT_MEMORY_MAP",
        Vht::IGVM_VHT_ERROR_RANGE => "IGVM_VHT_ERROR_RANGE",
        Vht::IGVM_VHT_COMMAND_LINE => "IGVM_VHT_COMMAND_LINE",
        Vht::IGVM_VHT_SLIT => "IGVM_VHT_SLIT",
        Vht::IGVM_VHT_PPTT => "IGVM_VHT_PPTT",
        Vht::IGVM_VHT_VBS_MEASUREMENT => "IGVM_VHT_VBS_MEASUREMENT",
        Vht::IGVM_VHT_DEVICE_TREE => "IGVM_VHT_DEVICE_TREE",
        Vht::IGVM_VHT_ENVIRONMENT_INFO_PARAMETER => "IGVM_VHT_ENVIRONMENT_INFO_PARAMETER",
        _ => "an unknown directive type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_set_merges_and_refuses_repeats() {
        let mut s = PageSet::default();
        let page = |n: u64| (n * PAGE_SIZE, (n + 1) * PAGE_SIZE);
        for n in [1, 3, 2, 0, 5] {
            let (a, b) = page(n);
            assert!(s.insert(a, b), "page {n}");
        }
        assert_eq!(
            s.ranges.iter().map(|(&a, &b)| (a, b)).collect::<Vec<_>>(),
            [(0, 4 * PAGE_SIZE), (5 * PAGE_SIZE, 6 * PAGE_SIZE)]
        );
        for n in [0, 2, 3, 5] {
            let (a, b) = page(n);
            assert!(!s.insert(a, b), "page {n} again");
        }
        let (a, b) = page(4);
        assert!(s.insert(a, b));
        assert_eq!(s.ranges.len(), 1);
    }

    #[test]
    fn ram_is_sorted_and_checked() {
        assert_eq!(
            sorted_ram(&[(0x10_0000, 0x1000), (0, 0x2000), (0x5000, 0)]),
            Ok(alloc::vec![(0, 0x2000), (0x10_0000, 0x10_1000)])
        );
        assert!(sorted_ram(&[(0x800, 0x1000)]).is_err());
        assert!(sorted_ram(&[(0, 0x1800)]).is_err());
        assert!(sorted_ram(&[(u64::MAX - 0xfff, 0x2000)]).is_err());
        assert!(sorted_ram(&[(0, 0x3000), (0x2000, 0x1000)]).is_err());
    }

    #[test]
    fn ram_coverage_spans_adjacent_ranges() {
        let ram = [(0, 0x2000), (0x2000, 0x3000), (0x5000, 0x6000)];
        assert!(ram_covers(&ram, 0x1000, 0x3000));
        assert!(ram_covers(&ram, 0x5000, 0x6000));
        assert!(ram_covers(&ram, 0x4000, 0x4000), "empty");
        assert!(!ram_covers(&ram, 0x2000, 0x4000));
        assert!(!ram_covers(&ram, 0x4000, 0x5000));
        assert!(!ram_covers(&ram, 0x5000, 0x7000));
    }

    #[test]
    fn every_header_type_has_its_name() {
        assert_eq!(header_name(0x30b), "IGVM_VHT_SNP_ID_BLOCK");
        assert_eq!(header_name(0x313), "IGVM_VHT_ENVIRONMENT_INFO_PARAMETER");
        assert_eq!(header_name(0x3ff), "an unknown directive type");
    }
}
