//! What CPUID reports to an SEV-ES guest: the host's values, with SVM hidden, a hypervisor
//! present, the vCPU's APIC ID, and SEV/SEV-ES with the simulated C-bit in leaf 0x8000_001F.
//! The guest reaches CPUID only through the GHCB (an intercepted CPUID becomes #VC), so this
//! is what the simulator answers the NAE event and the MSR-protocol request with.

/// The four output registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// CPUID leaf 0x8000_001F EAX: SEV.
pub const SEV: u32 = 1 << 1;
/// CPUID leaf 0x8000_001F EAX: SEV-ES.
pub const SEV_ES: u32 = 1 << 3;
/// Physical address bits lost to the C-bit (CPUID 0x8000_001F EBX[11:6]).
pub const PHYS_ADDR_REDUCTION: u32 = 1;

/// The guest's view of CPUID leaf `leaf` (any subleaf) given the host's answer.
pub fn guest_view(leaf: u32, host: Regs, apic_id: u32, c_bit: u32) -> Regs {
    let mut r = host;
    match leaf {
        1 => {
            r.ebx = (r.ebx & 0x00ff_ffff) | (apic_id << 24);
            r.ecx |= 1 << 31; // hypervisor present
            r.ecx |= 1 << 21; // x2APIC: the only APIC mode the simulator offers
            r.ecx &= !(1 << 5); // no VMX
        }
        0xb | 0x1f => r.edx = apic_id,
        // The SEV leaf exists even where the host's highest extended leaf is below it.
        0x8000_0000 => r.eax = r.eax.max(0x8000_001f),
        0x8000_0001 => r.ecx &= !(1 << 2),              // no SVM
        0x8000_0008 => r.eax = (r.eax & !0xff) | c_bit, // usable physical address bits
        0x8000_000a => r = Regs::default(),
        0x8000_001e => r.eax = apic_id,
        0x8000_001f => {
            r = Regs {
                eax: SEV | SEV_ES,
                ebx: c_bit | PHYS_ADDR_REDUCTION << 6,
                ecx: 1,
                edx: 1,
            }
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Regs = Regs {
        eax: 0x1111_1130,
        ebx: 0x2222_2222,
        ecx: 0xffff_ffff,
        edx: 0x4444_4444,
    };

    #[test]
    fn reports_sev_es_and_the_c_bit() {
        let r = guest_view(0x8000_001f, HOST, 0, 47);
        assert_eq!(r.eax, SEV | SEV_ES);
        assert_eq!(r.ebx & 0x3f, 47);
        assert_eq!((r.ebx >> 6) & 0x3f, PHYS_ADDR_REDUCTION);
    }

    #[test]
    fn hides_svm_and_shows_the_vcpu() {
        assert_eq!(guest_view(0x8000_0001, HOST, 0, 47).ecx & (1 << 2), 0);
        assert_eq!(guest_view(0x8000_000a, HOST, 0, 47), Regs::default());
        let l1 = guest_view(1, HOST, 3, 47);
        assert_eq!(l1.ebx >> 24, 3);
        assert_ne!(l1.ecx & (1 << 31), 0);
        assert_eq!(guest_view(0x8000_0008, HOST, 0, 47).eax & 0xff, 47);
        assert_eq!(guest_view(0, HOST, 0, 47), HOST);
        let ext = Regs {
            eax: 0x8000_001a,
            ..HOST
        };
        assert_eq!(guest_view(0x8000_0000, ext, 0, 47).eax, 0x8000_001f);
    }
}
