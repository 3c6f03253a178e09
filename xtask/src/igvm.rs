//! The IGVM file of an SEV-ES guest, laid out per the launch contract in `handoff::launch`:
//! launch GDT, launch page tables, the guest ELF loaded and relocated at `IMAGE_GPA`, the
//! parameter area (vCPU count, command line, memory map) the launcher fills, and the VMSA of
//! vCPU 0 in the contract's entry state.
//!
//! All-zero pages (the ELF's header page and `.bss`) are page-data directives without file data,
//! which IGVM defines as zero-filled pages: they are part of the measured image without taking
//! room in the file.

use crate::Result;
use handoff::elf::Elf;
use handoff::launch::{
    CODE_SELECTOR, DATA_SELECTOR, ENTRY_CR0, ENTRY_CR4, ENTRY_EFER, GDT, GDT_GPA, IMAGE_GPA,
    MAX_VCPUS, PAGE_TABLE_PAGES, PAGE_TABLES_GPA, PARAM_AREA_SIZE, PARAM_CMDLINE_OFFSET, PARAM_GPA,
    PARAM_MEMORY_MAP_OFFSET, PARAM_VP_COUNT_OFFSET, SHARED_ALIAS, SHARED_ALIAS_SIZE, VMSA_GPA,
};
use igvm::snp_defs::{SevSelector, SevVmsa};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags,
    IgvmPageDataType, IgvmPlatformType,
};
use zerocopy::FromZeros;

const PAGE: u64 = 4096;
/// The file describes one platform (SEV-ES); every directive carries its bit.
const COMPATIBILITY_MASK: u32 = 1;
/// The file's only parameter area.
const PARAM_AREA_INDEX: u32 = 0;
const GIB: u64 = 1 << 30;
const TWO_MIB: u64 = 2 << 20;
/// Up to here GPAs are private RAM in the launch map; 3 .. 4 GiB is the shared MMIO hole.
const PRIVATE_END: u64 = 3 * GIB;

// Page-table entry bits.
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const HUGE: u64 = 1 << 7;
/// Bits of a 2 MiB leaf; accessed and dirty preset so the walker never has to write the
/// (measured) tables.
const LEAF: u64 = PRESENT | WRITABLE | HUGE | ACCESSED | DIRTY;
/// Bits of an entry that points to the next table.
const TABLE: u64 = PRESENT | WRITABLE | ACCESSED;

// Pages of the launch tables, in the order the contract lists them.
const PML4: usize = 0;
const PDPT_LOW: usize = 1;
const PDPT_ALIAS: usize = 2;
const PD_IDENTITY: usize = 3;
const IDENTITY_PDS: usize = 4;
const PD_ALIAS: usize = PD_IDENTITY + IDENTITY_PDS;

const _: () = {
    assert!(PD_ALIAS + 1 == PAGE_TABLE_PAGES as usize);
    // The alias is one PD in its own PML4 slot, away from the identity map's slot 0.
    assert!(SHARED_ALIAS.is_multiple_of(GIB) && SHARED_ALIAS_SIZE == GIB);
    assert!(SHARED_ALIAS >> 39 != 0 && SHARED_ALIAS >> 39 < 256);
    assert!(GDT.len() * 8 <= PAGE as usize);
};

/// Lowest and highest C-bit position accepted: above every GPA the launch map covers (4 GiB),
/// within the 52 bits of a physical address.
const C_BIT_RANGE: core::ops::RangeInclusive<u32> = 32..=51;

/// Where the vCPUs start in the guest ELF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The ELF entry point (the simulator's test guest).
    Elf,
    /// This link-time address (an entry symbol other than the ELF's, found with
    /// [`symbol_address`]: the stage, whose ELF entry is its EFI entry).
    At(u64),
}

/// The link-time address of the symbol `name` in `elf`'s symbol table.
pub fn symbol_address(elf: &[u8], name: &str) -> Result<u64> {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(elf).map_err(|e| format!("guest ELF: {e}"))?;
    file.symbols()
        .find(|s| s.name() == Ok(name) && s.is_definition())
        .map(|s| s.address())
        .ok_or_else(|| format!("guest ELF: no symbol `{name}`"))
}

/// Builds the IGVM file (SEV-ES platform) launching the static-PIE `elf` at `entry` with the
/// C-bit at position `c_bit`.
pub fn build_sev_es(elf: &[u8], entry: Entry, c_bit: u32) -> Result<Vec<u8>> {
    if !C_BIT_RANGE.contains(&c_bit) {
        return Err(format!(
            "C-bit position {c_bit} outside {}..={}",
            C_BIT_RANGE.start(),
            C_BIT_RANGE.end()
        ));
    }
    let c = 1u64 << c_bit;
    let elf = Elf::parse(elf).map_err(|e| format!("guest ELF: {e}"))?;
    if elf.span() > PRIVATE_END - IMAGE_GPA {
        return Err(format!(
            "guest ELF spans {:#x} bytes: more than the private memory above {IMAGE_GPA:#x}",
            elf.span()
        ));
    }
    let mut image = vec![0u8; elf.span() as usize];
    let elf_entry = elf
        .load(&mut image, IMAGE_GPA)
        .map_err(|e| format!("guest ELF: {e}"))?;
    let entry = match entry {
        Entry::Elf => elf_entry,
        Entry::At(at) if at < elf.span() => IMAGE_GPA + at,
        Entry::At(at) => {
            return Err(format!(
                "entry {at:#x} outside the guest image ({:#x} bytes)",
                elf.span()
            ));
        }
    };

    let mut directives = Vec::new();
    let gdt: Vec<u8> = GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    directives.push(page_data(GDT_GPA, &gdt));
    for (i, table) in page_tables(c).iter().enumerate() {
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        directives.push(page_data(PAGE_TABLES_GPA + i as u64 * PAGE, &bytes));
    }
    for (i, page) in image.chunks(PAGE as usize).enumerate() {
        directives.push(page_data(IMAGE_GPA + i as u64 * PAGE, page));
    }
    directives.push(IgvmDirectiveHeader::ParameterArea {
        number_of_bytes: PARAM_AREA_SIZE,
        parameter_area_index: PARAM_AREA_INDEX,
        initial_data: Vec::new(),
    });
    let param = |byte_offset| IGVM_VHS_PARAMETER {
        parameter_area_index: PARAM_AREA_INDEX,
        byte_offset,
    };
    directives.push(IgvmDirectiveHeader::VpCount(param(PARAM_VP_COUNT_OFFSET)));
    directives.push(IgvmDirectiveHeader::CommandLine(param(
        PARAM_CMDLINE_OFFSET,
    )));
    directives.push(IgvmDirectiveHeader::MemoryMap(param(
        PARAM_MEMORY_MAP_OFFSET,
    )));
    directives.push(IgvmDirectiveHeader::ParameterInsert(
        IGVM_VHS_PARAMETER_INSERT {
            gpa: PARAM_GPA,
            compatibility_mask: COMPATIBILITY_MASK,
            parameter_area_index: PARAM_AREA_INDEX,
        },
    ));
    for vp_index in 0..MAX_VCPUS {
        directives.push(IgvmDirectiveHeader::SnpVpContext {
            gpa: VMSA_GPA + u64::from(vp_index) * 4096,
            compatibility_mask: COMPATIBILITY_MASK,
            vp_index,
            vmsa: entry_vmsa(entry, c, vp_index),
        });
    }

    let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: COMPATIBILITY_MASK,
        highest_vtl: 0,
        platform_type: IgvmPlatformType::SEV_ES,
        platform_version: 1,
        shared_gpa_boundary: 0,
    });
    let file = IgvmFile::new(IgvmRevision::V1, vec![platform], Vec::new(), directives)
        .map_err(|e| format!("IGVM file: {e}"))?;
    let mut out = Vec::new();
    file.serialize(&mut out)
        .map_err(|e| format!("IGVM file: {e}"))?;
    Ok(out)
}

/// A measured 4 KiB page at `gpa` holding `data`; an all-zero page carries no file data.
fn page_data(gpa: u64, data: &[u8]) -> IgvmDirectiveHeader {
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: COMPATIBILITY_MASK,
        flags: IgvmPageDataFlags::new(),
        data_type: IgvmPageDataType::NORMAL,
        data: if data.iter().all(|&b| b == 0) {
            Vec::new()
        } else {
            data.to_vec()
        },
    }
}

/// The launch page tables (see the table in `handoff::launch`), with `c` the C-bit mask.
fn page_tables(c: u64) -> Vec<[u64; 512]> {
    let mut t = vec![[0u64; 512]; PAGE_TABLE_PAGES as usize];
    let at = |i: usize| PAGE_TABLES_GPA + i as u64 * PAGE;
    t[PML4][0] = at(PDPT_LOW) | c | TABLE;
    t[PML4][(SHARED_ALIAS >> 39) as usize] = at(PDPT_ALIAS) | c | TABLE;
    for pd in 0..IDENTITY_PDS {
        t[PDPT_LOW][pd] = at(PD_IDENTITY + pd) | c | TABLE;
        for (i, e) in t[PD_IDENTITY + pd].iter_mut().enumerate() {
            let gpa = pd as u64 * GIB + i as u64 * TWO_MIB;
            *e = gpa | LEAF | if gpa < PRIVATE_END { c } else { PCD | PWT };
        }
    }
    t[PDPT_ALIAS][((SHARED_ALIAS >> 30) & 511) as usize] = at(PD_ALIAS) | c | TABLE;
    for (i, e) in t[PD_ALIAS].iter_mut().enumerate() {
        *e = (i as u64 * TWO_MIB) | LEAF;
    }
    t
}

/// A vCPU's state at entry: the contract's long-mode state at `rip`, with `c` the C-bit mask
/// and the vCPU's index in RSI.
fn entry_vmsa(rip: u64, c: u64, vp_index: u16) -> Box<SevVmsa> {
    let seg = |selector, attrib, limit| SevSelector {
        selector,
        attrib,
        limit,
        base: 0,
    };
    let data = seg(DATA_SELECTOR, 0xc93, 0xffff_ffff);
    let mut v = SevVmsa::new_box_zeroed().expect("a VMSA fits in memory");
    // Attributes in the VMCB's 12-bit form: type/S/DPL/P in bits 0..8, AVL/L/DB/G in 8..12.
    v.cs = seg(CODE_SELECTOR, 0xa9b, 0xffff_ffff); // present, execute/read, L, G
    (v.ss, v.ds, v.es) = (data, data, data); // present, read/write, DB, G
    v.gdtr = seg(0, 0, (GDT.len() * 8 - 1) as u32);
    v.gdtr.base = GDT_GPA;
    // A present busy 64-bit TSS (VMRUN checks TR's type); the guest loads its own before use.
    v.tr = seg(0, 0x8b, 0xffff);
    // FS, GS, LDTR and IDTR stay null (IDTR limit 0: the guest loads its own IDT first).
    v.efer = ENTRY_EFER;
    v.cr0 = ENTRY_CR0;
    v.cr3 = PAGE_TABLES_GPA | c;
    v.cr4 = ENTRY_CR4;
    v.rflags = 2;
    v.rip = rip;
    v.rsp = 0;
    v.rdi = PARAM_GPA;
    v.rsi = u64::from(vp_index);
    v.xcr0 = 1;
    v.pat = 0x0007_0406_0007_0406;
    v.dr6 = 0xffff_0ff0;
    v.dr7 = 0x400;
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff::launch::SIM_C_BIT;

    const ENTRY: u64 = 0x1000;
    const RELOC_SLOT: u64 = 0x1100;
    const ADDEND: u64 = 0x1234;

    /// A static PIE like `linker.ld` makes: an RX segment at 0x1000 with code (entry), its
    /// dynamic table and one RELATIVE relocation, then 8 KiB of .bss.
    fn tiny_elf() -> Vec<u8> {
        let mut f = vec![0u8; 0x1200];
        let w = |f: &mut Vec<u8>, at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
        w(&mut f, 0, b"\x7fELF\x02\x01");
        w(&mut f, 16, &3u16.to_le_bytes()); // ET_DYN
        w(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
        w(&mut f, 24, &ENTRY.to_le_bytes());
        w(&mut f, 32, &64u64.to_le_bytes()); // phoff
        w(&mut f, 54, &56u16.to_le_bytes());
        w(&mut f, 56, &2u16.to_le_bytes());
        // PT_LOAD: file 0x1000..0x1200 at vaddr 0x1000, memsz 0x3000.
        for (at, kind, off, fsz, msz) in [
            (64, 1u32, 0x1000u64, 0x200u64, 0x3000u64),
            (120, 2, 0x1010, 0x40, 0x40), // PT_DYNAMIC
        ] {
            w(&mut f, at, &kind.to_le_bytes());
            w(&mut f, at + 8, &off.to_le_bytes());
            w(&mut f, at + 16, &off.to_le_bytes());
            w(&mut f, at + 32, &fsz.to_le_bytes());
            w(&mut f, at + 40, &msz.to_le_bytes());
        }
        w(&mut f, 0x1000, &[0xf4]); // hlt
        for (i, v) in [7u64, 0x1080, 8, 24, 0, 0].iter().enumerate() {
            w(&mut f, 0x1010 + i * 8, &v.to_le_bytes()); // DT_RELA, DT_RELASZ, DT_NULL
        }
        w(&mut f, 0x1080, &RELOC_SLOT.to_le_bytes());
        w(&mut f, 0x1088, &8u64.to_le_bytes()); // R_X86_64_RELATIVE
        w(&mut f, 0x1090, &ADDEND.to_le_bytes());
        f
    }

    fn parsed() -> IgvmFile {
        let bytes = build_sev_es(&tiny_elf(), Entry::Elf, SIM_C_BIT).expect("build");
        IgvmFile::new_from_binary(&bytes, None).expect("parse back")
    }

    /// The data of the page-data directive at `gpa` (empty for a zero page).
    fn page(file: &IgvmFile, gpa: u64) -> Vec<u8> {
        let mut found = file.directives().iter().filter_map(|d| match d {
            IgvmDirectiveHeader::PageData { gpa: g, data, .. } if *g == gpa => Some(data.clone()),
            _ => None,
        });
        let data = found
            .next()
            .unwrap_or_else(|| panic!("no page at {gpa:#x}"));
        assert!(found.next().is_none(), "two pages at {gpa:#x}");
        data
    }

    fn entry_at(file: &IgvmFile, table: usize, index: usize) -> u64 {
        let data = page(file, PAGE_TABLES_GPA + table as u64 * PAGE);
        u64::from_le_bytes(data[index * 8..index * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn platform_is_sev_es() {
        let file = parsed();
        let [IgvmPlatformHeader::SupportedPlatform(p)] = file.platforms() else {
            panic!("one platform expected");
        };
        assert_eq!(p.platform_type, IgvmPlatformType::SEV_ES);
        assert_eq!((p.compatibility_mask, p.platform_version), (1, 1));
        assert_eq!((p.highest_vtl, p.shared_gpa_boundary), (0, 0));
    }

    #[test]
    fn every_vcpu_gets_the_entry_state_with_its_index() {
        let file = parsed();
        let vps: Vec<(u16, u64, u64)> = file
            .directives()
            .iter()
            .filter_map(|d| match d {
                IgvmDirectiveHeader::SnpVpContext {
                    gpa,
                    vp_index,
                    vmsa,
                    ..
                } => Some((*vp_index, *gpa, vmsa.rsi)),
                _ => None,
            })
            .collect();
        assert_eq!(vps.len(), usize::from(MAX_VCPUS));
        for (i, (vp, gpa, rsi)) in (0u16..).zip(vps) {
            assert_eq!(
                (vp, gpa, rsi),
                (i, VMSA_GPA + u64::from(i) * 4096, u64::from(i))
            );
        }
    }

    #[test]
    fn vmsa_is_the_contract_entry_state() {
        let file = parsed();
        let vmsa = file
            .directives()
            .iter()
            .find_map(|d| match d {
                IgvmDirectiveHeader::SnpVpContext {
                    gpa,
                    compatibility_mask: 1,
                    vp_index: 0,
                    vmsa,
                } if *gpa == VMSA_GPA => Some(vmsa.clone()),
                _ => None,
            })
            .expect("VP context of vCPU 0");
        let c = 1u64 << SIM_C_BIT;
        assert_eq!(vmsa.rip, IMAGE_GPA + ENTRY);
        assert_eq!(
            (vmsa.rsp, vmsa.rdi, vmsa.rsi, vmsa.rflags),
            (0, PARAM_GPA, 0, 2)
        );
        assert_eq!(vmsa.cr3, PAGE_TABLES_GPA | c);
        assert_eq!(
            (vmsa.cr0, vmsa.cr4, vmsa.efer),
            (ENTRY_CR0, ENTRY_CR4, ENTRY_EFER)
        );
        assert_eq!((vmsa.cs.selector, vmsa.cs.attrib), (CODE_SELECTOR, 0xa9b));
        for s in [vmsa.ss, vmsa.ds, vmsa.es] {
            assert_eq!((s.selector, s.attrib, s.limit), (DATA_SELECTOR, 0xc93, !0));
        }
        assert_eq!((vmsa.fs.selector, vmsa.gs.selector), (0, 0));
        assert_eq!((vmsa.gdtr.base, vmsa.gdtr.limit), (GDT_GPA, 23));
        assert_eq!(vmsa.idtr.limit, 0);
        assert_eq!((vmsa.tr.attrib, vmsa.tr.limit), (0x8b, 0xffff));
        assert_eq!((vmsa.xcr0, vmsa.pat), (1, 0x0007_0406_0007_0406));
        assert_eq!((vmsa.dr6, vmsa.dr7), (0xffff_0ff0, 0x400));
    }

    #[test]
    fn page_tables_map_private_shared_and_alias() {
        let file = parsed();
        let c = 1u64 << SIM_C_BIT;
        assert_eq!(entry_at(&file, PML4, 0), 0x3000 | c | TABLE);
        assert_eq!(entry_at(&file, PML4, 1), 0x4000 | c | TABLE);
        assert_eq!(entry_at(&file, PDPT_LOW, 3), 0x8000 | c | TABLE);
        assert_eq!(entry_at(&file, PDPT_LOW, 4), 0, "nothing above 4 GiB");
        assert_eq!(entry_at(&file, PDPT_ALIAS, 0), 0x9000 | c | TABLE);
        // 2 MiB .. 4 MiB: private.
        assert_eq!(entry_at(&file, PD_IDENTITY, 1), 0x20_0000 | c | LEAF);
        // Last private leaf, first shared (MMIO) leaf at 3 GiB.
        assert_eq!(
            entry_at(&file, PD_IDENTITY + 2, 511),
            (3 * GIB - TWO_MIB) | c | LEAF
        );
        assert_eq!(
            entry_at(&file, PD_IDENTITY + 3, 0),
            (3 * GIB) | PCD | PWT | LEAF
        );
        // Alias of GPA 1 GiB - 2 MiB, without the C-bit.
        assert_eq!(entry_at(&file, PD_ALIAS, 511), (GIB - TWO_MIB) | LEAF);
    }

    #[test]
    fn image_is_loaded_relocated_and_zero_pages_carry_no_data() {
        let file = parsed();
        assert_eq!(page(&file, GDT_GPA)[8..16], GDT[1].to_le_bytes());
        assert!(page(&file, IMAGE_GPA).is_empty(), "header page is zero");
        let text = page(&file, IMAGE_GPA + 0x1000);
        assert_eq!(text[0], 0xf4);
        let slot = (RELOC_SLOT - 0x1000) as usize;
        assert_eq!(text[slot..slot + 8], (IMAGE_GPA + ADDEND).to_le_bytes());
        assert!(page(&file, IMAGE_GPA + 0x3000).is_empty(), ".bss");
        let image_pages = file
            .directives()
            .iter()
            .filter(|d| matches!(d, IgvmDirectiveHeader::PageData { gpa, .. } if *gpa >= IMAGE_GPA))
            .count();
        assert_eq!(image_pages, 4, "span 0x4000");
    }

    #[test]
    fn parameter_area_is_inserted_at_param_gpa() {
        let file = parsed();
        let d = file.directives();
        let area = d
            .iter()
            .position(|d| {
                matches!(
                    d,
                    IgvmDirectiveHeader::ParameterArea {
                        number_of_bytes: PARAM_AREA_SIZE,
                        parameter_area_index: 0,
                        ..
                    }
                )
            })
            .expect("parameter area");
        let offsets: Vec<_> = d[area + 1..area + 4]
            .iter()
            .map(|d| match d {
                IgvmDirectiveHeader::VpCount(p) => ("vp", p.byte_offset),
                IgvmDirectiveHeader::CommandLine(p) => ("cmdline", p.byte_offset),
                IgvmDirectiveHeader::MemoryMap(p) => ("memmap", p.byte_offset),
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(
            offsets,
            [
                ("vp", PARAM_VP_COUNT_OFFSET),
                ("cmdline", PARAM_CMDLINE_OFFSET),
                ("memmap", PARAM_MEMORY_MAP_OFFSET)
            ]
        );
        let IgvmDirectiveHeader::ParameterInsert(insert) = &d[area + 4] else {
            panic!("parameter insert expected after the parameters");
        };
        assert_eq!((insert.gpa, insert.parameter_area_index), (PARAM_GPA, 0));
    }

    /// RIP of vCPU `vp`'s VMSA.
    fn rip_of(file: &IgvmFile, vp: u16) -> u64 {
        file.directives()
            .iter()
            .find_map(|d| match d {
                IgvmDirectiveHeader::SnpVpContext { vp_index, vmsa, .. } if *vp_index == vp => {
                    Some(vmsa.rip)
                }
                _ => None,
            })
            .expect("VP context")
    }

    #[test]
    fn entry_other_than_the_elf_entry_is_used_by_every_vcpu() {
        let bytes = build_sev_es(&tiny_elf(), Entry::At(0x1008), SIM_C_BIT).expect("build");
        let file = IgvmFile::new_from_binary(&bytes, None).expect("parse back");
        for vp in 0..MAX_VCPUS {
            assert_eq!(rip_of(&file, vp), IMAGE_GPA + 0x1008);
        }
        assert_eq!(rip_of(&parsed(), 0), IMAGE_GPA + ENTRY);
        let e = build_sev_es(&tiny_elf(), Entry::At(0x4000), SIM_C_BIT).unwrap_err();
        assert!(e.contains("outside the guest image"), "{e}");
        assert!(
            symbol_address(&tiny_elf(), "_start").is_err(),
            "no symbol table"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(
            build_sev_es(&tiny_elf(), Entry::Elf, 31).is_err(),
            "C-bit inside 4 GiB"
        );
        assert!(build_sev_es(&tiny_elf(), Entry::Elf, 52).is_err());
        assert!(build_sev_es(b"not an elf", Entry::Elf, SIM_C_BIT).is_err());
        let mut huge = tiny_elf();
        huge[104..112].copy_from_slice(&(4 * GIB).to_le_bytes()); // memsz of the PT_LOAD
        let e = build_sev_es(&huge, Entry::Elf, SIM_C_BIT).unwrap_err();
        assert!(e.contains("more than the private memory"), "{e}");
    }
}
