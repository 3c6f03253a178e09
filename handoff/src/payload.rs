//! The compressed-kernel payload embedded in the stage.
//!
//! Layout (little endian): a 48-byte [`Header`] followed by `compressed_len` bytes of an LZ4 block.
//! The header records the uncompressed length and CRC-32 (of the kernel ELF), and the memory span
//! the loaded image needs so the stage can reserve it from the firmware before it decompresses.
//! Every field is checked before use: a corrupted payload is reported, never executed.

/// "SEVKPAY" + format version 1.
pub const MAGIC: [u8; 8] = *b"SEVKPAY1";
/// Size of the encoded header.
pub const HEADER_LEN: usize = 48;
/// Largest kernel ELF the stage accepts (bounds every allocation derived from the header).
pub const MAX_KERNEL_LEN: u64 = 64 << 20;

/// The parsed payload header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Length of the LZ4 block that follows the header.
    pub compressed_len: u64,
    /// Length of the kernel ELF after decompression.
    pub uncompressed_len: u64,
    /// CRC-32 of the uncompressed kernel ELF.
    pub crc32: u32,
    /// Bytes of memory the loaded image spans (highest segment end, page aligned).
    pub image_span: u64,
}

/// Why a payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than its header or than the length the header records.
    Truncated,
    /// The magic number is wrong: not a payload, or the header is corrupted.
    BadMagic,
    /// A length in the header is zero or beyond [`MAX_KERNEL_LEN`].
    BadLength,
    /// LZ4 decoding failed: the compressed data is corrupted.
    Decompress,
    /// Decompression produced a different length than the header records.
    LengthMismatch { expected: u64, got: u64 },
    /// The CRC-32 of the decompressed kernel differs from the header's.
    Checksum { expected: u32, got: u32 },
}

impl core::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "kernel payload truncated"),
            Self::BadMagic => write!(f, "kernel payload has a bad magic number"),
            Self::BadLength => write!(f, "kernel payload header has an invalid length"),
            Self::Decompress => write!(f, "kernel payload is corrupted: LZ4 decoding failed"),
            Self::LengthMismatch { expected, got } => {
                write!(
                    f,
                    "kernel payload is corrupted: decompressed {got} bytes, header says {expected}"
                )
            }
            Self::Checksum { expected, got } => {
                write!(
                    f,
                    "kernel payload is corrupted: CRC-32 {got:#010x}, header says {expected:#010x}"
                )
            }
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Header {
    /// Parses and bounds-checks the header at the start of `payload`.
    pub fn parse(payload: &[u8]) -> Result<Header, PayloadError> {
        let h = payload.get(..HEADER_LEN).ok_or(PayloadError::Truncated)?;
        if h[..8] != MAGIC {
            return Err(PayloadError::BadMagic);
        }
        let header = Header {
            compressed_len: u64_at(h, 8),
            uncompressed_len: u64_at(h, 16),
            crc32: u64_at(h, 24) as u32,
            image_span: u64_at(h, 32),
        };
        let ok = |v: u64| v != 0 && v <= MAX_KERNEL_LEN;
        if !ok(header.compressed_len) || !ok(header.uncompressed_len) || !ok(header.image_span) {
            return Err(PayloadError::BadLength);
        }
        if (payload.len() - HEADER_LEN) as u64 != header.compressed_len {
            return Err(PayloadError::Truncated);
        }
        Ok(header)
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..16].copy_from_slice(&self.compressed_len.to_le_bytes());
        h[16..24].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        h[24..32].copy_from_slice(&u64::from(self.crc32).to_le_bytes());
        h[32..40].copy_from_slice(&self.image_span.to_le_bytes());
        h
    }
}

/// Decompresses and verifies `payload` into `out`, which must be exactly
/// `header.uncompressed_len` bytes. `decompress` is the LZ4 block decoder (the stage passes
/// `lz4_flex`'s, keeping this crate free of the dependency); it returns the decoded length.
pub fn unpack(
    payload: &[u8],
    out: &mut [u8],
    decompress: impl FnOnce(&[u8], &mut [u8]) -> Option<usize>,
) -> Result<Header, PayloadError> {
    let header = Header::parse(payload)?;
    if out.len() as u64 != header.uncompressed_len {
        return Err(PayloadError::BadLength);
    }
    let got = decompress(&payload[HEADER_LEN..], out).ok_or(PayloadError::Decompress)? as u64;
    if got != header.uncompressed_len {
        return Err(PayloadError::LengthMismatch {
            expected: header.uncompressed_len,
            got,
        });
    }
    let crc = crate::crc32::crc32(out);
    if crc != header.crc32 {
        return Err(PayloadError::Checksum {
            expected: header.crc32,
            got: crc,
        });
    }
    Ok(header)
}

/// Packs `elf` (already LZ4-compressed as `compressed`) into a payload.
#[cfg(any(test, feature = "std"))]
pub fn pack(elf: &[u8], compressed: &[u8], image_span: u64) -> std::vec::Vec<u8> {
    let header = Header {
        compressed_len: compressed.len() as u64,
        uncompressed_len: elf.len() as u64,
        crc32: crate::crc32::crc32(elf),
        image_span,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(compressed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in "compressor" for tests: the identity, so tests need no LZ4 dependency.
    fn copy(src: &[u8], dst: &mut [u8]) -> Option<usize> {
        dst.get_mut(..src.len())?.copy_from_slice(src);
        Some(src.len())
    }

    #[test]
    fn roundtrip() {
        let elf = b"\x7fELF pretend kernel".to_vec();
        let p = pack(&elf, &elf, 0x4000);
        let mut out = vec![0; elf.len()];
        let h = unpack(&p, &mut out, copy).unwrap();
        assert_eq!(out, elf);
        assert_eq!(h.image_span, 0x4000);
    }

    #[test]
    fn corruption_is_detected() {
        let elf = b"\x7fELF pretend kernel".to_vec();
        let p = pack(&elf, &elf, 0x4000);
        let mut out = vec![0; elf.len()];
        let mut bad = p.clone();
        bad[HEADER_LEN + 3] ^= 1;
        assert!(matches!(
            unpack(&bad, &mut out, copy),
            Err(PayloadError::Checksum { .. })
        ));
        let mut bad = p.clone();
        bad[0] ^= 1;
        assert_eq!(unpack(&bad, &mut out, copy), Err(PayloadError::BadMagic));
        assert_eq!(
            unpack(&p[..p.len() - 1], &mut out, copy),
            Err(PayloadError::Truncated)
        );
        assert_eq!(
            unpack(&p[..10], &mut out, copy),
            Err(PayloadError::Truncated)
        );
        let short = |_: &[u8], _: &mut [u8]| Some(3);
        assert!(matches!(
            unpack(&p, &mut out, short),
            Err(PayloadError::LengthMismatch { .. })
        ));
        assert_eq!(
            unpack(&p, &mut out, |_, _| None),
            Err(PayloadError::Decompress)
        );
        let mut bad = p.clone();
        bad[16..24].copy_from_slice(&(MAX_KERNEL_LEN + 1).to_le_bytes());
        assert_eq!(unpack(&bad, &mut out, copy), Err(PayloadError::BadLength));
    }
}
