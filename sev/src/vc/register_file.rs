//! A plain register file implementing [`RegisterFrame`]: what a hypervisor holds for a vCPU
//! (the simulator fills it from the VMCB), and the frame the tests, fuzz targets and benches
//! drive the emulation core with.

use super::{Gpr, RegisterFrame};

/// General registers (indexed by [`Gpr`]), RIP, RFLAGS, CPL and the FS/GS bases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterFile {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cpl: u8,
    pub fs_base: u64,
    pub gs_base: u64,
}

impl RegisterFrame for RegisterFile {
    fn gpr(&self, r: Gpr) -> u64 {
        self.gpr[r as usize]
    }
    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.gpr[r as usize] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn fs_base(&self) -> u64 {
        self.fs_base
    }
    fn gs_base(&self) -> u64 {
        self.gs_base
    }
}
