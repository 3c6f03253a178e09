//! x86-64 building blocks shared by the freestanding binaries: the decompressor stage (`boot`),
//! the kernel, the simulator (`sim`) and its test guest.
//!
//! Everything here is written once and used by all of them; the parts that are
//! pure logic (descriptor encodings, page-table arithmetic) are unit-tested on the host.
#![cfg_attr(not(test), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod apic;
pub mod cr;
pub mod gdt;
pub mod idt;
pub mod interrupts;
pub mod io;
pub mod msr;
pub mod paging;
pub mod pc;
pub mod qemu;
// Only in the freestanding (panic=abort) builds: a workspace-wide host `cargo test` unifies
// features, and the test binaries (which unwind) bring their own runtime symbols.
#[cfg(all(feature = "rt", not(test), panic = "abort"))]
pub mod rt;
pub mod serial;
pub mod smp;
pub mod testing;
pub mod tsc;
