//! The build, run and test machinery behind `cargo xtask`, also used by the integration tests
//! in `tests/`.

pub mod build;
pub mod elf2efi;
pub mod igvm;
pub mod qemu;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A `cargo` command (the one running xtask) in the workspace root.
pub fn cargo() -> std::process::Command {
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Errors of xtask: a message for the user.
pub type Result<T> = std::result::Result<T, String>;

/// Where build outputs, logs and bench results go: `CARGO_TARGET_DIR` or `<root>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}
