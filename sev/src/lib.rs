//! The SEV-ES/SEV-SNP guest-hypervisor ABI as one `no_std` library, shared by
//! the decompressor stage, the kernel and the simulator:
//!
//! - the GHCB page ([`ghcb`]) and the MSR protocol used before it exists
//!   ([`msr_protocol`]),
//! - NAE events: exit codes ([`exit_code`]), IOIO information ([`ioio`]),
//!   guest-side calls with reply validation ([`nae`]), exceptions a
//!   hypervisor may return ([`exception`]), page state change ([`psc`]) and
//!   PVALIDATE ([`pvalidate`]),
//! - SEV/SNP structures: [`vmsa`], [`sev_status`], [`cpuid`] (leaf
//!   0x8000001F and the SNP CPUID page), [`secrets`], [`attestation`],
//! - the #VC emulation core ([`vc`]),
//! - the hypervisor side of the protocol ([`host`]),
//! - the hardware transports a stage uses in a real guest ([`hw`]),
//! - termination reasons ([`termination`]),
//! - with the `guest` feature, what IGVM-launched guests share: GHCB bring-up, #VC dispatch,
//!   interrupt frames and the launch page tables (`guest`).
//!
//! Everything a hypervisor returns is treated as attacker input.
#![cfg_attr(not(test), no_std)]

pub mod attestation;
pub mod cpuid;
pub mod exception;
pub mod exit_code;
pub mod ghcb;
#[cfg(all(feature = "guest", target_arch = "x86_64"))]
pub mod guest;
pub mod host;
pub mod hv_features;
#[cfg(target_arch = "x86_64")]
pub mod hw;
pub mod ioio;
pub mod msr_protocol;
pub mod nae;
pub mod psc;
pub mod pvalidate;
pub mod secrets;
pub mod sev_status;
pub mod termination;
pub mod vc;
pub mod vmsa;
