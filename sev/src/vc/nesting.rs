//! Nesting of GHCB users on one CPU (scenario 5). A #VC can arrive while the
//! GHCB is in use (an NMI handler doing I/O inside a #VC, a #VC taken inside
//! the #VC handler): the outer user's request must survive. One level of
//! nesting is allowed: the nested user saves the GHCB into a per-CPU backup
//! page, uses it, and restores it. Anything deeper means the hypervisor is
//! feeding us #VCs in a loop: terminate.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::ghcb::Ghcb;
use crate::termination::GuestReason;

/// Per-CPU count of active GHCB users. Safe to share with NMI context: it is
/// only changed through atomic read-modify-write.
#[derive(Debug, Default)]
pub struct GhcbNesting {
    depth: AtomicU8,
}

/// Which GHCB user this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GhcbUse {
    /// Nobody else is using the GHCB.
    Outer,
    /// Another user is: save the GHCB first and restore it when done.
    Nested,
}

impl GhcbNesting {
    pub const fn new() -> Self {
        Self {
            depth: AtomicU8::new(0),
        }
    }

    /// Registers a GHCB user. Fails (and registers nothing) when two users
    /// are already active.
    pub fn enter(&self) -> Result<GhcbUse, GuestReason> {
        match self.depth.fetch_add(1, Ordering::Acquire) {
            0 => Ok(GhcbUse::Outer),
            1 => Ok(GhcbUse::Nested),
            _ => {
                self.depth.fetch_sub(1, Ordering::Release);
                Err(GuestReason::NestedVc)
            }
        }
    }

    /// Unregisters the most recent user.
    pub fn exit(&self) {
        self.depth.fetch_sub(1, Ordering::Release);
    }

    /// Runs `f` with the GHCB as a registered user, telling it which user it
    /// is: a nested user's GHCB contents are saved into `backup` before and
    /// restored after, so that the interrupted user finds its request (or
    /// the hypervisor's reply to it) as it left it.
    pub fn with_ghcb<T>(
        &self,
        ghcb: &mut Ghcb,
        backup: &mut Ghcb,
        f: impl FnOnce(&mut Ghcb, GhcbUse) -> T,
    ) -> Result<T, GuestReason> {
        let u = self.enter()?;
        if u == GhcbUse::Nested {
            backup.copy_from(ghcb);
        }
        let r = f(ghcb, u);
        if u == GhcbUse::Nested {
            ghcb.copy_from(backup);
        }
        self.exit();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ghcb::GhcbField;

    #[test]
    fn one_level_of_nesting_then_refusal() {
        let n = GhcbNesting::new();
        assert_eq!(n.enter(), Ok(GhcbUse::Outer));
        assert_eq!(n.enter(), Ok(GhcbUse::Nested));
        assert_eq!(n.enter(), Err(GuestReason::NestedVc));
        assert_eq!(
            n.enter(),
            Err(GuestReason::NestedVc),
            "refusals do not leak depth"
        );
        n.exit();
        assert_eq!(n.enter(), Ok(GhcbUse::Nested));
        n.exit();
        n.exit();
        assert_eq!(n.enter(), Ok(GhcbUse::Outer));
    }

    #[test]
    fn nested_user_preserves_the_outer_request() {
        let n = GhcbNesting::new();
        let mut ghcb = Box::new(Ghcb::new());
        let mut backup = Box::new(Ghcb::new());
        let outer = n.enter().unwrap();
        assert_eq!(outer, GhcbUse::Outer);
        ghcb.set(GhcbField::Rax, 0x11);
        let inner = n
            .with_ghcb(&mut ghcb, &mut backup, |g, u| {
                assert_eq!(u, GhcbUse::Nested);
                let seen = g.get(GhcbField::Rax);
                g.prepare(2);
                g.set(GhcbField::Rcx, 0x22);
                (seen, g.get(GhcbField::Rax))
            })
            .unwrap();
        assert_eq!(
            inner.0,
            Some(0x11),
            "the nested user sees the outer request"
        );
        assert_eq!(
            inner.1, None,
            "the nested user starts from a cleared bitmap"
        );
        assert_eq!(ghcb.get(GhcbField::Rax), Some(0x11));
        assert_eq!(ghcb.get(GhcbField::Rcx), None);
        // A third level is refused without touching the GHCB.
        n.enter().unwrap();
        let deep = n.with_ghcb(&mut ghcb, &mut backup, |g, _| g.set(GhcbField::Rax, 0));
        assert_eq!(deep, Err(GuestReason::NestedVc));
        assert_eq!(ghcb.get(GhcbField::Rax), Some(0x11));
    }
}
