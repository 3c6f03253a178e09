//! The heap the #VC core needs, in the guest image: iced-x86 builds its decoder tables (about
//! 330 KiB) there on first use, which the guest forces at boot with `vc::init_decoder` right
//! after [`DecoderHeap::init`], so that no #VC ever allocates.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use linked_list_allocator::LockedHeap;

/// A heap of `N` bytes in the image (`.bss`), for a guest's `#[global_allocator]`.
pub struct DecoderHeap<const N: usize> {
    area: UnsafeCell<Area<N>>,
    heap: LockedHeap,
}

#[repr(C, align(4096))]
struct Area<const N: usize>([u8; N]);

// SAFETY: the area is only ever handed to the allocator (once, in `init`), which serialises all
// access to it behind its lock.
unsafe impl<const N: usize> Sync for DecoderHeap<N> {}

impl<const N: usize> Default for DecoderHeap<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> DecoderHeap<N> {
    /// Empty until [`init`](Self::init): every allocation before it fails.
    pub const fn new() -> Self {
        Self {
            area: UnsafeCell::new(Area([0; N])),
            heap: LockedHeap::empty(),
        }
    }

    /// Hands the area to the allocator. Call once, before anything allocates; then
    /// `vc::init_decoder`, before the first #VC that needs decoding.
    pub fn init(&'static self) {
        // SAFETY: the area is 'static, writable and used by nothing else; a second call would
        // hand it over twice, which `init`'s contract (once) excludes.
        unsafe { self.heap.lock().init(self.area.get().cast(), N) };
    }
}

// SAFETY: delegates to the locked linked-list allocator over the area.
unsafe impl<const N: usize> GlobalAlloc for DecoderHeap<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.heap.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.heap.dealloc(ptr, layout) }
    }
}
