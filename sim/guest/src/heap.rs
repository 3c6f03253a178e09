//! A small heap in .bss. Only the #VC core needs one: iced-x86 builds its decoder tables (about
//! 330 KiB) there on first use, which `sev::vc::init_decoder` forces at boot so that no #VC
//! ever allocates. The checks use it for their failure messages.

use core::cell::UnsafeCell;
use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct Area(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: the area is only ever handed to the allocator (once, in `init`), which serialises all
// access to it behind its lock.
unsafe impl Sync for Area {}

static AREA: Area = Area(UnsafeCell::new([0; HEAP_SIZE]));

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands the area to the allocator. Called once, by `main`, before anything allocates.
pub fn init() {
    // SAFETY: called once before any allocation; AREA is 'static, writable and used by nothing
    // else.
    unsafe { ALLOCATOR.lock().init(AREA.0.get().cast(), HEAP_SIZE) };
}
