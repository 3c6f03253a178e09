//! Port I/O. Under SEV-ES every one of these raises #VC; the handler emulates them through the GHCB.

use core::arch::asm;

/// Reads a byte from `port`.
#[inline]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input has no memory effects visible to Rust.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a byte to `port`.
#[inline]
pub fn outb(port: u16, v: u8) {
    // SAFETY: port output has no memory effects visible to Rust; which ports are safe to touch is
    // the caller's business (this crate only addresses COM1 and the QEMU exit port).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 16-bit word from `port`.
#[inline]
pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a 16-bit word to `port`.
#[inline]
pub fn outw(port: u16, v: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 32-bit word from `port`.
#[inline]
pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a 32-bit word to `port`.
#[inline]
pub fn outl(port: u16, v: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}
