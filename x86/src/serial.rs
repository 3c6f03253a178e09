//! The COM1 console, shared by stage and kernel.
//!
//! Output goes through a spin lock so that lines from several CPUs do not interleave within a
//! line. Transmission polls the line-status register a bounded number of times per chunk: a
//! device (or hypervisor) that never reports "ready" loses output instead of hanging the CPU.
//! Fatal paths that may have interrupted a CPU while it held the lock call [`force_unlock`].

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// I/O base of COM1.
pub const COM1: u16 = 0x3f8;
/// Polls of the line-status register before a chunk is dropped.
const MAX_POLLS: u32 = 100_000;

static PORT: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Initialises COM1 (115200 8N1, FIFOs on). Safe to call more than once.
pub fn init() {
    // SAFETY: COM1 is the standard PC serial port; nothing else in this program drives it.
    let Ok(mut port) = (unsafe { Uart16550::new_port(COM1) }) else {
        return;
    };
    if port.init(Config::default()).is_ok() {
        *PORT.lock() = Some(port);
    }
}

/// Writes formatted text to COM1, translating `\n` into `\r\n`. In an NMI handler, which may
/// have interrupted this CPU in the middle of a print, the text is dropped when the console is
/// busy rather than waited for ([`crate::interrupts::in_nmi`]).
pub fn write_fmt(args: fmt::Arguments) {
    let mut guard = if crate::interrupts::in_nmi() {
        match PORT.try_lock() {
            Some(guard) => guard,
            None => return,
        }
    } else {
        PORT.lock()
    };
    if let Some(port) = guard.as_mut() {
        let _ = Crlf(port).write_fmt(args);
    }
}

/// Releases the console lock unconditionally. Only for fatal paths (panic, unexpected
/// exception) that may have interrupted a CPU in the middle of printing and will never return.
pub fn force_unlock() {
    // SAFETY: only called on paths that never return to the interrupted lock holder.
    unsafe { PORT.force_unlock() };
}

struct Crlf<'a>(&'a mut Uart16550<PioBackend>);

impl Crlf<'_> {
    fn send(&mut self, mut bytes: &[u8]) {
        let mut polls = 0;
        while !bytes.is_empty() && polls < MAX_POLLS {
            let n = self.0.send_bytes(bytes);
            bytes = &bytes[n..];
            polls = if n == 0 { polls + 1 } else { 0 };
            core::hint::spin_loop();
        }
    }
}

impl Write for Crlf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.send(b"\r\n");
            }
            self.send(line.as_bytes());
        }
        Ok(())
    }
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
