//! IOIO exit information (SW_EXITINFO1 of the IOIO NAE event), laid out like
//! the SVM IOIO intercept's EXITINFO1 (APM vol. 2, 15.10.2).

/// Effective segment of a string I/O instruction's memory operand
/// (`SW_EXITINFO1[12:10]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IoSegment {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

/// Decoded IOIO exit information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoioInfo {
    pub port: u16,
    /// IN/INS when true, OUT/OUTS when false.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix (string forms only).
    pub rep: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Address size in bytes: 2, 4 or 8.
    pub address_size: u8,
    pub segment: IoSegment,
}

const TYPE_IN: u64 = 1 << 0;
const STR: u64 = 1 << 2;
const REP: u64 = 1 << 3;
const SZ_SHIFT: u32 = 4;
const A_SHIFT: u32 = 7;
const SEG_SHIFT: u32 = 10;
const PORT_SHIFT: u32 = 16;

impl IoioInfo {
    /// A plain (not string, not REP) IN or OUT of `size` bytes at `port`.
    pub fn port(port: u16, size: u8, input: bool) -> Self {
        IoioInfo {
            port,
            input,
            string: false,
            rep: false,
            size,
            address_size: 8,
            segment: IoSegment::Es,
        }
    }

    /// SW_EXITINFO1 for this access.
    pub fn encode(self) -> u64 {
        let sz = match self.size {
            1 => 1,
            2 => 2,
            _ => 4,
        };
        let a = match self.address_size {
            2 => 1,
            4 => 2,
            _ => 4,
        };
        (self.port as u64) << PORT_SHIFT
            | (self.segment as u64) << SEG_SHIFT
            | a << A_SHIFT
            | sz << SZ_SHIFT
            | if self.rep { REP } else { 0 }
            | if self.string { STR } else { 0 }
            | if self.input { TYPE_IN } else { 0 }
    }

    /// Decodes SW_EXITINFO1 (hypervisor side): exactly one size bit and one
    /// address-size bit, a defined segment, no reserved bits (1, 15:13,
    /// 63:32), REP only with STR.
    pub fn decode(v: u64) -> Option<Self> {
        if v & (1 << 1 | 0x7 << 13 | 0xffff_ffff << 32) != 0 {
            return None;
        }
        let size = match (v >> SZ_SHIFT) & 0x7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return None,
        };
        let address_size = match (v >> A_SHIFT) & 0x7 {
            1 => 2,
            2 => 4,
            4 => 8,
            _ => return None,
        };
        let segment = match (v >> SEG_SHIFT) & 0x7 {
            0 => IoSegment::Es,
            1 => IoSegment::Cs,
            2 => IoSegment::Ss,
            3 => IoSegment::Ds,
            4 => IoSegment::Fs,
            5 => IoSegment::Gs,
            _ => return None,
        };
        let string = v & STR != 0;
        let rep = v & REP != 0;
        if rep && !string {
            return None;
        }
        Some(Self {
            port: (v >> PORT_SHIFT) as u16,
            input: v & TYPE_IN != 0,
            string,
            rep,
            size,
            address_size,
            segment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_apm_bits() {
        let out_dx_al = IoioInfo {
            port: 0x3f8,
            input: false,
            string: false,
            rep: false,
            size: 1,
            address_size: 8,
            segment: IoSegment::Es,
        };
        assert_eq!(out_dx_al.encode(), 0x03f8_0000 | 1 << 9 | 1 << 4);
        let rep_insw = IoioInfo {
            port: 0x1f0,
            input: true,
            string: true,
            rep: true,
            size: 2,
            address_size: 4,
            segment: IoSegment::Es,
        };
        assert_eq!(rep_insw.encode(), 0x01f0_0000 | 1 << 8 | 1 << 5 | 0b1101);
        let outsd_fs = IoioInfo {
            segment: IoSegment::Fs,
            input: false,
            size: 4,
            address_size: 8,
            ..rep_insw
        };
        assert_eq!(outsd_fs.encode() >> 10 & 7, 4);
        for i in [out_dx_al, rep_insw, outsd_fs] {
            assert_eq!(IoioInfo::decode(i.encode()), Some(i));
        }
    }

    #[test]
    fn decode_refuses_malformed() {
        let good = 0x03f8_0000 | 1 << 9 | 1 << 4;
        assert!(IoioInfo::decode(good).is_some());
        assert!(IoioInfo::decode(good | 1 << 5).is_none(), "two sizes");
        assert!(
            IoioInfo::decode(good & !(1 << 9)).is_none(),
            "no address size"
        );
        assert!(IoioInfo::decode(good | REP).is_none(), "REP without STR");
        assert!(IoioInfo::decode(good | 6 << 10).is_none(), "segment 6");
        assert!(IoioInfo::decode(good | 1 << 1).is_none(), "reserved bit 1");
        assert!(IoioInfo::decode(good | 1 << 40).is_none(), "high bits");
    }
}
