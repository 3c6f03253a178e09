//! Port I/O: every IN/OUT is a #VC with exit code 0x7B answered through the GHCB, string forms
//! through the GHCB's shared buffer, a long REP in several rounds.
//!
//! Only COM1 (0x3F8..0x3FF) and the debug-exit port are forwarded by the simulator, so the
//! round trips use COM1's scratch register (0x3FF), which nothing else uses and which reads
//! back what was written. Word and dword accesses reach it as the top byte of an access at
//! 0x3FE (the modem status register, read-only: a 16550 ignores writes to it) and at 0x3FC
//! (modem control, written back with its own value; line and modem status, ignored).

use sev::exit_code::ExitCode::Ioio;
use x86::io::{inb, inl, inw, outb, outl, outw};
use x86::serial::COM1;

use super::{Outcome, counting, one_vc};

/// COM1's scratch register.
const SCRATCH: u16 = COM1 + 7;
/// COM1's modem status register (read-only), below the scratch register.
const MODEM_STATUS: u16 = COM1 + 6;
/// COM1's modem control register, the first of the dword ending at the scratch register.
const MODEM_CONTROL: u16 = COM1 + 4;

pub fn ioio() -> Outcome {
    bytes()?;
    words_and_dwords()?;
    strings()
}

/// OUT/IN of a byte, two patterns.
fn bytes() -> Outcome {
    for v in [0x5a, 0xa5] {
        one_vc("OUT DX, AL", Ioio, || outb(SCRATCH, v))?;
        let back = one_vc("IN AL, DX", Ioio, || inb(SCRATCH))?;
        ensure!(back == v, "scratch register: wrote {v:#x}, read {back:#x}");
    }
    Ok(())
}

/// OUT/IN of a word at 0x3FE and a dword at 0x3FC, each ending in the scratch register.
fn words_and_dwords() -> Outcome {
    one_vc("OUT DX, AX", Ioio, || outw(MODEM_STATUS, 0x6900))?;
    let w = one_vc("IN AX, DX", Ioio, || inw(MODEM_STATUS))?;
    ensure!(
        w >> 8 == 0x69,
        "word at {MODEM_STATUS:#x}: scratch byte {:#x}, expected 0x69",
        w >> 8
    );
    let mcr = one_vc("IN AL, DX", Ioio, || inb(MODEM_CONTROL))?;
    let value = 0x3c00_0000 | u32::from(mcr);
    one_vc("OUT DX, EAX", Ioio, || outl(MODEM_CONTROL, value))?;
    let d = one_vc("IN EAX, DX", Ioio, || inl(MODEM_CONTROL))?;
    ensure!(
        d >> 24 == 0x3c && d as u8 == mcr,
        "dword at {MODEM_CONTROL:#x}: read {d:#x}, expected scratch 0x3c and modem control {mcr:#x}"
    );
    Ok(())
}

/// REP OUTS/INS of bytes and words; the long REP INSB crosses pages and needs several rounds.
fn strings() -> Outcome {
    let out = [0x11u8, 0x22, 0x33, 0x44];
    let ((), vcs) = counting(|| rep_outsb(SCRATCH, &out));
    vcs.expect("REP OUTSB", Ioio, 1..=1)?;
    let last = one_vc("IN AL, DX", Ioio, || inb(SCRATCH))?;
    ensure!(
        last == 0x44,
        "after REP OUTSB the scratch register holds {last:#x}, expected 0x44"
    );

    let mut long = [0u8; 3000];
    let ((), vcs) = counting(|| rep_insb(SCRATCH, &mut long));
    vcs.expect("REP INSB of 3000 bytes", Ioio, 2..=4)?;
    if let Some(i) = long.iter().position(|&b| b != 0x44) {
        return Err(alloc::format!(
            "REP INSB: byte {i} is {:#x}, expected 0x44",
            long[i]
        ));
    }

    let words = [0x1100u16, 0x7700];
    let ((), vcs) = counting(|| rep_outsw(MODEM_STATUS, &words));
    vcs.expect("REP OUTSW", Ioio, 1..=1)?;
    let mut back = [0u16; 4];
    let ((), vcs) = counting(|| rep_insw(MODEM_STATUS, &mut back));
    vcs.expect("REP INSW", Ioio, 1..=1)?;
    ensure!(
        back.iter().all(|w| w >> 8 == 0x77),
        "REP INSW after REP OUTSW: {back:#x?}, expected scratch byte 0x77 in each"
    );
    Ok(())
}

fn rep_outsb(port: u16, data: &[u8]) {
    // SAFETY: reads `data` only; the port is COM1's, which the caller knows to be harmless.
    unsafe {
        core::arch::asm!("rep outsb", in("dx") port, inout("rsi") data.as_ptr() => _,
            inout("rcx") data.len() => _, options(nostack, preserves_flags, readonly))
    };
}

fn rep_insb(port: u16, buf: &mut [u8]) {
    // SAFETY: writes `buf` only.
    unsafe {
        core::arch::asm!("rep insb", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    };
}

fn rep_outsw(port: u16, data: &[u16]) {
    // SAFETY: reads `data` only.
    unsafe {
        core::arch::asm!("rep outsw", in("dx") port, inout("rsi") data.as_ptr() => _,
            inout("rcx") data.len() => _, options(nostack, preserves_flags, readonly))
    };
}

fn rep_insw(port: u16, buf: &mut [u16]) {
    // SAFETY: writes `buf` only.
    unsafe {
        core::arch::asm!("rep insw", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
            inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    };
}
