//! A version 1 hypervisor: run with `ghcb_max=1` in `sim.cfg` (selected by name only, each
//! ending the run). The guest negotiated version 1 and every GHCB request says so; a version 1
//! event is served; HV_FEATURES, a version 2 event, is answered as an invalid event; and
//! HV_FEATURES through the MSR protocol, a request a version 1 hypervisor does not know, ends
//! the run (status 39). A GHCB request that claims version 2 ends the run too.

use sev::ghcb::GhcbTransport;
use sev::msr_protocol::{self, GhcbVersion};
use sev::nae::{self, NaeError};

use super::Outcome;
use crate::ghcb;

/// The error code of the error reply to an event the hypervisor does not know (GHCB
/// specification: invalid event).
const INVALID_EVENT: u64 = 6;

/// Version 1 negotiated and used; HV_FEATURES refused both ways (the second ends the run).
pub fn ghcb_v1() -> Outcome {
    let info = ghcb::sev_info().ok_or("no SEV information from the bring-up")?;
    ensure!(
        (info.min, info.max, info.version) == (1, 1, GhcbVersion::V1),
        "SEV information {info:?}: expected only version 1 offered and negotiated"
    );
    ghcb::with(|ch| {
        let t = ch.ghcb.as_mut().ok_or("no GHCB registered")?;
        ensure!(
            t.protocol_version() == GhcbVersion::V1,
            "the GHCB is handed out for {:?}",
            t.protocol_version()
        );
        nae::rdtsc(t).map_err(|e| alloc::format!("RDTSC, a version 1 event: {e:?}"))?;
        let field = t.ghcb().protocol_version();
        ensure!(field == 1, "the request said protocol version {field}");
        match nae::hv_features(t) {
            Err(NaeError::HypervisorError(INVALID_EVENT)) => {}
            other => {
                return Err(alloc::format!(
                    "HV_FEATURES under version 1: {other:?}, expected the invalid event error"
                ));
            }
        }
        // The run ends here; an answer is a failure.
        let r = msr_protocol::hv_features(&mut ch.msr);
        Err(alloc::format!(
            "the simulator answered HV_FEATURES through the MSR protocol under version 1: {r:?}"
        ))
    })
}

/// A request whose protocol version field says 2 on a version 1 hypervisor ends the run.
pub fn ghcb_version_field() -> Outcome {
    ghcb::with(|ch| {
        let t = ch.ghcb.take().ok_or("no GHCB registered")?;
        let mut t = t.with_version(GhcbVersion::V2);
        // The run ends here; an answer is a failure.
        let r = nae::rdtsc(&mut t);
        Err(alloc::format!(
            "the simulator answered a version 2 request under version 1: {r:?}"
        ))
    })
}
