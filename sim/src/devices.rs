//! The devices a guest may reach: port I/O to COM1 and QEMU's debug-exit port, MMIO to the HPET
//! and the IOAPIC, all forwarded to QEMU's real devices. Everything else is refused: the caller
//! answers the guest with #GP and says so on the console.

use core::ptr::{read_volatile, write_volatile};
use x86::pc::{hpet, ioapic};

/// COM1's eight registers.
const COM1: core::ops::RangeInclusive<u16> = 0x3f8..=0x3ff;
/// QEMU's `isa-debug-exit` (4 bytes wide).
pub const DEBUG_EXIT: u16 = x86::qemu::DEBUG_EXIT_PORT;

/// MMIO windows forwarded to the host's devices: (base, size).
const MMIO: [(u64, u64, &str); 2] = [
    (hpet::BASE, hpet::SIZE, "HPET"),
    (ioapic::INDEX, ioapic::SIZE, "IOAPIC"),
];

/// Whether a port access of `size` bytes at `port` is forwarded.
pub fn port_allowed(port: u16, size: u8) -> bool {
    let last = port.checked_add(u16::from(size) - 1);
    match last {
        Some(last) => {
            (COM1.contains(&port) && COM1.contains(&last)) || (port == DEBUG_EXIT && size == 4)
        }
        None => false,
    }
}

/// Reads `size` (1, 2 or 4) bytes from an allowed port.
pub fn port_in(port: u16, size: u8) -> u32 {
    match size {
        1 => u32::from(x86::io::inb(port)),
        2 => u32::from(x86::io::inw(port)),
        _ => x86::io::inl(port),
    }
}

/// Writes `size` (1, 2 or 4) bytes to an allowed port.
pub fn port_out(port: u16, size: u8, value: u32) {
    match size {
        1 => x86::io::outb(port, value as u8),
        2 => x86::io::outw(port, value as u16),
        _ => x86::io::outl(port, value),
    }
}

/// The name of the forwarded device an MMIO access of `len` bytes at `gpa` reaches, if it is
/// a naturally aligned 1/2/4/8-byte access inside one window.
pub fn mmio_device(gpa: u64, len: u64) -> Option<&'static str> {
    if !matches!(len, 1 | 2 | 4 | 8) || !gpa.is_multiple_of(len) {
        return None;
    }
    MMIO.iter()
        .find(|(base, size, _)| gpa >= *base && gpa + len <= base + size)
        .map(|(_, _, name)| *name)
}

/// Reads an MMIO register the guest may reach (checked with [`mmio_device`]).
pub fn mmio_read(gpa: u64, len: u64) -> u64 {
    // SAFETY: `gpa` is inside a device window that the firmware's identity map covers, the
    // access is naturally aligned and of a size the device accepts.
    unsafe {
        match len {
            1 => u64::from(read_volatile(gpa as *const u8)),
            2 => u64::from(read_volatile(gpa as *const u16)),
            4 => u64::from(read_volatile(gpa as *const u32)),
            _ => read_volatile(gpa as *const u64),
        }
    }
}

/// Writes an MMIO register the guest may reach (checked with [`mmio_device`]).
pub fn mmio_write(gpa: u64, len: u64, value: u64) {
    // SAFETY: as in `mmio_read`.
    unsafe {
        match len {
            1 => write_volatile(gpa as *mut u8, value as u8),
            2 => write_volatile(gpa as *mut u16, value as u16),
            4 => write_volatile(gpa as *mut u32, value as u32),
            _ => write_volatile(gpa as *mut u64, value),
        }
    }
}
