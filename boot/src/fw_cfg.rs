//! QEMU's fw_cfg interface (I/O ports 0x510/0x511): where `cargo xtask run` puts the kernel
//! command line (`-fw_cfg name=opt/sev-guest/cmdline,string=...`) when the firmware's boot
//! entry carries no load options.

use x86::io::{inb, outw};

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const KEY_SIGNATURE: u16 = 0x0000;
const KEY_FILE_DIR: u16 = 0x0019;
/// The file holding the kernel command line.
pub const CMDLINE_FILE: &[u8] = b"opt/sev-guest/cmdline";

fn read(buf: &mut [u8]) {
    for b in buf {
        *b = inb(DATA);
    }
}

/// Reads fw_cfg file `name` into `out`, returning its length (truncated to `out`), or None when
/// there is no fw_cfg device or no such file.
pub fn read_file(name: &[u8], out: &mut [u8]) -> Option<usize> {
    outw(SELECTOR, KEY_SIGNATURE);
    let mut sig = [0u8; 4];
    read(&mut sig);
    if &sig != b"QEMU" {
        return None;
    }
    outw(SELECTOR, KEY_FILE_DIR);
    let mut count = [0u8; 4];
    read(&mut count);
    // Bound the walk: QEMU has a few dozen files; a larger count is not believed.
    for _ in 0..u32::from_be_bytes(count).min(4096) {
        let mut entry = [0u8; 64];
        read(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
        let select = u16::from_be_bytes([entry[4], entry[5]]);
        let fname = &entry[8..];
        let len = fname.iter().position(|&c| c == 0).unwrap_or(fname.len());
        if &fname[..len] == name {
            outw(SELECTOR, select);
            let n = size.min(out.len());
            read(&mut out[..n]);
            return Some(n);
        }
    }
    None
}
