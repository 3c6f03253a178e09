//! The contract between the decompressor stage (`boot`) and the kernel.
//!
//! - [`payload`]: how `cargo xtask build` packs the kernel ELF into the stage, and how the stage
//!   checks it (length, CRC-32) before trusting a byte of it.
//! - [`elf`]: the loader for the kernel's static-PIE ELF (segments + `R_X86_64_RELATIVE`).
//! - [`bootinfo`]: the versioned structure the kernel receives in RDI.
//! - [`launch`]: the IGVM launch contract: guest physical layout and entry state of a guest
//!   started from the IGVM files `cargo xtask` builds.
//! - [`sim_hypercall`]: the simulator's test hypercalls.
//!
//! All of it is plain logic, unit-tested on the host.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod bootinfo;
pub mod crc32;
pub mod elf;
pub mod launch;
pub mod payload;
pub mod sim_hypercall;
