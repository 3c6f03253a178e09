//! ACPI tables: from the RSDP to the XSDT (or RSDT), the MADT (CPUs and IOAPICs) and the FADT
//! (what an S5 power-off needs).
//!
//! The parsing functions are pure over byte slices, so a table the firmware got wrong (bad
//! checksum, a length that runs past the table, a truncated entry) is an [`AcpiError`] with a
//! message, never an out-of-bounds read. Only [`Tables::discover`] touches physical memory, and
//! only ranges that the memory map reports as firmware-owned (tables are identity-mapped).

use alloc::vec::Vec;
use core::fmt;
use handoff::bootinfo::{BootInfo, MemoryKind};

/// Size of the common table header.
const HEADER_LEN: usize = 36;
/// Upper bound on a table's length: far above any real table (QEMU's DSDT is about 8 KiB), and
/// small enough that a garbage length cannot make us read gigabytes.
const MAX_TABLE_LEN: usize = 4 << 20;

/// Why the ACPI tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The stage found no RSDP in the firmware's configuration tables.
    NoRsdp,
    /// The RSDP's signature, checksum or revision is wrong.
    BadRsdp(&'static str),
    /// A table (or the RSDP) lies outside the firmware-owned memory of the memory map.
    OutsideFirmwareMemory { addr: u64, len: u64 },
    /// A table failed a check: signature, length or checksum.
    BadTable {
        signature: [u8; 4],
        why: &'static str,
    },
    /// The root table does not list this table.
    Missing([u8; 4]),
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::NoRsdp => write!(f, "no ACPI RSDP from the stage"),
            Self::BadRsdp(why) => write!(f, "bad RSDP: {why}"),
            Self::OutsideFirmwareMemory { addr, len } => write!(
                f,
                "ACPI data at {addr:#x}+{len:#x} is not in firmware-owned memory"
            ),
            Self::BadTable { signature, why } => {
                write!(f, "bad ACPI table {}: {why}", sig_name(signature))
            }
            Self::Missing(signature) => write!(f, "no ACPI table {}", sig_name(signature)),
        }
    }
}

/// What the RSDP points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// ACPI 2.0+: the XSDT, with 64-bit entries.
    Xsdt(u64),
    /// ACPI 1.0: the RSDT, with 32-bit entries.
    Rsdt(u64),
}

/// Parses the RSDP (20 bytes for revision 0, 36 bytes from revision 2 on).
pub fn parse_rsdp(b: &[u8]) -> Result<Root, AcpiError> {
    if b.len() < 20 || &b[..8] != b"RSD PTR " {
        return Err(AcpiError::BadRsdp("signature"));
    }
    if sum(&b[..20]) != 0 {
        return Err(AcpiError::BadRsdp("checksum"));
    }
    let rsdt = u64::from(u32_at(b, 16));
    if b[15] < 2 {
        return Ok(Root::Rsdt(rsdt));
    }
    if b.len() < 36 || (u32_at(b, 20) as usize) < 36 || (u32_at(b, 20) as usize) > b.len() {
        return Err(AcpiError::BadRsdp("length"));
    }
    if sum(&b[..u32_at(b, 20) as usize]) != 0 {
        return Err(AcpiError::BadRsdp("extended checksum"));
    }
    match u64_at(b, 24) {
        0 => Ok(Root::Rsdt(rsdt)),
        xsdt => Ok(Root::Xsdt(xsdt)),
    }
}

/// The length a table's header claims, checked against the header size and [`MAX_TABLE_LEN`].
pub fn header_len(header: &[u8]) -> Result<usize, AcpiError> {
    let bad = |why| AcpiError::BadTable {
        signature: sig_of(header),
        why,
    };
    if header.len() < HEADER_LEN {
        return Err(bad("shorter than its header"));
    }
    match u32_at(header, 4) as usize {
        n if n < HEADER_LEN => Err(bad("length below the header size")),
        n if n > MAX_TABLE_LEN => Err(bad("length above 4 MiB")),
        n => Ok(n),
    }
}

/// Checks a whole table: signature `want`, the length in its header equal to the slice's, and
/// the checksum.
pub fn check_table(t: &[u8], want: &[u8; 4]) -> Result<(), AcpiError> {
    let len = header_len(t)?;
    let bad = |why| AcpiError::BadTable {
        signature: sig_of(t),
        why,
    };
    if &sig_of(t) != want {
        return Err(bad("unexpected signature"));
    }
    if len != t.len() {
        return Err(bad("length differs from the bytes given"));
    }
    if sum(t) != 0 {
        return Err(bad("checksum"));
    }
    Ok(())
}

/// The physical addresses of the tables a checked XSDT (`entry_size` 8) or RSDT (4) lists.
pub fn root_entries(t: &[u8], entry_size: usize) -> impl Iterator<Item = u64> + '_ {
    t[HEADER_LEN.min(t.len())..]
        .chunks_exact(entry_size)
        .map(move |c| {
            if entry_size == 8 {
                u64_at(c, 0)
            } else {
                u64::from(u32_at(c, 0))
            }
        })
}

/// One enabled processor of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub apic_id: u32,
    /// The ACPI processor UID, which ties the entry to the processor in the DSDT.
    pub uid: u32,
}

/// One I/O APIC of the MADT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

/// What the MADT says: the local APIC's MMIO address, the enabled CPUs and the I/O APICs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Madt {
    pub local_apic_address: u64,
    /// Enabled processors in table order, one per APIC ID (a CPU listed both as Local APIC
    /// and Local x2APIC is counted once).
    pub cpus: Vec<Cpu>,
    pub io_apics: Vec<IoApic>,
}

/// MADT entry types this kernel reads.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_LOCAL_APIC_OVERRIDE: u8 = 5;
const MADT_LOCAL_X2APIC: u8 = 9;
/// Processor flags: bit 0 "enabled".
const MADT_CPU_ENABLED: u32 = 1;

/// Parses a checked MADT. Entries are bounded by the table: an entry shorter than its type
/// requires, or one running past the end, is an error.
pub fn parse_madt(t: &[u8]) -> Result<Madt, AcpiError> {
    let bad = |why| AcpiError::BadTable {
        signature: *b"APIC",
        why,
    };
    if t.len() < HEADER_LEN + 8 {
        return Err(bad("too short for the local APIC address and flags"));
    }
    let mut m = Madt {
        local_apic_address: u64::from(u32_at(t, HEADER_LEN)),
        cpus: Vec::new(),
        io_apics: Vec::new(),
    };
    let mut rest = &t[HEADER_LEN + 8..];
    while !rest.is_empty() {
        if rest.len() < 2 || rest[1] < 2 || rest[1] as usize > rest.len() {
            return Err(bad("entry length runs past the table"));
        }
        let (e, tail) = rest.split_at(rest[1] as usize);
        rest = tail;
        let need = |n: usize| {
            if e.len() < n {
                Err(bad("entry shorter than its type"))
            } else {
                Ok(())
            }
        };
        let cpu = match e[0] {
            MADT_LOCAL_APIC => {
                need(8)?;
                (u32_at(e, 4) & MADT_CPU_ENABLED != 0).then_some(Cpu {
                    apic_id: u32::from(e[3]),
                    uid: u32::from(e[2]),
                })
            }
            MADT_LOCAL_X2APIC => {
                need(16)?;
                (u32_at(e, 8) & MADT_CPU_ENABLED != 0).then_some(Cpu {
                    apic_id: u32_at(e, 4),
                    uid: u32_at(e, 12),
                })
            }
            MADT_IO_APIC => {
                need(12)?;
                m.io_apics.push(IoApic {
                    id: e[2],
                    address: u32_at(e, 4),
                    gsi_base: u32_at(e, 8),
                });
                None
            }
            MADT_LOCAL_APIC_OVERRIDE => {
                need(12)?;
                m.local_apic_address = u64_at(e, 4);
                None
            }
            _ => None,
        };
        if let Some(cpu) = cpu
            && !m.cpus.iter().any(|c| c.apic_id == cpu.apic_id)
        {
            m.cpus.push(cpu);
        }
    }
    Ok(m)
}

/// What the FADT gives for powering off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fadt {
    /// The DSDT's physical address (X_DSDT when present, else DSDT).
    pub dsdt: u64,
    /// The PM1a control block's I/O port, 0 if none.
    pub pm1a_control: u16,
}

/// Parses a checked FADT (revision 1's 116 bytes at least; the 64-bit fields when present).
pub fn parse_fadt(t: &[u8]) -> Result<Fadt, AcpiError> {
    if t.len() < 116 {
        return Err(AcpiError::BadTable {
            signature: *b"FACP",
            why: "shorter than an ACPI 1.0 FADT",
        });
    }
    let x_dsdt = if t.len() >= 148 { u64_at(t, 140) } else { 0 };
    let dsdt = if x_dsdt != 0 {
        x_dsdt
    } else {
        u64::from(u32_at(t, 40))
    };
    // PM1a_CNT_BLK (offset 64) is an I/O port; the 64-bit X_PM1a_CNT_BLK (generic address at
    // 172) is used when the 32-bit field is empty and it names system I/O space (id 1).
    let mut port = u32_at(t, 64);
    if port == 0 && t.len() >= 184 && t[172] == 1 {
        port = u64_at(t, 176) as u32;
    }
    Ok(Fadt {
        dsdt,
        pm1a_control: u16::try_from(port).unwrap_or(0),
    })
}

/// Finds the S5 sleep type (SLP_TYPa) in DSDT AML: the `_S5_` name followed by a Package whose
/// first element is an integer (ZeroOp, OneOp or BytePrefix n). This is a byte search, not an
/// AML interpreter: a `_S5_` computed by a method is not found, and the caller gives up on S5.
pub fn find_s5(aml: &[u8]) -> Option<u8> {
    const PACKAGE_OP: u8 = 0x12;
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    let p = aml.get(at + 4..)?;
    if *p.first()? != PACKAGE_OP {
        return None;
    }
    // PkgLength: bits 7:6 of the lead byte count the bytes that follow it.
    let pkg_len_bytes = 1 + usize::from(p.get(1)? >> 6);
    let elements = p.get(1 + pkg_len_bytes + 1..)?;
    match *elements.first()? {
        0x00 => Some(0),
        0x01 => Some(1),
        0x0a => elements.get(1).copied(),
        _ => None,
    }
}

/// The tables the kernel uses, found and checked once.
#[derive(Clone, Debug)]
pub struct Tables {
    pub madt: Madt,
    pub fadt: Option<Fadt>,
    /// SLP_TYPa for S5 from the DSDT, when it could be found.
    pub s5_sleep_type: Option<u8>,
}

static TABLES: spin::Once<Result<Tables, AcpiError>> = spin::Once::new();

/// The tables, discovered on the first call.
pub fn tables(info: &BootInfo) -> Result<&'static Tables, AcpiError> {
    TABLES
        .call_once(|| Tables::discover(info))
        .as_ref()
        .map_err(|e| *e)
}

/// The tables if [`tables`] succeeded before, for paths without a BootInfo (shutdown).
pub fn tables_if_known() -> Option<&'static Tables> {
    TABLES.get().and_then(|t| t.as_ref().ok())
}

impl Tables {
    fn discover(info: &BootInfo) -> Result<Self, AcpiError> {
        if info.rsdp == 0 {
            return Err(AcpiError::NoRsdp);
        }
        let rsdp = phys(info, info.rsdp, 20)?;
        let rsdp = if rsdp[15] >= 2 {
            phys(info, info.rsdp, 36)?
        } else {
            rsdp
        };
        let (root, entry_size, sig) = match parse_rsdp(rsdp)? {
            Root::Xsdt(a) => (a, 8, b"XSDT"),
            Root::Rsdt(a) => (a, 4, b"RSDT"),
        };
        let root = table(info, root, sig)?;
        let find = |want: &[u8; 4]| {
            root_entries(root, entry_size)
                .find(|&a| phys(info, a, HEADER_LEN as u64).is_ok_and(|h| &sig_of(h) == want))
                .ok_or(AcpiError::Missing(*want))
                .and_then(|a| table(info, a, want))
        };
        let madt = parse_madt(find(b"APIC")?)?;
        let fadt = match find(b"FACP") {
            Ok(t) => Some(parse_fadt(t)?),
            Err(e) => {
                log::warn!("{e}: no ACPI power-off");
                None
            }
        };
        let s5_sleep_type = fadt
            .and_then(|f| table(info, f.dsdt, b"DSDT").ok())
            .and_then(|dsdt| find_s5(&dsdt[HEADER_LEN..]));
        log::info!(
            "ACPI: {} CPUs, {} IOAPICs, local APIC at {:#x}, PM1a control {:#x}, S5 type {:?}",
            madt.cpus.len(),
            madt.io_apics.len(),
            madt.local_apic_address,
            fadt.map_or(0, |f| f.pm1a_control),
            s5_sleep_type
        );
        Ok(Self {
            madt,
            fadt,
            s5_sleep_type,
        })
    }
}

/// Reads and checks the table at `addr` with signature `want`.
fn table(info: &BootInfo, addr: u64, want: &[u8; 4]) -> Result<&'static [u8], AcpiError> {
    let len = header_len(phys(info, addr, HEADER_LEN as u64)?)?;
    let t = phys(info, addr, len as u64)?;
    check_table(t, want)?;
    Ok(t)
}

/// `len` bytes of physical memory at `addr`, which must lie within one region of the memory map
/// that the firmware owns (ACPI reclaimable, ACPI NVS, reserved or runtime memory).
fn phys(info: &BootInfo, addr: u64, len: u64) -> Result<&'static [u8], AcpiError> {
    let end = addr.checked_add(len);
    let firmware_owned = |k: MemoryKind| {
        matches!(
            k,
            MemoryKind::ACPI_RECLAIMABLE
                | MemoryKind::ACPI_NVS
                | MemoryKind::RESERVED
                | MemoryKind::FIRMWARE_RUNTIME
        )
    };
    let inside = end.is_some_and(|end| {
        info.memory_map()
            .iter()
            .any(|r| firmware_owned(r.kind) && r.start <= addr && end <= r.end())
    });
    if addr == 0 || !inside {
        return Err(AcpiError::OutsideFirmwareMemory { addr, len });
    }
    // SAFETY: the range lies in firmware-owned memory (checked above), which the stage's page
    // tables identity-map and nothing in this kernel writes; the tables live for the whole run.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// Powers the machine off through ACPI S5 when the tables allowed it; returns if they did not
/// (or if the write had no effect).
pub fn power_off() {
    let Some(t) = tables_if_known() else { return };
    let (Some(fadt), Some(slp_typ)) = (t.fadt, t.s5_sleep_type) else {
        return;
    };
    if fadt.pm1a_control == 0 {
        return;
    }
    /// PM1 control: SLP_TYP in bits 12:10, SLP_EN is bit 13.
    const SLP_EN: u16 = 1 << 13;
    x86::io::outw(fadt.pm1a_control, (u16::from(slp_typ & 7) << 10) | SLP_EN);
}

fn sig_of(t: &[u8]) -> [u8; 4] {
    match t.get(..4) {
        Some(s) => [s[0], s[1], s[2], s[3]],
        None => *b"????",
    }
}

fn sig_name(s: &[u8; 4]) -> &str {
    core::str::from_utf8(s).unwrap_or("????")
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}
