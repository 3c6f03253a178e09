//! ELF (static PIE) to PE32+ EFI application.
//!
//! `linker.ld` guarantees ELF vaddr == PE RVA with page-aligned segments and the first page
//! free for headers, so each `PT_LOAD` becomes one section at the same RVA. Each
//! `R_X86_64_RELATIVE` becomes an `IMAGE_REL_BASED_DIR64` base relocation; the linker leaves the
//! slot empty (RELA), so the absolute value for the preferred base is written into it. Any other
//! relocation is an error. (`objcopy --target efi-app-x86_64` makes images OVMF refuses.)

use crate::Result;
use object::LittleEndian as LE;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader};
use object::{elf, pe};

/// Preferred image base; the firmware relocates the image wherever it loads it.
const IMAGE_BASE: u64 = 0x1_0000_0000;

struct Segment {
    vaddr: u64,
    memsz: u64,
    filesz: u64,
    offset: u64,
    flags: u32,
}

/// Converts the stage's ELF into an EFI application.
pub fn elf_to_efi(data: &[u8]) -> Result<Vec<u8>> {
    let err = |e: object::Error| e.to_string();
    let hdr = elf::FileHeader64::<LE>::parse(data).map_err(err)?;
    let e = hdr.endian().map_err(err)?;
    if hdr.e_machine(e) != elf::EM_X86_64 || hdr.e_type(e) != elf::ET_DYN {
        return Err("the stage is not an x86-64 static PIE".into());
    }
    let mut segs = Vec::new();
    for ph in hdr.program_headers(e, data).map_err(err)? {
        match ph.p_type(e) {
            elf::PT_LOAD if ph.p_memsz(e) != 0 => segs.push(Segment {
                vaddr: ph.p_vaddr(e),
                memsz: ph.p_memsz(e),
                filesz: ph.p_filesz(e),
                offset: ph.p_offset(e),
                flags: ph.p_flags(e),
            }),
            elf::PT_INTERP | elf::PT_TLS => return Err("PT_INTERP/PT_TLS in the stage".into()),
            _ => {}
        }
    }
    segs.sort_by_key(|s| s.vaddr);
    let mut end = 0x1000;
    for s in &segs {
        if s.vaddr % 0x1000 != 0 || s.vaddr < end {
            return Err(format!(
                "segment at {:#x} unaligned or overlapping",
                s.vaddr
            ));
        }
        end = s.vaddr + s.memsz;
    }

    // The flat image, into which relocations are patched.
    let mut image = vec![0u8; end as usize];
    for s in &segs {
        let src = data
            .get(s.offset as usize..(s.offset + s.filesz) as usize)
            .ok_or("segment outside the file")?;
        image[s.vaddr as usize..(s.vaddr + s.filesz) as usize].copy_from_slice(src);
    }
    let mut relocs = Vec::new();
    for sh in hdr.sections(e, data).map_err(err)?.iter() {
        if sh.sh_type(e) == elf::SHT_REL {
            return Err("SHT_REL relocations are not supported".into());
        }
        if sh.sh_type(e) != elf::SHT_RELA || sh.sh_flags(e) & u64::from(elf::SHF_ALLOC) == 0 {
            continue;
        }
        let relas: &[elf::Rela64<LE>] = sh.data_as_array(e, data).map_err(err)?;
        for r in relas {
            if r.r_type(e, false) != elf::R_X86_64_RELATIVE {
                return Err(format!(
                    "unsupported relocation type {} at {:#x}",
                    r.r_type(e, false),
                    r.r_offset(e)
                ));
            }
            let off = r.r_offset(e) as usize;
            let value = IMAGE_BASE.wrapping_add(r.r_addend(e) as u64);
            image
                .get_mut(off..off + 8)
                .ok_or("relocation outside the image")?
                .copy_from_slice(&value.to_le_bytes());
            relocs.push(off as u32);
        }
    }
    relocs.sort_unstable();

    let mut out = Vec::new();
    let mut w = object::write::pe::Writer::new(true, 0x1000, 0x200, &mut out);
    w.reserve_dos_header_and_stub();
    w.reserve_nt_headers(pe::IMAGE_NUMBEROF_DIRECTORY_ENTRIES);
    w.reserve_section_headers(segs.len() as u16 + 1);
    if w.virtual_len() > 0x1000 {
        return Err("PE headers exceed the first page".into());
    }
    let mut ranges = Vec::new();
    for s in &segs {
        let (name, characteristics) = if s.flags & elf::PF_X != 0 {
            (
                *b".text\0\0\0",
                pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_EXECUTE | pe::IMAGE_SCN_MEM_READ,
            )
        } else if s.flags & elf::PF_W != 0 {
            (
                *b".data\0\0\0",
                pe::IMAGE_SCN_CNT_INITIALIZED_DATA
                    | pe::IMAGE_SCN_MEM_READ
                    | pe::IMAGE_SCN_MEM_WRITE,
            )
        } else {
            (
                *b".rdata\0\0",
                pe::IMAGE_SCN_CNT_INITIALIZED_DATA | pe::IMAGE_SCN_MEM_READ,
            )
        };
        w.reserve_virtual_until(s.vaddr as u32);
        let r = w.reserve_section(name, characteristics, s.memsz as u32, s.filesz as u32);
        if u64::from(r.virtual_address) != s.vaddr {
            return Err(format!(
                "section RVA {:#x} != vaddr {:#x}",
                r.virtual_address, s.vaddr
            ));
        }
        ranges.push(r);
    }
    for &off in &relocs {
        w.add_reloc(off, pe::IMAGE_REL_BASED_DIR64);
    }
    w.reserve_reloc_section();
    w.write_dos_header_and_stub().map_err(|e| e.to_string())?;
    w.write_nt_headers(object::write::pe::NtHeaders {
        machine: pe::IMAGE_FILE_MACHINE_AMD64,
        time_date_stamp: 0,
        characteristics: pe::IMAGE_FILE_EXECUTABLE_IMAGE | pe::IMAGE_FILE_LARGE_ADDRESS_AWARE,
        major_linker_version: 0,
        minor_linker_version: 0,
        address_of_entry_point: hdr.e_entry(e) as u32,
        image_base: IMAGE_BASE,
        major_operating_system_version: 0,
        minor_operating_system_version: 0,
        major_image_version: 0,
        minor_image_version: 0,
        major_subsystem_version: 0,
        minor_subsystem_version: 0,
        subsystem: pe::IMAGE_SUBSYSTEM_EFI_APPLICATION,
        dll_characteristics: pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE
            | pe::IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA
            | pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT,
        size_of_stack_reserve: 0,
        size_of_stack_commit: 0,
        size_of_heap_reserve: 0,
        size_of_heap_commit: 0,
    });
    w.write_section_headers();
    for (s, r) in segs.iter().zip(&ranges) {
        w.write_section(
            r.file_offset,
            &image[s.vaddr as usize..(s.vaddr + s.filesz) as usize],
        );
    }
    w.write_reloc_section();
    Ok(out)
}
