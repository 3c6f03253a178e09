//! The simulator's SEV-ES test guest (to be written).
#![no_std]
#![no_main]
