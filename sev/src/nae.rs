//! Guest side of the NAE events: fill the GHCB, VMGEXIT, snapshot the reply
//! and validate it. Used by the #VC core and directly by stages that prefer
//! explicit calls (serial output, page state changes, AP start-up).
//!
//! Every reply is read through a [`GhcbSnapshot`]. SW_EXITINFO1 must be valid
//! and its low 32 bits 0 (success), 1 (exception: only #GP/#UD accepted) or
//! 2 (error); every output register must carry its valid bit.

use crate::exception::Exception;
use crate::exit_code::{ApCreationOp, ApJumpTableOp, ExitCode, term_request_info1};
use crate::ghcb::{
    GhcbField, GhcbSnapshot, GhcbTransport, MissingField, SHARED_BUFFER_OFFSET, SHARED_BUFFER_SIZE,
};
use crate::hv_features::HvFeatures;
use crate::ioio::IoioInfo;
use crate::psc::{PSC_DESCRIPTOR_SIZE, PscDescriptor, PscError, PscHeader};
use crate::termination::{GuestReason, TerminationReason};

/// Why a NAE event did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NaeError {
    /// The hypervisor asks for #GP or #UD to be raised (legitimate).
    Exception(Exception),
    /// The hypervisor asked for another event (raw EVENTINJ): refused.
    BadException(u64),
    /// SW_EXITINFO1 = 2: the hypervisor rejected the request (SW_EXITINFO2).
    HypervisorError(u64),
    /// A reply field has a value the protocol does not allow.
    Malformed,
    /// A reply field lacks its valid bit.
    MissingValid(GhcbField),
    /// The request does not fit in the shared buffer.
    TooLarge,
}

impl From<MissingField> for NaeError {
    fn from(m: MissingField) -> Self {
        Self::MissingValid(m.0)
    }
}

impl NaeError {
    /// The termination reason for errors a guest cannot recover from.
    pub fn reason(self) -> GuestReason {
        match self {
            Self::Exception(_) | Self::BadException(_) => GuestReason::BadHypervisorException,
            Self::HypervisorError(_) => GuestReason::HypervisorError,
            Self::Malformed | Self::TooLarge => GuestReason::MalformedReply,
            Self::MissingValid(_) => GuestReason::MissingValidBit,
        }
    }
}

/// Guest-physical address of the shared buffer of `t`'s GHCB.
pub fn shared_buffer_gpa<T: GhcbTransport + ?Sized>(t: &T) -> u64 {
    t.ghcb_gpa().wrapping_add(SHARED_BUFFER_OFFSET as u64)
}

/// Checks SW_EXITINFO1/2 of a reply.
pub fn check_reply(s: &GhcbSnapshot) -> Result<(), NaeError> {
    let info1 = s.require(GhcbField::SwExitInfo1)?;
    match info1 as u32 {
        0 => Ok(()),
        1 => {
            let event = s.require(GhcbField::SwExitInfo2)?;
            Err(Exception::from_hypervisor(event)
                .map_or(NaeError::BadException(event), NaeError::Exception))
        }
        2 => Err(NaeError::HypervisorError(
            s.get(GhcbField::SwExitInfo2).unwrap_or(0),
        )),
        _ => Err(NaeError::Malformed),
    }
}

/// Performs one NAE event: sets `inputs` (marking them valid), the exit code
/// and exit information, exits, and returns the checked reply snapshot. A
/// failure is logged.
pub fn call<T: GhcbTransport + ?Sized>(
    t: &mut T,
    exit: ExitCode,
    info1: u64,
    info2: u64,
    inputs: &[(GhcbField, u64)],
) -> Result<GhcbSnapshot, NaeError> {
    call_quietly(t, exit, info1, info2, inputs).inspect_err(|e| match e {
        // #GP/#UD replies are ordinary (an unknown MSR, say).
        NaeError::Exception(_) => log::debug!("NAE {exit:?}: {e:?}"),
        _ => log::warn!("NAE {exit:?}: {e:?}"),
    })
}

/// [`call`] without logging a failure, for a caller where a log line cannot
/// be written (its console output would be one more #VC on a GHCB in use).
pub fn call_quietly<T: GhcbTransport + ?Sized>(
    t: &mut T,
    exit: ExitCode,
    info1: u64,
    info2: u64,
    inputs: &[(GhcbField, u64)],
) -> Result<GhcbSnapshot, NaeError> {
    let version = t.protocol_version().number();
    let g = t.ghcb();
    g.prepare(version);
    for &(f, v) in inputs {
        g.set(f, v);
    }
    g.set(GhcbField::SwExitCode, exit.raw());
    g.set(GhcbField::SwExitInfo1, info1);
    g.set(GhcbField::SwExitInfo2, info2);
    t.vmgexit();
    let s = t.ghcb().snapshot();
    check_reply(&s)?;
    Ok(s)
}

fn low32(v: u64) -> u32 {
    v as u32
}

/// CPUID: `xcr0` is XCR0 if CR4.OSXSAVE is set, else 1.
pub fn cpuid<T: GhcbTransport + ?Sized>(
    t: &mut T,
    leaf: u32,
    subleaf: u32,
    xcr0: u64,
) -> Result<[u32; 4], NaeError> {
    let s = call(
        t,
        ExitCode::Cpuid,
        0,
        0,
        &[
            (GhcbField::Rax, leaf as u64),
            (GhcbField::Rcx, subleaf as u64),
            (GhcbField::Xcr0, xcr0),
        ],
    )?;
    Ok([
        low32(s.require(GhcbField::Rax)?),
        low32(s.require(GhcbField::Rbx)?),
        low32(s.require(GhcbField::Rcx)?),
        low32(s.require(GhcbField::Rdx)?),
    ])
}

fn edx_eax(s: &GhcbSnapshot) -> Result<u64, NaeError> {
    let lo = low32(s.require(GhcbField::Rax)?) as u64;
    let hi = low32(s.require(GhcbField::Rdx)?) as u64;
    Ok(hi << 32 | lo)
}

/// RDMSR.
pub fn rdmsr<T: GhcbTransport + ?Sized>(t: &mut T, msr: u32) -> Result<u64, NaeError> {
    let s = call(t, ExitCode::Msr, 0, 0, &[(GhcbField::Rcx, msr as u64)])?;
    edx_eax(&s)
}

/// WRMSR.
pub fn wrmsr<T: GhcbTransport + ?Sized>(t: &mut T, msr: u32, value: u64) -> Result<(), NaeError> {
    call(
        t,
        ExitCode::Msr,
        1,
        0,
        &[
            (GhcbField::Rcx, msr as u64),
            (GhcbField::Rax, value & 0xffff_ffff),
            (GhcbField::Rdx, value >> 32),
        ],
    )
    .map(drop)
}

/// RDTSC.
pub fn rdtsc<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<u64, NaeError> {
    edx_eax(&call(t, ExitCode::Rdtsc, 0, 0, &[])?)
}

/// RDTSCP: (TSC, TSC_AUX).
pub fn rdtscp<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<(u64, u32), NaeError> {
    let s = call(t, ExitCode::Rdtscp, 0, 0, &[])?;
    Ok((edx_eax(&s)?, low32(s.require(GhcbField::Rcx)?)))
}

/// RDPMC of counter `ecx`.
pub fn rdpmc<T: GhcbTransport + ?Sized>(t: &mut T, ecx: u32) -> Result<u64, NaeError> {
    edx_eax(&call(
        t,
        ExitCode::Rdpmc,
        0,
        0,
        &[(GhcbField::Rcx, ecx as u64)],
    )?)
}

/// DR7 write (SW_EXITINFO1 = 0: the value is in RAX).
pub fn write_dr7<T: GhcbTransport + ?Sized>(t: &mut T, value: u64) -> Result<(), NaeError> {
    call(t, ExitCode::WriteDr7, 0, 0, &[(GhcbField::Rax, value)]).map(drop)
}

/// WBINVD.
pub fn wbinvd<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<(), NaeError> {
    call(t, ExitCode::Wbinvd, 0, 0, &[]).map(drop)
}

/// MONITOR/MONITORX: linear address in RAX, extensions in ECX, hints in EDX.
pub fn monitor<T: GhcbTransport + ?Sized>(
    t: &mut T,
    rax: u64,
    ecx: u32,
    edx: u32,
) -> Result<(), NaeError> {
    call(
        t,
        ExitCode::Monitor,
        0,
        0,
        &[
            (GhcbField::Rax, rax),
            (GhcbField::Rcx, ecx as u64),
            (GhcbField::Rdx, edx as u64),
        ],
    )
    .map(drop)
}

/// MWAIT/MWAITX: hints in EAX, extensions in ECX.
pub fn mwait<T: GhcbTransport + ?Sized>(t: &mut T, eax: u32, ecx: u32) -> Result<(), NaeError> {
    call(
        t,
        ExitCode::Mwait,
        0,
        0,
        &[(GhcbField::Rax, eax as u64), (GhcbField::Rcx, ecx as u64)],
    )
    .map(drop)
}

/// IN of `size` bytes (1, 2 or 4; anything else is 4) from `port`: the
/// value is truncated to the access size.
pub fn io_in<T: GhcbTransport + ?Sized>(t: &mut T, port: u16, size: u8) -> Result<u32, NaeError> {
    let info = IoioInfo::port(port, size, true);
    let s = call(t, ExitCode::Ioio, info.encode(), 0, &[])?;
    Ok((s.require(GhcbField::Rax)? & size_mask(info.size)) as u32)
}

/// OUT of `value` (truncated to `size` bytes: 1, 2 or 4) to `port`.
pub fn io_out<T: GhcbTransport + ?Sized>(
    t: &mut T,
    port: u16,
    size: u8,
    value: u32,
) -> Result<(), NaeError> {
    let info = IoioInfo::port(port, size, false);
    let v = value as u64 & size_mask(info.size);
    call(t, ExitCode::Ioio, info.encode(), 0, &[(GhcbField::Rax, v)]).map(drop)
}

/// String I/O of `count` elements through the shared buffer. For OUTS,
/// `data` holds the elements to send; for INS it receives them. `data.len()`
/// must be `count * info.size` and fit the shared buffer.
pub fn io_string<T: GhcbTransport + ?Sized>(
    t: &mut T,
    info: IoioInfo,
    count: u64,
    data: &mut [u8],
) -> Result<(), NaeError> {
    let info = IoioInfo {
        string: true,
        ..info
    };
    let len = count.saturating_mul(info.size as u64);
    if len > SHARED_BUFFER_SIZE as u64 || data.len() as u64 != len {
        return Err(NaeError::TooLarge);
    }
    if !info.input {
        t.ghcb()
            .write_shared(0, data)
            .map_err(|_| NaeError::TooLarge)?;
    }
    let scratch = shared_buffer_gpa(t);
    call(
        t,
        ExitCode::Ioio,
        info.encode(),
        count,
        &[(GhcbField::SwScratch, scratch)],
    )?;
    if info.input {
        t.ghcb()
            .read_shared(0, data)
            .map_err(|_| NaeError::TooLarge)?;
    }
    Ok(())
}

fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// MMIO read of `out.len()` bytes at `gpa` (at most the shared buffer).
pub fn mmio_read<T: GhcbTransport + ?Sized>(
    t: &mut T,
    gpa: u64,
    out: &mut [u8],
) -> Result<(), NaeError> {
    if out.len() > SHARED_BUFFER_SIZE {
        return Err(NaeError::TooLarge);
    }
    let scratch = shared_buffer_gpa(t);
    call(
        t,
        ExitCode::MmioRead,
        gpa,
        out.len() as u64,
        &[(GhcbField::SwScratch, scratch)],
    )?;
    t.ghcb().read_shared(0, out).map_err(|_| NaeError::TooLarge)
}

/// MMIO write of `data` at `gpa` (at most the shared buffer).
pub fn mmio_write<T: GhcbTransport + ?Sized>(
    t: &mut T,
    gpa: u64,
    data: &[u8],
) -> Result<(), NaeError> {
    t.ghcb()
        .write_shared(0, data)
        .map_err(|_| NaeError::TooLarge)?;
    let scratch = shared_buffer_gpa(t);
    call(
        t,
        ExitCode::MmioWrite,
        gpa,
        data.len() as u64,
        &[(GhcbField::SwScratch, scratch)],
    )
    .map(drop)
}

/// Tells the hypervisor the NMI handler finished (unblocks NMIs). A failure
/// is not logged: the NMI handler may have borrowed the GHCB from the code it
/// interrupted, and a log line's #VC would be a third user of it; the caller
/// reports the error once the GHCB is given back.
pub fn nmi_complete<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<(), NaeError> {
    call_quietly(t, ExitCode::NmiComplete, 0, 0, &[]).map(drop)
}

/// Parks this AP; returns true when the hypervisor reports a wake-up
/// (SW_EXITINFO2 non-zero), false on a spurious return.
pub fn ap_hlt_loop<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<bool, NaeError> {
    let s = call(t, ExitCode::ApHltLoop, 0, 0, &[])?;
    Ok(s.require(GhcbField::SwExitInfo2)? != 0)
}

/// Sets the AP jump table GPA.
pub fn ap_jump_table_set<T: GhcbTransport + ?Sized>(t: &mut T, gpa: u64) -> Result<(), NaeError> {
    call(
        t,
        ExitCode::ApJumpTable,
        ApJumpTableOp::Set as u64,
        gpa,
        &[],
    )
    .map(drop)
}

/// Gets the AP jump table GPA. The value is hypervisor input: a guest must
/// check it against its own records before using it (scenario 14).
pub fn ap_jump_table_get<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<u64, NaeError> {
    let s = call(t, ExitCode::ApJumpTable, ApJumpTableOp::Get as u64, 0, &[])?;
    Ok(s.require(GhcbField::SwExitInfo2)?)
}

/// Errors of a page state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PscCallError {
    Nae(NaeError),
    Psc(PscError),
}

/// Runs a page state change to completion, round after round, checking that
/// the hypervisor never goes backwards, never sets reserved bits, reports
/// no error and finishes within [`PscDescriptor::max_rounds`] rounds.
/// `desc` is kept in private memory; only its header is read back.
pub fn page_state_change<T: GhcbTransport + ?Sized>(
    t: &mut T,
    desc: &PscDescriptor,
) -> Result<(), PscCallError> {
    let mut image = [0u8; PSC_DESCRIPTOR_SIZE];
    desc.to_bytes(&mut image);
    let mut sent = desc.header;
    let scratch = shared_buffer_gpa(t);
    for _ in 0..desc.max_rounds() {
        image[..2].copy_from_slice(&sent.cur_entry.to_le_bytes());
        t.ghcb()
            .write_shared(0, &image)
            .map_err(|_| PscCallError::Nae(NaeError::TooLarge))?;
        let s = call(
            t,
            ExitCode::SnpPsc,
            0,
            0,
            &[(GhcbField::SwScratch, scratch)],
        )
        .map_err(PscCallError::Nae)?;
        let info2 = s
            .require(GhcbField::SwExitInfo2)
            .map_err(|m| PscCallError::Nae(m.into()))?;
        if info2 != 0 {
            return Err(PscCallError::Psc(PscError::HypervisorError(info2)));
        }
        let mut h = [0u8; 8];
        t.ghcb()
            .read_shared(0, &mut h)
            .map_err(|_| PscCallError::Nae(NaeError::TooLarge))?;
        let back = PscHeader::from_bytes(h);
        if PscDescriptor::check_progress(sent, back).map_err(PscCallError::Psc)? {
            return Ok(());
        }
        sent = back;
    }
    Err(PscCallError::Psc(PscError::NoProgress))
}

/// Errors of an SNP guest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRequestError {
    Nae(NaeError),
    /// Non-zero firmware status (`SW_EXITINFO2[31:0]`).
    Firmware(u32),
    /// Non-zero hypervisor status (`SW_EXITINFO2[63:32]`).
    Vmm(u32),
    /// Extended request: the certificate buffer is too small; this many
    /// pages are needed (from RBX).
    CertsTooSmall(u64),
}

/// VMM status for an extended request whose certificate buffer is too small.
pub const VMM_ERR_INVALID_LEN: u32 = 1;
/// VMM status when the firmware is busy; the request may be retried.
pub const VMM_ERR_BUSY: u32 = 2;

fn guest_request_status(s: &GhcbSnapshot) -> Result<(), GuestRequestError> {
    let status = s
        .require(GhcbField::SwExitInfo2)
        .map_err(|m| GuestRequestError::Nae(m.into()))?;
    match ((status >> 32) as u32, status as u32) {
        (0, 0) => Ok(()),
        (0, fw) => Err(GuestRequestError::Firmware(fw)),
        (vmm, _) => Err(GuestRequestError::Vmm(vmm)),
    }
}

/// SNP guest request: request and response pages are shared pages holding
/// encrypted guest messages.
pub fn guest_request<T: GhcbTransport + ?Sized>(
    t: &mut T,
    req_gpa: u64,
    resp_gpa: u64,
) -> Result<(), GuestRequestError> {
    let s = call(t, ExitCode::SnpGuestRequest, req_gpa, resp_gpa, &[])
        .map_err(GuestRequestError::Nae)?;
    guest_request_status(&s)
}

/// SNP extended guest request: like [`guest_request`], plus a certificate
/// buffer of `pages` shared pages at `certs_gpa`.
pub fn ext_guest_request<T: GhcbTransport + ?Sized>(
    t: &mut T,
    req_gpa: u64,
    resp_gpa: u64,
    certs_gpa: u64,
    pages: u64,
) -> Result<(), GuestRequestError> {
    let s = call(
        t,
        ExitCode::SnpExtGuestRequest,
        req_gpa,
        resp_gpa,
        &[(GhcbField::Rax, certs_gpa), (GhcbField::Rbx, pages)],
    )
    .map_err(GuestRequestError::Nae)?;
    match guest_request_status(&s) {
        Err(GuestRequestError::Vmm(VMM_ERR_INVALID_LEN)) => {
            let needed = s
                .require(GhcbField::Rbx)
                .map_err(|m| GuestRequestError::Nae(m.into()))?;
            if needed <= pages {
                return Err(GuestRequestError::Nae(NaeError::Malformed));
            }
            Err(GuestRequestError::CertsTooSmall(needed))
        }
        other => other,
    }
}

/// SNP AP creation: `sev_features` are the VMSA's SEV_FEATURES (RAX).
pub fn ap_creation<T: GhcbTransport + ?Sized>(
    t: &mut T,
    op: ApCreationOp,
    apic_id: u32,
    vmsa_gpa: u64,
    sev_features: u64,
) -> Result<(), NaeError> {
    call(
        t,
        ExitCode::SnpApCreation,
        op.exit_info1(apic_id),
        vmsa_gpa,
        &[(GhcbField::Rax, sev_features)],
    )
    .map(drop)
}

/// Asks the hypervisor to run `vmpl`.
pub fn run_vmpl<T: GhcbTransport + ?Sized>(t: &mut T, vmpl: u8) -> Result<(), NaeError> {
    call(t, ExitCode::SnpRunVmpl, vmpl as u64, 0, &[]).map(drop)
}

/// Hypervisor feature bitmap (SW_EXITINFO2).
pub fn hv_features<T: GhcbTransport + ?Sized>(t: &mut T) -> Result<HvFeatures, NaeError> {
    let s = call(t, ExitCode::HvFeatures, 0, 0, &[])?;
    Ok(HvFeatures::from_bits_retain(
        s.require(GhcbField::SwExitInfo2)?,
    ))
}

/// Terminates through the GHCB with `reason` (a guest chooses it with
/// [`settle`](crate::termination::settle), which also logs it). Never returns:
/// a resumed guest asks again.
pub fn terminate<T: GhcbTransport + ?Sized>(t: &mut T, reason: TerminationReason) -> ! {
    loop {
        // The reply does not matter: a hypervisor that resumes us is asked
        // again.
        let _ = call(t, ExitCode::TermRequest, term_request_info1(reason), 0, &[]);
    }
}
