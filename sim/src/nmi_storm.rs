//! NMI storms for tests (the test hypercall `NMI_STORM` of `handoff::sim_hypercall`): the
//! simulator injects a number of NMIs into the calling vCPU, each one a pseudo-random number of
//! that vCPU's exits after the NMI_COMPLETE of the previous one.
//!
//! The simulator can only inject an event when the guest exits, so the gaps are counted in
//! exits, and they pick where the NMIs land: a gap of 0 injects the next NMI at the VMRUN right
//! after NMI_COMPLETE, i.e. between the guest's NMI_COMPLETE and its IRET, the worst case for
//! an NMI handler; in a #VC-heavy guest a gap of 1 or 2 lands on the first instruction of a #VC
//! handler (the exit that raised the #VC) or right after the #VC handler's VMGEXIT, while it
//! holds the GHCB. The generator is a fixed-seed xorshift, so that a failing storm fails the
//! same way again.

/// One vCPU's storm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NmiStorm {
    /// NMIs not injected yet.
    left: u64,
    /// Exits to let pass before the next NMI.
    wait: u64,
    min_gap: u32,
    max_gap: u32,
    /// xorshift64 state (never 0).
    rng: u64,
}

impl NmiStorm {
    /// A storm of `count` NMIs whose gaps are drawn from `min_gap..=max_gap` exits, the first
    /// one counted from now; `seed` picks the sequence. `None` when the gap range is empty.
    pub fn new(count: u64, min_gap: u32, max_gap: u32, seed: u64) -> Option<Self> {
        if min_gap > max_gap {
            return None;
        }
        let mut s = Self {
            left: count,
            wait: 0,
            min_gap,
            max_gap,
            rng: seed.max(1),
        };
        s.wait = s.gap();
        Some(s)
    }

    fn gap(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = u64::from(self.max_gap - self.min_gap) + 1;
        u64::from(self.min_gap) + self.rng % span
    }

    /// Call once per exit of the vCPU while it can take an NMI (none pending, none in its
    /// handler): whether the next NMI of the storm is due now (it then counts as injected).
    pub fn due(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        if self.wait > 0 {
            self.wait -= 1;
            return false;
        }
        self.left -= 1;
        true
    }

    /// The guest sent NMI_COMPLETE: the gap to the next NMI starts.
    pub fn completed(&mut self) {
        self.wait = self.gap();
    }

    /// NMIs not injected yet.
    pub fn left(&self) -> u64 {
        self.left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a storm against a guest that sends NMI_COMPLETE `handler_exits` exits after each
    /// NMI; returns the exits at which NMIs were injected.
    fn injections(mut s: NmiStorm, handler_exits: u64, exits: u64) -> Vec<u64> {
        let mut at = Vec::new();
        let mut in_handler = None;
        for exit in 0..exits {
            match in_handler {
                Some(done) if exit == done => {
                    s.completed();
                    in_handler = None;
                }
                Some(_) => continue,
                None => {}
            }
            if s.due() {
                at.push(exit);
                in_handler = Some(exit + handler_exits);
            }
        }
        at
    }

    #[test]
    fn gap_zero_injects_right_after_each_completion() {
        let s = NmiStorm::new(4, 0, 0, 7).unwrap();
        assert_eq!(injections(s, 1, 100), [0, 1, 2, 3]);
    }

    #[test]
    fn fixed_gaps_count_exits_from_the_completion() {
        let s = NmiStorm::new(3, 2, 2, 7).unwrap();
        // Injected at 2; its handler completes at exit 3, the next is due 2 exits later.
        assert_eq!(injections(s, 1, 100), [2, 5, 8]);
    }

    #[test]
    fn random_gaps_stay_in_range_cover_it_and_repeat_with_the_seed() {
        let a = injections(NmiStorm::new(1000, 0, 3, 42).unwrap(), 1, 1_000_000);
        assert_eq!(a.len(), 1000, "every NMI is injected");
        let gaps: Vec<u64> = a.windows(2).map(|w| w[1] - w[0] - 1).collect();
        assert!(gaps.iter().all(|&g| g <= 3));
        for g in 0..=3 {
            assert!(gaps.contains(&g), "gap {g} never drawn");
        }
        let b = injections(NmiStorm::new(1000, 0, 3, 42).unwrap(), 1, 1_000_000);
        assert_eq!(a, b, "same seed, same storm");
        let c = injections(NmiStorm::new(1000, 0, 3, 43).unwrap(), 1, 1_000_000);
        assert_ne!(a, c, "another seed, another storm");
    }

    #[test]
    fn empty_storms_and_ranges() {
        let mut s = NmiStorm::new(0, 0, 0, 1).unwrap();
        assert!(!s.due());
        assert_eq!(s.left(), 0);
        assert_eq!(NmiStorm::new(5, 3, 2, 1), None);
        let mut s = NmiStorm::new(2, 0, 0, 1).unwrap();
        assert!(s.due());
        assert_eq!(s.left(), 1);
    }
}
