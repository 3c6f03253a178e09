//! The #VC core against the reference hypervisor: every exit code it
//! handles, instruction tables for each MMIO and port I/O form with the
//! expected GHCB request and register result, and the hostile scenarios
//! (exit-code mismatch, CPL 3, encrypted/user/non-present MMIO targets,
//! lying replies).
#![allow(clippy::field_reassign_with_default)] // the model is configured field by field

mod common;

use common::{Attr, CODE_VA, MMIO_GPA, MMIO_VA, Machine};
use sev::cpuid::{SnpCpuidFunction, SnpCpuidTable};
use sev::exception::Exception;
use sev::exit_code::ExitCode;
use sev::ghcb::GhcbField;
use sev::host::{self, NaeRequest};
use sev::ioio::IoSegment;
use sev::termination::{GuestReason, TerminationReason};
use sev::vc::{Gpr, HypercallAbi, HypercallRegs, NoHypercalls, VcConfig, VcOutcome};

const NPF: u64 = ExitCode::Npf as u64;
const IOIO: u64 = ExitCode::Ioio as u64;
const DEVICE: [u8; 8] = [0x81, 0x92, 0xa3, 0xb4, 0xc5, 0xd6, 0xe7, 0xf8];
const RAX: u64 = 0x1122_3344_5566_7788;

fn terminate(r: GuestReason) -> VcOutcome {
    VcOutcome::Terminate(TerminationReason::from(r))
}

/// A machine with RBX pointing at MMIO_VA, device bytes at +0x10, and
/// recognisable values in RAX, R8, R15.
fn mmio_machine() -> Machine {
    let mut m = Machine::default();
    m.regs.gpr[Gpr::Rax as usize] = RAX;
    m.regs.gpr[Gpr::Rbx as usize] = MMIO_VA;
    m.regs.gpr[Gpr::Rcx as usize] = 4;
    m.regs.gpr[Gpr::Rsp as usize] = 0xffff_c000_0000_7f5a;
    m.regs.gpr[Gpr::R8 as usize] = 0x99aa_bbcc_ddee_ff00;
    m.regs.gpr[Gpr::R15 as usize] = u64::MAX;
    for (k, b) in DEVICE.iter().enumerate() {
        m.vcpu.hv.mmio.insert(MMIO_GPA + 0x10 + k as u64, *b);
    }
    m
}

fn with_moffs(prefix: &[u8], addr: u64) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(&addr.to_le_bytes());
    v
}

#[test]
fn mmio_loads() {
    let moffs = MMIO_VA + 0x10;
    let cases: Vec<(Vec<u8>, Gpr, u64)> = vec![
        (vec![0x8a, 0x43, 0x10], Gpr::Rax, 0x1122_3344_5566_7781), // mov al,[rbx+10]
        (vec![0x8a, 0x63, 0x10], Gpr::Rax, 0x1122_3344_5566_8188), // mov ah,[rbx+10]
        (
            vec![0x66, 0x8b, 0x43, 0x10],
            Gpr::Rax,
            0x1122_3344_5566_9281,
        ), // mov ax
        (vec![0x8b, 0x43, 0x10], Gpr::Rax, 0xb4a3_9281),           // mov eax
        (
            vec![0x48, 0x8b, 0x43, 0x10],
            Gpr::Rax,
            0xf8e7_d6c5_b4a3_9281,
        ), // mov rax
        (vec![0x44, 0x8b, 0x7b, 0x10], Gpr::R15, 0xb4a3_9281),     // mov r15d
        (vec![0x8b, 0x04, 0x8b], Gpr::Rax, 0xb4a3_9281),           // mov eax,[rbx+rcx*4]
        (vec![0x0f, 0xb6, 0x43, 0x10], Gpr::Rax, 0x81),            // movzx eax,byte
        (vec![0x48, 0x0f, 0xb6, 0x43, 0x10], Gpr::Rax, 0x81),      // movzx rax,byte
        (
            vec![0x66, 0x0f, 0xb6, 0x43, 0x10],
            Gpr::Rax,
            0x1122_3344_5566_0081,
        ), // movzx ax,byte
        (vec![0x0f, 0xb7, 0x43, 0x10], Gpr::Rax, 0x9281),          // movzx eax,word
        (vec![0x0f, 0xbe, 0x43, 0x10], Gpr::Rax, 0xffff_ff81),     // movsx eax,byte
        (
            vec![0x48, 0x0f, 0xbf, 0x43, 0x10],
            Gpr::Rax,
            0xffff_ffff_ffff_9281,
        ), // movsx rax,word
        (
            vec![0x66, 0x0f, 0xbe, 0x43, 0x10],
            Gpr::Rax,
            0x1122_3344_5566_ff81,
        ), // movsx ax,byte
        (with_moffs(&[0xa0], moffs), Gpr::Rax, 0x1122_3344_5566_7781), // mov al,moffs
        (
            with_moffs(&[0x66, 0xa1], moffs),
            Gpr::Rax,
            0x1122_3344_5566_9281,
        ),
        (with_moffs(&[0xa1], moffs), Gpr::Rax, 0xb4a3_9281),
        (
            with_moffs(&[0x48, 0xa1], moffs),
            Gpr::Rax,
            0xf8e7_d6c5_b4a3_9281,
        ),
    ];
    for (code, reg, want) in cases {
        let mut m = mmio_machine();
        let before = m.regs;
        let o = m.vc(NPF, &code);
        assert_eq!(o, VcOutcome::Advance(code.len() as u8), "{code:02x?}");
        assert_eq!(m.regs.gpr[reg as usize], want, "{code:02x?}");
        for r in Gpr::ALL.into_iter().filter(|r| *r != reg) {
            assert_eq!(
                m.regs.gpr[r as usize], before.gpr[r as usize],
                "{code:02x?} {r:?}"
            );
        }
        let (write, gpa, data) = m.vcpu.hv.mmio_log.last().unwrap().clone();
        assert!(!write);
        assert_eq!(gpa, MMIO_GPA + 0x10, "{code:02x?}");
        assert!(matches!(data.len(), 1 | 2 | 4 | 8));
    }
}

#[test]
fn mmio_stores() {
    let moffs = MMIO_VA + 0x10;
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (vec![0x88, 0x43, 0x10], vec![0x88]),       // mov [rbx+10],al
        (vec![0x88, 0x63, 0x10], vec![0x77]),       // mov [rbx+10],ah
        (vec![0x40, 0x88, 0x63, 0x10], vec![0x5a]), // mov [rbx+10],spl
        (vec![0x66, 0x89, 0x43, 0x10], vec![0x88, 0x77]), // mov ax
        (vec![0x89, 0x43, 0x10], RAX.to_le_bytes()[..4].to_vec()), // mov eax
        (vec![0x48, 0x89, 0x43, 0x10], RAX.to_le_bytes().to_vec()), // mov rax
        (
            vec![0x4c, 0x89, 0x43, 0x10],
            0x99aa_bbcc_ddee_ff00u64.to_le_bytes().to_vec(),
        ), // r8
        (vec![0xc6, 0x43, 0x10, 0xab], vec![0xab]), // mov byte,imm8
        (vec![0x66, 0xc7, 0x43, 0x10, 0xcd, 0xab], vec![0xcd, 0xab]),
        (
            vec![0xc7, 0x43, 0x10, 0x78, 0x56, 0x34, 0x12],
            vec![0x78, 0x56, 0x34, 0x12],
        ),
        (
            vec![0x48, 0xc7, 0x43, 0x10, 0xf0, 0xff, 0xff, 0xff],
            (-16i64).to_le_bytes().to_vec(),
        ),
        (with_moffs(&[0xa2], moffs), vec![0x88]),
        (with_moffs(&[0x66, 0xa3], moffs), vec![0x88, 0x77]),
        (with_moffs(&[0xa3], moffs), RAX.to_le_bytes()[..4].to_vec()),
        (with_moffs(&[0x48, 0xa3], moffs), RAX.to_le_bytes().to_vec()),
    ];
    for (code, bytes) in cases {
        let mut m = mmio_machine();
        let before = m.regs;
        let o = m.vc(NPF, &code);
        assert_eq!(o, VcOutcome::Advance(code.len() as u8), "{code:02x?}");
        assert_eq!(m.regs, before, "stores change no register");
        assert_eq!(
            m.vcpu.hv.mmio_log.last().unwrap(),
            &(true, MMIO_GPA + 0x10, bytes),
            "{code:02x?}"
        );
    }
}

#[test]
fn mmio_with_segment_override_and_rip_relative() {
    let mut m = mmio_machine();
    m.regs.fs_base = MMIO_VA;
    // mov eax, fs:[0x10]
    let code = [0x64, 0x8b, 0x04, 0x25, 0x10, 0, 0, 0];
    assert_eq!(m.vc(NPF, &code), VcOutcome::Advance(8));
    assert_eq!(m.regs.gpr[0], 0xb4a3_9281);

    let mut m = mmio_machine();
    let near = CODE_VA + 0x10_0000;
    m.mem.set_attr(near, Attr::mmio(MMIO_GPA >> 12));
    // mov eax, [rip + disp32] targeting near + 0x10
    let disp = (near + 0x10 - (CODE_VA + 6)) as u32;
    let mut code = vec![0x8b, 0x05];
    code.extend_from_slice(&disp.to_le_bytes());
    assert_eq!(m.vc(NPF, &code), VcOutcome::Advance(6));
    assert_eq!(m.regs.gpr[0], 0xb4a3_9281);
}

#[test]
fn mmio_refusals() {
    // Encrypted target.
    let mut m = mmio_machine();
    m.regs.gpr[Gpr::Rbx as usize] = 0xffff_8880_0000_0000;
    assert_eq!(
        m.vc(NPF, &[0x8b, 0x43, 0x10]),
        terminate(GuestReason::MmioEncrypted)
    );
    assert!(m.vcpu.hv.mmio_log.is_empty());
    // User mapping.
    let mut m = mmio_machine();
    m.mem.set_attr(
        MMIO_VA,
        Attr {
            user: true,
            ..Attr::mmio(MMIO_GPA >> 12)
        },
    );
    assert_eq!(
        m.vc(NPF, &[0x8b, 0x43, 0x10]),
        terminate(GuestReason::MmioUserMapping)
    );
    // Not present: #PF with the address, read and write error codes.
    let mut m = mmio_machine();
    m.mem.set_attr(MMIO_VA, Attr::NOT_PRESENT);
    assert_eq!(
        m.vc(NPF, &[0x8b, 0x43, 0x10]),
        VcOutcome::Exception(Exception::Pf {
            address: MMIO_VA + 0x10,
            error_code: 0
        })
    );
    assert_eq!(
        m.vc(NPF, &[0x89, 0x43, 0x10]),
        VcOutcome::Exception(Exception::Pf {
            address: MMIO_VA + 0x10,
            error_code: 2
        })
    );
    // Store to a read-only mapping.
    let mut m = mmio_machine();
    m.mem.set_attr(
        MMIO_VA,
        Attr {
            writable: false,
            ..Attr::mmio(MMIO_GPA >> 12)
        },
    );
    assert_eq!(
        m.vc(NPF, &[0x89, 0x43, 0x10]),
        VcOutcome::Exception(Exception::Pf {
            address: MMIO_VA + 0x10,
            error_code: 3
        })
    );
    // Access crossing a page boundary.
    let mut m = mmio_machine();
    m.regs.gpr[Gpr::Rbx as usize] = MMIO_VA + 0xffe;
    assert_eq!(
        m.vc(NPF, &[0x8b, 0x03]),
        terminate(GuestReason::UnsupportedMmio)
    );
    // An ALU op on device memory is not emulated.
    let mut m = mmio_machine();
    assert_eq!(
        m.vc(NPF, &[0x01, 0x43, 0x10]),
        terminate(GuestReason::UnsupportedMmio)
    );
    // MOV to a segment register from MMIO.
    assert_eq!(
        m.vc(NPF, &[0x8e, 0x43, 0x10]),
        terminate(GuestReason::UnsupportedMmio)
    );
    // NPF at an instruction with no memory operand: the exit code lies.
    assert_eq!(
        m.vc(NPF, &[0x0f, 0xa2]),
        terminate(GuestReason::ExitCodeMismatch)
    );
    assert_eq!(
        m.vc(NPF, &[0x89, 0xc3]),
        terminate(GuestReason::ExitCodeMismatch)
    );
}

#[test]
fn movs_between_memory_and_mmio() {
    // movsb: private memory -> MMIO.
    let mut m = mmio_machine();
    let buf = 0xffff_8880_0000_2000;
    m.mem.put(buf, &[0xde, 0xad, 0xbe, 0xef]);
    m.regs.gpr[Gpr::Rsi as usize] = buf;
    m.regs.gpr[Gpr::Rdi as usize] = MMIO_VA + 0x40;
    assert_eq!(m.vc(NPF, &[0xa4]), VcOutcome::Advance(1));
    assert_eq!(m.vcpu.hv.mmio[&(MMIO_GPA + 0x40)], 0xde);
    assert_eq!(m.regs.gpr[Gpr::Rsi as usize], buf + 1);
    assert_eq!(m.regs.gpr[Gpr::Rdi as usize], MMIO_VA + 0x41);

    // rep movsq: MMIO -> private memory, one element per #VC.
    let mut m = mmio_machine();
    m.regs.gpr[Gpr::Rsi as usize] = MMIO_VA + 0x10;
    m.regs.gpr[Gpr::Rdi as usize] = buf;
    m.regs.gpr[Gpr::Rcx as usize] = 3;
    let (o, n) = m.run_to_completion(NPF, &[0xf3, 0x48, 0xa5], 10);
    assert_eq!((o, n), (VcOutcome::Advance(3), 3));
    assert_eq!(m.regs.gpr[Gpr::Rcx as usize], 0);
    assert_eq!(m.regs.gpr[Gpr::Rdi as usize], buf + 24);
    assert_eq!(m.mem.get(buf, 8), DEVICE.to_vec());
    let expect2: Vec<u8> = (0x18..0x20u64)
        .map(|k| ((MMIO_GPA + k) as u8) ^ 0x5a)
        .collect();
    assert_eq!(m.mem.get(buf + 8, 8), expect2);

    // DF=1: addresses walk down.
    let mut m = mmio_machine();
    m.regs.rflags |= sev::vc::RFLAGS_DF;
    m.regs.gpr[Gpr::Rsi as usize] = buf + 8;
    m.regs.gpr[Gpr::Rdi as usize] = MMIO_VA + 0x48;
    m.regs.gpr[Gpr::Rcx as usize] = 2;
    m.mem.put(buf, &[0; 16]);
    let (o, _) = m.run_to_completion(NPF, &[0xf3, 0x66, 0xa5], 10);
    assert_eq!(o, VcOutcome::Advance(3));
    assert_eq!(m.regs.gpr[Gpr::Rsi as usize], buf + 4);
    assert_eq!(m.regs.gpr[Gpr::Rdi as usize], MMIO_VA + 0x44);

    // Private on both sides: no NPF could have happened.
    let mut m = mmio_machine();
    m.regs.gpr[Gpr::Rsi as usize] = buf;
    m.regs.gpr[Gpr::Rdi as usize] = buf + 0x100;
    assert_eq!(m.vc(NPF, &[0xa4]), terminate(GuestReason::ExitCodeMismatch));

    // rep with RCX = 0 does nothing.
    let mut m = mmio_machine();
    m.regs.gpr[Gpr::Rcx as usize] = 0;
    assert_eq!(m.vc(NPF, &[0xf3, 0xa4]), VcOutcome::Advance(2));
    assert!(m.vcpu.hv.mmio_log.is_empty());
}

fn last_io(m: &Machine) -> sev::ioio::IoioInfo {
    match m.vcpu.hv.requests.last() {
        Some(NaeRequest::Io { info, .. }) | Some(NaeRequest::IoString { info, .. }) => *info,
        other => panic!("last request {other:?}"),
    }
}

#[test]
fn port_in_and_out() {
    // (code, input, size, port, expected RAX after IN from port value 0xa1b2c3d4)
    let cases: [(&[u8], bool, u8, u16, u64); 12] = [
        (&[0xe4, 0x60], true, 1, 0x60, 0x1122_3344_5566_77d4),
        (&[0x66, 0xe5, 0x60], true, 2, 0x60, 0x1122_3344_5566_c3d4),
        (&[0xe5, 0x60], true, 4, 0x60, 0xa1b2_c3d4),
        (&[0xec], true, 1, 0x3f8, 0x1122_3344_5566_77d4),
        (&[0x66, 0xed], true, 2, 0x3f8, 0x1122_3344_5566_c3d4),
        (&[0xed], true, 4, 0x3f8, 0xa1b2_c3d4),
        (&[0xe6, 0x80], false, 1, 0x80, RAX),
        (&[0x66, 0xe7, 0x80], false, 2, 0x80, RAX),
        (&[0xe7, 0x80], false, 4, 0x80, RAX),
        (&[0xee], false, 1, 0x3f8, RAX),
        (&[0x66, 0xef], false, 2, 0x3f8, RAX),
        (&[0xef], false, 4, 0x3f8, RAX),
    ];
    for (code, input, size, port, rax) in cases {
        let mut m = mmio_machine();
        m.regs.gpr[Gpr::Rdx as usize] = 0xffff_0000_0000_03f8;
        m.vcpu.hv.ports.insert(port, 0xa1b2_c3d4);
        assert_eq!(
            m.vc(IOIO, code),
            VcOutcome::Advance(code.len() as u8),
            "{code:02x?}"
        );
        assert_eq!(m.regs.gpr[0], rax, "{code:02x?}");
        let info = last_io(&m);
        assert_eq!(
            (info.input, info.size, info.port, info.string),
            (input, size, port, false)
        );
        if !input {
            let mask = (1u64 << (8 * size)) - 1;
            assert_eq!(
                m.vcpu.hv.port_log.last(),
                Some(&(port, size, (RAX & mask) as u32))
            );
        }
    }
}

#[test]
fn string_port_io_forms() {
    let buf = 0xffff_8880_0001_0000;
    // insb / insw / insd without REP: one element, RDI advances.
    for (code, size) in [
        (&[0x6c][..], 1u64),
        (&[0x66, 0x6d][..], 2),
        (&[0x6d][..], 4),
    ] {
        let mut m = mmio_machine();
        m.regs.gpr[Gpr::Rdx as usize] = 0x1f0;
        m.regs.gpr[Gpr::Rdi as usize] = buf;
        m.vcpu.hv.port_fifo.insert(0x1f0, [0x0403_0201].into());
        assert_eq!(m.vc(IOIO, code), VcOutcome::Advance(code.len() as u8));
        assert_eq!(
            m.mem.get(buf, size as usize),
            [1, 2, 3, 4][..size as usize].to_vec()
        );
        assert_eq!(m.regs.gpr[Gpr::Rdi as usize], buf + size);
        assert_eq!(
            m.regs.gpr[Gpr::Rcx as usize],
            4,
            "RCX untouched without REP"
        );
        let info = last_io(&m);
        assert!(info.string && info.input && !info.rep);
        assert_eq!(info.segment, IoSegment::Es);
    }
    // outsb with an FS override: the segment is reported, FS base applies.
    let mut m = mmio_machine();
    m.regs.fs_base = buf;
    m.regs.gpr[Gpr::Rsi as usize] = 0x20;
    m.regs.gpr[Gpr::Rdx as usize] = 0x3f8;
    m.mem.put(buf + 0x20, b"Z");
    assert_eq!(m.vc(IOIO, &[0x64, 0x6e]), VcOutcome::Advance(2));
    assert_eq!(m.vcpu.hv.port_log, vec![(0x3f8, 1, b'Z' as u32)]);
    assert_eq!(last_io(&m).segment, IoSegment::Fs);
    assert_eq!(m.regs.gpr[Gpr::Rsi as usize], 0x21);
}

#[test]
fn rep_outs_is_batched_and_makes_progress() {
    let mut m = mmio_machine();
    let buf = 0xffff_8880_0002_0f00; // 256 bytes before a page boundary
    let msg: Vec<u8> = (0..5000u32).map(|k| k as u8).collect();
    m.mem.put(buf, &msg);
    m.regs.gpr[Gpr::Rsi as usize] = buf;
    m.regs.gpr[Gpr::Rdx as usize] = 0x3f8;
    m.regs.gpr[Gpr::Rcx as usize] = 5000;
    let (o, n) = m.run_to_completion(IOIO, &[0xf3, 0x6e], 100);
    assert_eq!(o, VcOutcome::Advance(2));
    // 256 up to the page end, then 2032 + 2032 + 32 for the next page, then
    // the last 648.
    assert_eq!(n, 5);
    let sizes: Vec<u64> = m
        .vcpu
        .hv
        .requests
        .iter()
        .map(|r| match r {
            NaeRequest::IoString { count, .. } => *count,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, vec![256, 2032, 2032, 32, 648]);
    let sent: Vec<u8> = m.vcpu.hv.port_log.iter().map(|e| e.2 as u8).collect();
    assert_eq!(sent, msg);
    assert_eq!(m.regs.gpr[Gpr::Rcx as usize], 0);
    assert_eq!(m.regs.gpr[Gpr::Rsi as usize], buf + 5000);
}

#[test]
fn rep_ins_downwards_and_with_32bit_addresses() {
    // DF=1, insw: elements land at descending addresses.
    let mut m = mmio_machine();
    let buf = 0xffff_8880_0003_0000;
    m.regs.rflags |= sev::vc::RFLAGS_DF;
    m.regs.gpr[Gpr::Rdi as usize] = buf + 6;
    m.regs.gpr[Gpr::Rcx as usize] = 3;
    m.regs.gpr[Gpr::Rdx as usize] = 0x1f0;
    m.vcpu
        .hv
        .port_fifo
        .insert(0x1f0, [0x1111, 0x2222, 0x3333].into());
    let (o, _) = m.run_to_completion(IOIO, &[0xf3, 0x66, 0x6d], 10);
    assert_eq!(o, VcOutcome::Advance(3));
    assert_eq!(
        m.mem.get(buf + 2, 6),
        vec![0x33, 0x33, 0x22, 0x22, 0x11, 0x11]
    );
    assert_eq!(m.regs.gpr[Gpr::Rdi as usize], buf);

    // 0x67: ECX/EDI are used and the address size is reported as 32.
    let mut m = mmio_machine();
    m.regs.gpr[Gpr::Rdi as usize] = 0xdead_0000_0000_1000;
    m.regs.gpr[Gpr::Rcx as usize] = 0xffff_ffff_0000_0002;
    m.regs.gpr[Gpr::Rdx as usize] = 0x60;
    m.vcpu.hv.ports.insert(0x60, 0x42);
    let (o, _) = m.run_to_completion(IOIO, &[0x67, 0xf3, 0x6c], 10);
    assert_eq!(o, VcOutcome::Advance(3));
    assert_eq!(m.mem.get(0x1000, 2), vec![0x42, 0x42]);
    assert_eq!(m.regs.gpr[Gpr::Rdi as usize], 0x1002);
    assert_eq!(m.regs.gpr[Gpr::Rcx as usize], 0);
    assert_eq!(last_io(&m).address_size, 4);
}

#[test]
fn string_io_memory_faults_are_forwarded() {
    let mut m = mmio_machine();
    let buf = 0xffff_8880_0004_0000;
    m.mem.set_attr(buf, Attr::NOT_PRESENT);
    m.regs.gpr[Gpr::Rsi as usize] = buf;
    m.regs.gpr[Gpr::Rdx as usize] = 0x3f8;
    assert_eq!(
        m.vc(IOIO, &[0x6e]),
        VcOutcome::Exception(Exception::Pf {
            address: buf,
            error_code: 0
        })
    );
    assert!(
        m.vcpu.hv.port_log.is_empty(),
        "nothing sent before the fault"
    );
}

#[test]
fn cpuid_uses_the_cache() {
    let mut m = Machine::default();
    m.regs.gpr[Gpr::Rax as usize] = 0xffff_ffff_0000_0007;
    m.regs.gpr[Gpr::Rcx as usize] = 1;
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0x0f, 0xa2]),
        VcOutcome::Advance(2)
    );
    assert_eq!(&m.regs.gpr[..4], &[0x10, 0, 0, 0]);
    assert_eq!(m.vcpu.hv.exits, 1);
    m.regs.gpr[Gpr::Rax as usize] = 7;
    m.regs.gpr[Gpr::Rcx as usize] = 1;
    assert_eq!(m.vc_again(ExitCode::Cpuid as u64), VcOutcome::Advance(2));
    assert_eq!(m.vcpu.hv.exits, 1, "second CPUID is a cache hit");
    m.regs.gpr[Gpr::Rax as usize] = 7;
    m.regs.gpr[Gpr::Rcx as usize] = 0;
    m.vc_again(ExitCode::Cpuid as u64);
    assert_eq!(m.vcpu.hv.exits, 2, "other subleaf misses");
    assert_eq!(m.regs.gpr[Gpr::Rbx as usize], 0x219c_97a9);
    m.cpu.set_xcr0(7);
    m.regs.gpr[Gpr::Rax as usize] = 7;
    m.regs.gpr[Gpr::Rcx as usize] = 0;
    m.vc_again(ExitCode::Cpuid as u64);
    assert_eq!(m.vcpu.hv.exits, 3, "XCR0 change drops the cache");
    assert!(matches!(
        m.vcpu.hv.requests.last(),
        Some(NaeRequest::Cpuid { xcr0: 7, .. })
    ));
    // A prefixed CPUID takes the general decoder and advances its length.
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0x66, 0x0f, 0xa2]),
        VcOutcome::Advance(3)
    );
}

#[test]
fn cpuid_under_snp_uses_only_the_page() {
    let mut table = SnpCpuidTable::default();
    table.functions[0] = SnpCpuidFunction {
        eax_in: 0x8000_001f,
        eax: 0x1_001f,
        ebx: 51,
        ..Default::default()
    };
    table.count = 1;
    let cfg = VcConfig {
        cpuid_page: Some(&table),
        hypercalls: &NoHypercalls,
    };
    let mut m = Machine::default();
    m.mem.put(CODE_VA, &[0x0f, 0xa2]);
    m.regs.gpr[Gpr::Rax as usize] = 0x8000_001f;
    assert_eq!(
        m.vc_with(ExitCode::Cpuid as u64, &cfg),
        VcOutcome::Advance(2)
    );
    assert_eq!(&m.regs.gpr[..4], &[0x1_001f, 0, 0, 51]);
    m.regs.gpr[Gpr::Rax as usize] = 0;
    assert_eq!(
        m.vc_with(ExitCode::Cpuid as u64, &cfg),
        VcOutcome::Advance(2)
    );
    assert_eq!(&m.regs.gpr[..4], &[0, 0, 0, 0], "absent leaf reads as zero");
    assert_eq!(m.vcpu.hv.exits, 0, "the hypervisor is never asked");
}

#[test]
fn msr_tsc_pmc() {
    let mut m = Machine::default();
    m.regs.gpr[Gpr::Rcx as usize] = 0x1b;
    assert_eq!(
        m.vc(ExitCode::Msr as u64, &[0x0f, 0x32]),
        VcOutcome::Advance(2)
    );
    assert_eq!((m.regs.gpr[0], m.regs.gpr[2]), (0xfee0_0900, 0));
    m.regs.gpr[Gpr::Rcx as usize] = 0xc000_0103;
    m.regs.gpr[Gpr::Rax as usize] = 0xffff_ffff_0000_0005;
    m.regs.gpr[Gpr::Rdx as usize] = 0x1;
    assert_eq!(
        m.vc(ExitCode::Msr as u64, &[0x0f, 0x30]),
        VcOutcome::Advance(2)
    );
    assert_eq!(m.vcpu.hv.msrs[&0xc000_0103], 0x1_0000_0005);
    m.regs.gpr[Gpr::Rcx as usize] = 0x1234;
    assert_eq!(
        m.vc(ExitCode::Msr as u64, &[0x0f, 0x32]),
        VcOutcome::Exception(Exception::Gp(0))
    );
    assert_eq!(
        m.vc(ExitCode::Rdtsc as u64, &[0x0f, 0x31]),
        VcOutcome::Advance(2)
    );
    assert_eq!((m.regs.gpr[0], m.regs.gpr[2]), (1_001_000, 0));
    assert_eq!(
        m.vc(ExitCode::Rdtscp as u64, &[0x0f, 0x01, 0xf9]),
        VcOutcome::Advance(3)
    );
    assert_eq!(m.regs.gpr[1], 3);
    m.regs.gpr[Gpr::Rcx as usize] = 0;
    assert_eq!(
        m.vc(ExitCode::Rdpmc as u64, &[0x0f, 0x33]),
        VcOutcome::Advance(2)
    );
    assert_eq!(m.regs.gpr[0], 42);
    // RDTSC bytes under the RDTSCP exit code.
    assert_eq!(
        m.vc(ExitCode::Rdtscp as u64, &[0x0f, 0x31]),
        terminate(GuestReason::ExitCodeMismatch)
    );
}

#[test]
fn dr7_is_cached() {
    let mut m = Machine::default();
    // mov rax, dr7
    assert_eq!(
        m.vc(ExitCode::ReadDr7 as u64, &[0x0f, 0x21, 0xf8]),
        VcOutcome::Advance(3)
    );
    assert_eq!(m.regs.gpr[0], 0x400);
    // mov dr7, rcx
    m.regs.gpr[Gpr::Rcx as usize] = 0x455;
    assert_eq!(
        m.vc(ExitCode::WriteDr7 as u64, &[0x0f, 0x23, 0xf9]),
        VcOutcome::Advance(3)
    );
    assert_eq!(m.vcpu.hv.dr7, 0x455);
    assert_eq!(m.cpu.dr7(), 0x455);
    let exits = m.vcpu.hv.exits;
    assert_eq!(
        m.vc(ExitCode::ReadDr7 as u64, &[0x0f, 0x21, 0xf8]),
        VcOutcome::Advance(3)
    );
    assert_eq!(m.regs.gpr[0], 0x455);
    assert_eq!(m.vcpu.hv.exits, exits, "reads never exit");
    m.regs.gpr[Gpr::Rcx as usize] = 1 << 32;
    assert_eq!(
        m.vc(ExitCode::WriteDr7 as u64, &[0x0f, 0x23, 0xf9]),
        VcOutcome::Exception(Exception::Gp(0))
    );
    // mov dr6, rax under the DR7 write exit code.
    assert_eq!(
        m.vc(ExitCode::WriteDr7 as u64, &[0x0f, 0x23, 0xf0]),
        terminate(GuestReason::ExitCodeMismatch)
    );
}

#[test]
fn cache_and_wait_instructions() {
    let mut m = Machine::default();
    assert_eq!(
        m.vc(ExitCode::Wbinvd as u64, &[0x0f, 0x09]),
        VcOutcome::Advance(2)
    );
    assert_eq!(m.vcpu.hv.wbinvd, 1);
    assert_eq!(
        m.vc(ExitCode::Invd as u64, &[0x0f, 0x08]),
        terminate(GuestReason::InvdRefused)
    );
    m.regs.gpr[0] = 0xffff_8880_0000_1000;
    m.regs.gpr[1] = 0;
    m.regs.gpr[2] = 0;
    for code in [[0x0f, 0x01, 0xc8], [0x0f, 0x01, 0xfa]] {
        assert_eq!(m.vc(ExitCode::Monitor as u64, &code), VcOutcome::Advance(3));
    }
    for code in [[0x0f, 0x01, 0xc9], [0x0f, 0x01, 0xfb]] {
        assert_eq!(m.vc(ExitCode::Mwait as u64, &code), VcOutcome::Advance(3));
    }
    assert_eq!(m.vcpu.hv.monitors.len(), 2);
    assert_eq!(m.vcpu.hv.mwaits.len(), 2);
    assert_eq!(
        m.vc(ExitCode::Mwait as u64, &[0x0f, 0x01, 0xc8]),
        terminate(GuestReason::ExitCodeMismatch)
    );
}

struct AddHypercall;

impl HypercallAbi for AddHypercall {
    fn registers(&self, rax: u64) -> Option<HypercallRegs> {
        (rax == 1).then_some(HypercallRegs {
            inputs: &[Gpr::Rbx, Gpr::Rcx],
            outputs: &[Gpr::Rdx],
        })
    }
}

#[test]
fn vmmcall_hook() {
    let mut m = Machine::default();
    m.mem.put(CODE_VA, &[0x0f, 0x01, 0xd9]);
    m.regs.gpr[Gpr::Rax as usize] = 1;
    m.regs.gpr[Gpr::Rbx as usize] = 40;
    m.regs.gpr[Gpr::Rcx as usize] = 2;
    let cfg = VcConfig {
        cpuid_page: None,
        hypercalls: &AddHypercall,
    };
    assert_eq!(
        m.vc_with(ExitCode::Vmmcall as u64, &cfg),
        VcOutcome::Advance(3)
    );
    assert_eq!((m.regs.gpr[0], m.regs.gpr[2]), (42, 0x99));
    // An unknown hypercall raises #UD without exiting.
    m.regs.gpr[Gpr::Rax as usize] = 5;
    assert_eq!(
        m.vc_with(ExitCode::Vmmcall as u64, &cfg),
        VcOutcome::Exception(Exception::Ud)
    );
    assert_eq!(m.vcpu.hv.exits, 1);
    // Outputs without valid bits are refused and no register changes.
    m.regs.gpr[Gpr::Rax as usize] = 1;
    m.vcpu.hv.ghcb_lie = Some(Box::new(|_, g| g.invalidate(GhcbField::Rdx)));
    let before = m.regs;
    assert_eq!(
        m.vc_with(ExitCode::Vmmcall as u64, &cfg),
        terminate(GuestReason::MissingValidBit)
    );
    assert_eq!(m.regs, before);
}

#[test]
fn exception_intercepts_are_forwarded() {
    let mut m = Machine::default();
    assert_eq!(
        m.vc(ExitCode::ExceptionAc as u64, &[]),
        VcOutcome::Exception(Exception::Ac)
    );
    assert_eq!(
        m.vc(ExitCode::ExceptionDb as u64, &[]),
        VcOutcome::Exception(Exception::Db)
    );
    assert_eq!(m.vcpu.hv.exits, 0);
}

#[test]
fn cpl3_and_unknown_exits_are_refused() {
    let mut m = Machine::default();
    m.regs.cpl = 3;
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0x0f, 0xa2]),
        terminate(GuestReason::UserModeVc)
    );
    assert_eq!(m.vcpu.hv.exits, 0);
    let mut m = Machine::default();
    for code in [
        0x73,
        ExitCode::MmioRead as u64,
        ExitCode::TermRequest as u64,
        0x1_0000_0072,
    ] {
        assert_eq!(
            m.vc(code, &[0x0f, 0xa2]),
            terminate(GuestReason::UnsupportedExit)
        );
    }
}

#[test]
fn exit_code_must_match_the_instruction() {
    // WeSee: #VC(CPUID) injected while RIP points at something else.
    let pairs: [(ExitCode, &[u8]); 8] = [
        (ExitCode::Cpuid, &[0x0f, 0x31]),
        (ExitCode::Rdtsc, &[0x0f, 0xa2]),
        (ExitCode::Msr, &[0x0f, 0x31]),
        (ExitCode::Rdpmc, &[0x0f, 0x32]),
        (ExitCode::Ioio, &[0x8b, 0x03]),
        (ExitCode::Wbinvd, &[0x0f, 0x08]),
        (ExitCode::Vmmcall, &[0x0f, 0x01, 0xc1]),
        (ExitCode::ReadDr7, &[0x0f, 0x20, 0xd8]),
    ];
    for (exit, code) in pairs {
        let mut m = Machine::default();
        assert_eq!(
            m.vc(exit as u64, code),
            terminate(GuestReason::ExitCodeMismatch),
            "{exit:?} {code:02x?}"
        );
        assert_eq!(m.vcpu.hv.exits, 0, "{exit:?}: nothing was sent");
    }
}

#[test]
fn fetch_and_decode_failures() {
    // RIP on a non-present page.
    let mut m = Machine::default();
    m.mem.set_attr(CODE_VA, Attr::NOT_PRESENT);
    assert_eq!(
        m.vc_again(ExitCode::Cpuid as u64),
        VcOutcome::Exception(Exception::Pf {
            address: CODE_VA,
            error_code: 1 << 4
        })
    );
    // Instruction running into a non-present page.
    let mut m = Machine::default();
    let rip = CODE_VA + 0xfff;
    m.regs.rip = rip;
    m.mem.set_attr(CODE_VA + 0x1000, Attr::NOT_PRESENT);
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0x0f]),
        VcOutcome::Exception(Exception::Pf {
            address: CODE_VA + 0x1000,
            error_code: 1 << 4
        })
    );
    // Undecodable bytes (LOCK NOP).
    let mut m = Machine::default();
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0xf0, 0x90]),
        terminate(GuestReason::DecodeFailed)
    );
}

#[test]
fn lying_replies_inside_vc() {
    // #GP from the hypervisor is forwarded.
    let mut m = Machine::default();
    m.vcpu.hv.ghcb_lie = Some(Box::new(|_, g| host::reply_exception(g, Exception::Gp(0))));
    assert_eq!(
        m.vc(ExitCode::Rdtsc as u64, &[0x0f, 0x31]),
        VcOutcome::Exception(Exception::Gp(0))
    );
    // #PF from the hypervisor terminates.
    let mut m = Machine::default();
    m.vcpu.hv.ghcb_lie = Some(Box::new(|_, g| {
        host::reply_exception(
            g,
            Exception::Pf {
                address: 0,
                error_code: 0,
            },
        )
    }));
    assert_eq!(
        m.vc(ExitCode::Rdtsc as u64, &[0x0f, 0x31]),
        terminate(GuestReason::BadHypervisorException)
    );
    // An error reply terminates.
    let mut m = Machine::default();
    m.vcpu.hv.ghcb_lie = Some(Box::new(|_, g| {
        host::reply_error(g, sev::host::HostError::InvalidInput)
    }));
    assert_eq!(
        m.vc(ExitCode::Wbinvd as u64, &[0x0f, 0x09]),
        terminate(GuestReason::HypervisorError)
    );
    // A missing output register terminates and leaves registers alone.
    let mut m = Machine::default();
    m.vcpu.hv.ghcb_lie = Some(Box::new(|_, g| g.invalidate(GhcbField::Rdx)));
    let before = m.regs;
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0x0f, 0xa2]),
        terminate(GuestReason::MissingValidBit)
    );
    assert_eq!(m.regs, before);
    // MMIO read reply whose SW_EXITINFO1 is garbage.
    let mut m = mmio_machine();
    m.vcpu.hv.ghcb_lie = Some(Box::new(|_, g| g.set(GhcbField::SwExitInfo1, 7)));
    assert_eq!(
        m.vc(NPF, &[0x8b, 0x43, 0x10]),
        terminate(GuestReason::MalformedReply)
    );
}

fn early(m: &mut Machine, exit: u64, code: &[u8], page: Option<&SnpCpuidTable>) -> VcOutcome {
    m.mem.put(m.regs.rip, code);
    sev::vc::handle_vc_early(exit, &mut m.regs, &mut m.mem, &mut m.vcpu.hv, page)
}

#[test]
fn early_cpuid_through_the_msr_protocol() {
    let cpuid = ExitCode::Cpuid as u64;
    let mut m = Machine::default();
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], None),
        VcOutcome::Advance(2)
    );
    assert_eq!(
        &m.regs.gpr[..4],
        &[0x10, 0x444d_4163, 0x6974_6e65, 0x6874_7541]
    );
    assert_eq!(m.vcpu.hv.exits, 4);
    // A range that stops before 0x8000001F, or a leaf without SEV: refused.
    m.vcpu
        .hv
        .cpuid
        .insert((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]);
    m.regs.gpr[0] = 0x8000_0000;
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], None),
        terminate(GuestReason::CpuidLies)
    );
    m.vcpu.hv.cpuid.insert((0x8000_001f, 0), [0x1, 51, 0, 0]);
    m.regs.gpr[0] = 0x8000_001f;
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], None),
        terminate(GuestReason::CpuidLies)
    );
    // An indexed leaf with a subleaf the protocol cannot carry.
    m.regs.gpr[0] = 7;
    m.regs.gpr[1] = 1;
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], None),
        terminate(GuestReason::UnsupportedExit)
    );
    // Other exits, other bytes, CPL 3.
    assert_eq!(
        early(&mut m, ExitCode::Ioio as u64, &[0xee], None),
        terminate(GuestReason::UnsupportedExit)
    );
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0x31], None),
        terminate(GuestReason::ExitCodeMismatch)
    );
    m.regs.cpl = 3;
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], None),
        terminate(GuestReason::UserModeVc)
    );
}

#[test]
fn early_cpuid_refuses_msr_protocol_lies_and_prefers_the_page() {
    let cpuid = ExitCode::Cpuid as u64;
    let mut m = Machine::default();
    m.vcpu.hv.msr_lie = Some(Box::new(|_, v| v ^ 1 << 30));
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], None),
        terminate(GuestReason::MsrProtocol)
    );
    let mut table = SnpCpuidTable::default();
    table.functions[0] = SnpCpuidFunction {
        eax_in: 0x8000_001f,
        eax: 0x1f,
        ebx: 51,
        ..Default::default()
    };
    table.count = 1;
    let mut m = Machine::default();
    m.regs.gpr[0] = 0x8000_001f;
    assert_eq!(
        early(&mut m, cpuid, &[0x0f, 0xa2], Some(&table)),
        VcOutcome::Advance(2)
    );
    assert_eq!(m.regs.gpr[0], 0x1f);
    assert_eq!(m.vcpu.hv.exits, 0);
}

#[test]
fn faults_are_raised_before_the_device_is_touched() {
    // INS into a read-only page: #PF, and the port was never read.
    let mut m = mmio_machine();
    let buf = 0xffff_8880_0005_0ffe;
    m.mem.set_attr(
        buf + 2,
        Attr {
            writable: false,
            ..Attr::PRIVATE
        },
    );
    m.regs.gpr[Gpr::Rdi as usize] = buf;
    m.regs.gpr[Gpr::Rdx as usize] = 0x1f0;
    m.regs.gpr[Gpr::Rcx as usize] = 1;
    m.vcpu.hv.port_fifo.insert(0x1f0, [0xaabb_ccdd].into());
    // insd at 2 bytes before the page end: the element straddles pages.
    assert_eq!(
        m.vc(IOIO, &[0x6d]),
        VcOutcome::Exception(Exception::Pf {
            address: buf + 2,
            error_code: 3
        })
    );
    assert_eq!(m.vcpu.hv.port_fifo[&0x1f0].len(), 1);
    assert_eq!(m.vcpu.hv.exits, 0);
    // MOVS from MMIO into a read-only private page: #PF before the read.
    let mut m = mmio_machine();
    let dst = 0xffff_8880_0006_0000;
    m.mem.set_attr(
        dst,
        Attr {
            writable: false,
            ..Attr::PRIVATE
        },
    );
    m.regs.gpr[Gpr::Rsi as usize] = MMIO_VA + 0x10;
    m.regs.gpr[Gpr::Rdi as usize] = dst;
    assert_eq!(
        m.vc(NPF, &[0xa4]),
        VcOutcome::Exception(Exception::Pf {
            address: dst,
            error_code: 3
        })
    );
    assert!(m.vcpu.hv.mmio_log.is_empty());
}

#[test]
fn cpuid_answers_that_hide_sev_terminate() {
    let mut m = Machine::default();
    m.vcpu.hv.cpuid.insert((0x8000_001f, 0), [0x8, 51, 0, 0]);
    m.regs.gpr[0] = 0x8000_001f;
    assert_eq!(
        m.vc(ExitCode::Cpuid as u64, &[0x0f, 0xa2]),
        terminate(GuestReason::CpuidLies)
    );
    m.vcpu
        .hv
        .cpuid
        .insert((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]);
    m.regs.gpr[0] = 0x8000_0000;
    assert_eq!(
        m.vc_again(ExitCode::Cpuid as u64),
        terminate(GuestReason::CpuidLies)
    );
    // Nothing was cached: asking again asks again.
    let exits = m.vcpu.hv.exits;
    m.regs.gpr[0] = 0x8000_0000;
    m.vc_again(ExitCode::Cpuid as u64);
    assert_eq!(m.vcpu.hv.exits, exits + 1);
}
