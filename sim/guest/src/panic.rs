//! The panic handler: the message and a failure exit, or, where printing cannot work (before the
//! GHCB exists, or while the channel is held), a termination request with reason `Panic`.

use x86::qemu::ExitStatus;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    if !crate::ghcb::can_print() {
        crate::ghcb::terminate(sev::termination::GuestReason::Panic.into());
    }
    x86::serial::force_unlock();
    x86::serial_println!("simguest panic: {info}");
    crate::exit(ExitStatus::Failure)
}
