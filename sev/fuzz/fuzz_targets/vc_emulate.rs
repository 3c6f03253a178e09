//! Fuzzes the #VC core end to end: arbitrary exit code, registers,
//! instruction bytes and page attributes, against a hypervisor that answers
//! every VMGEXIT with arbitrary GHCB contents.
//!
//! Checked beyond "no panic, no hang":
//! - every request the guest sends parses on the host side (the guest never
//!   emits a malformed request, whatever the hypervisor did before);
//! - no MMIO request ever targets a page the guest maps encrypted or user;
//! - a #VC from CPL != 0 never reaches the hypervisor;
//! - outcomes are well formed (advance 1..=15 bytes, termination in set 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sev::ghcb::{GHCB_USAGE_STANDARD, Ghcb, GhcbField, GhcbTransport, SHARED_BUFFER_SIZE};
use sev::host::NaeRequest;
use sev::msr_protocol::{GhcbMsr, MsrRequest};
use sev::termination::REASON_SET_GUEST;
use sev::vc::{
    Gpr, GuestMemory, HypercallAbi, HypercallRegs, InsnFetch, MAX_INSN_LEN, Mapping, PageFault,
    PageWalk, RegisterFile, VcConfig, VcOutcome, VcPerCpu, handle_vc,
};

const GHCB_GPA: u64 = 0x7000_0000;
const EXITS: [u64; 20] = [
    0x27, 0x37, 0x41, 0x51, 0x6e, 0x6f, 0x72, 0x76, 0x7b, 0x7c, 0x81, 0x87, 0x89, 0x8a, 0x8b,
    0x400, 0x400, 0x400, 0x7b, 0x7b,
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
}

/// Memory: the code bytes at RIP; every other page gets attributes from
/// `attrs`, indexed by bits 14:12 of the address. Identity-mapped.
struct Mem {
    rip: u64,
    code: [u8; MAX_INSN_LEN],
    attrs: [u8; 8],
}

impl Mem {
    fn attr(&self, va: u64) -> u8 {
        if va >> 12 == self.rip >> 12 {
            0b0001 // present, private, kernel
        } else {
            self.attrs[(va >> 12 & 7) as usize]
        }
    }
    fn mapping(&self, va: u64) -> Option<Mapping> {
        let a = self.attr(va);
        (a & 1 == 1).then_some(Mapping {
            gpa: va & ((1 << 52) - 1),
            encrypted: a & 2 == 0,
            user: a & 4 != 0,
            writable: a & 8 == 0,
        })
    }
}

impl InsnFetch for Mem {
    fn fetch(&mut self, rip: u64, buf: &mut [u8; MAX_INSN_LEN]) -> Result<usize, PageFault> {
        let in_page = (0x1000 - (rip & 0xfff)) as usize;
        let n = in_page.min(MAX_INSN_LEN);
        buf[..n].copy_from_slice(&self.code[..n]);
        Ok(n)
    }
}

impl PageWalk for Mem {
    fn translate(&mut self, va: u64) -> Option<Mapping> {
        self.mapping(va)
    }
}

impl GuestMemory for Mem {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), PageFault> {
        for (k, b) in buf.iter_mut().enumerate() {
            let a = va.wrapping_add(k as u64);
            if self.mapping(a).is_none() {
                return Err(PageFault {
                    address: a,
                    error_code: 0,
                });
            }
            *b = a as u8;
        }
        Ok(())
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), PageFault> {
        for k in 0..data.len() {
            let a = va.wrapping_add(k as u64);
            if self.mapping(a).is_none() {
                return Err(PageFault {
                    address: a,
                    error_code: 2,
                });
            }
        }
        Ok(())
    }
}

/// Answers every exit with fuzzer-chosen bytes.
struct FuzzHv<'a> {
    ghcb: Box<Ghcb>,
    input: Input<'a>,
    mem_attrs: [u8; 8],
    rip: u64,
    exits: usize,
    msr: u64,
}

impl GhcbTransport for FuzzHv<'_> {
    fn ghcb(&mut self) -> &mut Ghcb {
        &mut self.ghcb
    }
    fn ghcb_gpa(&self) -> u64 {
        GHCB_GPA
    }
    fn vmgexit(&mut self) {
        self.exits += 1;
        assert_eq!(self.ghcb.usage(), GHCB_USAGE_STANDARD);
        let (req, _) = NaeRequest::parse(&self.ghcb, GHCB_GPA)
            .unwrap_or_else(|e| panic!("guest sent a malformed request: {e:?}"));
        if let NaeRequest::MmioRead { gpa, .. } | NaeRequest::MmioWrite { gpa, .. } = req {
            let mem = Mem {
                rip: self.rip,
                code: [0; MAX_INSN_LEN],
                attrs: self.mem_attrs,
            };
            let m = mem.mapping(gpa).expect("MMIO to an unmapped page");
            assert!(
                !m.encrypted && !m.user,
                "MMIO to a refused mapping: {req:?}"
            );
        }
        // Reply: arbitrary valid bitmap, field values and buffer bytes.
        let mode = self.input.u8();
        self.ghcb.clear_valid_bitmap();
        for f in GhcbField::ALL {
            let v = self.input.u64();
            if mode & 1 == 1 || v & 1 == 1 {
                self.ghcb.set(f, v);
            }
        }
        if mode & 2 == 0 {
            // Mostly well-formed success replies, so deep paths get reached.
            self.ghcb
                .set(GhcbField::SwExitInfo1, (mode >> 2 & 3) as u64 & 1);
        }
        let data: [u8; 64] = self.input.bytes();
        let off = (self.input.u8() as usize * 8).min(SHARED_BUFFER_SIZE - 64);
        self.ghcb.write_shared(off, &data).unwrap();
        self.ghcb.write_shared(0, &data[..16]).unwrap();
    }
}

/// MSR-protocol hypervisor for the early handler: checks each request is
/// well formed, answers with fuzzer-chosen values.
impl GhcbMsr for FuzzHv<'_> {
    fn read(&mut self) -> u64 {
        self.msr
    }
    fn write(&mut self, v: u64) {
        self.msr = v;
    }
    fn vmgexit(&mut self) {
        self.exits += 1;
        let req = MsrRequest::decode(self.msr).expect("guest sent a malformed MSR request");
        let raw = self.input.u64();
        self.msr = match (self.input.u8() & 3, req.response_code()) {
            // Mostly right response codes, so the value checks get reached.
            (0..=2, Some(code)) => raw & !0xfff | code as u64,
            _ => raw,
        };
    }
}

struct Hc;

impl HypercallAbi for Hc {
    fn registers(&self, rax: u64) -> Option<HypercallRegs> {
        (rax & 1 == 1).then_some(HypercallRegs {
            inputs: &[Gpr::Rbx, Gpr::Rsp, Gpr::R15],
            outputs: &[Gpr::Rcx, Gpr::Rsp],
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let sel = input.u8();
    let exit = if sel < 240 {
        EXITS[sel as usize % EXITS.len()]
    } else {
        input.u64()
    };
    let mut gpr = [0u64; 16];
    for g in gpr.iter_mut() {
        *g = input.u64();
        // Steer half the registers to small addresses so pages repeat.
        if *g & 1 == 0 {
            *g &= 0x7fff;
        }
    }
    let flags = input.u8();
    let rip = 0xffff_ffff_8000_0000 | (input.u64() & 0xfff);
    let mut regs = RegisterFile {
        gpr,
        rip,
        rflags: if flags & 1 == 1 { 0x402 } else { 0x2 },
        cpl: if flags & 0xe0 == 0xe0 { 3 } else { 0 },
        fs_base: input.u64() & 0xffff,
        gs_base: 0,
    };
    let code: [u8; MAX_INSN_LEN] = input.bytes();
    let attrs: [u8; 8] = input.bytes();
    let mut mem = Mem { rip, code, attrs };
    let mut hv = FuzzHv {
        ghcb: Box::new(Ghcb::new()),
        input,
        mem_attrs: attrs,
        rip,
        exits: 0,
        msr: 0,
    };
    if sel == 0xff {
        let exit = if exit & 1 == 0 { 0x72 } else { exit };
        let o = sev::vc::handle_vc_early(exit, &mut regs, &mut mem, &mut hv, None);
        match o {
            VcOutcome::Advance(n) => assert_eq!(n, 2),
            VcOutcome::Terminate(r) => assert_eq!(r.set(), REASON_SET_GUEST),
            VcOutcome::Repeat | VcOutcome::Exception(_) => panic!("early: {o:?}"),
        }
        return;
    }
    let mut cpu = VcPerCpu::new();
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &Hc,
    };
    let cpl = regs.cpl;
    let o = handle_vc(exit, &mut regs, &mut mem, &mut hv, &mut cpu, &cfg);
    match o {
        VcOutcome::Advance(n) => assert!((1..=15).contains(&n)),
        VcOutcome::Terminate(r) => assert_eq!(r.set(), REASON_SET_GUEST),
        VcOutcome::Repeat | VcOutcome::Exception(_) => {}
    }
    if cpl != 0 {
        assert_eq!(hv.exits, 0);
        assert!(matches!(o, VcOutcome::Terminate(_)));
    }
});
