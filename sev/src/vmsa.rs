//! The VMSA: the SEV-ES/SNP save area, one 4K page per vCPU. An SNP guest
//! builds one to start an AP (SNP_AP_CREATION), and the simulator keeps its
//! guest state in the same layout. Offsets follow APM vol. 2 table B-4
//! ("VMSA layout, state save area for SEV-ES").

use core::mem::{offset_of, size_of};

/// A segment register in the save area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VmsaSegment {
    pub selector: u16,
    /// Packed attributes: descriptor bits 55:52 and 47:40 as bits 11:0.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

bitflags::bitflags! {
    /// SEV_FEATURES (VMSA offset 0x3B0): features a vCPU runs with. Bit n is
    /// SEV_STATUS bit n + 2.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SevFeatures: u64 {
        const SNP_ACTIVE = 1 << 0;
        const VTOM = 1 << 1;
        const REFLECT_VC = 1 << 2;
        const RESTRICTED_INJECTION = 1 << 3;
        const ALTERNATE_INJECTION = 1 << 4;
        const DEBUG_SWAP = 1 << 5;
        const PREVENT_HOST_IBS = 1 << 6;
        const BTB_ISOLATION = 1 << 7;
        const VMPL_SSS = 1 << 8;
        const SECURE_TSC = 1 << 9;
        const VMGEXIT_PARAMETER = 1 << 10;
        const IBS_VIRTUALIZATION = 1 << 12;
        const VMSA_REG_PROT = 1 << 14;
        const SMT_PROTECTION = 1 << 15;
    }
}

/// The VMSA page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct Vmsa {
    pub es: VmsaSegment,
    pub cs: VmsaSegment,
    pub ss: VmsaSegment,
    pub ds: VmsaSegment,
    pub fs: VmsaSegment,
    pub gs: VmsaSegment,
    pub gdtr: VmsaSegment,
    pub ldtr: VmsaSegment,
    pub idtr: VmsaSegment,
    pub tr: VmsaSegment,
    pub pl0_ssp: u64,
    pub pl1_ssp: u64,
    pub pl2_ssp: u64,
    pub pl3_ssp: u64,
    pub u_cet: u64,
    pub reserved_0xc8: [u8; 2],
    pub vmpl: u8,
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    pub efer: u64,
    pub reserved_0xd8: [u8; 104],
    pub xss: u64,
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub dr0: u64,
    pub dr1: u64,
    pub dr2: u64,
    pub dr3: u64,
    pub dr0_addr_mask: u64,
    pub dr1_addr_mask: u64,
    pub dr2_addr_mask: u64,
    pub dr3_addr_mask: u64,
    pub reserved_0x1c0: [u8; 24],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_0x248: [u8; 32],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_0x298: [u8; 80],
    pub pkru: u32,
    pub tsc_aux: u32,
    pub tsc_scale: u64,
    pub tsc_offset: u64,
    pub reserved_0x300: [u8; 8],
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub reserved_0x320: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub reserved_0x380: [u8; 16],
    pub guest_exit_info_1: u64,
    pub guest_exit_info_2: u64,
    pub guest_exit_int_info: u64,
    pub guest_nrip: u64,
    pub sev_features: u64,
    pub vintr_ctrl: u64,
    pub guest_exit_code: u64,
    pub virtual_tom: u64,
    pub tlb_id: u64,
    pub pcpu_id: u64,
    pub event_inj: u64,
    pub xcr0: u64,
    pub reserved_0x3f0: [u8; 16],
    pub x87_dp: u64,
    pub mxcsr: u32,
    pub x87_ftw: u16,
    pub x87_fsw: u16,
    pub x87_fcw: u16,
    pub x87_fop: u16,
    pub x87_ds: u16,
    pub x87_cs: u16,
    pub x87_rip: u64,
    pub fpreg_x87: [u8; 80],
    pub fpreg_xmm: [u8; 256],
    pub fpreg_ymm: [u8; 256],
    pub padding: [u8; 2448],
}

const _: () = {
    assert!(size_of::<VmsaSegment>() == 16);
    assert!(size_of::<Vmsa>() == 4096);
    assert!(offset_of!(Vmsa, sev_features) == 0x3b0);
};

impl Vmsa {
    /// An all-zero VMSA.
    pub const fn zeroed() -> Self {
        const SEG: VmsaSegment = VmsaSegment {
            selector: 0,
            attrib: 0,
            limit: 0,
            base: 0,
        };
        Self {
            es: SEG,
            cs: SEG,
            ss: SEG,
            ds: SEG,
            fs: SEG,
            gs: SEG,
            gdtr: SEG,
            ldtr: SEG,
            idtr: SEG,
            tr: SEG,
            pl0_ssp: 0,
            pl1_ssp: 0,
            pl2_ssp: 0,
            pl3_ssp: 0,
            u_cet: 0,
            reserved_0xc8: [0; 2],
            vmpl: 0,
            cpl: 0,
            reserved_0xcc: [0; 4],
            efer: 0,
            reserved_0xd8: [0; 104],
            xss: 0,
            cr4: 0,
            cr3: 0,
            cr0: 0,
            dr7: 0,
            dr6: 0,
            rflags: 0,
            rip: 0,
            dr0: 0,
            dr1: 0,
            dr2: 0,
            dr3: 0,
            dr0_addr_mask: 0,
            dr1_addr_mask: 0,
            dr2_addr_mask: 0,
            dr3_addr_mask: 0,
            reserved_0x1c0: [0; 24],
            rsp: 0,
            s_cet: 0,
            ssp: 0,
            isst_addr: 0,
            rax: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            cr2: 0,
            reserved_0x248: [0; 32],
            g_pat: 0,
            dbgctl: 0,
            br_from: 0,
            br_to: 0,
            last_excp_from: 0,
            last_excp_to: 0,
            reserved_0x298: [0; 80],
            pkru: 0,
            tsc_aux: 0,
            tsc_scale: 0,
            tsc_offset: 0,
            reserved_0x300: [0; 8],
            rcx: 0,
            rdx: 0,
            rbx: 0,
            reserved_0x320: 0,
            rbp: 0,
            rsi: 0,
            rdi: 0,
            r8: 0,
            r9: 0,
            r10: 0,
            r11: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            reserved_0x380: [0; 16],
            guest_exit_info_1: 0,
            guest_exit_info_2: 0,
            guest_exit_int_info: 0,
            guest_nrip: 0,
            sev_features: 0,
            vintr_ctrl: 0,
            guest_exit_code: 0,
            virtual_tom: 0,
            tlb_id: 0,
            pcpu_id: 0,
            event_inj: 0,
            xcr0: 0,
            reserved_0x3f0: [0; 16],
            x87_dp: 0,
            mxcsr: 0,
            x87_ftw: 0,
            x87_fsw: 0,
            x87_fcw: 0,
            x87_fop: 0,
            x87_ds: 0,
            x87_cs: 0,
            x87_rip: 0,
            fpreg_x87: [0; 80],
            fpreg_xmm: [0; 256],
            fpreg_ymm: [0; 256],
            padding: [0; 2448],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_apm_table() {
        let spec = [
            (offset_of!(Vmsa, cs), 0x010),
            (offset_of!(Vmsa, tr), 0x090),
            (offset_of!(Vmsa, pl0_ssp), 0x0a0),
            (offset_of!(Vmsa, u_cet), 0x0c0),
            (offset_of!(Vmsa, vmpl), 0x0ca),
            (offset_of!(Vmsa, cpl), 0x0cb),
            (offset_of!(Vmsa, efer), 0x0d0),
            (offset_of!(Vmsa, xss), 0x140),
            (offset_of!(Vmsa, cr4), 0x148),
            (offset_of!(Vmsa, cr3), 0x150),
            (offset_of!(Vmsa, cr0), 0x158),
            (offset_of!(Vmsa, dr7), 0x160),
            (offset_of!(Vmsa, rflags), 0x170),
            (offset_of!(Vmsa, rip), 0x178),
            (offset_of!(Vmsa, dr0), 0x180),
            (offset_of!(Vmsa, dr3_addr_mask), 0x1b8),
            (offset_of!(Vmsa, rsp), 0x1d8),
            (offset_of!(Vmsa, rax), 0x1f8),
            (offset_of!(Vmsa, star), 0x200),
            (offset_of!(Vmsa, kernel_gs_base), 0x220),
            (offset_of!(Vmsa, cr2), 0x240),
            (offset_of!(Vmsa, g_pat), 0x268),
            (offset_of!(Vmsa, last_excp_to), 0x290),
            (offset_of!(Vmsa, pkru), 0x2e8),
            (offset_of!(Vmsa, tsc_aux), 0x2ec),
            (offset_of!(Vmsa, tsc_scale), 0x2f0),
            (offset_of!(Vmsa, rcx), 0x308),
            (offset_of!(Vmsa, rbp), 0x328),
            (offset_of!(Vmsa, r15), 0x378),
            (offset_of!(Vmsa, guest_exit_info_1), 0x390),
            (offset_of!(Vmsa, sev_features), 0x3b0),
            (offset_of!(Vmsa, virtual_tom), 0x3c8),
            (offset_of!(Vmsa, event_inj), 0x3e0),
            (offset_of!(Vmsa, xcr0), 0x3e8),
            (offset_of!(Vmsa, x87_dp), 0x400),
            (offset_of!(Vmsa, mxcsr), 0x408),
            (offset_of!(Vmsa, x87_rip), 0x418),
            (offset_of!(Vmsa, fpreg_x87), 0x420),
            (offset_of!(Vmsa, fpreg_xmm), 0x470),
            (offset_of!(Vmsa, fpreg_ymm), 0x570),
            (offset_of!(Vmsa, padding), 0x670),
        ];
        for (i, (got, want)) in spec.into_iter().enumerate() {
            assert_eq!(got, want, "entry {i}");
        }
        assert_eq!(size_of::<Vmsa>(), 4096);
        assert_eq!(core::mem::align_of::<Vmsa>(), 4096);
    }

    #[test]
    fn vmsa_register_offsets_agree_with_ghcb() {
        // The GHCB save area mirrors the VMSA's register offsets.
        use crate::ghcb::GhcbField;
        assert_eq!(offset_of!(Vmsa, rax), GhcbField::Rax.offset());
        assert_eq!(offset_of!(Vmsa, rcx), GhcbField::Rcx.offset());
        assert_eq!(offset_of!(Vmsa, r15), GhcbField::R15.offset());
        assert_eq!(offset_of!(Vmsa, dr7), GhcbField::Dr7.offset());
        assert_eq!(offset_of!(Vmsa, xcr0), GhcbField::Xcr0.offset());
        assert_eq!(offset_of!(Vmsa, cpl), GhcbField::Cpl.offset());
        let v = Vmsa::zeroed();
        assert_eq!(v.sev_features, 0);
    }
}
