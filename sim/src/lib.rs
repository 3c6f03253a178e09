//! The simulator's host-testable logic: everything that does not touch SVM or the firmware.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod counters;
pub mod cpuid;
pub mod cr_write;
pub mod igvm;
pub mod nmi_storm;
pub mod options;
pub mod x2apic;
