//! `log` on the serial console: each line carries the CPU's TSC as seconds since reset (or raw
//! ticks when the stage could not measure the TSC frequency) and the level.

use log::{LevelFilter, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;
static TSC_HZ: spin::Once<u64> = spin::Once::new();

impl log::Log for SerialLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let t = x86::tsc::rdtsc();
        match TSC_HZ.get().copied().unwrap_or(0) {
            0 => x86::serial_println!("[{t:>14}] {:<5} {}", r.level(), r.args()),
            hz => x86::serial_println!(
                "[{:>5}.{:06}] {:<5} {}",
                t / hz,
                (t % hz) * 1_000_000 / hz,
                r.level(),
                r.args()
            ),
        }
    }

    fn flush(&self) {}
}

/// Installs the logger with `level`; `tsc_hz` converts timestamps to seconds (0: raw ticks).
pub fn init(level: LevelFilter, tsc_hz: u64) {
    TSC_HZ.call_once(|| tsc_hz);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
