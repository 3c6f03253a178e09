//! NAE events a guest sends on its own (no #VC): AP jump table set then get, HV_FEATURES (the
//! same bits as the MSR protocol's answer), NMI_COMPLETE (accepted and counted).

use handoff::sim_hypercall::{NMI_COMPLETES, NMI_COUNTER};
use sev::hv_features::HV_FEATURES_MSR_MASK;
use sev::msr_protocol;
use sev::nae;

use super::Outcome;
use crate::ghcb;
use sev::guest::vmmcall;

/// A page for the AP jump table's address (its content is never used: no AP is started).
#[repr(C, align(4096))]
struct Page([u8; 4096]);

static JUMP_TABLE: Page = Page([0; 4096]);

pub fn nae_events() -> Outcome {
    let table = &raw const JUMP_TABLE as u64;
    let (jump, features) = ghcb::with(|ch| {
        let t = ch.ghcb.as_mut()?;
        let jump = nae::ap_jump_table_set(t, table).and_then(|()| nae::ap_jump_table_get(t));
        let by_ghcb = nae::hv_features(t);
        let by_msr = msr_protocol::hv_features(&mut ch.msr);
        Some((jump, (by_ghcb, by_msr)))
    })
    .ok_or("no GHCB registered")?;
    let got = jump.map_err(|e| alloc::format!("AP jump table: {e:?}"))?;
    ensure!(
        got == table,
        "AP jump table set to {table:#x}, got back {got:#x}"
    );
    let by_ghcb = features
        .0
        .map_err(|e| alloc::format!("HV_FEATURES event: {e:?}"))?;
    let by_msr = features
        .1
        .map_err(|e| alloc::format!("HV_FEATURES MSR request: {e:?}"))?;
    ensure!(
        by_ghcb.bits() & HV_FEATURES_MSR_MASK == by_msr.bits(),
        "hypervisor features: {by_ghcb:?} through the GHCB, {by_msr:?} through the MSR protocol"
    );

    let before = vmmcall(NMI_COUNTER, NMI_COMPLETES);
    ghcb::with(|ch| ch.ghcb.as_mut().map(nae::nmi_complete))
        .ok_or("no GHCB registered")?
        .map_err(|e| alloc::format!("NMI_COMPLETE: {e:?}"))?;
    let after = vmmcall(NMI_COUNTER, NMI_COMPLETES);
    ensure!(
        after == before + 1,
        "NMI_COMPLETE events counted by the simulator: {before} before, {after} after one"
    );
    Ok(())
}
