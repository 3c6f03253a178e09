//! The kernel heap: a linked-list allocator over physically contiguous frames.
//!
//! The area is carved from the top of usable RAM once the kernel's page tables map it, rather
//! than being part of the image's `.bss`: that would make the stage zero it on every boot.
//! 4 MiB is enough for the decoder tables (about 330 KiB) and per-CPU structures.

use crate::memory::frames;
use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 4 << 20;

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// There was no contiguous run of RAM for the heap.
#[derive(Clone, Copy, Debug)]
pub struct NoHeapMemory;

/// Hands the heap area to the allocator. Called once by the boot CPU, after `memory::init`.
pub fn init() -> Result<(), NoHeapMemory> {
    let base = frames::alloc_contiguous(HEAP_SIZE / 4096).ok_or(NoHeapMemory)?;
    // SAFETY: called once, before any allocation; the frames are ours for good, identity-mapped
    // writable by the kernel's tables.
    unsafe { ALLOCATOR.lock().init(base as *mut u8, HEAP_SIZE) };
    Ok(())
}

/// Bytes currently allocated, for tests.
pub fn used() -> usize {
    ALLOCATOR.lock().used()
}
