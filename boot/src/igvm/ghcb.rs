//! The boot vCPU's channel to the hypervisor under the IGVM entry: the GHCB MSR, the GHCB page
//! and the #VC core's per-CPU state behind one lock, and the #VC handler that uses them.
//!
//! The GHCB is a page of the stage's `.bss`. The launch tables map the stage identity (GVA ==
//! GPA) and private, so its GPA is its own address; the stage and the hypervisor share it
//! through the launch tables' shared alias window, `SHARED_ALIAS + GPA`, where the C-bit is
//! clear. Only the boot vCPU raises #VC (the APs stay in reset hold), so one channel suffices.

use handoff::launch::SHARED_ALIAS;
use sev::ghcb::Ghcb;
use sev::guest::{InterruptRegs, LaunchTables, VcNext, dispatch_vc};
use sev::hw::{GhcbMsrRecord, HwGhcb, HwGhcbMsr};
use sev::msr_protocol::{self, SevInfo};
use sev::termination::{GuestReason, TerminationReason};
use sev::vc::{NoHypercalls, VcConfig, VcPerCpu};
use x86::interrupts::{InterruptFrame, fatal};

/// The GHCB page; reached only through its shared view.
static mut PAGE: Ghcb = Ghcb::new();

struct State {
    /// The GHCB GPA is registered and in the GHCB MSR: #VCs go through the GHCB.
    registered: bool,
    cpu: VcPerCpu,
}

static STATE: spin::Mutex<State> = spin::Mutex::new(State {
    registered: false,
    cpu: VcPerCpu::new(),
});

/// What the boot vCPU's GHCB MSR holds, as far as its transports know.
static MSR_RECORD: GhcbMsrRecord = GhcbMsrRecord::new();

/// The launch page tables the stage keeps on this path.
pub static TABLES: LaunchTables = LaunchTables::new();

/// The GHCB's guest-physical address (its identity-mapped address).
fn gpa() -> u64 {
    (&raw const PAGE) as u64
}

/// Brings the GHCB up for page tables whose C-bit is at `c_bit`: CPUID 0x8000001F through the
/// early #VC path, checked against SEV_STATUS; protocol negotiation; registration. Call once,
/// after the IDT and the decoder exist. Fails with the reason to terminate with.
pub fn establish(c_bit: u8) -> Result<SevInfo, TerminationReason> {
    sev::guest::check_sev_cpuid(c_bit)?;
    let mut state = STATE.lock();
    // SAFETY: CPL 0 in an SEV-ES guest; the lock makes this the only GHCB MSR user.
    let mut msr = unsafe { HwGhcbMsr::new(&MSR_RECORD) };
    let info = sev::guest::register_ghcb(&mut msr, gpa(), c_bit)?;
    state.registered = true;
    Ok(info)
}

/// Whether the GHCB is up and free: a print (port I/O, a #VC) can work.
pub fn can_print() -> bool {
    STATE.try_lock().is_some_and(|s| s.registered)
}

/// Asks the hypervisor to terminate the guest with `reason` (never returns): through the GHCB
/// when it is up and free, else through the MSR protocol, which works at any time.
pub fn terminate(reason: TerminationReason) -> ! {
    if let Some(state) = STATE.try_lock()
        && state.registered
    {
        // SAFETY: the shared alias maps the GHCB's page (in the stage image, below 1 GiB)
        // decrypted at its registered GPA; the lock, held until the guest ends, makes this the
        // only user of the GHCB and the GHCB MSR.
        let mut t = unsafe { HwGhcb::new(&mut *shared_view(), gpa(), &MSR_RECORD) };
        sev::nae::terminate(&mut t, reason)
    }
    // SAFETY: CPL 0 in an SEV-ES guest. Whoever else may hold the GHCB MSR never runs again:
    // the termination request is repeated forever.
    let mut msr = unsafe { HwGhcbMsr::new(&MSR_RECORD) };
    msr_protocol::terminate(&mut msr, reason)
}

/// The GHCB's shared view.
fn shared_view() -> *mut Ghcb {
    (SHARED_ALIAS + gpa()) as *mut Ghcb
}

/// Handles one #VC (vector 29) of the boot vCPU: CPUID through the MSR protocol before the
/// GHCB exists, everything the #VC core emulates afterwards. A #VC while the channel is in use
/// (inside the handler itself) terminates: the GHCB holds a request a nested user would
/// destroy.
pub fn handle_vc(frame: &mut InterruptFrame) {
    let exit_code = frame.error_code;
    let next = {
        let Some(mut state) = STATE.try_lock() else {
            terminate(GuestReason::NestedVc.into())
        };
        let State { registered, cpu } = &mut *state;
        // SAFETY: CPL 0 in an SEV-ES guest; the lock makes this the only GHCB MSR user.
        let mut msr = unsafe { HwGhcbMsr::new(&MSR_RECORD) };
        let mut ghcb = registered.then(|| {
            // SAFETY: as in `terminate`: the shared view of the registered GHCB, which the lock
            // makes this the only user of.
            unsafe { HwGhcb::new(&mut *shared_view(), gpa(), &MSR_RECORD) }
        });
        // The stage never loads FS or GS bases: the launch state's 0 holds.
        let mut regs = InterruptRegs::new(frame, 0, 0);
        let cfg = VcConfig {
            cpuid_page: None,
            hypercalls: &NoHypercalls,
        };
        dispatch_vc(
            exit_code,
            &mut regs,
            &mut TABLES.memory(),
            &mut msr,
            ghcb.as_mut(),
            cpu,
            &cfg,
        )
    };
    match next {
        VcNext::Resume(n) => frame.rip += n,
        VcNext::Raise(e) => {
            x86::serial::force_unlock();
            x86::serial_println!(
                "stage: #VC exit code {exit_code:#x} at RIP {:#x} raised {e:?}",
                frame.rip
            );
            fatal(frame)
        }
    }
}
