//! Host timing of the #VC core: decode + emulate of MMIO MOVs, port I/O and
//! CPUID, against a hypervisor stub that answers instantly (what is timed is
//! the guest-side work, not a VMGEXIT). Prints a table and writes
//! target/bench/vc.json.
//!
//! Run: `cargo run --release -p sev --example vc_bench`

use std::hint::black_box;
use std::time::Instant;

use sev::ghcb::{Ghcb, GhcbField, GhcbTransport};
use sev::host;
use sev::vc::{
    Gpr, GuestMemory, InsnFetch, MAX_INSN_LEN, Mapping, NoHypercalls, PageFault, PageWalk,
    RegisterFile, VcConfig, VcOutcome, VcPerCpu, handle_vc,
};

const RIP: u64 = 0xffff_ffff_8100_0000;
const MMIO_VA: u64 = 0xffff_c900_0000_0000;

/// Code bytes at RIP; MMIO_VA's page is shared, everything else private.
struct Mem {
    code: [u8; MAX_INSN_LEN],
    scratch: [u8; 64],
}

impl InsnFetch for Mem {
    fn fetch(&mut self, _rip: u64, buf: &mut [u8; MAX_INSN_LEN]) -> Result<usize, PageFault> {
        *buf = self.code;
        Ok(MAX_INSN_LEN)
    }
}

impl PageWalk for Mem {
    fn translate(&mut self, va: u64) -> Option<Mapping> {
        Some(Mapping {
            gpa: 0xfee0_0000 | (va & 0xfff),
            encrypted: va >> 12 != MMIO_VA >> 12,
            user: false,
            writable: true,
        })
    }
}

impl GuestMemory for Mem {
    fn read(&mut self, va: u64, buf: &mut [u8]) -> Result<(), PageFault> {
        let o = (va & 31) as usize;
        buf.copy_from_slice(&self.scratch[o..o + buf.len()]);
        Ok(())
    }
    fn write(&mut self, va: u64, data: &[u8]) -> Result<(), PageFault> {
        let o = (va & 31) as usize;
        self.scratch[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Answers every request with success and fixed outputs.
struct Stub {
    ghcb: Box<Ghcb>,
}

impl GhcbTransport for Stub {
    fn ghcb(&mut self) -> &mut Ghcb {
        &mut self.ghcb
    }
    fn ghcb_gpa(&self) -> u64 {
        0x7000_0000
    }
    fn vmgexit(&mut self) {
        host::reply_ok(
            &mut self.ghcb,
            0,
            &[
                (GhcbField::Rax, 1),
                (GhcbField::Rbx, 2),
                (GhcbField::Rcx, 3),
                (GhcbField::Rdx, 4),
            ],
        );
    }
}

struct Case {
    name: &'static str,
    exit: u64,
    code: &'static [u8],
    goal_ns: Option<f64>,
}

fn time(case: &Case, iters: u32) -> (f64, VcOutcome) {
    let mut code = [0x90u8; MAX_INSN_LEN];
    code[..case.code.len()].copy_from_slice(case.code);
    let mut mem = Mem {
        code,
        scratch: [0x5a; 64],
    };
    let mut regs = RegisterFile {
        rip: RIP,
        rflags: 2,
        ..RegisterFile::default()
    };
    let mut hv = Stub {
        ghcb: Box::new(Ghcb::new()),
    };
    let mut cpu = VcPerCpu::new();
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &NoHypercalls,
    };
    let mut run = |regs: &mut RegisterFile| {
        regs.gpr[Gpr::Rax as usize] = 0;
        regs.gpr[Gpr::Rcx as usize] = 16;
        regs.gpr[Gpr::Rbx as usize] = MMIO_VA;
        regs.gpr[Gpr::Rdx as usize] = 0x3f8;
        regs.gpr[Gpr::Rsi as usize] = 0xffff_8880_0000_0000;
        handle_vc(
            black_box(case.exit),
            regs,
            &mut mem,
            &mut hv,
            &mut cpu,
            &cfg,
        )
    };
    let first = run(&mut regs);
    for _ in 0..iters / 10 {
        black_box(run(&mut regs));
    }
    let t = Instant::now();
    for _ in 0..iters {
        black_box(run(&mut regs));
    }
    (t.elapsed().as_nanos() as f64 / iters as f64, first)
}

fn main() {
    sev::vc::init_decoder();
    let cases = [
        Case {
            name: "mmio_mov_load",
            exit: 0x400,
            code: &[0x8b, 0x43, 0x10],
            goal_ns: Some(1000.0),
        },
        Case {
            name: "mmio_mov_store",
            exit: 0x400,
            code: &[0x48, 0x89, 0x43, 0x10],
            goal_ns: Some(1000.0),
        },
        Case {
            name: "mmio_movzx_load",
            exit: 0x400,
            code: &[0x0f, 0xb7, 0x43, 0x10],
            goal_ns: Some(1000.0),
        },
        Case {
            name: "out_dx_al",
            exit: 0x7b,
            code: &[0xee],
            goal_ns: None,
        },
        Case {
            name: "rep_outsb_16",
            exit: 0x7b,
            code: &[0xf3, 0x6e],
            goal_ns: None,
        },
        Case {
            name: "cpuid_cache_hit",
            exit: 0x72,
            code: &[0x0f, 0xa2],
            goal_ns: Some(50.0),
        },
        Case {
            name: "rdtsc",
            exit: 0x6e,
            code: &[0x0f, 0x31],
            goal_ns: None,
        },
    ];
    println!("{:<18} {:>10} {:>10}  outcome", "case", "ns/op", "goal");
    let mut json = String::from("{\n");
    let mut ok = true;
    for (i, c) in cases.iter().enumerate() {
        let (ns, first) = time(c, 200_000);
        let pass = c.goal_ns.is_none_or(|g| ns <= g);
        ok &= pass;
        let goal = c.goal_ns.map_or("-".to_string(), |g| format!("<= {g}"));
        println!(
            "{:<18} {:>10.1} {:>10}  {:?}{}",
            c.name,
            ns,
            goal,
            first,
            if pass { "" } else { "  MISSED" }
        );
        let sep = if i + 1 == cases.len() { "" } else { "," };
        json.push_str(&format!(
            "  \"{}\": {{\"ns_per_op\": {:.1}, \"goal_ns\": {}}}{}\n",
            c.name,
            ns,
            c.goal_ns.map_or("null".to_string(), |g| g.to_string()),
            sep
        ));
    }
    json.push_str("}\n");
    // The workspace's target directory, as cargo was told it (CARGO_TARGET_DIR) or by default.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    std::fs::write(dir.join("vc.json"), json).expect("write vc.json");
    println!("wrote {}", dir.join("vc.json").display());
    if !ok {
        std::process::exit(1);
    }
}
