//! The panic handler: location, message and a frame-pointer backtrace, then a failure exit.

use x86::qemu::ExitStatus;

/// Frames walked at most: a corrupted chain must not loop forever.
const MAX_FRAMES: usize = 32;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    x86::serial::force_unlock();
    x86::serial_println!("kernel panic: {info}");
    backtrace();
    crate::shutdown::exit(ExitStatus::Failure)
}

/// Prints return addresses by following saved RBPs (the kernel is built with frame pointers).
fn backtrace() {
    let mut rbp: u64;
    // SAFETY: reading RBP has no side effects.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    x86::serial_println!("backtrace:");
    for _ in 0..MAX_FRAMES {
        if rbp == 0 || !rbp.is_multiple_of(8) {
            break;
        }
        // SAFETY: rbp is non-null and aligned; frames of this kernel lie on its mapped stacks.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        x86::serial_println!("  {ret:#018x}");
        if next <= rbp {
            break;
        }
        rbp = next;
    }
}
