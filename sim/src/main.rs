//! The SEV-ES platform simulator (EFI application).
#![no_std]
#![no_main]
