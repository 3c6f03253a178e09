//! Loader for the kernel's static-PIE ELF.
//!
//! The kernel is linked position-independent at base 0 and runs identity mapped wherever the
//! stage put it, so loading is: copy each `PT_LOAD` segment to `dest + p_vaddr`, zero the rest,
//! and apply the `R_X86_64_RELATIVE` relocations listed by the `PT_DYNAMIC` segment. Anything
//! else (other relocation types, an interpreter, TLS) is refused: the kernel never needs it.

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_TLS: u32 = 7;
const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const R_X86_64_RELATIVE: u32 = 8;
const PAGE: u64 = 4096;

/// Why an ELF image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not a 64-bit little-endian x86-64 ELF.
    NotX86_64Elf,
    /// Not a position-independent executable (`ET_DYN`).
    NotPie,
    /// A header, segment or table lies outside the file or the image.
    OutOfBounds,
    /// A segment type the loader does not support (interpreter, TLS).
    UnsupportedSegment(u32),
    /// A relocation type other than `R_X86_64_RELATIVE`.
    UnsupportedRelocation(u32),
    /// No loadable segment, or segments that overlap.
    BadLayout,
    /// The destination buffer is smaller than the image span.
    DestinationTooSmall,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotX86_64Elf => write!(f, "kernel is not an x86-64 ELF64 image"),
            Self::NotPie => write!(f, "kernel is not a position-independent executable"),
            Self::OutOfBounds => write!(f, "kernel ELF has a header or segment out of bounds"),
            Self::UnsupportedSegment(t) => {
                write!(f, "kernel ELF has an unsupported segment type {t}")
            }
            Self::UnsupportedRelocation(t) => {
                write!(f, "kernel ELF has an unsupported relocation type {t}")
            }
            Self::BadLayout => write!(f, "kernel ELF has no or overlapping loadable segments"),
            Self::DestinationTooSmall => write!(f, "memory reserved for the kernel is too small"),
        }
    }
}

fn rd<const N: usize>(b: &[u8], at: u64) -> Result<[u8; N], ElfError> {
    let at = usize::try_from(at).map_err(|_| ElfError::OutOfBounds)?;
    let s = b
        .get(at..at.checked_add(N).ok_or(ElfError::OutOfBounds)?)
        .ok_or(ElfError::OutOfBounds)?;
    let mut v = [0u8; N];
    v.copy_from_slice(s);
    Ok(v)
}
fn u16_at(b: &[u8], at: u64) -> Result<u16, ElfError> {
    rd::<2>(b, at).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], at: u64) -> Result<u32, ElfError> {
    rd::<4>(b, at).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], at: u64) -> Result<u64, ElfError> {
    rd::<8>(b, at).map(u64::from_le_bytes)
}

/// One program header, the fields the loader uses.
#[derive(Clone, Copy, Debug)]
struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

/// A validated static-PIE ELF image.
#[derive(Debug)]
pub struct Elf<'a> {
    data: &'a [u8],
    entry: u64,
    phoff: u64,
    phnum: u16,
    span: u64,
}

impl<'a> Elf<'a> {
    /// Validates the ELF header and program headers of `data`.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        let ident = rd::<6>(data, 0)?;
        // magic, ELFCLASS64, ELFDATA2LSB
        if ident[..4] != *b"\x7fELF" || ident[4] != 2 || ident[5] != 1 || u16_at(data, 18)? != 62 {
            return Err(ElfError::NotX86_64Elf);
        }
        if u16_at(data, 16)? != 3 {
            return Err(ElfError::NotPie);
        }
        if u16_at(data, 54)? != 56 {
            return Err(ElfError::NotX86_64Elf);
        }
        let mut elf = Elf {
            data,
            entry: u64_at(data, 24)?,
            phoff: u64_at(data, 32)?,
            phnum: u16_at(data, 56)?,
            span: 0,
        };
        let mut prev_end = 0;
        for i in 0..elf.phnum {
            let s = elf.segment(i)?;
            match s.kind {
                PT_INTERP | PT_TLS => return Err(ElfError::UnsupportedSegment(s.kind)),
                PT_LOAD if s.memsz != 0 => {
                    let end = s.vaddr.checked_add(s.memsz).ok_or(ElfError::OutOfBounds)?;
                    let file_end = s
                        .offset
                        .checked_add(s.filesz)
                        .ok_or(ElfError::OutOfBounds)?;
                    if s.filesz > s.memsz || file_end > data.len() as u64 {
                        return Err(ElfError::OutOfBounds);
                    }
                    // The linker script emits segments in address order, each page aligned.
                    if s.vaddr < prev_end || s.vaddr % PAGE != 0 {
                        return Err(ElfError::BadLayout);
                    }
                    prev_end = end;
                }
                _ => {}
            }
        }
        if prev_end == 0 {
            return Err(ElfError::BadLayout);
        }
        elf.span = prev_end.next_multiple_of(PAGE);
        if elf.entry >= elf.span {
            return Err(ElfError::OutOfBounds);
        }
        Ok(elf)
    }

    fn segment(&self, i: u16) -> Result<Segment, ElfError> {
        let at = self.phoff + u64::from(i) * 56;
        Ok(Segment {
            kind: u32_at(self.data, at)?,
            offset: u64_at(self.data, at + 8)?,
            vaddr: u64_at(self.data, at + 16)?,
            filesz: u64_at(self.data, at + 32)?,
            memsz: u64_at(self.data, at + 40)?,
        })
    }

    /// Bytes of memory the loaded image occupies, page aligned.
    pub fn span(&self) -> u64 {
        self.span
    }

    /// Loads the image into `dest` (which will live at address `base`) and returns the entry
    /// point's address.
    pub fn load(&self, dest: &mut [u8], base: u64) -> Result<u64, ElfError> {
        if (dest.len() as u64) < self.span {
            return Err(ElfError::DestinationTooSmall);
        }
        dest[..self.span as usize].fill(0);
        let mut dynamic = None;
        for i in 0..self.phnum {
            let s = self.segment(i)?;
            match s.kind {
                PT_LOAD => {
                    let (v, o, n) = (s.vaddr as usize, s.offset as usize, s.filesz as usize);
                    dest[v..v + n].copy_from_slice(&self.data[o..o + n]);
                }
                PT_DYNAMIC => dynamic = Some(s),
                _ => {}
            }
        }
        if let Some(d) = dynamic {
            relocate(&mut dest[..self.span as usize], d.vaddr, d.memsz, base)?;
        }
        Ok(base + self.entry)
    }
}

/// Applies the RELA table named by the dynamic section at `dyn_vaddr` (already copied into `image`).
fn relocate(image: &mut [u8], dyn_vaddr: u64, dyn_size: u64, base: u64) -> Result<(), ElfError> {
    let (mut rela, mut relasz, mut relaent) = (0, 0, 24);
    let mut at = dyn_vaddr;
    while at + 16 <= dyn_vaddr + dyn_size {
        let (tag, val) = (u64_at(image, at)?, u64_at(image, at + 8)?);
        match tag {
            DT_NULL => break,
            DT_RELA => rela = val,
            DT_RELASZ => relasz = val,
            DT_RELAENT => relaent = val,
            _ => {}
        }
        at += 16;
    }
    if relaent != 24 {
        return Err(ElfError::OutOfBounds);
    }
    for i in 0..relasz / 24 {
        let r = rela + i * 24;
        let (offset, info, addend) = (
            u64_at(image, r)?,
            u64_at(image, r + 8)?,
            u64_at(image, r + 16)?,
        );
        let kind = info as u32;
        if kind != R_X86_64_RELATIVE {
            return Err(ElfError::UnsupportedRelocation(kind));
        }
        let slot = usize::try_from(offset).map_err(|_| ElfError::OutOfBounds)?;
        let dst = image.get_mut(slot..slot + 8).ok_or(ElfError::OutOfBounds)?;
        dst.copy_from_slice(&base.wrapping_add(addend).to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal static-PIE: one RWX PT_LOAD at vaddr 0x1000 holding a dynamic table and
    /// one RELA entry, with `reloc_type` as the relocation type.
    fn tiny_elf(reloc_type: u32) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000 + 0x100];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16..18].copy_from_slice(&3u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&0x1000u64.to_le_bytes()); // entry
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |f: &mut Vec<u8>, at: usize, kind: u32, off: u64, va: u64, fsz: u64, msz: u64| {
            f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            f[at + 16..at + 24].copy_from_slice(&va.to_le_bytes());
            f[at + 32..at + 40].copy_from_slice(&fsz.to_le_bytes());
            f[at + 40..at + 48].copy_from_slice(&msz.to_le_bytes());
        };
        ph(&mut f, 64, PT_LOAD, 0x1000, 0x1000, 0x100, 0x2000);
        ph(&mut f, 120, PT_DYNAMIC, 0x1010, 0x1010, 0x40, 0x40);
        let w =
            |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
        // dynamic table at 0x1010
        w(&mut f, 0x1010, DT_RELA);
        w(&mut f, 0x1018, 0x1080);
        w(&mut f, 0x1020, DT_RELASZ);
        w(&mut f, 0x1028, 24);
        w(&mut f, 0x1030, DT_NULL);
        // rela at 0x1080: slot 0x10a0 = base + 0x1234
        w(&mut f, 0x1080, 0x10a0);
        w(&mut f, 0x1088, u64::from(reloc_type));
        w(&mut f, 0x1090, 0x1234);
        f
    }

    #[test]
    fn loads_and_relocates() {
        let f = tiny_elf(R_X86_64_RELATIVE);
        let elf = Elf::parse(&f).unwrap();
        assert_eq!(elf.span(), 0x3000);
        let mut dest = vec![0xffu8; 0x3000];
        let entry = elf.load(&mut dest, 0x4000_0000).unwrap();
        assert_eq!(entry, 0x4000_1000);
        assert_eq!(
            u64::from_le_bytes(dest[0x10a0..0x10a8].try_into().unwrap()),
            0x4000_1234
        );
        assert!(dest[0x1100..0x3000].iter().all(|&b| b == 0), "bss zeroed");
    }

    #[test]
    fn refuses_bad_images() {
        assert_eq!(Elf::parse(b"MZ").unwrap_err(), ElfError::OutOfBounds);
        let mut f = tiny_elf(R_X86_64_RELATIVE);
        f[16] = 2;
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::NotPie);
        let f = tiny_elf(1);
        let mut dest = vec![0u8; 0x3000];
        assert_eq!(
            Elf::parse(&f).unwrap().load(&mut dest, 0).unwrap_err(),
            ElfError::UnsupportedRelocation(1)
        );
        let f = tiny_elf(R_X86_64_RELATIVE);
        let mut small = vec![0u8; 0x1000];
        assert_eq!(
            Elf::parse(&f).unwrap().load(&mut small, 0).unwrap_err(),
            ElfError::DestinationTooSmall
        );
        let mut f = tiny_elf(R_X86_64_RELATIVE);
        f[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // filesz past the file
        assert_eq!(Elf::parse(&f).unwrap_err(), ElfError::OutOfBounds);
    }
}
