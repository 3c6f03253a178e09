//! Exceptions the #VC core forwards to the guest, and the event-injection
//! format a hypervisor uses in SW_EXITINFO2 when it answers a NAE event with
//! an exception (`SW_EXITINFO1[31:0]` = 1).

/// An exception for the interrupted guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #DB (vector 1).
    Db,
    /// #UD (vector 6).
    Ud,
    /// #GP (vector 13) with its error code.
    Gp(u32),
    /// #PF (vector 14): the faulting linear address goes to CR2.
    Pf { address: u64, error_code: u32 },
    /// #AC (vector 17), error code 0.
    Ac,
}

/// #PF error code: the page was present (protection violation).
pub const PF_PRESENT: u32 = 1 << 0;
/// #PF error code: the access was a write.
pub const PF_WRITE: u32 = 1 << 1;
/// #PF error code: the access was an instruction fetch.
pub const PF_FETCH: u32 = 1 << 4;

const EVENTINJ_VALID: u64 = 1 << 31;
const EVENTINJ_ERROR_VALID: u64 = 1 << 11;
const EVENTINJ_TYPE_EXCEPTION: u64 = 3 << 8;
const EVENTINJ_TYPE_MASK: u64 = 7 << 8;

impl Exception {
    /// The vector number.
    pub const fn vector(self) -> u8 {
        match self {
            Self::Db => 1,
            Self::Ud => 6,
            Self::Gp(_) => 13,
            Self::Pf { .. } => 14,
            Self::Ac => 17,
        }
    }

    /// The error code the CPU would push, if the vector has one.
    pub const fn error_code(self) -> Option<u32> {
        match self {
            Self::Gp(e) => Some(e),
            Self::Pf { error_code, .. } => Some(error_code),
            Self::Ac => Some(0),
            Self::Db | Self::Ud => None,
        }
    }

    /// EVENTINJ encoding (hypervisor side: the SW_EXITINFO2 of an exception
    /// reply). #PF cannot be injected this way: CR2 has no channel.
    pub fn event_injection(self) -> u64 {
        let mut v = EVENTINJ_VALID | EVENTINJ_TYPE_EXCEPTION | self.vector() as u64;
        if let Some(e) = self.error_code() {
            v |= EVENTINJ_ERROR_VALID | (e as u64) << 32;
        }
        v
    }

    /// Decodes the exception a hypervisor asks the guest to raise. Only a
    /// valid exception-type event for #GP or #UD is accepted: any other
    /// vector could be used to trick the guest into handling a fault that did
    /// not happen (the GHCB specification allows the hypervisor no more).
    pub fn from_hypervisor(event: u64) -> Option<Self> {
        if event & EVENTINJ_VALID == 0 || event & EVENTINJ_TYPE_MASK != EVENTINJ_TYPE_EXCEPTION {
            return None;
        }
        let has_error = event & EVENTINJ_ERROR_VALID != 0;
        match (event & 0xff, has_error) {
            (13, true) => Some(Self::Gp((event >> 32) as u32)),
            (13, false) => Some(Self::Gp(0)),
            (6, false) => Some(Self::Ud),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gp_and_ud_are_accepted() {
        assert_eq!(
            Exception::from_hypervisor(Exception::Gp(0x18).event_injection()),
            Some(Exception::Gp(0x18))
        );
        assert_eq!(
            Exception::from_hypervisor(Exception::Ud.event_injection()),
            Some(Exception::Ud)
        );
        for e in [
            Exception::Db,
            Exception::Ac,
            Exception::Pf {
                address: 0,
                error_code: 2,
            },
        ] {
            assert_eq!(Exception::from_hypervisor(e.event_injection()), None);
        }
        let gp = Exception::Gp(0).event_injection();
        assert_eq!(Exception::from_hypervisor(gp & !EVENTINJ_VALID), None);
        // NMI type (2) with vector 13.
        assert_eq!(
            Exception::from_hypervisor((gp & !EVENTINJ_TYPE_MASK) | 2 << 8),
            None
        );
        // #UD with an error code is not something the CPU produces.
        assert_eq!(
            Exception::from_hypervisor(Exception::Ud.event_injection() | EVENTINJ_ERROR_VALID),
            None
        );
    }

    #[test]
    fn event_injection_layout() {
        assert_eq!(Exception::Ud.event_injection(), 0x8000_0306);
        assert_eq!(Exception::Gp(5).event_injection(), 0x5_8000_0b0d);
    }
}
