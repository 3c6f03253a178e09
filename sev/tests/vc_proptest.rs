//! Property tests: the #VC core's MOV/MOVZX/MOVSX, IN/OUT, (REP) INS/OUTS
//! and (REP) MOVS against small reference models of the x86 semantics,
//! written independently of the core's register-merging code.
#![allow(clippy::field_reassign_with_default)] // the model is configured field by field

mod common;

use common::{MMIO_GPA, MMIO_VA, Machine};
use proptest::prelude::*;
use sev::exit_code::ExitCode;
use sev::vc::{Gpr, RFLAGS_DF, VcOutcome};

const NPF: u64 = ExitCode::Npf as u64;
const IOIO: u64 = ExitCode::Ioio as u64;

/// Base registers usable with mod=01 and no SIB (not RSP/R12).
const BASES: [u8; 14] = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15];

/// Result of writing `v` (`size` bytes) to a register holding `old`,
/// following the SDM: 32-bit writes zero-extend, 8/16-bit writes merge.
fn merged(old: u64, v: u64, size: u8) -> u64 {
    match size {
        8 => v,
        4 => v as u32 as u64,
        2 => (old >> 16) << 16 | (v as u16 as u64),
        _ => (old >> 8) << 8 | (v as u8 as u64),
    }
}

fn rex(w: bool, reg: u8, base: u8) -> u8 {
    0x40 | (w as u8) << 3 | (reg >> 3) << 2 | (base >> 3)
}

/// `op reg, [base + disp]` / `op [base + disp], reg` with a REX prefix so
/// 8-bit registers 4..7 are SPL..DIL.
fn encode(prefix66: bool, w: bool, opcode: &[u8], reg: u8, base: u8, disp: u8) -> Vec<u8> {
    let mut v = Vec::new();
    if prefix66 {
        v.push(0x66);
    }
    v.push(rex(w, reg, base));
    v.extend_from_slice(opcode);
    v.push(0x40 | (reg & 7) << 3 | (base & 7));
    v.push(disp);
    v
}

fn machine(gprs: [u64; 16], base: u8, device: &[u8; 0x100]) -> Machine {
    let mut m = Machine::default();
    m.regs.gpr = gprs;
    m.regs.gpr[base as usize] = MMIO_VA;
    for (k, b) in device.iter().enumerate() {
        m.vcpu.hv.mmio.insert(MMIO_GPA + k as u64, *b);
    }
    m
}

fn device_value(device: &[u8; 0x100], off: usize, size: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&device[off..off + size]);
    u64::from_le_bytes(b)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mov_load(gprs in any::<[u64; 16]>(), reg in 0u8..16, bi in 0usize..14,
                size_log in 0u32..4, disp in 0u8..0x78, device in any::<[u8; 0x100]>()) {
        let base = BASES[bi];
        let size = 1u8 << size_log;
        let code = match size {
            1 => encode(false, false, &[0x8a], reg, base, disp),
            2 => encode(true, false, &[0x8b], reg, base, disp),
            4 => encode(false, false, &[0x8b], reg, base, disp),
            _ => encode(false, true, &[0x8b], reg, base, disp),
        };
        let mut m = machine(gprs, base, &device);
        let mut want = m.regs.gpr;
        let v = device_value(&device, disp as usize, size as usize);
        want[reg as usize] = merged(want[reg as usize], v, size);
        prop_assert_eq!(m.vc(NPF, &code), VcOutcome::Advance(code.len() as u8));
        prop_assert_eq!(m.regs.gpr, want);
    }

    #[test]
    fn mov_store(gprs in any::<[u64; 16]>(), reg in 0u8..16, bi in 0usize..14,
                 size_log in 0u32..4, disp in 0u8..0x78) {
        let base = BASES[bi];
        let size = 1usize << size_log;
        let code = match size {
            1 => encode(false, false, &[0x88], reg, base, disp),
            2 => encode(true, false, &[0x89], reg, base, disp),
            4 => encode(false, false, &[0x89], reg, base, disp),
            _ => encode(false, true, &[0x89], reg, base, disp),
        };
        let mut m = machine(gprs, base, &[0; 0x100]);
        let before = m.regs;
        let value = m.regs.gpr[reg as usize].to_le_bytes()[..size].to_vec();
        prop_assert_eq!(m.vc(NPF, &code), VcOutcome::Advance(code.len() as u8));
        prop_assert_eq!(&m.regs, &before);
        prop_assert_eq!(
            m.vcpu.hv.mmio_log.last().cloned(),
            Some((true, MMIO_GPA + disp as u64, value))
        );
    }

    #[test]
    fn movzx_movsx(gprs in any::<[u64; 16]>(), reg in 0u8..16, bi in 0usize..14,
                   dst_log in 1u32..4, src_word in any::<bool>(), sign in any::<bool>(),
                   disp in 0u8..0x78, device in any::<[u8; 0x100]>()) {
        let base = BASES[bi];
        let dst = 1u8 << dst_log;
        let src = if src_word { 2 } else { 1 };
        prop_assume!(!(src_word && dst == 2));
        let op = match (sign, src_word) {
            (false, false) => [0x0f, 0xb6],
            (false, true) => [0x0f, 0xb7],
            (true, false) => [0x0f, 0xbe],
            (true, true) => [0x0f, 0xbf],
        };
        let code = encode(dst == 2, dst == 8, &op, reg, base, disp);
        let mut m = machine(gprs, base, &device);
        let raw = device_value(&device, disp as usize, src);
        let ext = match (sign, src) {
            (false, _) => raw,
            (true, 1) => raw as u8 as i8 as i64 as u64,
            (true, _) => raw as u16 as i16 as i64 as u64,
        };
        let mut want = m.regs.gpr;
        want[reg as usize] = merged(want[reg as usize], ext, dst);
        prop_assert_eq!(m.vc(NPF, &code), VcOutcome::Advance(code.len() as u8));
        prop_assert_eq!(m.regs.gpr, want);
    }

    #[test]
    fn in_out_dx(rax in any::<u64>(), port in any::<u16>(), value in any::<u32>(),
                 size_log in 0u32..3, input in any::<bool>()) {
        let size = 1u8 << size_log;
        let mut code = Vec::new();
        if size == 2 {
            code.push(0x66);
        }
        code.push(match (input, size) {
            (true, 1) => 0xec,
            (true, _) => 0xed,
            (false, 1) => 0xee,
            (false, _) => 0xef,
        });
        let mut m = Machine::default();
        m.regs.gpr[Gpr::Rax as usize] = rax;
        m.regs.gpr[Gpr::Rdx as usize] = port as u64 | 0xabcd_0000;
        m.vcpu.hv.ports.insert(port, value);
        prop_assert_eq!(m.vc(IOIO, &code), VcOutcome::Advance(code.len() as u8));
        let mask = (1u64 << (8 * size)) - 1;
        if input {
            prop_assert_eq!(m.regs.gpr[0], merged(rax, value as u64 & mask, size));
        } else {
            prop_assert_eq!(m.regs.gpr[0], rax);
            prop_assert_eq!(m.vcpu.hv.port_log.clone(), vec![(port, size, (rax & mask) as u32)]);
        }
    }

    #[test]
    fn rep_ins_outs(count in 0u64..3000, size_log in 0u32..3, down in any::<bool>(),
                    input in any::<bool>(), start_off in 0u64..0x3000, rep in any::<bool>(),
                    seed in any::<u32>()) {
        let size = 1u64 << size_log;
        let base = 0xffff_8880_0100_0000u64;
        let start = base + 0x4000 + start_off / size * size;
        let mut code = Vec::new();
        if rep {
            code.push(0xf3);
        }
        if size == 2 {
            code.push(0x66);
        }
        code.push(match (input, size) {
            (true, 1) => 0x6c,
            (true, _) => 0x6d,
            (false, 1) => 0x6e,
            (false, _) => 0x6f,
        });
        let mut m = Machine::default();
        m.regs.gpr[Gpr::Rcx as usize] = count;
        m.regs.gpr[Gpr::Rdx as usize] = 0x1f0;
        let idx = if input { Gpr::Rdi } else { Gpr::Rsi };
        m.regs.gpr[idx as usize] = start;
        if down {
            m.regs.rflags |= RFLAGS_DF;
        }
        let n = if rep { count } else { 1 };
        let mask = (1u64 << (8 * size)) - 1;
        let values: Vec<u32> = (0..n as u32)
            .map(|k| (k.wrapping_mul(2_654_435_761) ^ seed) & mask as u32)
            .collect();
        let addr = |k: u64| if down { start - k * size } else { start + k * size };
        if input {
            m.vcpu.hv.port_fifo.insert(0x1f0, values.iter().copied().collect());
        } else {
            for (k, v) in values.iter().enumerate() {
                m.mem.put(addr(k as u64), &v.to_le_bytes()[..size as usize]);
            }
        }
        let (o, _) = m.run_to_completion(IOIO, &code, 64);
        prop_assert_eq!(o, VcOutcome::Advance(code.len() as u8));
        if input {
            for (k, v) in values.iter().enumerate() {
                prop_assert_eq!(
                    m.mem.get(addr(k as u64), size as usize),
                    v.to_le_bytes()[..size as usize].to_vec()
                );
            }
        } else {
            let sent: Vec<u32> = m.vcpu.hv.port_log.iter().map(|e| e.2).collect();
            prop_assert_eq!(sent, values);
        }
        prop_assert_eq!(m.regs.gpr[idx as usize], addr(n));
        prop_assert_eq!(m.regs.gpr[Gpr::Rcx as usize], if rep { 0 } else { count });
    }

    #[test]
    fn rep_movs(count in 0u64..24, size_log in 0u32..4, down in any::<bool>(),
                to_mmio in any::<bool>(), data in prop::collection::vec(any::<u8>(), 512)) {
        let size = 1u64 << size_log;
        let mem = 0xffff_8880_0200_0000u64;
        let (src0, dst0) = if to_mmio {
            (mem + 0x400, MMIO_VA + 0x400)
        } else {
            (MMIO_VA + 0x400, mem + 0x400)
        };
        let mut m = Machine::default();
        for (k, b) in data.iter().enumerate() {
            let a = 0x400 - 0x100 + k as u64;
            if to_mmio {
                m.mem.put(mem + a, &[*b]);
            } else {
                m.vcpu.hv.mmio.insert(MMIO_GPA + a, *b);
            }
        }
        m.regs.gpr[Gpr::Rsi as usize] = src0;
        m.regs.gpr[Gpr::Rdi as usize] = dst0;
        m.regs.gpr[Gpr::Rcx as usize] = count;
        if down {
            m.regs.rflags |= RFLAGS_DF;
        }
        let op = if size == 1 { 0xa4 } else { 0xa5 };
        let code: Vec<u8> = match size {
            2 => vec![0xf3, 0x66, op],
            8 => vec![0xf3, 0x48, op],
            _ => vec![0xf3, op],
        };
        let (o, n) = m.run_to_completion(NPF, &code, 64);
        prop_assert_eq!(o, VcOutcome::Advance(code.len() as u8));
        prop_assert_eq!(n as u64, count.max(1));
        let step = |base: u64, k: u64| if down { base - k * size } else { base + k * size };
        for k in 0..count {
            let s = step(0x400, k) - (0x400 - 0x100);
            let want = &data[s as usize..(s + size) as usize];
            let got = if to_mmio {
                (0..size).map(|j| m.vcpu.hv.mmio[&(MMIO_GPA + step(0x400, k) + j)]).collect::<Vec<_>>()
            } else {
                m.mem.get(step(dst0, k), size as usize)
            };
            prop_assert_eq!(got, want.to_vec());
        }
        prop_assert_eq!(m.regs.gpr[Gpr::Rsi as usize], step(src0, count));
        prop_assert_eq!(m.regs.gpr[Gpr::Rdi as usize], step(dst0, count));
        prop_assert_eq!(m.regs.gpr[Gpr::Rcx as usize], 0);
    }
}
