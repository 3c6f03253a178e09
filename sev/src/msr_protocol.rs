//! The GHCB MSR protocol: requests and responses exchanged through the GHCB
//! MSR itself (no GHCB page), used before a GHCB is registered and for
//! termination, which must work at any time.
//!
//! GHCBInfo is bits 11:0 of the MSR value; GHCBData is bits 63:12. Every
//! response is decoded strictly: the response code must be the one that
//! answers the request, reserved bits must be zero and echoed values (CPUID
//! register, registered GFN) must be the ones sent.

use crate::hv_features::{HV_FEATURES_MSR_MASK, HvFeatures};
use crate::termination::{GuestReason, TerminationReason};

/// The GHCB MSR (MSR_AMD64_SEV_ES_GHCB).
pub const GHCB_MSR: u32 = 0xc001_0130;
/// The highest GHCB protocol version this crate speaks (v2: SEV-SNP capable); it speaks every
/// [`GhcbVersion`] down to version 1.
pub const GHCB_PROTOCOL_VERSION: u16 = GhcbVersion::MAX.number();

/// A GHCB protocol version this crate speaks. A guest negotiates the highest one both it and
/// the hypervisor support ([`check_sev_info`]) and puts it in every GHCB it hands over; what
/// it may ask for depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u16)]
pub enum GhcbVersion {
    /// SEV-ES as first specified: the NAE events (AP_HLT_LOOP, AP jump table, NMI_COMPLETE,
    /// MMIO, ...) and the MSR protocol's SEV information, CPUID and termination.
    V1 = 1,
    /// Adds HV_FEATURES (MSR protocol and NAE event), the MSR protocol's AP Reset Hold and the
    /// SEV-SNP requests (GHCB GPA registration, page state change, guest requests, AP creation).
    V2 = 2,
}

impl GhcbVersion {
    /// The lowest version this crate speaks.
    pub const MIN: Self = Self::V1;
    /// The highest version this crate speaks.
    pub const MAX: Self = Self::V2;

    /// The version's number, as the SEV information and the GHCB's protocol version field
    /// carry it.
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The version numbered `n`, if this crate speaks it.
    pub const fn from_number(n: u16) -> Option<Self> {
        match n {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// Whether HV_FEATURES exists: a version 1 hypervisor does not know the request.
    pub fn has_hv_features(self) -> bool {
        self >= Self::V2
    }

    /// Whether the MSR protocol's AP Reset Hold exists (what parks an AP where no GHCB can be
    /// reached, with paging off).
    pub fn has_msr_ap_reset_hold(self) -> bool {
        self >= Self::V2
    }
}

const INFO_MASK: u64 = 0xfff;
/// A 52-bit GFN field (`GHCBData[63:12]`) with all bits set: "none" / "failed".
pub const GFN_NONE: u64 = (1 << 52) - 1;

mod code {
    pub const SEV_INFO_RESP: u64 = 0x001;
    pub const SEV_INFO_REQ: u64 = 0x002;
    pub const CPUID_REQ: u64 = 0x004;
    pub const CPUID_RESP: u64 = 0x005;
    pub const AP_RESET_HOLD_REQ: u64 = 0x006;
    pub const AP_RESET_HOLD_RESP: u64 = 0x007;
    pub const PREF_GPA_REQ: u64 = 0x010;
    pub const PREF_GPA_RESP: u64 = 0x011;
    pub const REG_GPA_REQ: u64 = 0x012;
    pub const REG_GPA_RESP: u64 = 0x013;
    pub const PSC_REQ: u64 = 0x014;
    pub const PSC_RESP: u64 = 0x015;
    pub const VMPL_REQ: u64 = 0x016;
    pub const VMPL_RESP: u64 = 0x017;
    pub const HV_FT_REQ: u64 = 0x080;
    pub const HV_FT_RESP: u64 = 0x081;
    pub const TERM_REQ: u64 = 0x100;
}

/// Which CPUID output register an MSR-protocol CPUID request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CpuidReg {
    Eax = 0,
    Ebx = 1,
    Ecx = 2,
    Edx = 3,
}

impl CpuidReg {
    const ALL: [CpuidReg; 4] = [CpuidReg::Eax, CpuidReg::Ebx, CpuidReg::Ecx, CpuidReg::Edx];
}

/// Page assignment requested by an SNP page state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageAssignment {
    Private = 1,
    Shared = 2,
}

/// A guest-to-hypervisor MSR-protocol request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrRequest {
    /// 0x002: ask for the protocol range and C-bit position.
    SevInfo,
    /// 0x004: one register of one CPUID function (subleaf 0, no XCR0).
    Cpuid { function: u32, reg: CpuidReg },
    /// 0x006: park this AP until the hypervisor wakes it.
    ApResetHold,
    /// 0x010: ask where the hypervisor would like the GHCB.
    PreferredGhcbGpa,
    /// 0x012: register the GHCB at this GFN (SNP requires it).
    RegisterGhcbGpa { gfn: u64 },
    /// 0x014: change the RMP state of one 4K page.
    PageStateChange { gfn: u64, op: PageAssignment },
    /// 0x016: run the given VMPL (SVSM protocol).
    RunVmpl { vmpl: u8 },
    /// 0x080: ask for the hypervisor feature bitmap.
    HvFeatures,
    /// 0x100: terminate the guest.
    Terminate(TerminationReason),
}

/// A hypervisor-to-guest MSR-protocol response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrResponse {
    /// 0x001: supported protocol range and the C-bit position.
    SevInfo { max: u16, min: u16, cbit: u8 },
    /// 0x005: the requested CPUID register.
    Cpuid { reg: CpuidReg, value: u32 },
    /// 0x007: GHCBData non-zero means the AP was woken.
    ApResetHold { result: u64 },
    /// 0x011: preferred GFN, `None` when the hypervisor has no preference.
    PreferredGhcbGpa { gfn: Option<u64> },
    /// 0x013: the registered GFN ([`GFN_NONE`] on failure).
    RegisterGhcbGpa { gfn: u64 },
    /// 0x015: 0 on success, else an error code.
    PageStateChange { error: u32 },
    /// 0x017: 0 on success, else an error code.
    RunVmpl { error: u32 },
    /// 0x081: feature bitmap.
    HvFeatures(HvFeatures),
}

/// Why an MSR-protocol value could not be decoded or did not answer the
/// request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrProtocolError {
    /// GHCBInfo is not a code this protocol defines (in this direction).
    UnknownCode(u16),
    /// A reserved field is non-zero, or a field has an undefined value.
    ReservedBits(u64),
    /// The response code does not answer the request.
    WrongResponse { expected: u16, got: u16 },
    /// The CPUID response names a different register than requested.
    WrongRegister,
    /// The GHCB registration response echoed a different GFN.
    WrongGfn { expected: u64, got: u64 },
    /// The hypervisor's protocol range shares no version with this crate's
    /// ([`GhcbVersion::MIN`] ..= [`GhcbVersion::MAX`]), or is inverted.
    VersionUnsupported { min: u16, max: u16 },
    /// The page state change failed with this error code.
    PageStateChange(u32),
    /// Run-at-VMPL failed with this error code.
    RunVmpl(u32),
}

impl MsrProtocolError {
    /// The termination reason a guest should use for this failure.
    pub fn reason(self) -> GuestReason {
        match self {
            Self::VersionUnsupported { .. } => GuestReason::ProtocolVersion,
            Self::WrongGfn { .. } => GuestReason::GhcbRegistration,
            Self::PageStateChange(_) => GuestReason::PageStateChange,
            _ => GuestReason::MsrProtocol,
        }
    }
}

fn data(v: u64) -> u64 {
    v >> 12
}

fn ensure_zero(v: u64, mask: u64) -> Result<(), MsrProtocolError> {
    if v & mask != 0 {
        Err(MsrProtocolError::ReservedBits(v & mask))
    } else {
        Ok(())
    }
}

/// Bits [hi:lo] set.
const fn bits(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

impl MsrRequest {
    /// The GHCB MSR value for this request.
    pub fn encode(self) -> u64 {
        match self {
            Self::SevInfo => code::SEV_INFO_REQ,
            Self::Cpuid { function, reg } => {
                code::CPUID_REQ | (reg as u64) << 30 | (function as u64) << 32
            }
            Self::ApResetHold => code::AP_RESET_HOLD_REQ,
            Self::PreferredGhcbGpa => code::PREF_GPA_REQ,
            Self::RegisterGhcbGpa { gfn } => code::REG_GPA_REQ | (gfn & GFN_NONE) << 12,
            Self::PageStateChange { gfn, op } => {
                code::PSC_REQ | (op as u64) << 52 | (gfn & bits(39, 0)) << 12
            }
            Self::RunVmpl { vmpl } => code::VMPL_REQ | (vmpl as u64) << 32,
            Self::HvFeatures => code::HV_FT_REQ,
            Self::Terminate(r) => code::TERM_REQ | (r.set() as u64) << 12 | (r.code() as u64) << 16,
        }
    }

    /// Decodes a request (hypervisor side), refusing reserved bits.
    pub fn decode(v: u64) -> Result<Self, MsrProtocolError> {
        let req = match v & INFO_MASK {
            code::SEV_INFO_REQ => {
                ensure_zero(v, bits(63, 12))?;
                Self::SevInfo
            }
            code::CPUID_REQ => {
                ensure_zero(v, bits(29, 12))?;
                Self::Cpuid {
                    function: (v >> 32) as u32,
                    reg: CpuidReg::ALL[((v >> 30) & 3) as usize],
                }
            }
            code::AP_RESET_HOLD_REQ => {
                ensure_zero(v, bits(63, 12))?;
                Self::ApResetHold
            }
            code::PREF_GPA_REQ => {
                ensure_zero(v, bits(63, 12))?;
                Self::PreferredGhcbGpa
            }
            code::REG_GPA_REQ => Self::RegisterGhcbGpa { gfn: data(v) },
            code::PSC_REQ => {
                ensure_zero(v, bits(63, 56))?;
                let op = match (v >> 52) & 0xf {
                    1 => PageAssignment::Private,
                    2 => PageAssignment::Shared,
                    _ => return Err(MsrProtocolError::ReservedBits(v & bits(55, 52))),
                };
                Self::PageStateChange {
                    gfn: (v >> 12) & bits(39, 0),
                    op,
                }
            }
            code::VMPL_REQ => {
                ensure_zero(v, bits(63, 40) | bits(31, 12))?;
                Self::RunVmpl {
                    vmpl: (v >> 32) as u8,
                }
            }
            code::HV_FT_REQ => {
                ensure_zero(v, bits(63, 12))?;
                Self::HvFeatures
            }
            code::TERM_REQ => {
                ensure_zero(v, bits(63, 24))?;
                Self::Terminate(TerminationReason::new(
                    ((v >> 12) & 0xf) as u8,
                    (v >> 16) as u8,
                ))
            }
            other => return Err(MsrProtocolError::UnknownCode(other as u16)),
        };
        Ok(req)
    }

    /// The lowest protocol version that defines this request: a hypervisor
    /// that negotiated an older one does not know it.
    pub fn min_version(self) -> GhcbVersion {
        match self {
            Self::SevInfo | Self::Cpuid { .. } | Self::Terminate(_) => GhcbVersion::V1,
            Self::ApResetHold
            | Self::PreferredGhcbGpa
            | Self::RegisterGhcbGpa { .. }
            | Self::PageStateChange { .. }
            | Self::RunVmpl { .. }
            | Self::HvFeatures => GhcbVersion::V2,
        }
    }

    /// The response code that answers this request; `None` for termination,
    /// which is never answered.
    pub fn response_code(self) -> Option<u16> {
        let c = match self {
            Self::SevInfo => code::SEV_INFO_RESP,
            Self::Cpuid { .. } => code::CPUID_RESP,
            Self::ApResetHold => code::AP_RESET_HOLD_RESP,
            Self::PreferredGhcbGpa => code::PREF_GPA_RESP,
            Self::RegisterGhcbGpa { .. } => code::REG_GPA_RESP,
            Self::PageStateChange { .. } => code::PSC_RESP,
            Self::RunVmpl { .. } => code::VMPL_RESP,
            Self::HvFeatures => code::HV_FT_RESP,
            Self::Terminate(_) => return None,
        };
        Some(c as u16)
    }
}

impl MsrResponse {
    /// The GHCB MSR value for this response (hypervisor side).
    pub fn encode(self) -> u64 {
        match self {
            Self::SevInfo { max, min, cbit } => {
                code::SEV_INFO_RESP | (max as u64) << 48 | (min as u64) << 32 | (cbit as u64) << 24
            }
            Self::Cpuid { reg, value } => {
                code::CPUID_RESP | (reg as u64) << 30 | (value as u64) << 32
            }
            Self::ApResetHold { result } => code::AP_RESET_HOLD_RESP | (result & GFN_NONE) << 12,
            Self::PreferredGhcbGpa { gfn } => {
                code::PREF_GPA_RESP | (gfn.unwrap_or(GFN_NONE) & GFN_NONE) << 12
            }
            Self::RegisterGhcbGpa { gfn } => code::REG_GPA_RESP | (gfn & GFN_NONE) << 12,
            Self::PageStateChange { error } => code::PSC_RESP | (error as u64) << 32,
            Self::RunVmpl { error } => code::VMPL_RESP | (error as u64) << 32,
            Self::HvFeatures(f) => code::HV_FT_RESP | (f.bits() & HV_FEATURES_MSR_MASK) << 12,
        }
    }

    /// Decodes a response (guest side), refusing reserved bits.
    pub fn decode(v: u64) -> Result<Self, MsrProtocolError> {
        let resp = match v & INFO_MASK {
            code::SEV_INFO_RESP => {
                ensure_zero(v, bits(23, 12))?;
                Self::SevInfo {
                    max: (v >> 48) as u16,
                    min: (v >> 32) as u16,
                    cbit: (v >> 24) as u8,
                }
            }
            code::CPUID_RESP => {
                ensure_zero(v, bits(29, 12))?;
                Self::Cpuid {
                    reg: CpuidReg::ALL[((v >> 30) & 3) as usize],
                    value: (v >> 32) as u32,
                }
            }
            code::AP_RESET_HOLD_RESP => Self::ApResetHold { result: data(v) },
            code::PREF_GPA_RESP => {
                let gfn = data(v);
                Self::PreferredGhcbGpa {
                    gfn: (gfn != GFN_NONE).then_some(gfn),
                }
            }
            code::REG_GPA_RESP => Self::RegisterGhcbGpa { gfn: data(v) },
            code::PSC_RESP => {
                ensure_zero(v, bits(31, 12))?;
                Self::PageStateChange {
                    error: (v >> 32) as u32,
                }
            }
            code::VMPL_RESP => {
                ensure_zero(v, bits(31, 12))?;
                Self::RunVmpl {
                    error: (v >> 32) as u32,
                }
            }
            code::HV_FT_RESP => Self::HvFeatures(HvFeatures::from_bits_retain(data(v))),
            other => return Err(MsrProtocolError::UnknownCode(other as u16)),
        };
        Ok(resp)
    }

    /// Decodes `raw` and checks that it is a successful answer to `req`:
    /// right response code, echoed register/GFN, no error code.
    pub fn expect(req: MsrRequest, raw: u64) -> Result<Self, MsrProtocolError> {
        let got = (raw & INFO_MASK) as u16;
        let expected = req
            .response_code()
            .ok_or(MsrProtocolError::UnknownCode(got))?;
        if got != expected {
            return Err(MsrProtocolError::WrongResponse { expected, got });
        }
        let resp = Self::decode(raw)?;
        match (req, resp) {
            (MsrRequest::Cpuid { reg, .. }, Self::Cpuid { reg: r, .. }) if r != reg => {
                Err(MsrProtocolError::WrongRegister)
            }
            (MsrRequest::RegisterGhcbGpa { gfn }, Self::RegisterGhcbGpa { gfn: g }) if g != gfn => {
                Err(MsrProtocolError::WrongGfn {
                    expected: gfn,
                    got: g,
                })
            }
            (_, Self::PageStateChange { error }) if error != 0 => {
                Err(MsrProtocolError::PageStateChange(error))
            }
            (_, Self::RunVmpl { error }) if error != 0 => Err(MsrProtocolError::RunVmpl(error)),
            _ => Ok(resp),
        }
    }
}

/// Access to the GHCB MSR and VMGEXIT, implemented by each stage (and by the
/// test hypervisor model).
pub trait GhcbMsr {
    /// RDMSR of the GHCB MSR.
    fn read(&mut self) -> u64;
    /// WRMSR of the GHCB MSR.
    fn write(&mut self, value: u64);
    /// VMGEXIT (`rep vmmcall`).
    fn vmgexit(&mut self);
}

/// Sends one request and returns the validated response. The previous MSR
/// value (a registered GHCB GPA) is restored afterwards, so this can be used
/// after GHCB registration too.
pub fn request<M: GhcbMsr + ?Sized>(
    msr: &mut M,
    req: MsrRequest,
) -> Result<MsrResponse, MsrProtocolError> {
    let saved = msr.read();
    msr.write(req.encode());
    msr.vmgexit();
    let raw = msr.read();
    msr.write(saved);
    MsrResponse::expect(req, raw).inspect_err(|e| {
        log::error!("GHCB MSR protocol: request {req:?} answered with {raw:#x}: {e:?}");
    })
}

/// The error for a response of the right code but the wrong variant, which
/// [`MsrResponse::expect`] makes impossible; kept as an error rather than a
/// panic so no path of the protocol can panic.
fn mismatched(resp: MsrResponse) -> MsrProtocolError {
    MsrProtocolError::WrongResponse {
        expected: 0,
        got: (resp.encode() & INFO_MASK) as u16,
    }
}

/// Decoded SEV information and the protocol version negotiated from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevInfo {
    /// The hypervisor's lowest protocol version.
    pub min: u16,
    /// The hypervisor's highest protocol version.
    pub max: u16,
    pub cbit: u8,
    /// The highest version both sides speak: the one the guest uses.
    pub version: GhcbVersion,
}

/// Checks an SEV information response (requested or found in the MSR at
/// boot) and negotiates the highest version in both the hypervisor's range
/// and this crate's ([`GhcbVersion`]); a range that shares none with ours,
/// or an inverted one, is refused.
pub fn check_sev_info(resp: MsrResponse) -> Result<SevInfo, MsrProtocolError> {
    match resp {
        MsrResponse::SevInfo { max, min, cbit } => {
            let highest = max.min(GhcbVersion::MAX.number());
            match GhcbVersion::from_number(highest) {
                Some(version) if min <= highest => Ok(SevInfo {
                    min,
                    max,
                    cbit,
                    version,
                }),
                _ => Err(MsrProtocolError::VersionUnsupported { min, max }),
            }
        }
        _ => Err(MsrProtocolError::WrongResponse {
            expected: code::SEV_INFO_RESP as u16,
            got: 0,
        }),
    }
}

/// Requests SEV information and negotiates the protocol version
/// ([`check_sev_info`]).
pub fn negotiate<M: GhcbMsr + ?Sized>(msr: &mut M) -> Result<SevInfo, MsrProtocolError> {
    check_sev_info(request(msr, MsrRequest::SevInfo)?)
}

/// CPUID through the MSR protocol: four round trips, one per register.
pub fn cpuid<M: GhcbMsr + ?Sized>(
    msr: &mut M,
    function: u32,
) -> Result<[u32; 4], MsrProtocolError> {
    let mut out = [0; 4];
    for (slot, reg) in out.iter_mut().zip(CpuidReg::ALL) {
        match request(msr, MsrRequest::Cpuid { function, reg })? {
            MsrResponse::Cpuid { value, .. } => *slot = value,
            other => return Err(mismatched(other)),
        }
    }
    Ok(out)
}

/// Registers the GHCB at `gpa` (must be 4K aligned; the low bits are dropped).
pub fn register_ghcb<M: GhcbMsr + ?Sized>(msr: &mut M, gpa: u64) -> Result<(), MsrProtocolError> {
    request(msr, MsrRequest::RegisterGhcbGpa { gfn: gpa >> 12 }).map(|_| ())
}

/// Asks for the preferred GHCB GPA (`None`: no preference).
pub fn preferred_ghcb_gpa<M: GhcbMsr + ?Sized>(
    msr: &mut M,
) -> Result<Option<u64>, MsrProtocolError> {
    match request(msr, MsrRequest::PreferredGhcbGpa)? {
        MsrResponse::PreferredGhcbGpa { gfn } => Ok(gfn.map(|g| g << 12)),
        other => Err(mismatched(other)),
    }
}

/// Changes the state of the 4K page at `gpa`.
pub fn page_state_change<M: GhcbMsr + ?Sized>(
    msr: &mut M,
    gpa: u64,
    op: PageAssignment,
) -> Result<(), MsrProtocolError> {
    request(msr, MsrRequest::PageStateChange { gfn: gpa >> 12, op }).map(|_| ())
}

/// Asks the hypervisor to run `vmpl` (returns when this VMPL is resumed).
pub fn run_vmpl<M: GhcbMsr + ?Sized>(msr: &mut M, vmpl: u8) -> Result<(), MsrProtocolError> {
    request(msr, MsrRequest::RunVmpl { vmpl }).map(|_| ())
}

/// Hypervisor features.
pub fn hv_features<M: GhcbMsr + ?Sized>(msr: &mut M) -> Result<HvFeatures, MsrProtocolError> {
    match request(msr, MsrRequest::HvFeatures)? {
        MsrResponse::HvFeatures(f) => Ok(f),
        other => Err(mismatched(other)),
    }
}

/// Parks this AP until the hypervisor wakes it (GHCBData non-zero); spurious
/// returns with zero are retried.
pub fn ap_reset_hold<M: GhcbMsr + ?Sized>(msr: &mut M) -> Result<(), MsrProtocolError> {
    loop {
        if let MsrResponse::ApResetHold { result } = request(msr, MsrRequest::ApResetHold)?
            && result != 0
        {
            return Ok(());
        }
    }
}

/// Terminates the guest with `reason` (a guest chooses it with
/// [`settle`](crate::termination::settle), which also logs it). Never returns:
/// if the hypervisor resumes the guest anyway, the request is repeated forever.
pub fn terminate<M: GhcbMsr + ?Sized>(msr: &mut M, reason: TerminationReason) -> ! {
    let value = MsrRequest::Terminate(reason).encode();
    loop {
        msr.write(value);
        msr.vmgexit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::termination::GhcbReason;

    #[test]
    fn request_encodings_match_spec() {
        assert_eq!(MsrRequest::SevInfo.encode(), 0x002);
        assert_eq!(
            MsrRequest::Cpuid {
                function: 0x8000_001f,
                reg: CpuidReg::Ebx
            }
            .encode(),
            0x8000_001f_4000_0004
        );
        assert_eq!(
            MsrRequest::RegisterGhcbGpa { gfn: 0x12345 }.encode(),
            0x1234_5012
        );
        assert_eq!(
            MsrRequest::PageStateChange {
                gfn: 0x100,
                op: PageAssignment::Shared
            }
            .encode(),
            0x0020_0000_0010_0014
        );
        assert_eq!(MsrRequest::RunVmpl { vmpl: 1 }.encode(), 0x1_0000_0016);
        assert_eq!(
            MsrRequest::Terminate(GuestReason::MmioEncrypted.into()).encode(),
            0x05_1100
        );
        assert_eq!(
            MsrRequest::Terminate(GhcbReason::ProtocolUnsupported.into()).encode(),
            0x01_0100
        );
    }

    #[test]
    fn every_request_round_trips() {
        let reqs = [
            MsrRequest::SevInfo,
            MsrRequest::Cpuid {
                function: 7,
                reg: CpuidReg::Edx,
            },
            MsrRequest::ApResetHold,
            MsrRequest::PreferredGhcbGpa,
            MsrRequest::RegisterGhcbGpa { gfn: GFN_NONE - 1 },
            MsrRequest::PageStateChange {
                gfn: (1 << 40) - 1,
                op: PageAssignment::Private,
            },
            MsrRequest::RunVmpl { vmpl: 3 },
            MsrRequest::HvFeatures,
            MsrRequest::Terminate(TerminationReason::new(1, 0xff)),
        ];
        for r in reqs {
            assert_eq!(MsrRequest::decode(r.encode()), Ok(r), "{r:?}");
        }
    }

    #[test]
    fn every_response_round_trips() {
        let resps = [
            MsrResponse::SevInfo {
                max: 2,
                min: 1,
                cbit: 51,
            },
            MsrResponse::Cpuid {
                reg: CpuidReg::Ecx,
                value: 0xdead_beef,
            },
            MsrResponse::ApResetHold { result: 1 },
            MsrResponse::PreferredGhcbGpa { gfn: None },
            MsrResponse::PreferredGhcbGpa { gfn: Some(0x55) },
            MsrResponse::RegisterGhcbGpa { gfn: 0x55 },
            MsrResponse::PageStateChange { error: 7 },
            MsrResponse::RunVmpl { error: 0 },
            MsrResponse::HvFeatures(HvFeatures::SNP | HvFeatures::SNP_AP_CREATION),
        ];
        for r in resps {
            assert_eq!(MsrResponse::decode(r.encode()), Ok(r), "{r:?}");
        }
    }

    #[test]
    fn reserved_bits_are_refused() {
        assert!(matches!(
            MsrResponse::decode(0x0002_0001_3300_1001),
            Err(MsrProtocolError::ReservedBits(_))
        ));
        assert!(MsrResponse::decode(0x1_0000_1005).is_err());
        assert!(MsrResponse::decode(0x1000_0015).is_err());
        assert!(MsrResponse::decode(0x1000_0017).is_err());
        assert!(MsrRequest::decode(0x1000_0002).is_err());
        assert!(MsrRequest::decode(0x0030_0000_0000_0014).is_err(), "op 3");
        assert!(MsrRequest::decode(0x0100_0000_0000_0014).is_err(), "bit 56");
        assert!(
            MsrRequest::decode(0x100_0000_0100).is_err(),
            "bit 40 of term"
        );
        assert_eq!(
            MsrResponse::decode(0x0ff),
            Err(MsrProtocolError::UnknownCode(0xff))
        );
    }

    #[test]
    fn expect_checks_code_and_echo() {
        let req = MsrRequest::Cpuid {
            function: 0,
            reg: CpuidReg::Ebx,
        };
        let wrong_reg = MsrResponse::Cpuid {
            reg: CpuidReg::Eax,
            value: 1,
        }
        .encode();
        assert_eq!(
            MsrResponse::expect(req, wrong_reg),
            Err(MsrProtocolError::WrongRegister)
        );
        assert_eq!(
            MsrResponse::expect(req, MsrResponse::RunVmpl { error: 0 }.encode()),
            Err(MsrProtocolError::WrongResponse {
                expected: 5,
                got: 0x17
            })
        );
        let reg = MsrRequest::RegisterGhcbGpa { gfn: 0x10 };
        assert_eq!(
            MsrResponse::expect(reg, MsrResponse::RegisterGhcbGpa { gfn: GFN_NONE }.encode()),
            Err(MsrProtocolError::WrongGfn {
                expected: 0x10,
                got: GFN_NONE
            })
        );
        let psc = MsrRequest::PageStateChange {
            gfn: 1,
            op: PageAssignment::Private,
        };
        assert_eq!(
            MsrResponse::expect(psc, MsrResponse::PageStateChange { error: 3 }.encode()),
            Err(MsrProtocolError::PageStateChange(3))
        );
        assert!(
            MsrResponse::expect(MsrRequest::Terminate(TerminationReason::new(0, 0)), 0x001)
                .is_err()
        );
    }

    #[test]
    fn version_negotiation() {
        let ok = |min, max| check_sev_info(MsrResponse::SevInfo { max, min, cbit: 47 });
        let version = |min, max| ok(min, max).map(|i| i.version);
        assert_eq!(
            ok(1, 2),
            Ok(SevInfo {
                min: 1,
                max: 2,
                cbit: 47,
                version: GhcbVersion::V2
            })
        );
        assert_eq!(version(2, 5), Ok(GhcbVersion::V2), "the highest we speak");
        assert_eq!(version(1, 1), Ok(GhcbVersion::V1), "a version 1 hypervisor");
        assert_eq!(version(0, 1), Ok(GhcbVersion::V1));
        assert_eq!(version(2, 2), Ok(GhcbVersion::V2));
        for (min, max) in [(3, 4), (0, 0), (3, 1), (2, 1), (u16::MAX, u16::MAX)] {
            assert_eq!(
                ok(min, max),
                Err(MsrProtocolError::VersionUnsupported { min, max }),
                "{min}..={max}"
            );
        }
    }

    #[test]
    fn version_2_requests_are_known_as_such() {
        let v2 = [
            MsrRequest::ApResetHold,
            MsrRequest::HvFeatures,
            MsrRequest::PreferredGhcbGpa,
            MsrRequest::RegisterGhcbGpa { gfn: 1 },
            MsrRequest::PageStateChange {
                gfn: 1,
                op: PageAssignment::Shared,
            },
            MsrRequest::RunVmpl { vmpl: 0 },
        ];
        for r in v2 {
            assert_eq!(r.min_version(), GhcbVersion::V2, "{r:?}");
        }
        let v1 = [
            MsrRequest::SevInfo,
            MsrRequest::Cpuid {
                function: 0,
                reg: CpuidReg::Eax,
            },
            MsrRequest::Terminate(TerminationReason::new(0, 0)),
        ];
        for r in v1 {
            assert_eq!(r.min_version(), GhcbVersion::V1, "{r:?}");
        }
        assert!(!GhcbVersion::V1.has_hv_features() && !GhcbVersion::V1.has_msr_ap_reset_hold());
        assert!(GhcbVersion::V2.has_hv_features() && GhcbVersion::V2.has_msr_ap_reset_hold());
        assert_eq!(
            GhcbVersion::from_number(GHCB_PROTOCOL_VERSION),
            Some(GhcbVersion::MAX)
        );
        assert_eq!(GhcbVersion::from_number(0), None);
        assert_eq!(GhcbVersion::from_number(3), None);
    }
}
