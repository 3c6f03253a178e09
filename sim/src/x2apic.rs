//! The virtual x2APIC of each vCPU, as far as it is logic: the MSR numbers, decoding an ICR
//! write into an IPI, and the mailbox other vCPUs post IPIs to (atomics only: a vCPU running on
//! another host CPU reads it at its next #VMEXIT).

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// x2APIC registers (MSR 0x800 + xAPIC offset / 16).
pub const MSR_ID: u32 = 0x802;
pub const MSR_VERSION: u32 = 0x803;
pub const MSR_TPR: u32 = 0x808;
pub const MSR_EOI: u32 = 0x80b;
pub const MSR_LDR: u32 = 0x80d;
pub const MSR_SVR: u32 = 0x80f;
pub const MSR_ESR: u32 = 0x828;
pub const MSR_ICR: u32 = 0x830;
pub const MSR_SELF_IPI: u32 = 0x83f;

/// APIC_BASE as the guest reads it: the default base, enabled, x2APIC mode, BSP flag for vCPU 0.
pub fn apic_base(bsp: bool) -> u64 {
    0xfee0_0000 | 1 << 11 | 1 << 10 | u64::from(bsp) << 8
}

/// What an IPI delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Fixed(u8),
    Nmi,
    Init,
    Startup(u8),
}

/// Where an IPI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Apic(u32),
    SelfOnly,
    All,
    AllButSelf,
}

/// A decoded ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub delivery: Delivery,
    pub destination: Destination,
}

/// An ICR value the virtual x2APIC does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrError {
    /// Lowest priority, SMI, ExtINT or a reserved delivery mode.
    DeliveryMode(u8),
    /// Logical destination mode.
    Logical,
    /// A fixed interrupt with a vector below 16 (an illegal vector).
    IllegalVector(u8),
}

impl Ipi {
    /// Decodes an x2APIC ICR write (`None`: an INIT level de-assert, which does nothing).
    pub fn decode(icr: u64) -> Result<Option<Self>, IcrError> {
        let vector = icr as u8;
        let mode = ((icr >> 8) & 7) as u8;
        let level_assert = icr & (1 << 14) != 0;
        let level_triggered = icr & (1 << 15) != 0;
        if icr & (1 << 11) != 0 {
            return Err(IcrError::Logical);
        }
        let delivery = match mode {
            0 if vector < 16 => return Err(IcrError::IllegalVector(vector)),
            0 => Delivery::Fixed(vector),
            4 => Delivery::Nmi,
            5 if level_triggered && !level_assert => return Ok(None),
            5 => Delivery::Init,
            6 => Delivery::Startup(vector),
            m => return Err(IcrError::DeliveryMode(m)),
        };
        let destination = match (icr >> 18) & 3 {
            0 => Destination::Apic((icr >> 32) as u32),
            1 => Destination::SelfOnly,
            2 => Destination::All,
            _ => Destination::AllButSelf,
        };
        Ok(Some(Self {
            delivery,
            destination,
        }))
    }

    /// Whether the vCPU with APIC ID `target` receives this IPI sent by `sender`.
    pub fn reaches(&self, sender: u32, target: u32) -> bool {
        match self.destination {
            Destination::Apic(id) => id == target,
            Destination::SelfOnly => target == sender,
            Destination::All => true,
            Destination::AllButSelf => target != sender,
        }
    }
}

const INIT: u32 = 1 << 0;
const STARTUP: u32 = 1 << 1;
const NMI: u32 = 1 << 2;

/// IPIs posted to one vCPU and not yet taken by it.
#[derive(Debug, Default)]
pub struct Mailbox {
    flags: AtomicU32,
    /// Fixed interrupts requested (the IRR), 256 bits.
    irr: [AtomicU64; 4],
}

impl Mailbox {
    pub const fn new() -> Self {
        Self {
            flags: AtomicU32::new(0),
            irr: [const { AtomicU64::new(0) }; 4],
        }
    }

    /// Posts `d`. Like the hardware latches, a second INIT, SIPI or NMI before the first is
    /// taken merges with it.
    pub fn post(&self, d: Delivery) {
        match d {
            Delivery::Fixed(v) => {
                self.irr[usize::from(v / 64)].fetch_or(1 << (v % 64), Ordering::AcqRel);
            }
            Delivery::Nmi => _ = self.flags.fetch_or(NMI, Ordering::AcqRel),
            Delivery::Init => _ = self.flags.fetch_or(INIT, Ordering::AcqRel),
            Delivery::Startup(_) => _ = self.flags.fetch_or(STARTUP, Ordering::AcqRel),
        }
    }

    fn take(&self, flag: u32) -> bool {
        self.flags.fetch_and(!flag, Ordering::AcqRel) & flag != 0
    }

    pub fn take_nmi(&self) -> bool {
        self.take(NMI)
    }

    pub fn take_init(&self) -> bool {
        self.take(INIT)
    }

    pub fn take_startup(&self) -> bool {
        self.take(STARTUP)
    }

    /// Whether an INIT, SIPI or NMI waits.
    pub fn has_signal(&self) -> bool {
        self.flags.load(Ordering::Acquire) != 0
    }

    /// Whether an NMI waits (without taking it).
    pub fn has_nmi(&self) -> bool {
        self.flags.load(Ordering::Acquire) & NMI != 0
    }

    /// The highest requested fixed vector.
    pub fn highest_irr(&self) -> Option<u8> {
        (0..4).rev().find_map(|i| {
            let w = self.irr[i].load(Ordering::Acquire);
            (w != 0).then(|| (i * 64 + 63 - w.leading_zeros() as usize) as u8)
        })
    }

    /// Takes fixed vector `v` out of the IRR (it is being delivered).
    pub fn take_irr(&self, v: u8) {
        self.irr[usize::from(v / 64)].fetch_and(!(1 << (v % 64)), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_ipis_a_guest_sends() {
        let ipi = |v| Ipi::decode(v).unwrap().unwrap();
        assert_eq!(
            ipi(0x0000_0003_0000_4500),
            Ipi {
                delivery: Delivery::Init,
                destination: Destination::Apic(3)
            }
        );
        assert_eq!(ipi(0x0000_0002_0000_4608).delivery, Delivery::Startup(8));
        assert_eq!(ipi(0x4400 | 1 << 18).destination, Destination::SelfOnly);
        assert_eq!(ipi(0x40 | 3 << 18).delivery, Delivery::Fixed(0x40));
        assert_eq!(Ipi::decode(0x8500), Ok(None), "INIT level de-assert");
        assert_eq!(Ipi::decode(0x0f), Err(IcrError::IllegalVector(0x0f)));
        assert_eq!(Ipi::decode(0x100), Err(IcrError::DeliveryMode(1)));
        assert_eq!(Ipi::decode(0x800 | 0x40), Err(IcrError::Logical));
        let all_but = ipi(0x4400 | 3 << 18);
        assert!(all_but.reaches(0, 1) && !all_but.reaches(1, 1));
    }

    #[test]
    fn mailbox_latches_signals_and_orders_vectors() {
        let m = Mailbox::new();
        assert!(!m.has_signal() && m.highest_irr().is_none());
        m.post(Delivery::Nmi);
        m.post(Delivery::Nmi);
        m.post(Delivery::Fixed(0x31));
        m.post(Delivery::Fixed(0xf0));
        assert!(m.has_nmi() && m.take_nmi());
        assert!(
            !m.has_nmi() && !m.take_nmi(),
            "two NMIs before the first is taken are one"
        );
        assert_eq!(m.highest_irr(), Some(0xf0));
        m.take_irr(0xf0);
        assert_eq!(m.highest_irr(), Some(0x31));
        m.post(Delivery::Init);
        m.post(Delivery::Startup(9));
        assert!(m.has_signal() && m.take_init() && m.take_startup());
        assert!(!m.has_signal());
    }
}
