//! Test-only reference hypervisor and guest machine model.
//!
//! `RefHv` implements the host side of every MSR-protocol message and NAE
//! event from the GHCB specification, on top of `sev::host` (the same
//! parsing the simulator uses). Lies are injected with hooks that rewrite the
//! reply after it was built. When the guest terminates, the model panics
//! with a `Terminated` payload: that is how "never returns" is observed.
#![allow(dead_code)] // Each test binary uses a different part of the model.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sev::exception::Exception;
use sev::exit_code::ApCreationOp;
use sev::ghcb::{Ghcb, GhcbField, GhcbSnapshot, GhcbTransport};
use sev::host::{
    ApJumpTableRequest, HostError, NaeRequest, reply_error, reply_exception, reply_ok,
};
use sev::hv_features::HvFeatures;
use sev::msr_protocol::{CpuidReg, GhcbMsr, MsrRequest, MsrResponse, PageAssignment};
use sev::psc::{PSC_DESCRIPTOR_SIZE, PscDescriptor, PscOp};
use sev::termination::TerminationReason;
use sev::vc::{GuestMemory, InsnFetch, MAX_INSN_LEN, Mapping, PageFault, PageWalk};

pub const GHCB_GPA: u64 = 0x7000_0000;
/// Device (MMIO) guest-physical range.
pub const MMIO_GPA: u64 = 0xfee0_0000;
pub const MMIO_LEN: u64 = 0x4000;

/// Panic payload of a terminated guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminated(pub TerminationReason);

type GhcbHook = Box<dyn FnMut(&NaeRequest, &mut Ghcb)>;
type MsrHook = Box<dyn FnMut(MsrRequest, u64) -> u64>;

pub struct RefHv {
    pub ghcb_gpa: u64,
    pub proto: (u16, u16),
    pub cbit: u8,
    pub cpuid: HashMap<(u32, u32), [u32; 4]>,
    pub msrs: HashMap<u32, u64>,
    pub ports: HashMap<u16, u32>,
    pub port_fifo: HashMap<u16, VecDeque<u32>>,
    pub port_log: Vec<(u16, u8, u32)>,
    pub mmio: BTreeMap<u64, u8>,
    pub mmio_log: Vec<(bool, u64, Vec<u8>)>,
    pub tsc: u64,
    pub tsc_aux: u32,
    pub pmc: HashMap<u32, u64>,
    pub dr7: u64,
    pub wbinvd: usize,
    pub monitors: Vec<(u64, u32, u32)>,
    pub mwaits: Vec<(u32, u32)>,
    pub nmi_completes: usize,
    pub hlt_wake: bool,
    pub jump_table: u64,
    pub page_states: HashMap<u64, PscOp>,
    pub psc_per_round: usize,
    pub guest_requests: Vec<(u64, u64)>,
    pub fw_status: u32,
    pub cert_pages: u64,
    pub ap_creations: Vec<(ApCreationOp, u32, u64, Option<u64>)>,
    pub vmpl_runs: Vec<u8>,
    pub features: HvFeatures,
    pub registered_gfn: Option<u64>,
    pub msr_value: u64,
    pub requests: Vec<NaeRequest>,
    pub host_errors: Vec<HostError>,
    pub exits: usize,
    /// Rewrites a NAE reply after it was built.
    pub ghcb_lie: Option<GhcbHook>,
    /// Rewrites an MSR-protocol response.
    pub msr_lie: Option<MsrHook>,
}

impl Default for RefHv {
    fn default() -> Self {
        let mut cpuid = HashMap::new();
        cpuid.insert((0, 0), [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]);
        cpuid.insert((1, 0), [0xa20f10, 0x0001_0800, 0x7ef8_3203, 0x178b_fbff]);
        cpuid.insert((7, 0), [0, 0x219c_97a9, 0x0040_069c, 0]);
        cpuid.insert((7, 1), [0x10, 0, 0, 0]);
        cpuid.insert((0x8000_001f, 0), [0x1_019f, 0x0000_5173, 0x1fd, 0x1]);
        let mut msrs = HashMap::new();
        msrs.insert(0x1b, 0xfee0_0900); // APIC base
        msrs.insert(0xc000_0103, 7); // TSC_AUX
        Self {
            ghcb_gpa: GHCB_GPA,
            proto: (1, 2),
            cbit: 51,
            cpuid,
            msrs,
            ports: HashMap::new(),
            port_fifo: HashMap::new(),
            port_log: Vec::new(),
            mmio: BTreeMap::new(),
            mmio_log: Vec::new(),
            tsc: 1_000_000,
            tsc_aux: 3,
            pmc: HashMap::from([(0, 42)]),
            dr7: 0x400,
            wbinvd: 0,
            monitors: Vec::new(),
            mwaits: Vec::new(),
            nmi_completes: 0,
            hlt_wake: true,
            jump_table: 0,
            page_states: HashMap::new(),
            psc_per_round: usize::MAX,
            guest_requests: Vec::new(),
            fw_status: 0,
            cert_pages: 0,
            ap_creations: Vec::new(),
            vmpl_runs: Vec::new(),
            features: HvFeatures::SNP | HvFeatures::SNP_AP_CREATION,
            registered_gfn: None,
            msr_value: 0,
            requests: Vec::new(),
            host_errors: Vec::new(),
            exits: 0,
            ghcb_lie: None,
            msr_lie: None,
        }
    }
}

fn mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => u32::MAX,
    }
}

impl RefHv {
    /// Byte of device memory: written value or a fixed pattern.
    pub fn mmio_byte(&self, gpa: u64) -> u8 {
        self.mmio.get(&gpa).copied().unwrap_or((gpa as u8) ^ 0x5a)
    }

    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        if let Some(v) = self.port_fifo.get_mut(&port).and_then(|q| q.pop_front()) {
            return v & mask(size);
        }
        self.ports.get(&port).copied().unwrap_or(u32::MAX) & mask(size)
    }

    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        self.port_log.push((port, size, value));
        self.ports.insert(port, value);
    }

    /// Handles the NAE request in `g`.
    pub fn handle_nae(&mut self, g: &mut Ghcb) {
        self.exits += 1;
        let (req, snap) = match NaeRequest::parse(g, self.ghcb_gpa) {
            Ok(x) => x,
            Err(e) => {
                self.host_errors.push(e);
                reply_error(g, e);
                return;
            }
        };
        self.requests.push(req);
        self.serve(&req, &snap, g);
        if let Some(hook) = self.ghcb_lie.as_mut() {
            hook(&req, g);
        }
    }

    fn serve(&mut self, req: &NaeRequest, snap: &GhcbSnapshot, g: &mut Ghcb) {
        use GhcbField::*;
        match *req {
            NaeRequest::Cpuid { leaf, subleaf, .. } => {
                let r = self
                    .cpuid
                    .get(&(leaf, subleaf))
                    .copied()
                    .unwrap_or_default();
                reply_ok(
                    g,
                    0,
                    &[
                        (Rax, r[0] as u64),
                        (Rbx, r[1] as u64),
                        (Rcx, r[2] as u64),
                        (Rdx, r[3] as u64),
                    ],
                );
            }
            NaeRequest::Io { info, value } => match value {
                None => {
                    let v = self.io_read(info.port, info.size);
                    reply_ok(g, 0, &[(Rax, v as u64)]);
                }
                Some(v) => {
                    self.io_write(info.port, info.size, v as u32 & mask(info.size));
                    reply_ok(g, 0, &[]);
                }
            },
            NaeRequest::IoString {
                info,
                count,
                scratch,
            } => {
                let size = info.size as usize;
                for k in 0..count as usize {
                    let off = scratch.offset + k * size;
                    if info.input {
                        let v = self.io_read(info.port, info.size);
                        g.write_shared(off, &v.to_le_bytes()[..size]).unwrap();
                    } else {
                        let mut b = [0u8; 4];
                        g.read_shared(off, &mut b[..size]).unwrap();
                        self.io_write(info.port, info.size, u32::from_le_bytes(b));
                    }
                }
                reply_ok(g, 0, &[]);
            }
            NaeRequest::RdMsr { msr } => match self.msrs.get(&msr) {
                Some(&v) => reply_ok(g, 0, &[(Rax, v & 0xffff_ffff), (Rdx, v >> 32)]),
                None => reply_exception(g, Exception::Gp(0)),
            },
            NaeRequest::WrMsr { msr, value } => {
                if msr == 0x10 {
                    // TSC: read-only in this model.
                    reply_exception(g, Exception::Gp(0));
                } else {
                    self.msrs.insert(msr, value);
                    reply_ok(g, 0, &[]);
                }
            }
            NaeRequest::Rdtsc => {
                self.tsc += 1000;
                reply_ok(
                    g,
                    0,
                    &[(Rax, self.tsc & 0xffff_ffff), (Rdx, self.tsc >> 32)],
                );
            }
            NaeRequest::Rdtscp => {
                self.tsc += 1000;
                reply_ok(
                    g,
                    0,
                    &[
                        (Rax, self.tsc & 0xffff_ffff),
                        (Rdx, self.tsc >> 32),
                        (Rcx, self.tsc_aux as u64),
                    ],
                );
            }
            NaeRequest::Rdpmc { counter } => match self.pmc.get(&counter) {
                Some(&v) => reply_ok(g, 0, &[(Rax, v & 0xffff_ffff), (Rdx, v >> 32)]),
                None => reply_exception(g, Exception::Gp(0)),
            },
            NaeRequest::ReadDr7 => reply_ok(g, 0, &[(Rax, self.dr7)]),
            NaeRequest::WriteDr7 { value } => {
                self.dr7 = value;
                reply_ok(g, 0, &[]);
            }
            NaeRequest::Wbinvd => {
                self.wbinvd += 1;
                reply_ok(g, 0, &[]);
            }
            NaeRequest::Monitor { rax, ecx, edx } => {
                self.monitors.push((rax, ecx, edx));
                reply_ok(g, 0, &[]);
            }
            NaeRequest::Mwait { eax, ecx } => {
                self.mwaits.push((eax, ecx));
                reply_ok(g, 0, &[]);
            }
            NaeRequest::Vmmcall { rax, .. } => {
                // Hypercall 1 adds RBX and RCX into RAX and sets RDX to 0x99.
                if rax == 1 {
                    match (snap.get(Rbx), snap.get(Rcx)) {
                        (Some(b), Some(c)) => {
                            reply_ok(g, 0, &[(Rax, b.wrapping_add(c)), (Rdx, 0x99)])
                        }
                        _ => reply_error(g, HostError::MissingInput(Rbx)),
                    }
                } else {
                    reply_ok(g, 0, &[(Rax, u64::MAX)]);
                }
            }
            NaeRequest::MmioRead { gpa, scratch } => {
                let data: Vec<u8> = (0..scratch.len as u64)
                    .map(|k| self.mmio_byte(gpa + k))
                    .collect();
                g.write_shared(scratch.offset, &data).unwrap();
                self.mmio_log.push((false, gpa, data));
                reply_ok(g, 0, &[]);
            }
            NaeRequest::MmioWrite { gpa, scratch } => {
                let mut data = vec![0u8; scratch.len];
                g.read_shared(scratch.offset, &mut data).unwrap();
                for (k, b) in data.iter().enumerate() {
                    self.mmio.insert(gpa + k as u64, *b);
                }
                self.mmio_log.push((true, gpa, data));
                reply_ok(g, 0, &[]);
            }
            NaeRequest::NmiComplete => {
                self.nmi_completes += 1;
                reply_ok(g, 0, &[]);
            }
            NaeRequest::ApHltLoop => reply_ok(g, self.hlt_wake as u64, &[]),
            NaeRequest::ApJumpTable(ApJumpTableRequest::Set { gpa }) => {
                self.jump_table = gpa;
                reply_ok(g, 0, &[]);
            }
            NaeRequest::ApJumpTable(ApJumpTableRequest::Get) => reply_ok(g, self.jump_table, &[]),
            NaeRequest::Psc => self.psc(g),
            NaeRequest::GuestRequest { req_gpa, resp_gpa } => {
                self.guest_requests.push((req_gpa, resp_gpa));
                reply_ok(g, self.fw_status as u64, &[]);
            }
            NaeRequest::ExtGuestRequest {
                req_gpa,
                resp_gpa,
                pages,
                ..
            } => {
                if pages < self.cert_pages {
                    reply_ok(g, 1 << 32, &[(Rbx, self.cert_pages)]);
                } else {
                    self.guest_requests.push((req_gpa, resp_gpa));
                    reply_ok(g, self.fw_status as u64, &[]);
                }
            }
            NaeRequest::ApCreation {
                op,
                apic_id,
                vmsa_gpa,
                sev_features,
            } => {
                self.ap_creations
                    .push((op, apic_id, vmsa_gpa, sev_features));
                reply_ok(g, 0, &[]);
            }
            NaeRequest::RunVmpl { vmpl } => {
                self.vmpl_runs.push(vmpl);
                reply_ok(g, 0, &[]);
            }
            NaeRequest::HvFeatures => reply_ok(g, self.features.bits(), &[]),
            NaeRequest::Terminate(r) => std::panic::panic_any(Terminated(r)),
            NaeRequest::Unsupported { .. } => {
                std::panic::panic_any(Terminated(TerminationReason::new(0, 0)))
            }
        }
    }

    /// Processes at most `psc_per_round` entries and writes the header back.
    fn psc(&mut self, g: &mut Ghcb) {
        let mut image = [0u8; PSC_DESCRIPTOR_SIZE];
        g.read_shared(0, &mut image).unwrap();
        let mut d = match PscDescriptor::from_bytes(&image) {
            Ok(d) => d,
            Err(_) => {
                reply_ok(g, 1 << 32 | 1, &[]);
                return;
            }
        };
        let mut done = 0;
        while d.header.cur_entry <= d.header.end_entry && done < self.psc_per_round {
            let e = d.entries[d.header.cur_entry as usize];
            self.page_states.insert(e.gfn(), e.op());
            d.header.cur_entry += 1;
            done += 1;
        }
        d.to_bytes(&mut image);
        g.write_shared(0, &image).unwrap();
        reply_ok(g, 0, &[]);
    }

    /// Handles the MSR-protocol request in `msr_value`.
    pub fn handle_msr(&mut self) {
        self.exits += 1;
        let raw = self.msr_value;
        let Ok(req) = MsrRequest::decode(raw) else {
            self.msr_value = 0;
            return;
        };
        let resp = match req {
            MsrRequest::SevInfo => MsrResponse::SevInfo {
                max: self.proto.1,
                min: self.proto.0,
                cbit: self.cbit,
            },
            MsrRequest::Cpuid { function, reg } => {
                let r = self.cpuid.get(&(function, 0)).copied().unwrap_or_default();
                let i = match reg {
                    CpuidReg::Eax => 0,
                    CpuidReg::Ebx => 1,
                    CpuidReg::Ecx => 2,
                    CpuidReg::Edx => 3,
                };
                MsrResponse::Cpuid { reg, value: r[i] }
            }
            MsrRequest::ApResetHold => MsrResponse::ApResetHold {
                result: self.hlt_wake as u64,
            },
            MsrRequest::PreferredGhcbGpa => MsrResponse::PreferredGhcbGpa {
                gfn: Some(self.ghcb_gpa >> 12),
            },
            MsrRequest::RegisterGhcbGpa { gfn } => {
                self.registered_gfn = Some(gfn);
                MsrResponse::RegisterGhcbGpa { gfn }
            }
            MsrRequest::PageStateChange { gfn, op } => {
                let op = match op {
                    PageAssignment::Private => PscOp::Private,
                    PageAssignment::Shared => PscOp::Shared,
                };
                self.page_states.insert(gfn, op);
                MsrResponse::PageStateChange { error: 0 }
            }
            MsrRequest::RunVmpl { vmpl } => {
                self.vmpl_runs.push(vmpl);
                MsrResponse::RunVmpl { error: 0 }
            }
            MsrRequest::HvFeatures => MsrResponse::HvFeatures(self.features),
            MsrRequest::Terminate(r) => std::panic::panic_any(Terminated(r)),
        };
        let mut v = resp.encode();
        if let Some(hook) = self.msr_lie.as_mut() {
            v = hook(req, v);
        }
        self.msr_value = v;
    }
}

impl GhcbMsr for RefHv {
    fn read(&mut self) -> u64 {
        self.msr_value
    }
    fn write(&mut self, value: u64) {
        self.msr_value = value;
    }
    fn vmgexit(&mut self) {
        self.handle_msr();
    }
}

/// A vCPU's GHCB and the hypervisor serving it.
pub struct Vcpu {
    pub hv: RefHv,
    pub ghcb: Box<Ghcb>,
}

impl Default for Vcpu {
    fn default() -> Self {
        Self {
            hv: RefHv::default(),
            ghcb: Box::new(Ghcb::new()),
        }
    }
}

impl GhcbTransport for Vcpu {
    fn ghcb(&mut self) -> &mut Ghcb {
        &mut self.ghcb
    }
    fn ghcb_gpa(&self) -> u64 {
        GHCB_GPA
    }
    fn vmgexit(&mut self) {
        self.hv.handle_nae(&mut self.ghcb);
    }
}

/// Runs `f`, which must terminate the guest, and returns the reason.
pub fn expect_termination<F: FnOnce()>(f: F) -> TerminationReason {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    match r {
        Ok(()) => panic!("guest did not terminate"),
        Err(p) => match p.downcast::<Terminated>() {
            Ok(t) => t.0,
            Err(p) => std::panic::resume_unwind(p),
        },
    }
}

/// The guest registers: the crate's own register file.
pub type Regs = sev::vc::RegisterFile;

/// Page attributes of one 4K virtual page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub present: bool,
    pub encrypted: bool,
    pub user: bool,
    pub writable: bool,
    /// Guest-physical page; identity when `None`.
    pub gpa_page: Option<u64>,
}

impl Attr {
    pub const PRIVATE: Attr = Attr {
        present: true,
        encrypted: true,
        user: false,
        writable: true,
        gpa_page: None,
    };
    pub const NOT_PRESENT: Attr = Attr {
        present: false,
        ..Attr::PRIVATE
    };
    /// A shared (decrypted) kernel mapping of device page `gpa_page`.
    pub const fn mmio(gpa_page: u64) -> Attr {
        Attr {
            present: true,
            encrypted: false,
            user: false,
            writable: true,
            gpa_page: Some(gpa_page),
        }
    }
}

/// Guest virtual memory: private bytes (identity mapped unless an attribute
/// says otherwise) and per-page attributes.
#[derive(Default)]
pub struct Mem {
    pub bytes: HashMap<u64, u8>,
    pub attrs: HashMap<u64, Attr>,
}

impl Mem {
    pub fn attr(&self, va: u64) -> Attr {
        self.attrs
            .get(&(va >> 12))
            .copied()
            .unwrap_or(Attr::PRIVATE)
    }
    pub fn set_attr(&mut self, va: u64, a: Attr) {
        self.attrs.insert(va >> 12, a);
    }
    pub fn put(&mut self, va: u64, data: &[u8]) {
        for (k, b) in data.iter().enumerate() {
            self.bytes.insert(va.wrapping_add(k as u64), *b);
        }
    }
    pub fn get(&self, va: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|k| self.bytes.get(&va.wrapping_add(k)).copied().unwrap_or(0))
            .collect()
    }
}

impl InsnFetch for Mem {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; MAX_INSN_LEN]) -> Result<usize, PageFault> {
        for (k, slot) in buf.iter_mut().enumerate() {
            let va = rip.wrapping_add(k as u64);
            if !self.attr(va).present {
                if k == 0 {
                    return Err(PageFault {
                        address: va,
                        error_code: 1 << 4,
                    });
                }
                return Ok(k);
            }
            *slot = self.bytes.get(&va).copied().unwrap_or(0x90);
        }
        Ok(MAX_INSN_LEN)
    }
}

impl PageWalk for Mem {
    fn translate(&mut self, va: u64) -> Option<Mapping> {
        let a = self.attr(va);
        a.present.then(|| Mapping {
            gpa: a.gpa_page.map_or(va, |p| p << 12 | (va & 0xfff)),
            encrypted: a.encrypted,
            user: a.user,
            writable: a.writable,
        })
    }
}

impl GuestMemory for Mem {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), PageFault> {
        for (k, b) in buf.iter_mut().enumerate() {
            let a = va.wrapping_add(k as u64);
            if !self.attr(a).present {
                return Err(PageFault {
                    address: a,
                    error_code: 0,
                });
            }
            *b = self.bytes.get(&a).copied().unwrap_or(0);
        }
        Ok(())
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), PageFault> {
        for (k, b) in data.iter().enumerate() {
            let a = va.wrapping_add(k as u64);
            let at = self.attr(a);
            if !at.present || !at.writable {
                return Err(PageFault {
                    address: a,
                    error_code: if at.present { 3 } else { 2 },
                });
            }
            self.bytes.insert(a, *b);
        }
        Ok(())
    }
}

/// Where test code is placed.
pub const CODE_VA: u64 = 0xffff_ffff_8010_0000;
/// Virtual address of the MMIO mapping (maps `MMIO_GPA`).
pub const MMIO_VA: u64 = 0xffff_c900_0000_0000;

/// A guest CPU: registers, memory, GHCB + hypervisor, #VC state.
pub struct Machine {
    pub regs: Regs,
    pub mem: Mem,
    pub vcpu: Vcpu,
    pub cpu: sev::vc::VcPerCpu,
}

impl Default for Machine {
    fn default() -> Self {
        let mut mem = Mem::default();
        for p in 0..MMIO_LEN / 4096 {
            mem.set_attr(MMIO_VA + p * 4096, Attr::mmio((MMIO_GPA >> 12) + p));
        }
        Self {
            regs: Regs {
                rip: CODE_VA,
                rflags: 0x2,
                ..Regs::default()
            },
            mem,
            vcpu: Vcpu::default(),
            cpu: sev::vc::VcPerCpu::new(),
        }
    }
}

impl Machine {
    /// Places `code` at RIP and handles one #VC with `exit_code`.
    pub fn vc(&mut self, exit_code: u64, code: &[u8]) -> sev::vc::VcOutcome {
        self.mem.put(self.regs.rip, code);
        self.vc_again(exit_code)
    }

    /// Handles one #VC at the current RIP with no hypercall ABI.
    pub fn vc_again(&mut self, exit_code: u64) -> sev::vc::VcOutcome {
        let cfg = sev::vc::VcConfig {
            cpuid_page: None,
            hypercalls: &sev::vc::NoHypercalls,
        };
        self.vc_with(exit_code, &cfg)
    }

    pub fn vc_with(&mut self, exit_code: u64, cfg: &sev::vc::VcConfig<'_>) -> sev::vc::VcOutcome {
        sev::vc::handle_vc(
            exit_code,
            &mut self.regs,
            &mut self.mem,
            &mut self.vcpu,
            &mut self.cpu,
            cfg,
        )
    }

    /// Runs a (REP) instruction to completion: #VC after #VC until it
    /// advances, at most `limit` times. Returns the outcome and the count.
    pub fn run_to_completion(
        &mut self,
        exit_code: u64,
        code: &[u8],
        limit: usize,
    ) -> (sev::vc::VcOutcome, usize) {
        self.mem.put(self.regs.rip, code);
        for n in 1..=limit {
            let o = self.vc_again(exit_code);
            if o != sev::vc::VcOutcome::Repeat {
                return (o, n);
            }
        }
        panic!("no completion after {limit} #VCs");
    }
}
