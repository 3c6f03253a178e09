//! The freestanding runtime both binaries need on the linux-gnu target.
//!
//! The precompiled `compiler_builtins` of the linux-gnu target expects libc to provide the
//! `mem*` functions, and the precompiled (unwinding) `core` refers to the unwinder's
//! personality routine. We have no libc, so they are defined here, once.

use core::arch::asm;

/// # Safety
/// Standard `memcpy` contract: valid, non-overlapping ranges of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memcpy's contract; DF is clear per the ABI.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// Standard `memmove` contract: valid ranges of `n` bytes, possibly overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: dst does not start inside [src, src+n): a forward copy is correct.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: overlapping with dst above src: copy backwards, restoring DF afterwards.
        unsafe {
            asm!("std", "rep movsb", "cld", inout("rcx") n => _,
                 inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, options(nostack))
        };
        dst
    }
}

/// # Safety
/// Standard `memset` contract: a valid range of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memset's contract.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// Standard `memcmp` contract: two valid ranges of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n and both ranges are valid for n bytes. Volatile keeps the compiler from
        // turning this loop back into a call to memcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As [`memcmp`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled core's unwind tables; never called with panic=abort.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

/// Referenced by the precompiled core's landing pads; never called with panic=abort.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::qemu::halt_forever()
}
