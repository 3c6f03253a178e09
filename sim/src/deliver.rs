//! Exception delivery into the guest, done by the simulator as the CPU would.
//!
//! QEMU's TCG SVM drops the error code of an exception injected through EVENTINJ for vectors
//! it does not know to have one (#VC among them), so the simulator delivers #VC itself: it reads
//! the guest's IDT gate, picks the stack (the gate's IST slot from the guest's TSS, else the
//! current stack at CPL 0, else RSP0), pushes SS, RSP, RFLAGS, CS, RIP and the error code, and
//! loads CS:RIP from the gate. A fault while doing so escalates as on hardware: to #DF, and a
//! fault delivering the #DF is a shutdown (triple fault).

use crate::memory::{GuestMemory, WalkError};
use crate::svm::{Segment, Vmcb, off};
use core::fmt;

/// Why delivering an exception failed (each is a fault the CPU would take during delivery).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryFault {
    /// The gate lies beyond the IDT limit.
    OutsideIdt { vector: u8 },
    /// The gate is not present or not an interrupt/trap gate.
    BadGate { vector: u8, type_attr: u8 },
    /// The gate's code selector is outside the GDT or not a present 64-bit code segment.
    BadCodeSegment { selector: u16 },
    /// Reading the IDT, GDT or TSS or writing the frame hit an unusable address.
    Memory(WalkError),
}

impl fmt::Display for DeliveryFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideIdt { vector } => write!(f, "vector {vector} is beyond the IDT limit"),
            Self::BadGate { vector, type_attr } => {
                write!(
                    f,
                    "IDT gate {vector} is unusable (type/attributes {type_attr:#x})"
                )
            }
            Self::BadCodeSegment { selector } => {
                write!(
                    f,
                    "gate selector {selector:#x} is not a 64-bit code segment"
                )
            }
            Self::Memory(e) => write!(f, "{e}"),
        }
    }
}

impl From<WalkError> for DeliveryFault {
    fn from(e: WalkError) -> Self {
        Self::Memory(e)
    }
}

/// An exception delivery failed twice: the guest shut down.
#[derive(Clone, Copy, Debug)]
pub struct TripleFault {
    pub vector: u8,
    pub first: DeliveryFault,
    pub second: DeliveryFault,
}

impl fmt::Display for TripleFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delivering vector {} failed ({}), then delivering #DF failed ({}): shutdown",
            self.vector, self.first, self.second
        )
    }
}

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;
const RFLAGS_VM: u64 = 1 << 17;
const DOUBLE_FAULT: u8 = 8;

/// Delivers exception `vector` (with `error_code`, if it has one) to the guest of `vmcb`,
/// escalating to #DF on a fault; `Err` when the guest shut down.
pub fn exception(
    vmcb: &mut Vmcb,
    mem: &GuestMemory,
    vector: u8,
    error_code: Option<u64>,
) -> Result<(), TripleFault> {
    let first = match deliver(vmcb, mem, vector, error_code) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    deliver(vmcb, mem, DOUBLE_FAULT, Some(0)).map_err(|second| TripleFault {
        vector,
        first,
        second,
    })
}

/// One delivery attempt; the VMCB changes only when it succeeds.
fn deliver(
    vmcb: &mut Vmcb,
    mem: &GuestMemory,
    vector: u8,
    error_code: Option<u64>,
) -> Result<(), DeliveryFault> {
    let cr3: u64 = vmcb.get(off::CR3);
    let idtr = vmcb.segment(off::IDTR);
    let gate_offset = u64::from(vector) * 16;
    if gate_offset + 15 > u64::from(idtr.limit) {
        return Err(DeliveryFault::OutsideIdt { vector });
    }
    let mut gate = [0u8; 16];
    mem.read_virt(cr3, idtr.base.wrapping_add(gate_offset), &mut gate)?;
    let type_attr = gate[5];
    // Present, 64-bit interrupt (0xE) or trap (0xF) gate.
    if type_attr & 0x80 == 0 || !matches!(type_attr & 0x1f, 0x0e | 0x0f) {
        return Err(DeliveryFault::BadGate { vector, type_attr });
    }
    let handler = u64::from(u16::from_le_bytes([gate[0], gate[1]]))
        | u64::from(u16::from_le_bytes([gate[6], gate[7]])) << 16
        | u64::from(u32::from_le_bytes([gate[8], gate[9], gate[10], gate[11]])) << 32;
    let selector = u16::from_le_bytes([gate[2], gate[3]]);
    let ist = gate[4] & 7;
    let cs = code_segment(vmcb, mem, cr3, selector)?;

    let cpl: u8 = vmcb.get(off::CPL);
    let old_ss = vmcb.segment(off::SS);
    let old_rsp: u64 = vmcb.get(off::RSP);
    let tr = vmcb.segment(off::TR);
    let tss_rsp = |slot_offset: u64| -> Result<u64, DeliveryFault> {
        let mut b = [0u8; 8];
        mem.read_virt(cr3, tr.base.wrapping_add(slot_offset), &mut b)?;
        Ok(u64::from_le_bytes(b))
    };
    let stack = if ist != 0 {
        tss_rsp(0x24 + 8 * u64::from(ist - 1))?
    } else if cpl != 0 {
        tss_rsp(4)?
    } else {
        old_rsp
    };
    let rflags: u64 = vmcb.get(off::RFLAGS);
    let old_cs = vmcb.segment(off::CS);
    let mut frame = [
        error_code.unwrap_or(0),
        vmcb.rip(),
        u64::from(old_cs.selector),
        rflags,
        old_rsp,
        u64::from(old_ss.selector),
    ];
    let words: &mut [u64] = if error_code.is_some() {
        &mut frame
    } else {
        &mut frame[1..]
    };
    let new_rsp = (stack & !0xf).wrapping_sub(8 * words.len() as u64);
    let mut bytes = [0u8; 48];
    for (b, w) in bytes.chunks_exact_mut(8).zip(words.iter()) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    mem.write_virt(cr3, new_rsp, &bytes[..8 * words.len()])?;

    let mut new_flags = rflags & !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM);
    if type_attr & 0x1f == 0x0e {
        new_flags &= !RFLAGS_IF;
    }
    vmcb.set(off::RFLAGS, new_flags);
    vmcb.set(off::RSP, new_rsp);
    vmcb.set_rip(handler);
    vmcb.set_segment(off::CS, cs);
    if cpl != 0 {
        // A privilege change in 64-bit mode loads SS with a null selector.
        vmcb.set_segment(
            off::SS,
            Segment {
                selector: 0,
                ..old_ss
            },
        );
        vmcb.set(off::CPL, 0u8);
    }
    // The interrupt shadow ends with the delivery.
    let int_state: u64 = vmcb.get(off::INT_STATE);
    vmcb.set(off::INT_STATE, int_state & !1);
    Ok(())
}

/// The hidden state of `selector` from the guest's GDT: a present 64-bit code segment.
fn code_segment(
    vmcb: &Vmcb,
    mem: &GuestMemory,
    cr3: u64,
    selector: u16,
) -> Result<Segment, DeliveryFault> {
    let gdtr = vmcb.segment(off::GDTR);
    let index = u64::from(selector & !7);
    if selector & 4 != 0 || index == 0 || index + 7 > u64::from(gdtr.limit) {
        return Err(DeliveryFault::BadCodeSegment { selector });
    }
    let mut b = [0u8; 8];
    mem.read_virt(cr3, gdtr.base.wrapping_add(index), &mut b)?;
    let d = u64::from_le_bytes(b);
    let access = (d >> 40) as u8;
    let flags = ((d >> 52) & 0xf) as u16;
    // Present (bit 7), code (bits 4:3 = 11), long mode (flags bit 1 = L).
    if access & 0x80 == 0 || access & 0x18 != 0x18 || flags & 2 == 0 {
        return Err(DeliveryFault::BadCodeSegment { selector });
    }
    Ok(Segment {
        selector: selector & !3,
        attrib: u16::from(access) | flags << 8,
        limit: 0xffff_ffff,
        base: 0,
    })
}
