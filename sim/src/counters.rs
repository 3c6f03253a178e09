//! Per-vCPU counters: #VMEXITs by SVM exit code and VMGEXITs by request, printed at the end of
//! a run as one machine-readable line per vCPU (`SIM-COUNTERS vcpu=0 exits=12 exit.cpuid=3 ...`,
//! non-zero counters only; names are stable, values decimal). Counters are atomics: a vCPU
//! counts on its own host CPU, and whichever CPU ends the run prints every vCPU's.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use sev::exit_code::ExitCode;
use sev::msr_protocol::MsrRequest;

/// SVM exit codes with their own counter; everything else is counted as `exit.other`.
const EXITS: [(u64, &str); 18] = [
    (0x27, "dr7_read"),
    (0x37, "dr7_write"),
    (0x41, "db"),
    (0x51, "ac"),
    (0x6e, "rdtsc"),
    (0x6f, "rdpmc"),
    (0x72, "cpuid"),
    (0x76, "invd"),
    (0x78, "hlt"),
    (0x7b, "ioio"),
    (0x7c, "msr"),
    (0x7f, "shutdown"),
    (0x81, "vmmcall"),
    (0x87, "rdtscp"),
    (0x89, "wbinvd"),
    (0x8a, "monitor"),
    (0x8b, "mwait"),
    (0x400, "npf"),
];

/// MSR-protocol requests, in [`msr_index`] order.
const MSR_REQUESTS: [&str; 9] = [
    "sev_info",
    "cpuid",
    "ap_reset_hold",
    "preferred_ghcb_gpa",
    "register_ghcb_gpa",
    "page_state_change",
    "run_vmpl",
    "hv_features",
    "terminate",
];

/// NAE events, in [`nae_index`] order.
const NAE_EVENTS: [(ExitCode, &str); 29] = [
    (ExitCode::ReadDr7, "dr7_read"),
    (ExitCode::WriteDr7, "dr7_write"),
    (ExitCode::ExceptionDb, "db"),
    (ExitCode::ExceptionAc, "ac"),
    (ExitCode::Rdtsc, "rdtsc"),
    (ExitCode::Rdpmc, "rdpmc"),
    (ExitCode::Cpuid, "cpuid"),
    (ExitCode::Invd, "invd"),
    (ExitCode::Ioio, "ioio"),
    (ExitCode::Msr, "msr"),
    (ExitCode::Vmmcall, "vmmcall"),
    (ExitCode::Rdtscp, "rdtscp"),
    (ExitCode::Wbinvd, "wbinvd"),
    (ExitCode::Monitor, "monitor"),
    (ExitCode::Mwait, "mwait"),
    (ExitCode::Npf, "npf"),
    (ExitCode::MmioRead, "mmio_read"),
    (ExitCode::MmioWrite, "mmio_write"),
    (ExitCode::NmiComplete, "nmi_complete"),
    (ExitCode::ApHltLoop, "ap_hlt_loop"),
    (ExitCode::ApJumpTable, "ap_jump_table"),
    (ExitCode::SnpPsc, "psc"),
    (ExitCode::SnpGuestRequest, "guest_request"),
    (ExitCode::SnpExtGuestRequest, "ext_guest_request"),
    (ExitCode::SnpApCreation, "ap_creation"),
    (ExitCode::SnpRunVmpl, "run_vmpl"),
    (ExitCode::HvFeatures, "hv_features"),
    (ExitCode::TermRequest, "terminate"),
    (ExitCode::UnsupportedEvent, "unsupported"),
];

fn msr_index(r: &MsrRequest) -> usize {
    match r {
        MsrRequest::SevInfo => 0,
        MsrRequest::Cpuid { .. } => 1,
        MsrRequest::ApResetHold => 2,
        MsrRequest::PreferredGhcbGpa => 3,
        MsrRequest::RegisterGhcbGpa { .. } => 4,
        MsrRequest::PageStateChange { .. } => 5,
        MsrRequest::RunVmpl { .. } => 6,
        MsrRequest::HvFeatures => 7,
        MsrRequest::Terminate(_) => 8,
    }
}

fn nae_index(code: u64) -> Option<usize> {
    NAE_EVENTS.iter().position(|(c, _)| c.raw() == code)
}

/// One vCPU's counters.
#[derive(Debug)]
pub struct Counters {
    vcpu: u32,
    exits: [AtomicU64; EXITS.len() + 1],
    msr: [AtomicU64; MSR_REQUESTS.len() + 1],
    nae: [AtomicU64; NAE_EVENTS.len() + 1],
    nmi_injected: AtomicU64,
    vc_delivered: AtomicU64,
    /// Host TSC ticks from just before each VMRUN to just after its #VMEXIT.
    guest_tsc: AtomicU64,
}

/// Counts one. Only the vCPU's own CPU writes its counters, so a plain load and store do (a
/// locked add costs a helper call per exit under TCG); other CPUs only read them.
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn sum(cs: &[AtomicU64]) -> u64 {
    cs.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

impl Counters {
    pub const fn new(vcpu: u32) -> Self {
        Self {
            vcpu,
            exits: [const { AtomicU64::new(0) }; EXITS.len() + 1],
            msr: [const { AtomicU64::new(0) }; MSR_REQUESTS.len() + 1],
            nae: [const { AtomicU64::new(0) }; NAE_EVENTS.len() + 1],
            nmi_injected: AtomicU64::new(0),
            vc_delivered: AtomicU64::new(0),
            guest_tsc: AtomicU64::new(0),
        }
    }

    /// Counts a #VMEXIT with SVM exit code `code`.
    pub fn exit(&self, code: u64) {
        let i = EXITS
            .iter()
            .position(|(c, _)| *c == code)
            .unwrap_or(EXITS.len());
        bump(&self.exits[i]);
    }

    /// Counts an MSR-protocol VMGEXIT (`None`: a value the simulator could not decode).
    pub fn msr_protocol(&self, r: Option<&MsrRequest>) {
        bump(&self.msr[r.map_or(MSR_REQUESTS.len(), msr_index)]);
    }

    /// Counts a GHCB-page VMGEXIT with SW_EXITCODE `code` (`None`: no valid exit code).
    pub fn nae(&self, code: Option<u64>) {
        bump(&self.nae[code.and_then(nae_index).unwrap_or(NAE_EVENTS.len())]);
    }

    /// Counts an NMI injected into the guest.
    pub fn nmi(&self) {
        bump(&self.nmi_injected);
    }

    /// Counts a #VC the simulator delivered.
    pub fn vc(&self) {
        bump(&self.vc_delivered);
    }

    /// Adds `ticks` of host TSC spent in guest mode (one VMRUN to its #VMEXIT).
    pub fn in_guest(&self, ticks: u64) {
        let c = &self.guest_tsc;
        c.store(c.load(Ordering::Relaxed) + ticks, Ordering::Relaxed);
    }

    /// Host TSC ticks spent in guest mode so far (`handoff::sim_hypercall::GUEST_TIME_LEAF`).
    pub fn guest_tsc(&self) -> u64 {
        self.guest_tsc.load(Ordering::Relaxed)
    }

    /// NMIs injected so far.
    pub fn nmis_injected(&self) -> u64 {
        self.nmi_injected.load(Ordering::Relaxed)
    }

    /// All #VMEXITs so far.
    pub fn total_exits(&self) -> u64 {
        sum(&self.exits)
    }

    /// All VMGEXITs so far.
    pub fn total_vmgexits(&self) -> u64 {
        sum(&self.msr) + sum(&self.nae)
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SIM-COUNTERS vcpu={} exits={} vmgexits={} vc_delivered={} nmi_injected={}",
            self.vcpu,
            self.total_exits(),
            self.total_vmgexits(),
            self.vc_delivered.load(Ordering::Relaxed),
            self.nmis_injected()
        )?;
        let groups: [(&str, &[AtomicU64], &mut dyn Iterator<Item = &str>); 3] = [
            (
                "exit",
                &self.exits,
                &mut EXITS.iter().map(|(_, n)| *n).chain(["other"]),
            ),
            (
                "vmgexit.msr",
                &self.msr,
                &mut MSR_REQUESTS.into_iter().chain(["invalid"]),
            ),
            (
                "vmgexit.nae",
                &self.nae,
                &mut NAE_EVENTS.iter().map(|(_, n)| *n).chain(["invalid"]),
            ),
        ];
        for (group, counters, names) in groups {
            for (n, c) in names.zip(counters) {
                let v = c.load(Ordering::Relaxed);
                if v != 0 {
                    write!(f, " {group}.{n}={v}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_non_zero_counters_by_name() {
        let c = Counters::new(2);
        c.exit(0x72);
        c.exit(0x72);
        c.exit(0x9999);
        c.msr_protocol(Some(&MsrRequest::SevInfo));
        c.msr_protocol(None);
        c.nae(Some(0x7b));
        c.nae(Some(0x1234));
        c.nae(None);
        let s = alloc::format!("{c}");
        assert_eq!(
            s,
            "SIM-COUNTERS vcpu=2 exits=3 vmgexits=5 vc_delivered=0 nmi_injected=0 \
             exit.cpuid=2 exit.other=1 vmgexit.msr.sev_info=1 vmgexit.msr.invalid=1 \
             vmgexit.nae.ioio=1 vmgexit.nae.invalid=2"
        );
    }

    #[test]
    fn every_nae_event_has_a_counter() {
        for (code, _) in NAE_EVENTS {
            assert!(nae_index(code.raw()).is_some());
        }
    }
}
