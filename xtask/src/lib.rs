//! The build, run and test machinery behind `cargo xtask`, also used by the integration tests
//! in `tests/`.

pub mod build;
pub mod elf2efi;
pub mod qemu;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Errors of xtask: a message for the user.
pub type Result<T> = std::result::Result<T, String>;
