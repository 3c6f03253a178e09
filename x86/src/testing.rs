//! The in-guest test runner shared by the kernel's suite and the simulator's test guest: one
//! line per case (`TEST <name> PASS`, or `TEST <name> FAIL <why>`), then `<n> passed, <m>
//! failed`, the lines `cargo xtask test` and the integration tests read, and the run's exit
//! status.

use crate::qemu::ExitStatus;
use crate::serial_println;
use core::fmt::Display;

/// Runs the cases `selection` names: `all` runs every case in `all`, a name runs that case from
/// `all` or `by_name_only` (cases that end the run, or take long). `call` runs one case; `who`
/// names the binary in the message for a name that matches nothing (a failure).
pub fn run<C, E: Display>(
    who: &str,
    selection: &str,
    all: &[(&str, C)],
    by_name_only: &[(&str, C)],
    mut call: impl FnMut(&C) -> Result<(), E>,
) -> ExitStatus {
    let (mut passed, mut failed) = (0, 0);
    let mut matched = false;
    let in_all = all
        .iter()
        .filter(|(n, _)| selection == "all" || *n == selection);
    let by_name = by_name_only.iter().filter(|(n, _)| *n == selection);
    for (name, case) in in_all.chain(by_name) {
        matched = true;
        match call(case) {
            Ok(()) => {
                passed += 1;
                serial_println!("TEST {name} PASS");
            }
            Err(why) => {
                failed += 1;
                serial_println!("TEST {name} FAIL {why}");
            }
        }
    }
    if !matched {
        serial_println!("{who}: no test named `{selection}`");
        failed += 1;
    }
    serial_println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}
