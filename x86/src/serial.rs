//! The COM1 console, shared by stage, kernel, simulator and test guest.
//!
//! Output goes through a spin lock so that lines from several CPUs do not interleave within a
//! line: each [`write_fmt`] is formatted under the lock into a line buffer of [`LINE_CAPACITY`]
//! bytes (no allocation), which is sent whenever it is full and at the end. How it is sent
//! depends on what a port access costs:
//!
//! - by default, byte by byte to the transmitter, polling the line-status register a bounded
//!   number of times per chunk: a device (or hypervisor) that never reports "ready" loses output
//!   instead of hanging the CPU;
//! - after [`use_string_output`], with one `rep outsb` to the data port and no polling. That is
//!   for a console behind a hypervisor that intercepts every port access, where each IN or OUT
//!   is a world switch (under SEV-ES a #VC and a VMGEXIT each), and whose emulated transmitter
//!   takes each byte as it comes (QEMU's 16550 hands it to its backend at once). The SEV-ES
//!   #VC core moves a string OUT through the GHCB's shared buffer, as much as fits in that
//!   buffer and in one page of the source per VMGEXIT: the line buffer fits both, so a line
//!   costs one VMGEXIT instead of two per byte.
//!
//! Fatal paths that may have interrupted a CPU while it held the lock call [`force_unlock`]. In
//! an NMI handler, which may have interrupted this CPU in the middle of a print, the text is
//! dropped when the console is busy rather than waited for ([`crate::interrupts::in_nmi`]).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// I/O base of COM1.
pub const COM1: u16 = 0x3f8;
/// Polls of the line-status register before a chunk is dropped.
const MAX_POLLS: u32 = 100_000;
/// Bytes of output sent at once: a log line shorter than this is one `rep outsb`. At most the
/// GHCB's shared buffer (2032 bytes), which `sev::guest` checks, and a power of two no larger
/// than a page: the buffer is aligned to its size, so it never crosses a page.
pub const LINE_CAPACITY: usize = 1024;

/// The line buffer, aligned to its size ([`LINE_CAPACITY`]).
#[repr(C, align(1024))]
struct LineBytes([u8; LINE_CAPACITY]);

const _: () = assert!(
    LINE_CAPACITY.is_power_of_two()
        && LINE_CAPACITY <= 4096
        && align_of::<LineBytes>() == LINE_CAPACITY
);

/// Output formatted into a bounded buffer, `\n` translated into `\r\n`, handed to a sink
/// whenever the buffer is full and at [`flush`](Self::flush).
struct LineBuffer {
    bytes: LineBytes,
    len: usize,
}

impl LineBuffer {
    const fn new() -> Self {
        Self {
            bytes: LineBytes([0; LINE_CAPACITY]),
            len: 0,
        }
    }

    /// Appends `s`, sending full buffers to `sink`.
    fn write(&mut self, s: &str, sink: &mut impl FnMut(&[u8])) {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.push(b"\r\n", sink);
            }
            self.push(part.as_bytes(), sink);
        }
    }

    fn push(&mut self, mut bytes: &[u8], sink: &mut impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            if self.len == LINE_CAPACITY {
                self.flush(sink);
            }
            let n = (LINE_CAPACITY - self.len).min(bytes.len());
            self.bytes.0[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
    }

    /// Sends what the buffer holds, if anything, and empties it.
    fn flush(&mut self, sink: &mut impl FnMut(&[u8])) {
        if self.len > 0 {
            sink(&self.bytes.0[..self.len]);
            self.len = 0;
        }
    }
}

/// The port, once [`init`] set it up, and the line buffer.
struct Console {
    port: Option<Uart16550<PioBackend>>,
    line: LineBuffer,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    port: None,
    line: LineBuffer::new(),
});

/// Whether [`use_string_output`] was called.
static STRING_OUTPUT: AtomicBool = AtomicBool::new(false);

/// Initialises COM1 (115200 8N1, FIFOs on). Safe to call more than once.
pub fn init() {
    // SAFETY: COM1 is the standard PC serial port; nothing else in this program drives it.
    let Ok(mut port) = (unsafe { Uart16550::new_port(COM1) }) else {
        return;
    };
    if port.init(Config::default()).is_ok() {
        CONSOLE.lock().port = Some(port);
    }
}

/// Takes over COM1 as an earlier program on this CPU (the stage) left it after its [`init`],
/// without touching the device. Under SEV-ES every register access of a set-up is a #VC and a
/// VMGEXIT (22 of them for [`init`]), and the stage's set-up still holds.
pub fn adopt() {
    // SAFETY: as in `init`; constructing the port accesses no register.
    if let Ok(port) = unsafe { Uart16550::new_port(COM1) } {
        CONSOLE.lock().port = Some(port);
    }
}

/// From now on, sends each buffer of output with one `rep outsb` to the data port, without
/// polling the line status (see the module docs): for a console whose port accesses are each
/// an exit to a hypervisor. Every CPU's output changes; calling it again changes nothing.
pub fn use_string_output() {
    STRING_OUTPUT.store(true, Ordering::Release);
}

/// Writes formatted text to COM1, translating `\n` into `\r\n`.
pub fn write_fmt(args: fmt::Arguments) {
    let mut guard = if crate::interrupts::in_nmi() {
        match CONSOLE.try_lock() {
            Some(guard) => guard,
            None => return,
        }
    } else {
        CONSOLE.lock()
    };
    let Console { port, line } = &mut *guard;
    let Some(port) = port.as_mut() else {
        return;
    };
    let strings = STRING_OUTPUT.load(Ordering::Acquire);
    let mut sink = |bytes: &[u8]| {
        if strings {
            rep_outsb(COM1, bytes);
        } else {
            send_polled(port, bytes);
        }
    };
    // Whatever a holder interrupted for good left in the buffer (`force_unlock`) is dropped.
    line.len = 0;
    let _ = Sink {
        line: &mut *line,
        sink: &mut sink,
    }
    .write_fmt(args);
    line.flush(&mut sink);
}

/// Releases the console lock unconditionally. Only for fatal paths (panic, unexpected
/// exception) that may have interrupted a CPU in the middle of printing and will never return.
pub fn force_unlock() {
    // SAFETY: only called on paths that never return to the interrupted lock holder.
    unsafe { CONSOLE.force_unlock() };
}

/// The line buffer as a `fmt::Write` target.
struct Sink<'a, F: FnMut(&[u8])> {
    line: &'a mut LineBuffer,
    sink: &'a mut F,
}

impl<F: FnMut(&[u8])> Write for Sink<'_, F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.line.write(s, self.sink);
        Ok(())
    }
}

/// Sends `bytes` through the transmitter, polling its status between chunks; gives up after
/// [`MAX_POLLS`] polls without progress.
fn send_polled(port: &mut Uart16550<PioBackend>, mut bytes: &[u8]) {
    let mut polls = 0;
    while !bytes.is_empty() && polls < MAX_POLLS {
        let n = port.send_bytes(bytes);
        bytes = &bytes[n..];
        polls = if n == 0 { polls + 1 } else { 0 };
        core::hint::spin_loop();
    }
}

/// `rep outsb` of `bytes` to `port`.
fn rep_outsb(port: u16, bytes: &[u8]) {
    // SAFETY: reads `bytes` only; the port is COM1's data register, which this module owns.
    unsafe {
        core::arch::asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _, options(nostack, preserves_flags, readonly))
    };
}

/// `print!` to COM1.
#[macro_export]
macro_rules! serial_print {
    ($($arg:tt)*) => { $crate::serial::write_fmt(format_args!($($arg)*)) };
}

/// `println!` to COM1.
#[macro_export]
macro_rules! serial_println {
    () => { $crate::serial_print!("\n") };
    ($($arg:tt)*) => { $crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sink` received, one entry per call.
    fn sent(writes: &[&str]) -> Vec<Vec<u8>> {
        let mut line = LineBuffer::new();
        let mut out = Vec::new();
        let mut sink = |b: &[u8]| out.push(b.to_vec());
        for w in writes {
            line.write(w, &mut sink);
        }
        line.flush(&mut sink);
        out
    }

    #[test]
    fn a_line_is_sent_once_with_crlf() {
        assert_eq!(
            sent(&["[ 1] INFO  ", "ready", "\n"]),
            [b"[ 1] INFO  ready\r\n"]
        );
        assert_eq!(sent(&["a\nb\n"]), [b"a\r\nb\r\n"]);
        assert_eq!(sent(&[""]), Vec::<Vec<u8>>::new(), "nothing to send");
    }

    #[test]
    fn a_longer_text_goes_in_full_buffers() {
        let text = "x".repeat(2 * LINE_CAPACITY + 10);
        let out = sent(&[&text, "\n"]);
        assert_eq!(out.len(), 3);
        assert!(out[..2].iter().all(|b| b.len() == LINE_CAPACITY));
        assert_eq!(out.concat(), format!("{text}\r\n").into_bytes());
    }

    #[test]
    fn the_buffer_never_crosses_a_page() {
        let line = LineBuffer::new();
        let at = line.bytes.0.as_ptr() as usize;
        assert_eq!(at % LINE_CAPACITY, 0);
        assert_eq!(at / 4096, (at + LINE_CAPACITY - 1) / 4096);
    }
}
