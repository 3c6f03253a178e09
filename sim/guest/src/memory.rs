//! Guest memory as the #VC core needs it: the launch page tables (`handoff::launch`), which
//! this guest keeps, walked by `sev::guest::LaunchMemory`.

use handoff::launch::SIM_C_BIT;
use sev::guest::LaunchTables;

/// The launch page tables (the guest never switches tables).
pub static TABLES: LaunchTables = LaunchTables::new();

/// Records the launch page tables' root. Call once, before the first #VC.
pub fn init() {
    TABLES.init(SIM_C_BIT);
}
