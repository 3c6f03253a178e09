//! CPUID emulation with a per-CPU result cache. Under SNP the CPUID page is
//! the only source; otherwise the hypervisor is asked once per (leaf,
//! subleaf, XCR0) and the answer reused, which keeps hot CPUID loops out of
//! VMGEXIT. Answers that deny SEV terminate (see [`hides_sev`]).

use super::{Fault, Gpr, RegisterFrame, Step, VcConfig, VcOutcome, VcPerCpu};
use crate::cpuid::hides_sev;
use crate::ghcb::GhcbTransport;
use crate::nae;
use crate::termination::GuestReason;

const CACHE_ENTRIES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    leaf: u32,
    subleaf: u32,
    xcr0: u64,
    regs: [u32; 4],
}

/// A small fixed-size CPUID result cache with round-robin replacement.
/// The key includes ECX for every leaf (never wrong, at worst a miss) and
/// XCR0 for leaf 0xD.
#[derive(Clone, Debug)]
pub struct CpuidCache {
    entries: [Option<Entry>; CACHE_ENTRIES],
    next: usize,
}

impl Default for CpuidCache {
    fn default() -> Self {
        Self::new()
    }
}

fn key_xcr0(leaf: u32, xcr0: u64) -> u64 {
    if leaf == 0xd { xcr0 } else { 0 }
}

impl CpuidCache {
    pub const fn new() -> Self {
        Self {
            entries: [None; CACHE_ENTRIES],
            next: 0,
        }
    }

    pub fn lookup(&self, leaf: u32, subleaf: u32, xcr0: u64) -> Option<[u32; 4]> {
        let x = key_xcr0(leaf, xcr0);
        self.entries
            .iter()
            .flatten()
            .find(|e| e.leaf == leaf && e.subleaf == subleaf && e.xcr0 == x)
            .map(|e| e.regs)
    }

    pub fn insert(&mut self, leaf: u32, subleaf: u32, xcr0: u64, regs: [u32; 4]) {
        self.entries[self.next] = Some(Entry {
            leaf,
            subleaf,
            xcr0: key_xcr0(leaf, xcr0),
            regs,
        });
        self.next = (self.next + 1) % CACHE_ENTRIES;
    }

    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

/// Emulates a CPUID instruction of `len` bytes (already matched).
pub(super) fn emulate<R, T>(
    len: u8,
    regs: &mut R,
    ghcb: &mut T,
    cpu: &mut VcPerCpu,
    cfg: &VcConfig<'_>,
) -> Step
where
    R: RegisterFrame + ?Sized,
    T: GhcbTransport + ?Sized,
{
    let leaf = regs.gpr(Gpr::Rax) as u32;
    let subleaf = regs.gpr(Gpr::Rcx) as u32;
    let xcr0 = cpu.xcr0;
    let out = match cpu.cpuid.lookup(leaf, subleaf, xcr0) {
        Some(hit) => hit,
        None => {
            let r = match cfg.cpuid_page {
                // A leaf missing from the page reads as zeros, as CPUID does
                // for leaves out of range; the hypervisor is never asked.
                Some(page) => page.lookup(leaf, subleaf, xcr0, 0).unwrap_or([0; 4]),
                None => nae::cpuid(ghcb, leaf, subleaf, xcr0)?,
            };
            if hides_sev(leaf, r) {
                return Err(Fault::Terminate(GuestReason::CpuidLies));
            }
            cpu.cpuid.insert(leaf, subleaf, xcr0, r);
            r
        }
    };
    for (r, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx]
        .into_iter()
        .zip(out)
    {
        regs.set_gpr(r, v as u64);
    }
    Ok(VcOutcome::Advance(len))
}
