//! NMI injection and blocking: INJECT_NMI makes the simulator inject an NMI, which the guest's
//! NMI handler (on its own IST stack) counts. Until the guest sends NMI_COMPLETE the vCPU is
//! still handling that NMI as far as the simulator knows, so a second INJECT_NMI stays pending;
//! NMI_COMPLETE lets it in. The simulator's own counts (NMI_COUNTER) must agree.

use handoff::sim_hypercall::{INJECT_NMI, NMI_COMPLETES, NMI_COUNTER, NMIS_INJECTED};
use sev::nae;

use super::Outcome;
use crate::ghcb;
use crate::interrupts::nmis;
use sev::guest::vmmcall;

/// Exits the guest makes while waiting for (or making sure there is no) NMI delivery: the
/// simulator injects on its way back into the guest, so each exit is a chance to deliver.
const EXITS_WHILE_WAITING: u32 = 100;

fn injected() -> u64 {
    vmmcall(NMI_COUNTER, NMIS_INJECTED)
}

fn completes() -> u64 {
    vmmcall(NMI_COUNTER, NMI_COMPLETES)
}

/// Whether the handler has counted `target` NMIs, giving the simulator a bounded number of
/// exits to deliver them.
fn wait_for_nmis(target: u64) -> bool {
    for _ in 0..EXITS_WHILE_WAITING {
        if nmis() >= target {
            return true;
        }
        injected();
    }
    nmis() >= target
}

fn nmi_complete() -> Outcome {
    ghcb::with(|ch| ch.ghcb.as_mut().map(nae::nmi_complete))
        .ok_or("no GHCB registered")?
        .map_err(|e| alloc::format!("NMI_COMPLETE: {e:?}"))
}

pub fn nmi() -> Outcome {
    let (handled0, injected0, completes0) = (nmis(), injected(), completes());

    vmmcall(INJECT_NMI, 0);
    ensure!(
        wait_for_nmis(handled0 + 1),
        "no NMI delivered after INJECT_NMI"
    );

    vmmcall(INJECT_NMI, 0);
    for _ in 0..EXITS_WHILE_WAITING {
        injected();
    }
    let (handled, inj) = (nmis(), injected());
    ensure!(
        handled == handled0 + 1 && inj == injected0 + 1,
        "a second NMI got in before NMI_COMPLETE: {} handled, {} injected since the start",
        handled - handled0,
        inj - injected0
    );

    nmi_complete()?;
    ensure!(
        wait_for_nmis(handled0 + 2),
        "the pending NMI was not delivered after NMI_COMPLETE"
    );
    nmi_complete()?;

    let (handled, inj, done) = (nmis(), injected(), completes());
    ensure!(
        handled == handled0 + 2 && inj == injected0 + 2 && done == completes0 + 2,
        "after two NMIs and two NMI_COMPLETEs: {} handled, {} injected, {} completions counted",
        handled - handled0,
        inj - injected0,
        done - completes0
    );
    Ok(())
}
