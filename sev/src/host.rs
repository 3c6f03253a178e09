//! Hypervisor side of the GHCB protocol, shared by the test reference
//! hypervisor and the simulator: parse a guest's NAE request from a GHCB
//! snapshot, checking the inputs the specification requires, and write
//! replies that set exactly the valid bits of their outputs.
//!
//! The guest is untrusted from this side too: requests are parsed from one
//! snapshot, scratch areas must lie inside the GHCB shared buffer, counts are
//! bounded by it.
//!
//! The MSR protocol's host side is [`crate::msr_protocol::MsrRequest::decode`]
//! and [`crate::msr_protocol::MsrResponse::encode`].

use crate::exception::Exception;
use crate::exit_code::{ApCreationOp, ApJumpTableOp, ExitCode, term_request_reason};
use crate::ghcb::{
    GHCB_USAGE_STANDARD, Ghcb, GhcbField, GhcbSnapshot, MissingField, SHARED_BUFFER_OFFSET,
    SHARED_BUFFER_SIZE,
};
use crate::ioio::IoioInfo;
use crate::msr_protocol::GhcbVersion;
use crate::termination::TerminationReason;

/// A range of the shared buffer named by SW_SCRATCH and a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scratch {
    /// Offset into the shared buffer.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// A parsed NAE request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NaeRequest {
    Cpuid {
        leaf: u32,
        subleaf: u32,
        xcr0: u64,
    },
    /// Non-string IN (`value` is `None`) or OUT.
    Io {
        info: IoioInfo,
        value: Option<u64>,
    },
    /// INS/OUTS of `count` elements in `scratch`.
    IoString {
        info: IoioInfo,
        count: u64,
        scratch: Scratch,
    },
    RdMsr {
        msr: u32,
    },
    WrMsr {
        msr: u32,
        value: u64,
    },
    Rdtsc,
    Rdtscp,
    Rdpmc {
        counter: u32,
    },
    ReadDr7,
    WriteDr7 {
        value: u64,
    },
    Wbinvd,
    Monitor {
        rax: u64,
        ecx: u32,
        edx: u32,
    },
    Mwait {
        eax: u32,
        ecx: u32,
    },
    /// VMMCALL with RAX and CPL; hypercall-specific registers are read from
    /// the same snapshot by the hypercall implementation.
    Vmmcall {
        rax: u64,
        cpl: u8,
    },
    MmioRead {
        gpa: u64,
        scratch: Scratch,
    },
    MmioWrite {
        gpa: u64,
        scratch: Scratch,
    },
    NmiComplete,
    ApHltLoop,
    ApJumpTable(ApJumpTableRequest),
    /// Page state change descriptor in the whole shared buffer.
    Psc,
    GuestRequest {
        req_gpa: u64,
        resp_gpa: u64,
    },
    ExtGuestRequest {
        req_gpa: u64,
        resp_gpa: u64,
        certs_gpa: u64,
        pages: u64,
    },
    ApCreation {
        op: ApCreationOp,
        apic_id: u32,
        vmsa_gpa: u64,
        /// SEV_FEATURES from RAX (required for the create operations).
        sev_features: Option<u64>,
    },
    RunVmpl {
        vmpl: u8,
    },
    HvFeatures,
    Terminate(TerminationReason),
    /// The guest reports a #VC it could not handle (SW_EXITINFO1/2 raw).
    Unsupported {
        info1: u64,
        info2: u64,
    },
}

/// AP jump table operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApJumpTableRequest {
    Set { gpa: u64 },
    Get,
}

/// Why a request was refused; [`HostError::code`] is the SW_EXITINFO2
/// reason of the error reply (SW_EXITINFO1 = 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// GHCB usage is not the standard one.
    InvalidUsage,
    /// SW_SCRATCH is outside the shared buffer or the length overflows it.
    InvalidScratch,
    /// A required input lacks its valid bit.
    MissingInput(GhcbField),
    /// An input has a value the specification does not allow.
    InvalidInput,
    /// The exit code is not one this side implements (or not one of this
    /// platform: an SNP event on SEV-ES).
    UnknownExit(u64),
}

impl From<MissingField> for HostError {
    fn from(m: MissingField) -> Self {
        Self::MissingInput(m.0)
    }
}

impl HostError {
    /// GHCB error code for SW_EXITINFO2 (GHCB spec 56421 v2, table 5: 2 invalid usage,
    /// 3 invalid scratch area, 4 missing input, 5 invalid input, 6 invalid event).
    pub fn code(self) -> u64 {
        match self {
            Self::InvalidUsage => 2,
            Self::InvalidScratch => 3,
            Self::MissingInput(_) => 4,
            Self::InvalidInput => 5,
            Self::UnknownExit(_) => 6,
        }
    }
}

/// Checks that `[scratch, scratch + len)` lies inside the shared buffer of
/// the GHCB at `ghcb_gpa`.
pub fn scratch_range(ghcb_gpa: u64, scratch: u64, len: u64) -> Result<Scratch, HostError> {
    let base = ghcb_gpa
        .checked_add(SHARED_BUFFER_OFFSET as u64)
        .ok_or(HostError::InvalidScratch)?;
    let offset = scratch.checked_sub(base).ok_or(HostError::InvalidScratch)?;
    let end = offset.checked_add(len).ok_or(HostError::InvalidScratch)?;
    if end > SHARED_BUFFER_SIZE as u64 {
        return Err(HostError::InvalidScratch);
    }
    Ok(Scratch {
        offset: offset as usize,
        len: len as usize,
    })
}

fn u32_input(s: &GhcbSnapshot, f: GhcbField) -> Result<u32, HostError> {
    Ok(s.require(f)? as u32)
}

impl NaeRequest {
    /// Parses the request in `ghcb` (one snapshot) for a GHCB registered at
    /// `ghcb_gpa`. Returns the snapshot too, for hypercall-specific inputs.
    pub fn parse(ghcb: &Ghcb, ghcb_gpa: u64) -> Result<(Self, GhcbSnapshot), HostError> {
        if ghcb.usage() != GHCB_USAGE_STANDARD {
            return Err(HostError::InvalidUsage);
        }
        let s = ghcb.snapshot();
        Self::parse_snapshot(&s, ghcb_gpa).map(|r| (r, s))
    }

    /// Parses a request from a snapshot.
    pub fn parse_snapshot(s: &GhcbSnapshot, ghcb_gpa: u64) -> Result<Self, HostError> {
        use GhcbField::*;
        let code = s.require(SwExitCode)?;
        let info1 = s.require(SwExitInfo1)?;
        let info2 = s.require(SwExitInfo2)?;
        let exit = ExitCode::from_raw(code).ok_or(HostError::UnknownExit(code))?;
        let scratch = |len: u64| scratch_range(ghcb_gpa, s.require(SwScratch)?, len);
        let req = match exit {
            ExitCode::Cpuid => Self::Cpuid {
                leaf: u32_input(s, Rax)?,
                subleaf: u32_input(s, Rcx)?,
                xcr0: s.get(Xcr0).unwrap_or(1),
            },
            ExitCode::Ioio => {
                let info = IoioInfo::decode(info1).ok_or(HostError::InvalidInput)?;
                if info.string {
                    let len = info2
                        .checked_mul(info.size as u64)
                        .ok_or(HostError::InvalidScratch)?;
                    if info2 == 0 {
                        return Err(HostError::InvalidInput);
                    }
                    Self::IoString {
                        info,
                        count: info2,
                        scratch: scratch(len)?,
                    }
                } else if info.input {
                    Self::Io { info, value: None }
                } else {
                    Self::Io {
                        info,
                        value: Some(s.require(Rax)?),
                    }
                }
            }
            ExitCode::Msr => match info1 {
                0 => Self::RdMsr {
                    msr: u32_input(s, Rcx)?,
                },
                1 => Self::WrMsr {
                    msr: u32_input(s, Rcx)?,
                    value: (s.require(Rdx)? & 0xffff_ffff) << 32 | s.require(Rax)? & 0xffff_ffff,
                },
                _ => return Err(HostError::InvalidInput),
            },
            ExitCode::Rdtsc => Self::Rdtsc,
            ExitCode::Rdtscp => Self::Rdtscp,
            ExitCode::Rdpmc => Self::Rdpmc {
                counter: u32_input(s, Rcx)?,
            },
            ExitCode::ReadDr7 => Self::ReadDr7,
            ExitCode::WriteDr7 => {
                if info1 != 0 {
                    return Err(HostError::InvalidInput);
                }
                Self::WriteDr7 {
                    value: s.require(Rax)?,
                }
            }
            ExitCode::Wbinvd => Self::Wbinvd,
            ExitCode::Monitor => Self::Monitor {
                rax: s.require(Rax)?,
                ecx: u32_input(s, Rcx)?,
                edx: u32_input(s, Rdx)?,
            },
            ExitCode::Mwait => Self::Mwait {
                eax: u32_input(s, Rax)?,
                ecx: u32_input(s, Rcx)?,
            },
            ExitCode::Vmmcall => Self::Vmmcall {
                rax: s.require(Rax)?,
                cpl: s.require(Cpl)? as u8,
            },
            ExitCode::MmioRead | ExitCode::MmioWrite => {
                if info2 == 0 {
                    return Err(HostError::InvalidInput);
                }
                let scratch = scratch(info2)?;
                if exit == ExitCode::MmioRead {
                    Self::MmioRead {
                        gpa: info1,
                        scratch,
                    }
                } else {
                    Self::MmioWrite {
                        gpa: info1,
                        scratch,
                    }
                }
            }
            ExitCode::NmiComplete => Self::NmiComplete,
            ExitCode::ApHltLoop => Self::ApHltLoop,
            ExitCode::ApJumpTable => Self::ApJumpTable(match info1 {
                x if x == ApJumpTableOp::Set as u64 => ApJumpTableRequest::Set { gpa: info2 },
                x if x == ApJumpTableOp::Get as u64 => ApJumpTableRequest::Get,
                _ => return Err(HostError::InvalidInput),
            }),
            ExitCode::SnpPsc => {
                let sc = scratch(SHARED_BUFFER_SIZE as u64)?;
                if sc.offset != 0 {
                    return Err(HostError::InvalidScratch);
                }
                Self::Psc
            }
            ExitCode::SnpGuestRequest => Self::GuestRequest {
                req_gpa: info1,
                resp_gpa: info2,
            },
            ExitCode::SnpExtGuestRequest => Self::ExtGuestRequest {
                req_gpa: info1,
                resp_gpa: info2,
                certs_gpa: s.require(Rax)?,
                pages: s.require(Rbx)?,
            },
            ExitCode::SnpApCreation => {
                let op = ApCreationOp::from_raw(info1 as u32).ok_or(HostError::InvalidInput)?;
                let sev_features = match op {
                    ApCreationOp::Destroy => s.get(Rax),
                    _ => Some(s.require(Rax)?),
                };
                Self::ApCreation {
                    op,
                    apic_id: (info1 >> 32) as u32,
                    vmsa_gpa: info2,
                    sev_features,
                }
            }
            ExitCode::SnpRunVmpl => {
                if info1 > 3 {
                    return Err(HostError::InvalidInput);
                }
                Self::RunVmpl { vmpl: info1 as u8 }
            }
            ExitCode::HvFeatures => Self::HvFeatures,
            ExitCode::TermRequest => {
                Self::Terminate(term_request_reason(info1).ok_or(HostError::InvalidInput)?)
            }
            ExitCode::UnsupportedEvent => Self::Unsupported { info1, info2 },
            ExitCode::Invd | ExitCode::ExceptionAc | ExitCode::ExceptionDb | ExitCode::Npf => {
                return Err(HostError::UnknownExit(code));
            }
        };
        Ok(req)
    }

    /// The lowest protocol version that defines this event: a hypervisor serving an older one
    /// does not know it, and answers it as an invalid event ([`HostError::UnknownExit`]).
    pub fn min_version(&self) -> GhcbVersion {
        match self {
            Self::Psc
            | Self::GuestRequest { .. }
            | Self::ExtGuestRequest { .. }
            | Self::ApCreation { .. }
            | Self::RunVmpl { .. }
            | Self::HvFeatures => GhcbVersion::V2,
            Self::Cpuid { .. }
            | Self::Io { .. }
            | Self::IoString { .. }
            | Self::RdMsr { .. }
            | Self::WrMsr { .. }
            | Self::Rdtsc
            | Self::Rdtscp
            | Self::Rdpmc { .. }
            | Self::ReadDr7
            | Self::WriteDr7 { .. }
            | Self::Wbinvd
            | Self::Monitor { .. }
            | Self::Mwait { .. }
            | Self::Vmmcall { .. }
            | Self::MmioRead { .. }
            | Self::MmioWrite { .. }
            | Self::NmiComplete
            | Self::ApHltLoop
            | Self::ApJumpTable(_)
            | Self::Terminate(_)
            | Self::Unsupported { .. } => GhcbVersion::V1,
        }
    }
}

/// Writes a success reply: the valid bitmap is cleared, `outputs` are set,
/// SW_EXITINFO1 = 0 and SW_EXITINFO2 = `info2`.
pub fn reply_ok(ghcb: &mut Ghcb, info2: u64, outputs: &[(GhcbField, u64)]) {
    ghcb.clear_valid_bitmap();
    for &(f, v) in outputs {
        ghcb.set(f, v);
    }
    ghcb.set(GhcbField::SwExitInfo1, 0);
    ghcb.set(GhcbField::SwExitInfo2, info2);
}

/// Writes an exception reply (SW_EXITINFO1 = 1, EVENTINJ in SW_EXITINFO2).
pub fn reply_exception(ghcb: &mut Ghcb, e: Exception) {
    ghcb.clear_valid_bitmap();
    ghcb.set(GhcbField::SwExitInfo1, 1);
    ghcb.set(GhcbField::SwExitInfo2, e.event_injection());
}

/// Writes an error reply (SW_EXITINFO1 = 2, reason in SW_EXITINFO2).
pub fn reply_error(ghcb: &mut Ghcb, e: HostError) {
    ghcb.clear_valid_bitmap();
    ghcb.set(GhcbField::SwExitInfo1, 2);
    ghcb.set(GhcbField::SwExitInfo2, e.code());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioio::IoSegment;

    const GPA: u64 = 0x10_0000;

    fn ghcb_with(exit: ExitCode, info1: u64, info2: u64, inputs: &[(GhcbField, u64)]) -> Box<Ghcb> {
        let mut g = Box::new(Ghcb::new());
        g.prepare(2);
        for &(f, v) in inputs {
            g.set(f, v);
        }
        g.set(GhcbField::SwExitCode, exit.raw());
        g.set(GhcbField::SwExitInfo1, info1);
        g.set(GhcbField::SwExitInfo2, info2);
        g
    }

    #[test]
    fn scratch_must_be_inside_the_shared_buffer() {
        let base = GPA + 0x800;
        assert_eq!(
            scratch_range(GPA, base + 8, 8),
            Ok(Scratch { offset: 8, len: 8 })
        );
        assert_eq!(
            scratch_range(GPA, base - 1, 1),
            Err(HostError::InvalidScratch)
        );
        assert_eq!(
            scratch_range(GPA, base + 2030, 3),
            Err(HostError::InvalidScratch)
        );
        assert_eq!(
            scratch_range(GPA, base, u64::MAX),
            Err(HostError::InvalidScratch)
        );
    }

    #[test]
    fn required_inputs_are_checked() {
        let g = ghcb_with(ExitCode::Cpuid, 0, 0, &[(GhcbField::Rax, 1)]);
        assert_eq!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Err(HostError::MissingInput(GhcbField::Rcx))
        );
        let g = ghcb_with(ExitCode::Msr, 2, 0, &[(GhcbField::Rcx, 1)]);
        assert_eq!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Err(HostError::InvalidInput)
        );
        let mut g = ghcb_with(ExitCode::Rdtsc, 0, 0, &[]);
        g.set_usage(1);
        assert_eq!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Err(HostError::InvalidUsage)
        );
        let g = ghcb_with(ExitCode::Npf, 0, 0, &[]);
        assert_eq!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Err(HostError::UnknownExit(0x400))
        );
    }

    /// HV_FEATURES and the SEV-SNP events are version 2; what SEV-ES used from the start
    /// (AP_HLT_LOOP, the AP jump table, NMI_COMPLETE, MMIO, ...) is version 1.
    #[test]
    fn version_2_events_are_known_as_such() {
        let cases = [
            (ExitCode::HvFeatures, 0, vec![], GhcbVersion::V2),
            (ExitCode::SnpGuestRequest, 0x1000, vec![], GhcbVersion::V2),
            (ExitCode::SnpRunVmpl, 0, vec![], GhcbVersion::V2),
            (ExitCode::ApHltLoop, 0, vec![], GhcbVersion::V1),
            (ExitCode::ApJumpTable, 1, vec![], GhcbVersion::V1),
            (ExitCode::NmiComplete, 0, vec![], GhcbVersion::V1),
            (ExitCode::Rdtsc, 0, vec![], GhcbVersion::V1),
            (
                ExitCode::Cpuid,
                0,
                vec![(GhcbField::Rax, 0), (GhcbField::Rcx, 0)],
                GhcbVersion::V1,
            ),
        ];
        for (exit, info1, inputs, version) in cases {
            let g = ghcb_with(exit, info1, 0x2000, &inputs);
            let (req, _) = NaeRequest::parse(&g, GPA).unwrap();
            assert_eq!(req.min_version(), version, "{req:?}");
        }
    }

    #[test]
    fn string_io_is_bounded_by_the_buffer() {
        let info = IoioInfo {
            port: 0x1f0,
            input: true,
            string: true,
            rep: true,
            size: 2,
            address_size: 8,
            segment: IoSegment::Es,
        };
        let scratch = (GhcbField::SwScratch, GPA + 0x800);
        let g = ghcb_with(ExitCode::Ioio, info.encode(), 1016, &[scratch]);
        assert!(matches!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Ok(NaeRequest::IoString { count: 1016, .. })
        ));
        let g = ghcb_with(ExitCode::Ioio, info.encode(), 1017, &[scratch]);
        assert_eq!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Err(HostError::InvalidScratch)
        );
        let g = ghcb_with(ExitCode::Ioio, info.encode(), 0, &[scratch]);
        assert_eq!(
            NaeRequest::parse(&g, GPA).map(|r| r.0),
            Err(HostError::InvalidInput)
        );
    }

    #[test]
    fn replies_set_exactly_their_valid_bits() {
        let mut g = ghcb_with(ExitCode::Rdtsc, 0, 0, &[(GhcbField::Rcx, 5)]);
        reply_ok(&mut g, 0, &[(GhcbField::Rax, 1), (GhcbField::Rdx, 2)]);
        let s = g.snapshot();
        assert_eq!(s.get(GhcbField::Rcx), None);
        assert_eq!(s.get(GhcbField::Rax), Some(1));
        assert_eq!(s.get(GhcbField::SwExitInfo1), Some(0));
        reply_error(&mut g, HostError::MissingInput(GhcbField::Rax));
        let s = g.snapshot();
        assert_eq!(
            (s.get(GhcbField::SwExitInfo1), s.get(GhcbField::SwExitInfo2)),
            (Some(2), Some(4))
        );
        assert_eq!(s.get(GhcbField::Rax), None);
        reply_exception(&mut g, Exception::Ud);
        assert_eq!(g.snapshot().get(GhcbField::SwExitInfo2), Some(0x8000_0306));
    }
}
