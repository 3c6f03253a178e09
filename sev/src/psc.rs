//! SNP page state change: the descriptor passed in the shared buffer with the
//! SNP_PSC NAE event (header + up to 253 entries = exactly the 2032-byte
//! shared buffer), and the checks a guest applies to the hypervisor's
//! progress reports (scenario 12).

use crate::ghcb::SHARED_BUFFER_SIZE;

/// Most entries one descriptor holds.
pub const PSC_MAX_ENTRIES: usize = 253;
const HEADER_SIZE: usize = 8;
const ENTRY_SIZE: usize = 8;
/// Bytes of a full descriptor.
pub const PSC_DESCRIPTOR_SIZE: usize = HEADER_SIZE + PSC_MAX_ENTRIES * ENTRY_SIZE;
const _: () = assert!(PSC_DESCRIPTOR_SIZE == SHARED_BUFFER_SIZE);

/// Operation of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PscOp {
    Private = 1,
    Shared = 2,
    Psmash = 3,
    Unsmash = 4,
}

impl PscOp {
    fn from_raw(v: u64) -> Option<Self> {
        match v {
            1 => Some(Self::Private),
            2 => Some(Self::Shared),
            3 => Some(Self::Psmash),
            4 => Some(Self::Unsmash),
            _ => None,
        }
    }
}

/// One entry: bits 11:0 current page (progress within a 2M page), 51:12 GFN,
/// 55:52 operation, 56 page size (1 = 2M), 63:57 reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PscEntry(u64);

impl PscEntry {
    /// An entry for `gfn` (40 bits kept).
    pub fn new(gfn: u64, op: PscOp, large: bool) -> Self {
        Self((gfn & ((1 << 40) - 1)) << 12 | (op as u64) << 52 | (large as u64) << 56)
    }

    /// The raw 64-bit value.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Wraps a raw value, refusing reserved bits and undefined operations.
    pub fn from_raw(v: u64) -> Option<Self> {
        (v >> 57 == 0 && PscOp::from_raw(v >> 52 & 0xf).is_some()).then_some(Self(v))
    }

    pub fn gfn(self) -> u64 {
        self.0 >> 12 & ((1 << 40) - 1)
    }

    pub fn op(self) -> PscOp {
        PscOp::from_raw(self.0 >> 52 & 0xf).unwrap_or(PscOp::Private)
    }

    pub fn is_2m(self) -> bool {
        self.0 >> 56 & 1 == 1
    }

    /// Pages of this entry already processed (hypervisor progress).
    pub fn cur_page(self) -> u16 {
        (self.0 & 0xfff) as u16
    }

    /// Records progress (hypervisor side).
    pub fn set_cur_page(&mut self, page: u16) {
        self.0 = (self.0 & !0xfff) | (page as u64 & 0xfff);
    }
}

/// The descriptor header: entries `cur_entry..=end_entry` are pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PscHeader {
    pub cur_entry: u16,
    pub end_entry: u16,
    pub reserved: u32,
}

impl PscHeader {
    fn to_bytes(self) -> [u8; HEADER_SIZE] {
        let mut b = [0; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.cur_entry.to_le_bytes());
        b[2..4].copy_from_slice(&self.end_entry.to_le_bytes());
        b[4..8].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    /// Decodes the 8 header bytes.
    pub fn from_bytes(b: [u8; HEADER_SIZE]) -> Self {
        Self {
            cur_entry: u16::from_le_bytes([b[0], b[1]]),
            end_entry: u16::from_le_bytes([b[2], b[3]]),
            reserved: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A page state change descriptor kept in private memory; it is serialized
/// into the shared buffer for each request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PscDescriptor {
    pub header: PscHeader,
    pub entries: [PscEntry; PSC_MAX_ENTRIES],
}

/// Why a descriptor or a progress report is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PscError {
    /// More than [`PSC_MAX_ENTRIES`] entries, or end before cur at the start.
    BadRange,
    /// An entry has reserved bits or an undefined operation.
    BadEntry(u16),
    /// The header's reserved field is non-zero.
    ReservedBits,
    /// The hypervisor moved `cur_entry` backwards or changed `end_entry`.
    WentBackwards,
    /// The hypervisor reported an error (SW_EXITINFO2).
    HypervisorError(u64),
    /// No progress after as many rounds as there are pages.
    NoProgress,
}

impl Default for PscDescriptor {
    fn default() -> Self {
        Self {
            header: PscHeader::default(),
            entries: [PscEntry::default(); PSC_MAX_ENTRIES],
        }
    }
}

impl PscDescriptor {
    /// A descriptor covering `entries` (at most 253).
    pub fn new(entries: &[PscEntry]) -> Result<Self, PscError> {
        if entries.is_empty() || entries.len() > PSC_MAX_ENTRIES {
            return Err(PscError::BadRange);
        }
        let mut d = Self::default();
        d.entries[..entries.len()].copy_from_slice(entries);
        d.header.end_entry = (entries.len() - 1) as u16;
        Ok(d)
    }

    /// Serializes into `out` (the shared buffer image).
    pub fn to_bytes(&self, out: &mut [u8; PSC_DESCRIPTOR_SIZE]) {
        out[..HEADER_SIZE].copy_from_slice(&self.header.to_bytes());
        for (chunk, e) in out[HEADER_SIZE..]
            .chunks_exact_mut(ENTRY_SIZE)
            .zip(self.entries.iter())
        {
            chunk.copy_from_slice(&e.0.to_le_bytes());
        }
    }

    /// Parses a shared-buffer image (hypervisor side), validating the header
    /// range and every pending entry.
    pub fn from_bytes(b: &[u8; PSC_DESCRIPTOR_SIZE]) -> Result<Self, PscError> {
        let mut h = [0; HEADER_SIZE];
        h.copy_from_slice(&b[..HEADER_SIZE]);
        let header = PscHeader::from_bytes(h);
        if header.reserved != 0 {
            return Err(PscError::ReservedBits);
        }
        if header.end_entry as usize >= PSC_MAX_ENTRIES || header.cur_entry > header.end_entry {
            return Err(PscError::BadRange);
        }
        let mut d = Self {
            header,
            ..Self::default()
        };
        for (i, chunk) in b[HEADER_SIZE..].chunks_exact(ENTRY_SIZE).enumerate() {
            let mut q = [0; 8];
            q.copy_from_slice(chunk);
            let raw = u64::from_le_bytes(q);
            let pending = (header.cur_entry as usize..=header.end_entry as usize).contains(&i);
            d.entries[i] = match PscEntry::from_raw(raw) {
                Some(e) => e,
                None if pending => return Err(PscError::BadEntry(i as u16)),
                None => PscEntry(raw),
            };
        }
        Ok(d)
    }

    /// Guest-side check of the header the hypervisor wrote back after one
    /// round, against the header that was sent. Returns whether the
    /// descriptor is complete.
    pub fn check_progress(sent: PscHeader, back: PscHeader) -> Result<bool, PscError> {
        if back.reserved != 0 {
            return Err(PscError::ReservedBits);
        }
        if back.end_entry != sent.end_entry || back.cur_entry < sent.cur_entry {
            return Err(PscError::WentBackwards);
        }
        Ok(back.cur_entry > back.end_entry)
    }

    /// Upper bound on the rounds a well-behaved hypervisor needs: one per 4K
    /// page (2M entries count 512) plus one.
    pub fn max_rounds(&self) -> usize {
        let pending = &self.entries[..=self.header.end_entry as usize];
        pending
            .iter()
            .map(|e| if e.is_2m() { 512 } else { 1 })
            .sum::<usize>()
            + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_bits_match_spec() {
        let e = PscEntry::new(0xab_cdef_0123, PscOp::Shared, true);
        assert_eq!(e.raw(), 0x012a_bcde_f012_3000);
        assert_eq!(e.gfn(), 0xab_cdef_0123);
        assert_eq!(e.op(), PscOp::Shared);
        assert!(e.is_2m());
        let mut e2 = e;
        e2.set_cur_page(0x1ff);
        assert_eq!(e2.cur_page(), 0x1ff);
        assert_eq!(PscEntry::from_raw(e.raw() | 1 << 57), None);
        assert_eq!(PscEntry::from_raw(5 << 52), None);
    }

    #[test]
    fn descriptor_fills_the_shared_buffer_and_round_trips() {
        assert_eq!(PSC_DESCRIPTOR_SIZE, 2032);
        let entries: Vec<_> = (0..253)
            .map(|i| PscEntry::new(i, PscOp::Private, false))
            .collect();
        let d = PscDescriptor::new(&entries).unwrap();
        assert_eq!(d.header.end_entry, 252);
        let mut b = [0; PSC_DESCRIPTOR_SIZE];
        d.to_bytes(&mut b);
        assert_eq!(&b[2..4], &252u16.to_le_bytes());
        assert_eq!(PscDescriptor::from_bytes(&b), Ok(d.clone()));
        assert_eq!(d.max_rounds(), 254);
        assert_eq!(PscDescriptor::new(&[]), Err(PscError::BadRange));
        let too_many = vec![PscEntry::default(); 254];
        assert_eq!(PscDescriptor::new(&too_many), Err(PscError::BadRange));
    }

    #[test]
    fn host_parse_refuses_bad_headers() {
        let d = PscDescriptor::new(&[PscEntry::new(1, PscOp::Shared, false)]).unwrap();
        let mut b = [0; PSC_DESCRIPTOR_SIZE];
        d.to_bytes(&mut b);
        let mut bad = b;
        bad[4] = 1;
        assert_eq!(PscDescriptor::from_bytes(&bad), Err(PscError::ReservedBits));
        let mut bad = b;
        bad[2..4].copy_from_slice(&253u16.to_le_bytes());
        assert_eq!(PscDescriptor::from_bytes(&bad), Err(PscError::BadRange));
        let mut bad = b;
        bad[8 + 7] = 0x80;
        assert_eq!(PscDescriptor::from_bytes(&bad), Err(PscError::BadEntry(0)));
    }

    #[test]
    fn progress_checks() {
        let sent = PscHeader {
            cur_entry: 2,
            end_entry: 5,
            reserved: 0,
        };
        let back = |cur, end, reserved| PscHeader {
            cur_entry: cur,
            end_entry: end,
            reserved,
        };
        assert_eq!(
            PscDescriptor::check_progress(sent, back(2, 5, 0)),
            Ok(false)
        );
        assert_eq!(PscDescriptor::check_progress(sent, back(6, 5, 0)), Ok(true));
        assert_eq!(
            PscDescriptor::check_progress(sent, back(1, 5, 0)),
            Err(PscError::WentBackwards)
        );
        assert_eq!(
            PscDescriptor::check_progress(sent, back(6, 9, 0)),
            Err(PscError::WentBackwards)
        );
        assert_eq!(
            PscDescriptor::check_progress(sent, back(6, 5, 1)),
            Err(PscError::ReservedBits)
        );
    }
}
