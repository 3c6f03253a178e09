//! Decoding `MOV CRn, reg`, the one instruction behind the CR0/CR3 write intercepts.
//!
//! SEV-ES hardware completes a guest's control-register write itself and only then tells the
//! hypervisor (the CR write *trap* exits), so the hypervisor never needs guest registers for
//! it. QEMU's SVM has no such trap exits and no decode assists: the simulator intercepts CR0
//! and CR3 writes the ordinary way and completes them as the hardware would, which needs the
//! instruction's register operand. That is all this decodes; anything else writing CR0
//! (LMSW, CLTS) is refused by the caller.

/// A decoded `MOV CRn, reg` (0F 22 /r with mod = 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovToCr {
    /// The control register (0, 3, 4, 8, ...).
    pub cr: u8,
    /// The source register, by its x86 number (0 RAX .. 15 R15).
    pub gpr: u8,
    /// The instruction's length in bytes.
    pub len: u8,
}

/// Decodes the instruction starting at `bytes[0]`; `long_mode` when the code segment is
/// 64-bit (REX prefixes exist only there). Legacy prefixes other than operand/address size are
/// refused, except LOCK, which AMD defines as CR8 access from outside 64-bit mode (`cr + 8`).
pub fn decode(bytes: &[u8], long_mode: bool) -> Option<MovToCr> {
    let mut at = 0;
    let mut lock = false;
    let mut rex = 0u8;
    loop {
        match *bytes.get(at)? {
            0x66 | 0x67 => {}
            0xf0 => lock = true,
            b @ 0x40..=0x4f if long_mode => {
                rex = b;
                at += 1;
                break;
            }
            _ => break,
        }
        at += 1;
        if at > 4 {
            return None;
        }
    }
    if bytes.get(at..at + 2)? != [0x0f, 0x22] {
        return None;
    }
    let modrm = *bytes.get(at + 2)?;
    if modrm >> 6 != 3 {
        return None;
    }
    let mut cr = (modrm >> 3) & 7;
    if rex & 0x4 != 0 {
        cr += 8;
    }
    if lock {
        cr += 8;
    }
    let gpr = (modrm & 7) + if rex & 0x1 != 0 { 8 } else { 0 };
    Some(MovToCr {
        cr,
        gpr,
        len: (at + 3) as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_forms_in_every_mode() {
        // mov cr0, eax / mov cr0, rax
        for long in [false, true] {
            assert_eq!(
                decode(&[0x0f, 0x22, 0xc0], long),
                Some(MovToCr {
                    cr: 0,
                    gpr: 0,
                    len: 3
                })
            );
        }
        // mov cr3, rdi
        assert_eq!(
            decode(&[0x0f, 0x22, 0xdf], true),
            Some(MovToCr {
                cr: 3,
                gpr: 7,
                len: 3
            })
        );
        // 16-bit code: 66 0F 22 C0 (the operand-size prefix the assembler may add)
        assert_eq!(
            decode(&[0x66, 0x0f, 0x22, 0xd8], false),
            Some(MovToCr {
                cr: 3,
                gpr: 0,
                len: 4
            })
        );
    }

    #[test]
    fn rex_extends_register_and_control_register() {
        // mov cr3, r9
        assert_eq!(
            decode(&[0x41, 0x0f, 0x22, 0xd9], true),
            Some(MovToCr {
                cr: 3,
                gpr: 9,
                len: 4
            })
        );
        // mov cr8, rax
        assert_eq!(
            decode(&[0x44, 0x0f, 0x22, 0xc0], true).map(|m| m.cr),
            Some(8)
        );
        // Outside 64-bit mode 0x41 is `inc ecx`, not a prefix.
        assert_eq!(decode(&[0x41, 0x0f, 0x22, 0xd9], false), None);
        // LOCK: CR8 from 32-bit code.
        assert_eq!(
            decode(&[0xf0, 0x0f, 0x22, 0xc0], false).map(|m| m.cr),
            Some(8)
        );
    }

    #[test]
    fn other_instructions_are_refused() {
        assert_eq!(decode(&[0x0f, 0x20, 0xc0], true), None, "mov from cr0");
        assert_eq!(decode(&[0x0f, 0x01, 0xf0], true), None, "lmsw");
        assert_eq!(decode(&[0x0f, 0x22, 0x00], true), None, "memory operand");
        assert_eq!(decode(&[0x0f, 0x22], true), None, "truncated");
        assert_eq!(decode(&[0x66; 8], true), None, "prefixes only");
        assert_eq!(decode(&[], true), None);
    }
}
