//! PVALIDATE (SNP): the guest's acceptance of a page into, or release from,
//! its private memory. The instruction's result is interpreted strictly
//! (scenario 11): any failure, and "no RMP entry was updated" (CF = 1, the
//! page already had the requested state, which means the hypervisor replayed
//! or remapped a page), is an error; a size mismatch on a 2M page falls back
//! to 512 4K validations.

/// Page size operand (ECX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum PageSize {
    Size4K = 0,
    Size2M = 1,
}

/// Why a PVALIDATE did not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvalidateError {
    /// FAIL_INPUT (1): bad address or operands.
    FailInput,
    /// FAIL_SIZEMISMATCH (6): the RMP has the page at another size.
    SizeMismatch,
    /// Success code but CF = 1: the validated state did not change.
    NoUpdate,
    /// A return code the APM does not define.
    Unknown(u32),
}

/// Interprets PVALIDATE's EAX and CF.
pub fn interpret(eax: u32, cf: bool) -> Result<(), PvalidateError> {
    match (eax, cf) {
        (0, false) => Ok(()),
        (0, true) => Err(PvalidateError::NoUpdate),
        (1, _) => Err(PvalidateError::FailInput),
        (6, _) => Err(PvalidateError::SizeMismatch),
        (e, _) => Err(PvalidateError::Unknown(e)),
    }
}

/// Executes PVALIDATE on the page at `va`.
///
/// # Safety
/// Only valid in an SNP guest at CPL 0. Validating a page the guest already
/// uses, or invalidating one it still uses, breaks memory safety: the caller
/// owns the page's state change (and its page state change request).
#[cfg(target_arch = "x86_64")]
pub unsafe fn pvalidate(va: u64, size: PageSize, validate: bool) -> Result<(), PvalidateError> {
    let eax: u64;
    let cf: u8;
    // SAFETY: the caller guarantees an SNP guest at CPL 0 and page-state
    // ownership; the instruction reads RAX/ECX/EDX and writes RAX and flags.
    unsafe {
        core::arch::asm!(
            ".byte 0xf2, 0x0f, 0x01, 0xff",
            "setc {cf}",
            inout("rax") va => eax,
            in("ecx") size as u32,
            in("edx") validate as u32,
            cf = out(reg_byte) cf,
            options(nostack),
        );
    }
    interpret(eax as u32, cf != 0)
}

/// Validates (or invalidates) the 2M page at `va` with `op`, falling back
/// to 512 4K operations if the RMP holds it as 4K pages.
pub fn pvalidate_2m_with<F>(va: u64, mut op: F) -> Result<(), PvalidateError>
where
    F: FnMut(u64, PageSize) -> Result<(), PvalidateError>,
{
    match op(va, PageSize::Size2M) {
        Err(PvalidateError::SizeMismatch) => {
            (0..512).try_for_each(|k| op(va + k * 4096, PageSize::Size4K))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results() {
        assert_eq!(interpret(0, false), Ok(()));
        assert_eq!(interpret(0, true), Err(PvalidateError::NoUpdate));
        assert_eq!(interpret(1, false), Err(PvalidateError::FailInput));
        assert_eq!(interpret(6, true), Err(PvalidateError::SizeMismatch));
        assert_eq!(interpret(7, false), Err(PvalidateError::Unknown(7)));
    }

    #[test]
    fn size_mismatch_falls_back_to_4k() {
        let mut calls = Vec::new();
        let r = pvalidate_2m_with(0x20_0000, |va, s| {
            calls.push((va, s));
            if s == PageSize::Size2M {
                Err(PvalidateError::SizeMismatch)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Ok(()));
        assert_eq!(calls.len(), 513);
        assert_eq!(calls[512], (0x20_0000 + 511 * 4096, PageSize::Size4K));
        // A 4K failure in the fallback stops it.
        let r = pvalidate_2m_with(0, |va, s| match s {
            PageSize::Size2M => Err(PvalidateError::SizeMismatch),
            _ if va == 0x3000 => Err(PvalidateError::NoUpdate),
            _ => Ok(()),
        });
        assert_eq!(r, Err(PvalidateError::NoUpdate));
        // Other 2M failures are returned as they are.
        assert_eq!(
            pvalidate_2m_with(0, |_, _| Err(PvalidateError::FailInput)),
            Err(PvalidateError::FailInput)
        );
    }
}
