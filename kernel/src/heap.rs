//! The kernel heap: a linked-list allocator over a region of the kernel's own image.
//!
//! The region is part of `.bss`, so it exists before the frame allocator does; 4 MiB is enough
//! for the decoder tables (about 330 KiB) and per-CPU structures.

use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Hands the heap area to the allocator. Called once by the boot CPU.
pub fn init() {
    // SAFETY: called once, before any allocation; the area is used by nothing else.
    unsafe {
        ALLOCATOR
            .lock()
            .init(core::ptr::addr_of_mut!(HEAP_AREA).cast(), HEAP_SIZE)
    };
}

/// Bytes currently allocated, for tests.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
