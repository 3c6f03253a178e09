//! The GHCB page: the 4 KiB block shared with the hypervisor through which
//! NAE events pass their registers and data.
//!
//! The page is hypervisor-writable at any time, so it is only ever touched
//! with volatile accesses, and a reply is consumed through a
//! [`GhcbSnapshot`]: every field and the valid bitmap are read exactly once
//! into private memory, and all validation runs on that copy (scenario 8: a
//! hypervisor rewriting the GHCB after VMGEXIT cannot make a checked value
//! differ from the used one).

use core::cell::UnsafeCell;
use core::mem::{align_of, offset_of, size_of};
use core::ptr;

use crate::msr_protocol::GhcbVersion;

/// Offset of the valid bitmap (one bit per qword of the save area).
pub const VALID_BITMAP_OFFSET: usize = 0x3f0;
/// Offset of the shared buffer.
pub const SHARED_BUFFER_OFFSET: usize = 0x800;
/// Size of the shared buffer.
pub const SHARED_BUFFER_SIZE: usize = 2032;
/// GHCB usage 0: the standard layout described here.
pub const GHCB_USAGE_STANDARD: u32 = 0;

/// A save-area field of the GHCB. Its valid bit is its offset / 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GhcbField {
    Cpl,
    Xss,
    Dr7,
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
    SwExitCode,
    SwExitInfo1,
    SwExitInfo2,
    SwScratch,
    Xcr0,
}

/// Number of [`GhcbField`]s.
const FIELD_COUNT: usize = 23;

impl GhcbField {
    /// Every field, in the order of [`GhcbSnapshot`]'s storage.
    pub const ALL: [GhcbField; FIELD_COUNT] = [
        Self::Cpl,
        Self::Xss,
        Self::Dr7,
        Self::Rax,
        Self::Rcx,
        Self::Rdx,
        Self::Rbx,
        Self::Rbp,
        Self::Rsi,
        Self::Rdi,
        Self::R8,
        Self::R9,
        Self::R10,
        Self::R11,
        Self::R12,
        Self::R13,
        Self::R14,
        Self::R15,
        Self::SwExitCode,
        Self::SwExitInfo1,
        Self::SwExitInfo2,
        Self::SwScratch,
        Self::Xcr0,
    ];

    /// Byte offset in the GHCB page (GHCB spec, "GHCB layout").
    pub const fn offset(self) -> usize {
        match self {
            Self::Cpl => 0x0cb,
            Self::Xss => 0x140,
            Self::Dr7 => 0x160,
            Self::Rax => 0x1f8,
            Self::Rcx => 0x308,
            Self::Rdx => 0x310,
            Self::Rbx => 0x318,
            Self::Rbp => 0x328,
            Self::Rsi => 0x330,
            Self::Rdi => 0x338,
            Self::R8 => 0x340,
            Self::R9 => 0x348,
            Self::R10 => 0x350,
            Self::R11 => 0x358,
            Self::R12 => 0x360,
            Self::R13 => 0x368,
            Self::R14 => 0x370,
            Self::R15 => 0x378,
            Self::SwExitCode => 0x390,
            Self::SwExitInfo1 => 0x398,
            Self::SwExitInfo2 => 0x3a0,
            Self::SwScratch => 0x3a8,
            Self::Xcr0 => 0x3e8,
        }
    }

    /// Index of this field's bit in the valid bitmap.
    pub const fn valid_bit(self) -> usize {
        self.offset() / 8
    }

    /// CPL is the only byte-sized field; all others are qwords.
    const fn is_byte(self) -> bool {
        matches!(self, Self::Cpl)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The GHCB page. Align it to 4 KiB and map it decrypted (shared).
///
/// The hypervisor writes this memory behind the compiler's back, so the
/// contents live in an [`UnsafeCell`] and are only touched with volatile
/// accesses.
#[repr(transparent)]
pub struct Ghcb(UnsafeCell<GhcbLayout>);

/// The page layout (GHCB spec, "GHCB layout").
#[repr(C, align(4096))]
struct GhcbLayout {
    save_area: [u8; VALID_BITMAP_OFFSET],
    valid_bitmap: [u8; 16],
    reserved_0x400: [u8; SHARED_BUFFER_OFFSET - 0x400],
    shared_buffer: [u8; SHARED_BUFFER_SIZE],
    reserved_0xff0: [u8; 10],
    protocol_version: u16,
    usage: u32,
}

const _: () = {
    assert!(size_of::<Ghcb>() == 4096);
    assert!(align_of::<Ghcb>() == 4096);
    assert!(offset_of!(GhcbLayout, valid_bitmap) == VALID_BITMAP_OFFSET);
    assert!(offset_of!(GhcbLayout, shared_buffer) == SHARED_BUFFER_OFFSET);
    assert!(offset_of!(GhcbLayout, protocol_version) == 0xffa);
    assert!(offset_of!(GhcbLayout, usage) == 0xffc);
};

/// Out-of-range access to the shared buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedBufferRange;

impl Default for Ghcb {
    fn default() -> Self {
        Self::new()
    }
}

impl Ghcb {
    /// An all-zero page.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(GhcbLayout {
            save_area: [0; VALID_BITMAP_OFFSET],
            valid_bitmap: [0; 16],
            reserved_0x400: [0; SHARED_BUFFER_OFFSET - 0x400],
            shared_buffer: [0; SHARED_BUFFER_SIZE],
            reserved_0xff0: [0; 10],
            protocol_version: 0,
            usage: 0,
        }))
    }

    fn base(&self) -> *const u8 {
        self.0.get().cast_const().cast()
    }

    fn base_mut(&mut self) -> *mut u8 {
        self.0.get().cast()
    }

    fn read_u64_at(&self, off: usize) -> u64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= 4096);
        // SAFETY: `off` is an 8-aligned offset inside this 4096-byte,
        // 4096-aligned page (callers pass field offsets or bitmap offsets).
        unsafe { ptr::read_volatile(self.base().add(off).cast::<u64>()) }
    }

    fn write_u64_at(&mut self, off: usize, v: u64) {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= 4096);
        // SAFETY: as in `read_u64_at`, and we hold `&mut self`.
        unsafe { ptr::write_volatile(self.base_mut().add(off).cast::<u64>(), v) }
    }

    fn read_byte_at(&self, off: usize) -> u8 {
        debug_assert!(off < 4096);
        // SAFETY: `off` is inside the page.
        unsafe { ptr::read_volatile(self.base().add(off)) }
    }

    fn write_byte_at(&mut self, off: usize, v: u8) {
        debug_assert!(off < 4096);
        // SAFETY: `off` is inside the page and we hold `&mut self`.
        unsafe { ptr::write_volatile(self.base_mut().add(off), v) }
    }

    fn raw_field(&self, f: GhcbField) -> u64 {
        if f.is_byte() {
            self.read_byte_at(f.offset()) as u64
        } else {
            self.read_u64_at(f.offset())
        }
    }

    fn bitmap(&self) -> [u64; 2] {
        [
            self.read_u64_at(VALID_BITMAP_OFFSET),
            self.read_u64_at(VALID_BITMAP_OFFSET + 8),
        ]
    }

    fn mark_valid(&mut self, f: GhcbField, valid: bool) {
        let bit = f.valid_bit();
        let off = VALID_BITMAP_OFFSET + (bit / 64) * 8;
        let mask = 1u64 << (bit % 64);
        let old = self.read_u64_at(off);
        self.write_u64_at(off, if valid { old | mask } else { old & !mask });
    }

    /// Starts a new request: clears the valid bitmap and the exit code and
    /// sets the protocol version and usage.
    pub fn prepare(&mut self, version: u16) {
        self.write_u64_at(VALID_BITMAP_OFFSET, 0);
        self.write_u64_at(VALID_BITMAP_OFFSET + 8, 0);
        self.write_u64_at(GhcbField::SwExitCode.offset(), 0);
        self.set_protocol_version(version);
        self.set_usage(GHCB_USAGE_STANDARD);
    }

    /// Clears the whole valid bitmap (the hypervisor does this before writing
    /// a reply, so that only reply fields are marked).
    pub fn clear_valid_bitmap(&mut self) {
        self.write_u64_at(VALID_BITMAP_OFFSET, 0);
        self.write_u64_at(VALID_BITMAP_OFFSET + 8, 0);
    }

    /// Writes a field and sets its valid bit. CPL keeps only the low byte.
    pub fn set(&mut self, f: GhcbField, v: u64) {
        if f.is_byte() {
            self.write_byte_at(f.offset(), v as u8);
        } else {
            self.write_u64_at(f.offset(), v);
        }
        self.mark_valid(f, true);
    }

    /// Clears a field's valid bit (the value is left as is).
    pub fn invalidate(&mut self, f: GhcbField) {
        self.mark_valid(f, false);
    }

    /// Reads a field if its valid bit is set. For a reply use
    /// [`Ghcb::snapshot`] instead, which reads each field once.
    pub fn get(&self, f: GhcbField) -> Option<u64> {
        let bit = f.valid_bit();
        (self.bitmap()[bit / 64] >> (bit % 64) & 1 == 1).then(|| self.raw_field(f))
    }

    /// Reads the valid bitmap and every field once.
    pub fn snapshot(&self) -> GhcbSnapshot {
        let valid = self.bitmap();
        let mut values = [0; FIELD_COUNT];
        for f in GhcbField::ALL {
            values[f.index()] = self.raw_field(f);
        }
        GhcbSnapshot { valid, values }
    }

    /// Copies `data` into the shared buffer at `offset`.
    pub fn write_shared(&mut self, offset: usize, data: &[u8]) -> Result<(), SharedBufferRange> {
        let end = offset.checked_add(data.len()).ok_or(SharedBufferRange)?;
        if end > SHARED_BUFFER_SIZE {
            return Err(SharedBufferRange);
        }
        for (i, b) in data.iter().enumerate() {
            self.write_byte_at(SHARED_BUFFER_OFFSET + offset + i, *b);
        }
        Ok(())
    }

    /// Copies `out.len()` bytes from the shared buffer at `offset` (once).
    pub fn read_shared(&self, offset: usize, out: &mut [u8]) -> Result<(), SharedBufferRange> {
        let end = offset.checked_add(out.len()).ok_or(SharedBufferRange)?;
        if end > SHARED_BUFFER_SIZE {
            return Err(SharedBufferRange);
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_byte_at(SHARED_BUFFER_OFFSET + offset + i);
        }
        Ok(())
    }

    /// Copies the whole page from `other` (volatile on both sides): saving
    /// the GHCB into a backup when a nested #VC must reuse it, and restoring
    /// it afterwards, so the outer handler finds its request untouched.
    pub fn copy_from(&mut self, other: &Ghcb) {
        for off in (0..4096).step_by(8) {
            let v = other.read_u64_at(off);
            self.write_u64_at(off, v);
        }
    }

    /// The protocol version field.
    pub fn protocol_version(&self) -> u16 {
        let lo = self.read_byte_at(0xffa) as u16;
        let hi = self.read_byte_at(0xffb) as u16;
        lo | hi << 8
    }

    /// Sets the protocol version field.
    pub fn set_protocol_version(&mut self, v: u16) {
        self.write_byte_at(0xffa, v as u8);
        self.write_byte_at(0xffb, (v >> 8) as u8);
    }

    /// The GHCB usage field.
    pub fn usage(&self) -> u32 {
        (self.read_u64_at(0xff8) >> 32) as u32
    }

    /// Sets the GHCB usage field.
    pub fn set_usage(&mut self, usage: u32) {
        let old = self.read_u64_at(0xff8);
        self.write_u64_at(0xff8, (old & 0xffff_ffff) | (usage as u64) << 32);
    }
}

/// A private copy of a GHCB's fields and valid bitmap, taken once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GhcbSnapshot {
    valid: [u64; 2],
    values: [u64; FIELD_COUNT],
}

/// A field the reader needs lacks its valid bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MissingField(pub GhcbField);

impl GhcbSnapshot {
    /// Whether `f`'s valid bit was set.
    pub fn is_valid(&self, f: GhcbField) -> bool {
        let bit = f.valid_bit();
        self.valid[bit / 64] >> (bit % 64) & 1 == 1
    }

    /// The field's value if its valid bit was set.
    pub fn get(&self, f: GhcbField) -> Option<u64> {
        self.is_valid(f).then_some(self.values[f.index()])
    }

    /// The field's value, or an error naming it if it was not valid.
    pub fn require(&self, f: GhcbField) -> Result<u64, MissingField> {
        self.get(f).ok_or(MissingField(f))
    }
}

/// The thing that performs VMGEXIT with a GHCB page. The kernel implements
/// it with its per-CPU GHCB (WRMSR of the GHCB GPA, `rep vmmcall`); the test
/// hypervisor model implements it by handling the request in-process.
pub trait GhcbTransport {
    /// The GHCB page to fill in.
    fn ghcb(&mut self) -> &mut Ghcb;
    /// Guest-physical address of that page (for SW_SCRATCH).
    fn ghcb_gpa(&self) -> u64;
    /// Exits to the hypervisor and returns when it resumes the guest.
    fn vmgexit(&mut self);
    /// The negotiated protocol version, which every request carries in the
    /// GHCB's protocol version field. The default, the highest this crate
    /// speaks, suits a transport to a hypervisor that offers it.
    fn protocol_version(&self) -> GhcbVersion {
        GhcbVersion::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_and_valid_bits_match_spec() {
        // GHCB spec table "GHCB save area": offset and valid-bitmap bit.
        let spec: [(GhcbField, usize, usize); 23] = [
            (GhcbField::Cpl, 0x0cb, 25),
            (GhcbField::Xss, 0x140, 40),
            (GhcbField::Dr7, 0x160, 44),
            (GhcbField::Rax, 0x1f8, 63),
            (GhcbField::Rcx, 0x308, 97),
            (GhcbField::Rdx, 0x310, 98),
            (GhcbField::Rbx, 0x318, 99),
            (GhcbField::Rbp, 0x328, 101),
            (GhcbField::Rsi, 0x330, 102),
            (GhcbField::Rdi, 0x338, 103),
            (GhcbField::R8, 0x340, 104),
            (GhcbField::R9, 0x348, 105),
            (GhcbField::R10, 0x350, 106),
            (GhcbField::R11, 0x358, 107),
            (GhcbField::R12, 0x360, 108),
            (GhcbField::R13, 0x368, 109),
            (GhcbField::R14, 0x370, 110),
            (GhcbField::R15, 0x378, 111),
            (GhcbField::SwExitCode, 0x390, 114),
            (GhcbField::SwExitInfo1, 0x398, 115),
            (GhcbField::SwExitInfo2, 0x3a0, 116),
            (GhcbField::SwScratch, 0x3a8, 117),
            (GhcbField::Xcr0, 0x3e8, 125),
        ];
        for (i, (f, off, bit)) in spec.into_iter().enumerate() {
            assert_eq!(f.offset(), off, "{f:?}");
            assert_eq!(f.valid_bit(), bit, "{f:?}");
            assert_eq!(GhcbField::ALL[i], f);
            assert_eq!(f.index(), i);
        }
    }

    #[test]
    fn page_layout() {
        assert_eq!(size_of::<Ghcb>(), 4096);
        assert_eq!(align_of::<Ghcb>(), 4096);
        assert_eq!(
            offset_of!(GhcbLayout, shared_buffer) + SHARED_BUFFER_SIZE,
            0xff0
        );
    }

    #[test]
    fn set_marks_valid_and_get_checks_it() {
        let mut g = Box::new(Ghcb::new());
        assert_eq!(g.get(GhcbField::Rax), None);
        g.set(GhcbField::Rax, 0x1234);
        g.set(GhcbField::Cpl, 0x1ff);
        assert_eq!(g.get(GhcbField::Rax), Some(0x1234));
        assert_eq!(g.get(GhcbField::Cpl), Some(0xff));
        assert_eq!(g.get(GhcbField::Rbx), None);
        let view = |g: &Ghcb| -> [u8; 4096] {
            // SAFETY: the page is 4096 initialized bytes (repr(C), no
            // padding), and nothing writes it during this copy.
            unsafe { ptr::read(g.base().cast::<[u8; 4096]>()) }
        };
        let bytes = view(&g);
        assert_eq!(bytes[VALID_BITMAP_OFFSET + 7], 0x80, "RAX is bit 63");
        assert_eq!(bytes[VALID_BITMAP_OFFSET + 3], 0x02, "CPL is bit 25");
        let s = g.snapshot();
        assert_eq!(s.require(GhcbField::Rax), Ok(0x1234));
        assert_eq!(s.require(GhcbField::Rcx), Err(MissingField(GhcbField::Rcx)));
        g.invalidate(GhcbField::Rax);
        assert_eq!(g.get(GhcbField::Rax), None);
        g.prepare(2);
        assert_eq!(g.snapshot().get(GhcbField::Cpl), None);
        assert_eq!(g.protocol_version(), 2);
        assert_eq!(view(&g)[0xffa], 2);
        g.set_usage(0x1234_5678);
        assert_eq!(g.usage(), 0x1234_5678);
        assert_eq!(g.protocol_version(), 2);
    }

    #[test]
    fn copy_from_copies_everything() {
        let mut a = Box::new(Ghcb::new());
        a.set(GhcbField::R15, 9);
        a.write_shared(2031, &[7]).unwrap();
        a.set_usage(3);
        let mut b = Box::new(Ghcb::new());
        b.copy_from(&a);
        assert_eq!(b.snapshot(), a.snapshot());
        let mut x = [0];
        b.read_shared(2031, &mut x).unwrap();
        assert_eq!((x[0], b.usage()), (7, 3));
    }

    #[test]
    fn shared_buffer_bounds() {
        let mut g = Box::new(Ghcb::new());
        g.write_shared(SHARED_BUFFER_SIZE - 2, &[1, 2]).unwrap();
        assert_eq!(
            g.write_shared(SHARED_BUFFER_SIZE - 1, &[1, 2]),
            Err(SharedBufferRange)
        );
        let mut out = [0; 2];
        g.read_shared(SHARED_BUFFER_SIZE - 2, &mut out).unwrap();
        assert_eq!(out, [1, 2]);
        assert_eq!(g.read_shared(usize::MAX, &mut out), Err(SharedBufferRange));
    }
}
