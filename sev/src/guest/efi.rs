//! The decisions of a guest that starts as an EFI application under the firmware's SEV-ES
//! (OVMF on a real AMD host) and takes the #VC handling and the GHCB over from it at
//! ExitBootServices: the decompressor stage's EFI entry. Kept apart from the stage so that the
//! host tests can drive them.
//!
//! - [`Detected`] / [`plan`]: what the stage reads while the firmware's #VC handler still serves
//!   CPUID and RDMSR (before ExitBootServices), and what it makes of it: no SEV, SEV-ES with
//!   its C-bit, or a refusal ([`Refusal`]) with the termination request that goes with it.
//!   CPUID is the hypervisor's answer and is checked against SEV_STATUS, which it cannot
//!   intercept (`SevCpuid::check`).
//! - [`Leaf`] / [`leaves`]: how the stage's identity map maps a run of the memory map: private
//!   RAM with the C-bit, MMIO and the GHCB page without it (the GHCB has no shared alias on
//!   this path: it is shared at its own address, as in the kernel).
//! - [`TakeoverSteps`] / [`take_over`]: the order of the takeover once the firmware's handlers
//!   are gone. Nothing may raise #VC before the stage's IDT routes it to the stage; the GHCB
//!   page's cache lines are flushed through its old (private) mapping before the page is mapped
//!   shared, as the APM requires when a page's C-bit changes; its new mapping is live (CR3
//!   load, INVLPG) before its GPA goes to the hypervisor; the first #VC (CPUID 0x8000001F,
//!   through the MSR protocol) re-checks the C-bit the plan was made with; every GHCB use
//!   comes after the GPA is in the GHCB MSR.

use core::fmt;

use x86::paging::PageFlags;

use crate::cpuid::{CpuidMismatch, SEV_CPUID_LEAF, SevCpuid, SevCpuidFeatures};
use crate::msr_protocol::SevInfo;
use crate::sev_status::{SEV_STATUS_MSR, SevStatus};
use crate::termination::{GuestReason, TerminationReason};

/// The highest extended CPUID leaf (EAX of leaf 0x80000000).
const EXTENDED_MAX_LEAF: u32 = 0x8000_0000;

/// What the stage learns about SEV while the firmware serves #VC: CPUID (the hypervisor's
/// answer) and, when CPUID admits SEV, SEV_STATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    /// CPUID 0x80000000 EAX: the highest extended leaf.
    pub max_extended_leaf: u32,
    /// CPUID 0x8000001F EAX, EBX, ECX, EDX; zero when the CPU has no such leaf.
    pub sev_leaf: [u32; 4],
    /// SEV_STATUS; `None` when CPUID does not advertise SEV, where the MSR may not exist (its
    /// read would raise #GP).
    pub sev_status: Option<u64>,
}

impl Detected {
    /// Reads CPUID 0x80000000, 0x8000001F and, when that advertises SEV, SEV_STATUS. Under
    /// SEV-ES the CPUIDs are #VCs: call it while the firmware's #VC handler is in charge.
    pub fn read() -> Self {
        let max_extended_leaf = x86::msr::cpuid(EXTENDED_MAX_LEAF, 0).eax;
        let sev_leaf = if max_extended_leaf >= SEV_CPUID_LEAF {
            let r = x86::msr::cpuid(SEV_CPUID_LEAF, 0);
            [r.eax, r.ebx, r.ecx, r.edx]
        } else {
            [0; 4]
        };
        let sev_status = advertises_sev(max_extended_leaf, sev_leaf).then(|| {
            // SAFETY: CPUID advertises SEV, so SEV_STATUS exists; reading it has no side
            // effects and is never intercepted in an SEV-ES guest.
            unsafe { x86::msr::rdmsr(SEV_STATUS_MSR) }
        });
        Self {
            max_extended_leaf,
            sev_leaf,
            sev_status,
        }
    }
}

/// Whether CPUID has leaf 0x8000001F with the SEV bit.
fn advertises_sev(max_extended_leaf: u32, sev_leaf: [u32; 4]) -> bool {
    max_extended_leaf >= SEV_CPUID_LEAF
        && SevCpuidFeatures::from_bits_retain(sev_leaf[0]).contains(SevCpuidFeatures::SEV)
}

/// What the stage does about SEV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// No SEV: the stage runs as it does on any machine. (A hypervisor that hid SEV-ES from
    /// CPUID is caught by the first #VC, which cannot happen without SEV-ES.)
    Plain,
    /// SEV-ES: take #VC and the GHCB over at ExitBootServices.
    SevEs(SevEsPlan),
    /// The stage cannot run like this; it stops before ExitBootServices.
    Refuse(Refusal),
}

/// The SEV-ES state the takeover works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevEsPlan {
    /// SEV_STATUS as read.
    pub sev_status: u64,
    /// The C-bit position (CPUID 0x8000001F EBX[5:0], checked to lie in 32..=51).
    pub c_bit: u8,
    /// CPUID 0x8000001F as the firmware's #VC handler answered it.
    pub sev_leaf: [u32; 4],
}

impl SevEsPlan {
    /// The C-bit as an address mask, for page-table entries and the `BootInfo`.
    pub fn c_bit_mask(&self) -> u64 {
        1 << self.c_bit
    }
}

/// Why the stage stops before ExitBootServices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// SEV without SEV-ES: memory is encrypted but there is no #VC and no GHCB; the kernel
    /// supports no such guest.
    SevWithoutEs,
    /// SEV-SNP: the GHCB page would have to be rescinded from validated private memory (a
    /// page state change and PVALIDATE), which this stage does not do.
    Snp,
    /// CPUID 0x8000001F contradicts SEV_STATUS, or names an impossible C-bit.
    Cpuid(CpuidMismatch),
}

impl Refusal {
    /// The termination request to send, `None` where there is no GHCB MSR to send it through
    /// (SEV without SEV-ES).
    pub fn termination(self) -> Option<TerminationReason> {
        match self {
            Self::SevWithoutEs => None,
            Self::Snp => Some(GuestReason::SnpUnsupported.into()),
            Self::Cpuid(_) => Some(GuestReason::CpuidLies.into()),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SevWithoutEs => write!(f, "SEV without SEV-ES is not supported"),
            Self::Snp => write!(f, "SEV-SNP is active; the EFI entry supports SEV-ES only"),
            Self::Cpuid(CpuidMismatch::HiddenFeature) => {
                write!(f, "CPUID 0x8000001F hides a feature SEV_STATUS shows")
            }
            Self::Cpuid(CpuidMismatch::CBit) => {
                write!(f, "CPUID 0x8000001F names an impossible C-bit")
            }
        }
    }
}

/// The plan for what was detected.
pub fn plan(d: &Detected) -> Plan {
    let Some(raw) = d
        .sev_status
        .filter(|_| advertises_sev(d.max_extended_leaf, d.sev_leaf))
    else {
        return Plan::Plain;
    };
    let status = SevStatus::from_msr(raw);
    if !status.contains(SevStatus::SEV) {
        return Plan::Plain;
    }
    let cpuid = SevCpuid::from_regs(d.sev_leaf);
    if let Err(e) = cpuid.check(status, None) {
        return Plan::Refuse(Refusal::Cpuid(e));
    }
    if status.contains(SevStatus::SEV_SNP) {
        Plan::Refuse(Refusal::Snp)
    } else if status.contains(SevStatus::SEV_ES) {
        Plan::SevEs(SevEsPlan {
            sev_status: raw,
            c_bit: cpuid.cbit,
            sev_leaf: d.sev_leaf,
        })
    } else {
        Plan::Refuse(Refusal::SevWithoutEs)
    }
}

/// How a page of the stage's identity map is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// RAM, private: the C-bit set (under SEV-ES), write-back.
    Private,
    /// RAM shared with the hypervisor (the GHCB): no C-bit, write-back.
    Shared,
    /// MMIO: no C-bit (the hypervisor emulates it, and a #VC on an encrypted MMIO mapping is
    /// refused by the #VC core), uncached.
    Mmio,
}

impl Leaf {
    /// The leaf's flags (the C-bit, an address bit, is the mapper's business).
    pub const fn flags(self) -> PageFlags {
        match self {
            Self::Private | Self::Shared => PageFlags::WRITABLE,
            Self::Mmio => PageFlags::WRITABLE.union(PageFlags::NO_CACHE),
        }
    }

    /// Whether the leaf lacks the C-bit (`PageTables::map_range_shared`).
    pub const fn shared(self) -> bool {
        !matches!(self, Self::Private)
    }
}

/// The pieces of `start .. end`, a run of RAM (or MMIO when `mmio`), as the identity map maps
/// them: the run's own leaf, except where it overlaps `shared` (the GHCB page, `start .. end`)
/// in RAM, which is [`Leaf::Shared`]. Empty pieces have `start == end`; in address order.
pub fn leaves(
    start: u64,
    end: u64,
    mmio: bool,
    shared: Option<(u64, u64)>,
) -> [(u64, u64, Leaf); 3] {
    let own = if mmio { Leaf::Mmio } else { Leaf::Private };
    match shared {
        Some((s, e)) if !mmio && s < end && start < e => {
            let (s, e) = (s.max(start), e.min(end));
            [(start, s, own), (s, e, Leaf::Shared), (e, end, own)]
        }
        _ => [(start, end, own), (end, end, own), (end, end, own)],
    }
}

/// One step of [`take_over`], for the error it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    InstallIdt,
    FlushGhcbPage,
    SwitchTables,
    CheckCpuid,
    RegisterGhcb,
    FirstGhcbUse,
}

/// The takeover's steps, each as the stage performs it; [`take_over`] orders them.
pub trait TakeoverSteps {
    /// Loads the stage's GDT, TSS and IDT, whose #VC gate leads to the stage's handler (the
    /// MSR protocol, CPUID only, until the GHCB is registered). Raises no #VC.
    fn install_idt(&mut self);
    /// Flushes the GHCB page's cache lines through its current, private mapping (CLFLUSH),
    /// so that no dirty private line is written back over the page once it is shared. Raises
    /// no #VC.
    fn flush_ghcb_page(&mut self);
    /// Switches to the stage's page tables: the C-bit on private memory, not on MMIO and the
    /// GHCB page; the CR3 load and an INVLPG of the GHCB page drop every translation of it
    /// with the C-bit. Raises no #VC.
    fn switch_tables(&mut self) -> Result<(), TerminationReason>;
    /// CPUID 0x8000001F through the #VC handler (the first #VC: MSR protocol), checked
    /// against SEV_STATUS and the C-bit position `c_bit`. Returns EAX, EBX, ECX, EDX.
    fn check_cpuid(&mut self, c_bit: u8) -> Result<[u32; 4], TerminationReason>;
    /// Negotiates the GHCB protocol (version 2) and puts the GHCB's GPA in the GHCB MSR:
    /// from then on #VCs go through the GHCB.
    fn register_ghcb(&mut self, c_bit: u8) -> Result<SevInfo, TerminationReason>;
    /// The first use of the GHCB (the stage's first console line of its own).
    fn first_ghcb_use(&mut self, info: &SevInfo);
}

/// A failed takeover: the step and the termination request it ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TakeoverError {
    pub step: Step,
    pub reason: TerminationReason,
}

/// Runs the takeover for `plan` (see the module docs for the order and why). The CPUID leaf the
/// first #VC returns must agree with the one the plan was made from (features and C-bit: the
/// hypervisor answered both). On failure no later step has run.
pub fn take_over<S: TakeoverSteps + ?Sized>(
    steps: &mut S,
    plan: &SevEsPlan,
) -> Result<SevInfo, TakeoverError> {
    let fail = |step| move |reason| TakeoverError { step, reason };
    steps.install_idt();
    steps.flush_ghcb_page();
    steps.switch_tables().map_err(fail(Step::SwitchTables))?;
    let leaf = steps
        .check_cpuid(plan.c_bit)
        .map_err(fail(Step::CheckCpuid))?;
    if leaf[..2] != plan.sev_leaf[..2] {
        return Err(fail(Step::CheckCpuid)(GuestReason::CpuidLies.into()));
    }
    let info = steps
        .register_ghcb(plan.c_bit)
        .map_err(fail(Step::RegisterGhcb))?;
    steps.first_ghcb_use(&info);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::register_ghcb;
    use crate::msr_protocol::{GhcbMsr, MsrRequest, MsrResponse};
    use x86::paging::{FrameSource, PageTables, Table, TableAccess};

    const C_BIT: u8 = 51;
    /// SEV, SEV-ES (CPUID 0x8000001F EAX bits 1 and 3), C-bit 51, one bit of address lost.
    const ES_LEAF: [u32; 4] = [0b1010, 51 | 1 << 6, 509, 1];
    const ES_STATUS: u64 = 0b11;

    fn detected(leaf: [u32; 4], status: Option<u64>) -> Detected {
        Detected {
            max_extended_leaf: 0x8000_0021,
            sev_leaf: leaf,
            sev_status: status,
        }
    }

    fn es_plan() -> SevEsPlan {
        SevEsPlan {
            sev_status: ES_STATUS,
            c_bit: C_BIT,
            sev_leaf: ES_LEAF,
        }
    }

    #[test]
    fn no_sev_is_plain() {
        // No leaf 0x8000001F (QEMU's default CPU under TCG): nothing else is believed.
        let short = Detected {
            max_extended_leaf: 0x8000_0008,
            sev_leaf: ES_LEAF,
            sev_status: Some(ES_STATUS),
        };
        assert_eq!(plan(&short), Plan::Plain);
        assert_eq!(plan(&detected([0; 4], None)), Plan::Plain);
        // SEV-capable CPU model, SEV off for this guest.
        assert_eq!(plan(&detected(ES_LEAF, Some(0))), Plan::Plain);
    }

    #[test]
    fn sev_es_plan_carries_the_c_bit() {
        let Plan::SevEs(p) = plan(&detected(ES_LEAF, Some(ES_STATUS))) else {
            panic!("SEV-ES not planned")
        };
        assert_eq!(p, es_plan());
        assert_eq!(p.c_bit_mask(), 1 << 51);
    }

    #[test]
    fn hostile_cpuid_is_refused_with_a_reason() {
        // SEV_STATUS (not interceptable) shows SEV-ES, CPUID denies it.
        let hidden = plan(&detected([0b0010, 51, 0, 0], Some(ES_STATUS)));
        assert_eq!(
            hidden,
            Plan::Refuse(Refusal::Cpuid(CpuidMismatch::HiddenFeature))
        );
        // A C-bit outside 32..=51.
        let bad_cbit = plan(&detected([0b1010, 12, 0, 0], Some(ES_STATUS)));
        assert_eq!(bad_cbit, Plan::Refuse(Refusal::Cpuid(CpuidMismatch::CBit)));
        for refusal in [hidden, bad_cbit] {
            let Plan::Refuse(r) = refusal else {
                unreachable!()
            };
            assert_eq!(r.termination(), Some(GuestReason::CpuidLies.into()));
        }
    }

    #[test]
    fn snp_and_plain_sev_are_refused() {
        let snp = plan(&detected([0b1_1010, 51, 0, 0], Some(0b111)));
        assert_eq!(snp, Plan::Refuse(Refusal::Snp));
        assert_eq!(
            Refusal::Snp.termination(),
            Some(GuestReason::SnpUnsupported.into())
        );
        let sev = plan(&detected([0b0010, 47, 0, 0], Some(0b1)));
        assert_eq!(sev, Plan::Refuse(Refusal::SevWithoutEs));
        assert_eq!(Refusal::SevWithoutEs.termination(), None);
    }

    #[test]
    fn leaves_carve_the_ghcb_page_out_of_ram_only() {
        let ghcb = Some((0x20_3000, 0x20_4000));
        assert_eq!(
            leaves(0x20_0000, 0x40_0000, false, ghcb),
            [
                (0x20_0000, 0x20_3000, Leaf::Private),
                (0x20_3000, 0x20_4000, Leaf::Shared),
                (0x20_4000, 0x40_0000, Leaf::Private),
            ]
        );
        // A run that does not reach the page, and MMIO (never holds the GHCB), stay whole.
        for (start, end, mmio, leaf) in [
            (0x40_0000, 0x60_0000, false, Leaf::Private),
            (0x20_0000, 0x40_0000, true, Leaf::Mmio),
        ] {
            let pieces = leaves(start, end, mmio, ghcb);
            assert_eq!(pieces[0], (start, end, leaf));
            assert!(pieces[1..].iter().all(|p| p.0 == p.1));
        }
        // The page at a run's edge.
        assert_eq!(
            leaves(0x20_3000, 0x20_8000, false, ghcb)[..2],
            [
                (0x20_3000, 0x20_3000, Leaf::Private),
                (0x20_3000, 0x20_4000, Leaf::Shared)
            ]
        );
    }

    /// Page tables on the host: tables in boxes, reached through their "physical" address,
    /// which is the box's address.
    #[derive(Default)]
    struct Arena(Vec<Box<Table>>);

    impl FrameSource for Arena {
        fn alloc_zeroed_table(&mut self) -> Option<u64> {
            self.0.push(Box::new(Table::EMPTY));
            Some(&**self.0.last().unwrap() as *const Table as u64)
        }
    }

    struct ByAddress;

    // SAFETY: every table of the tests' hierarchies is a live box of their arena, reached
    // through its own address; each test uses its tables from one thread.
    unsafe impl TableAccess for ByAddress {
        fn table(&self, phys: u64) -> *mut Table {
            phys as *mut Table
        }
    }

    #[test]
    fn identity_map_entries_get_the_c_bit_on_private_ram_only() {
        let c = 1u64 << C_BIT;
        let mut arena = Arena::default();
        let mut t = PageTables::create(&mut arena, c, ByAddress).unwrap();
        let ghcb = Some((0x20_3000, 0x20_4000));
        let runs = [
            (0x20_0000, 0x40_0000, false),
            (0xfee0_0000, 0xfee0_1000, true),
        ];
        for (start, end, mmio) in runs {
            for (s, e, leaf) in leaves(start, end, mmio, ghcb) {
                if s < e && leaf.shared() {
                    t.map_range_shared(&mut arena, s, e, leaf.flags()).unwrap();
                } else if s < e {
                    t.map_range(&mut arena, s, e, leaf.flags()).unwrap();
                }
            }
        }
        let at = |va| t.translate(va).unwrap();
        assert!(at(0x20_2fff).encrypted && at(0x20_4000).encrypted);
        assert!(!at(0x20_3000).encrypted, "the GHCB page is shared");
        assert!(!at(0x20_3000).flags.contains(PageFlags::NO_CACHE));
        assert!(!at(0xfee0_0000).encrypted, "MMIO is shared");
        assert!(at(0xfee0_0000).flags.contains(PageFlags::NO_CACHE));
        assert_eq!(
            at(0x20_3008).phys,
            0x20_3008,
            "identity, C-bit not in the address"
        );
        // CR3 and the tables themselves are private.
        assert_eq!(t.cr3() & c, c);
    }

    /// A hypervisor for the MSR protocol that answers SEV information and GHCB GPA
    /// registration like KVM and records every request it saw.
    #[derive(Default)]
    struct MsrHv {
        msr: u64,
        requests: Vec<MsrRequest>,
    }

    impl GhcbMsr for MsrHv {
        fn read(&mut self) -> u64 {
            self.msr
        }

        fn write(&mut self, value: u64) {
            self.msr = value;
        }

        fn vmgexit(&mut self) {
            let req = MsrRequest::decode(self.msr).unwrap();
            self.requests.push(req);
            self.msr = match req {
                MsrRequest::SevInfo => MsrResponse::SevInfo {
                    max: 2,
                    min: 1,
                    cbit: C_BIT,
                },
                other => panic!("unexpected {other:?}"),
            }
            .encode();
        }
    }

    #[test]
    fn sev_es_takeover_registers_no_gpa() {
        const GPA: u64 = 0x7654_3000;
        let mut hv = MsrHv::default();
        let info = register_ghcb(&mut hv, GPA, C_BIT).unwrap();
        assert_eq!((info.max, info.cbit), (2, C_BIT));
        assert_eq!(
            hv.requests,
            [MsrRequest::SevInfo],
            "KVM would terminate on REG_GPA"
        );
        assert_eq!(hv.msr, GPA, "the GPA is in the GHCB MSR");
    }

    /// A stage whose steps record what ran and check, at each step, that what must precede it
    /// has run; it fails at `fail_at` with `GuestReason::UnexpectedException` (any reason will
    /// do: the test checks it is passed on).
    struct Recorder {
        log: Vec<Step>,
        fail_at: Option<Step>,
        cpuid: [u32; 4],
    }

    impl Recorder {
        fn new(fail_at: Option<Step>) -> Self {
            Self {
                log: Vec::new(),
                fail_at,
                cpuid: ES_LEAF,
            }
        }

        fn ran(&self, step: Step) -> bool {
            self.log.contains(&step)
        }

        fn step(&mut self, step: Step) -> Result<(), TerminationReason> {
            self.log.push(step);
            if self.fail_at == Some(step) {
                return Err(GuestReason::UnexpectedException.into());
            }
            Ok(())
        }

        /// A step that may raise #VC: the stage's IDT must be in place.
        fn raises_vc(&mut self, step: Step) -> Result<(), TerminationReason> {
            assert!(
                self.ran(Step::InstallIdt),
                "{step:?} before the stage's IDT"
            );
            self.step(step)
        }
    }

    impl TakeoverSteps for Recorder {
        fn install_idt(&mut self) {
            self.step(Step::InstallIdt).unwrap();
        }

        fn flush_ghcb_page(&mut self) {
            assert!(
                !self.ran(Step::SwitchTables),
                "flushed after the C-bit changed"
            );
            self.step(Step::FlushGhcbPage).unwrap();
        }

        fn switch_tables(&mut self) -> Result<(), TerminationReason> {
            self.step(Step::SwitchTables)
        }

        fn check_cpuid(&mut self, c_bit: u8) -> Result<[u32; 4], TerminationReason> {
            assert_eq!(c_bit, C_BIT);
            self.raises_vc(Step::CheckCpuid).map(|()| self.cpuid)
        }

        fn register_ghcb(&mut self, c_bit: u8) -> Result<SevInfo, TerminationReason> {
            assert_eq!(c_bit, C_BIT);
            assert!(
                self.ran(Step::FlushGhcbPage) && self.ran(Step::SwitchTables),
                "GHCB handed to the hypervisor before it is flushed and mapped shared"
            );
            self.raises_vc(Step::RegisterGhcb)?;
            Ok(SevInfo {
                min: 1,
                max: 2,
                cbit: c_bit,
                version: crate::msr_protocol::GhcbVersion::V2,
            })
        }

        fn first_ghcb_use(&mut self, info: &SevInfo) {
            assert!(
                self.ran(Step::RegisterGhcb),
                "GHCB used before registration"
            );
            assert_eq!(info.max, 2);
            self.raises_vc(Step::FirstGhcbUse).unwrap();
        }
    }

    const ORDER: [Step; 6] = [
        Step::InstallIdt,
        Step::FlushGhcbPage,
        Step::SwitchTables,
        Step::CheckCpuid,
        Step::RegisterGhcb,
        Step::FirstGhcbUse,
    ];

    #[test]
    fn takeover_runs_its_steps_in_order() {
        let mut r = Recorder::new(None);
        let info = take_over(&mut r, &es_plan()).unwrap();
        assert_eq!(info.cbit, C_BIT);
        assert_eq!(r.log, ORDER);
    }

    #[test]
    fn a_failed_step_ends_the_takeover_with_its_reason() {
        for (i, &step) in ORDER.iter().enumerate() {
            if !matches!(
                step,
                Step::SwitchTables | Step::CheckCpuid | Step::RegisterGhcb
            ) {
                continue; // the others cannot fail
            }
            let mut r = Recorder::new(Some(step));
            let e = take_over(&mut r, &es_plan()).unwrap_err();
            assert_eq!(
                e,
                TakeoverError {
                    step,
                    reason: GuestReason::UnexpectedException.into()
                }
            );
            assert_eq!(r.log, ORDER[..=i], "nothing runs after {step:?}");
        }
    }

    #[test]
    fn a_cpuid_that_changed_since_the_plan_is_a_lie() {
        for changed in [
            [0b1_1010, 51 | 1 << 6, 509, 1],
            [0b1010, 47 | 1 << 6, 509, 1],
        ] {
            let mut r = Recorder::new(None);
            r.cpuid = changed;
            let e = take_over(&mut r, &es_plan()).unwrap_err();
            assert_eq!(e.step, Step::CheckCpuid);
            assert_eq!(e.reason, GuestReason::CpuidLies.into());
            assert!(!r.ran(Step::RegisterGhcb));
        }
        // ECX/EDX (guest counts, minimum ASID) do not matter.
        let mut r = Recorder::new(None);
        r.cpuid = [ES_LEAF[0], ES_LEAF[1], 0, 0];
        assert!(take_over(&mut r, &es_plan()).is_ok());
    }
}
