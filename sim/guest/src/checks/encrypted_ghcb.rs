//! A GHCB the guest left encrypted: a CPUID request written only through the GHCB's private
//! view. The simulator, like a hypervisor, reads the shared view (on hardware it would read
//! ciphertext), so it must find no request there and answer with the specification's error
//! reply (SW_EXITINFO1 = 2, "missing input") in the shared view, while the private view gets no
//! answer at all.

use sev::ghcb::{Ghcb, GhcbField, GhcbTransport};
use sev::host::HostError;
use sev::nae::{self, NaeError};

use super::Outcome;
use crate::ghcb;

pub fn encrypted_ghcb() -> Outcome {
    let (answer, reply) = ghcb::with(|ch| {
        // Nothing left in the shared view for the simulator to find: an all-zero page.
        ch.ghcb.as_mut()?.ghcb().copy_from(&Ghcb::new());
        let answer = nae::cpuid(&mut ch.private_ghcb(), 0, 0, 1);
        let reply = ch.ghcb.as_mut()?.ghcb().snapshot();
        Some((answer, reply))
    })
    .ok_or("no GHCB registered")?;
    // The private view still holds the request: RAX (an input) is there, RBX (only an output)
    // is not.
    ensure!(
        matches!(answer, Err(NaeError::MissingValid(GhcbField::Rbx))),
        "the private view holds an answer: {answer:x?}"
    );
    let missing = HostError::MissingInput(GhcbField::SwExitCode).code();
    let got = nae::check_reply(&reply);
    ensure!(
        got == Err(NaeError::HypervisorError(missing)),
        "shared view after the request: {got:x?}, expected the error reply {missing} (missing input)"
    );
    Ok(())
}
