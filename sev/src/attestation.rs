//! SNP guest messages (SNP ABI 56860, "Guest Messages"): the header that
//! precedes every AES-GCM protected message exchanged with the firmware
//! through SNP_GUEST_REQUEST, the report request/response payloads, and the
//! attestation report itself.

use core::mem::{offset_of, size_of};

/// AEAD algorithm of a guest message.
pub const AEAD_AES_256_GCM: u8 = 1;
/// Header version this crate writes.
pub const MSG_HDR_VERSION: u8 = 1;

/// Guest message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    CpuidRequest = 1,
    CpuidResponse = 2,
    KeyRequest = 3,
    KeyResponse = 4,
    ReportRequest = 5,
    ReportResponse = 6,
    ExportRequest = 7,
    ExportResponse = 8,
    ImportRequest = 9,
    ImportResponse = 10,
    AbsorbRequest = 11,
    AbsorbResponse = 12,
    VmrkRequest = 13,
    VmrkResponse = 14,
    AbsorbNoMaRequest = 15,
    AbsorbNoMaResponse = 16,
    TscInfoRequest = 17,
    TscInfoResponse = 18,
}

/// Guest message header (0x60 bytes); the payload follows it in the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct MsgHeader {
    /// AES-GCM authentication tag (first 16 bytes used).
    pub authtag: [u8; 32],
    pub msg_seqno: u64,
    pub reserved_0x28: [u8; 8],
    pub algo: u8,
    pub hdr_version: u8,
    pub hdr_sz: u16,
    pub msg_type: u8,
    pub msg_version: u8,
    pub msg_sz: u16,
    pub reserved_0x38: u32,
    /// Which VMPCK protects the message.
    pub msg_vmpck: u8,
    pub reserved_0x3d: [u8; 35],
}

/// Size of [`MsgHeader`].
pub const MSG_HDR_SIZE: usize = 0x60;
/// Largest payload in a 4K message page.
pub const MSG_PAYLOAD_MAX: usize = 4096 - MSG_HDR_SIZE;

/// MSG_REPORT_REQ payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ReportRequest {
    /// Guest-chosen data bound into the report.
    pub report_data: [u8; 64],
    /// VMPL the report is for (>= the requester's VMPL).
    pub vmpl: u32,
    pub reserved: [u8; 28],
}

/// The attestation report (SNP ABI table "ATTESTATION_REPORT Structure").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct AttestationReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: u64,
    pub platform_info: u64,
    /// Bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 SIGNING_KEY.
    pub key_info: u32,
    pub reserved_0x4c: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: u64,
    pub cpuid_fam_id: u8,
    pub cpuid_mod_id: u8,
    pub cpuid_step: u8,
    pub reserved_0x18b: [u8; 21],
    pub chip_id: [u8; 64],
    pub committed_tcb: u64,
    pub current_build: u8,
    pub current_minor: u8,
    pub current_major: u8,
    pub reserved_0x1eb: u8,
    pub committed_build: u8,
    pub committed_minor: u8,
    pub committed_major: u8,
    pub reserved_0x1ef: u8,
    pub launch_tcb: u64,
    pub reserved_0x1f8: [u8; 168],
    /// ECDSA P-384 with SHA-384: R (72 bytes), S (72 bytes), zero padding.
    pub signature: [u8; 512],
}

/// Size of [`AttestationReport`].
pub const REPORT_SIZE: usize = 0x4a0;

/// MSG_REPORT_RSP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ReportResponse {
    /// 0 on success.
    pub status: u32,
    pub report_size: u32,
    pub reserved: [u8; 24],
    pub report: AttestationReport,
}

const _: () = {
    assert!(size_of::<MsgHeader>() == MSG_HDR_SIZE);
    assert!(size_of::<ReportRequest>() == 96);
    assert!(size_of::<AttestationReport>() == REPORT_SIZE);
    assert!(offset_of!(ReportResponse, report) == 0x20);
    assert!(size_of::<ReportResponse>() <= MSG_PAYLOAD_MAX);
};

impl MsgHeader {
    /// A header for a message of `msg_type` with `msg_sz` payload bytes,
    /// protected by VMPCK `vmpck` with sequence number `seqno`. The tag is
    /// left zero for the encryption step to fill.
    pub fn new(msg_type: MsgType, msg_sz: u16, vmpck: u8, seqno: u64) -> Self {
        Self {
            authtag: [0; 32],
            msg_seqno: seqno,
            reserved_0x28: [0; 8],
            algo: AEAD_AES_256_GCM,
            hdr_version: MSG_HDR_VERSION,
            hdr_sz: MSG_HDR_SIZE as u16,
            msg_type: msg_type as u8,
            msg_version: 1,
            msg_sz,
            reserved_0x38: 0,
            msg_vmpck: vmpck,
            reserved_0x3d: [0; 35],
        }
    }

    /// Checks a response header against the request it answers: the type
    /// must be the request's + 1, the sequence number the request's + 1, the
    /// same VMPCK and algorithm, and the size must fit a page.
    pub fn answers(&self, req: &MsgHeader) -> bool {
        self.msg_type == req.msg_type.wrapping_add(1)
            && self.msg_seqno == req.msg_seqno.wrapping_add(1)
            && self.msg_vmpck == req.msg_vmpck
            && self.algo == req.algo
            && self.hdr_sz as usize == MSG_HDR_SIZE
            && self.msg_sz as usize <= MSG_PAYLOAD_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_offsets_match_snp_abi() {
        assert_eq!(offset_of!(MsgHeader, msg_seqno), 0x20);
        assert_eq!(offset_of!(MsgHeader, algo), 0x30);
        assert_eq!(offset_of!(MsgHeader, hdr_sz), 0x32);
        assert_eq!(offset_of!(MsgHeader, msg_type), 0x34);
        assert_eq!(offset_of!(MsgHeader, msg_sz), 0x36);
        assert_eq!(offset_of!(MsgHeader, msg_vmpck), 0x3c);
    }

    #[test]
    fn report_offsets_match_snp_abi() {
        let spec = [
            (offset_of!(AttestationReport, policy), 0x08),
            (offset_of!(AttestationReport, family_id), 0x10),
            (offset_of!(AttestationReport, image_id), 0x20),
            (offset_of!(AttestationReport, vmpl), 0x30),
            (offset_of!(AttestationReport, current_tcb), 0x38),
            (offset_of!(AttestationReport, platform_info), 0x40),
            (offset_of!(AttestationReport, key_info), 0x48),
            (offset_of!(AttestationReport, report_data), 0x50),
            (offset_of!(AttestationReport, measurement), 0x90),
            (offset_of!(AttestationReport, host_data), 0xc0),
            (offset_of!(AttestationReport, id_key_digest), 0xe0),
            (offset_of!(AttestationReport, author_key_digest), 0x110),
            (offset_of!(AttestationReport, report_id), 0x140),
            (offset_of!(AttestationReport, report_id_ma), 0x160),
            (offset_of!(AttestationReport, reported_tcb), 0x180),
            (offset_of!(AttestationReport, cpuid_fam_id), 0x188),
            (offset_of!(AttestationReport, chip_id), 0x1a0),
            (offset_of!(AttestationReport, committed_tcb), 0x1e0),
            (offset_of!(AttestationReport, current_build), 0x1e8),
            (offset_of!(AttestationReport, committed_build), 0x1ec),
            (offset_of!(AttestationReport, launch_tcb), 0x1f0),
            (offset_of!(AttestationReport, signature), 0x2a0),
        ];
        for (i, (got, want)) in spec.into_iter().enumerate() {
            assert_eq!(got, want, "entry {i}");
        }
    }

    #[test]
    fn response_header_must_answer_request() {
        let req = MsgHeader::new(MsgType::ReportRequest, 96, 0, 4);
        let mut resp = MsgHeader::new(MsgType::ReportResponse, 0x4c0, 0, 5);
        assert!(resp.answers(&req));
        resp.msg_seqno = 4;
        assert!(!resp.answers(&req), "replayed sequence number");
        resp.msg_seqno = 5;
        resp.msg_vmpck = 1;
        assert!(!resp.answers(&req), "other key");
        resp.msg_vmpck = 0;
        resp.msg_sz = 4096;
        assert!(!resp.answers(&req), "oversized payload");
    }
}
