//! The physical frame allocator: 4 KiB frames from the memory map's usable RAM above 1 MiB.
//!
//! Single frames are handed out by bumping through the usable regions from the lowest address up, so
//! the first allocations land below 4 GiB whenever there is RAM there (the kernel's PML4 needs
//! that). Freed frames go on a list threaded through the frames themselves, which is why
//! [`free_frame`] may only be called once all RAM is mapped (after [`super::init`]). Nothing needs
//! memory of its own, so the allocator works before the heap and before the kernel's page
//! tables exist, as long as no frame is freed.

use handoff::bootinfo::{BootInfo, MAX_MEMORY_REGIONS, MemoryKind};
use spin::Mutex;
use x86::paging::{FrameSource, PAGE_4K};

/// Frames below this are left to the firmware's and the AP trampoline's legacy uses.
const LOW_LIMIT: u64 = 1 << 20;

/// Why a frame could not be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not 4 KiB-aligned or not inside the usable RAM this allocator manages.
    NotOurs(u64),
}

/// A half-open physical range.
#[derive(Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
}

struct Allocator {
    regions: [Range; MAX_MEMORY_REGIONS],
    count: usize,
    /// The region the bump pointer is in, and the bump pointer.
    cursor: usize,
    next: u64,
    /// Physical address of the first freed frame, 0 for none; each holds the next one's address.
    free_list: u64,
    free_listed: usize,
}

static FRAMES: Mutex<Allocator> = Mutex::new(Allocator {
    regions: [Range { start: 0, end: 0 }; MAX_MEMORY_REGIONS],
    count: 0,
    cursor: 0,
    next: 0,
    free_list: 0,
    free_listed: 0,
});

/// Takes the usable RAM of `info`'s memory map, 4 KiB-aligned and without the first MiB; returns
/// the number of frames. The map is sorted, so the regions are.
pub fn init(info: &BootInfo) -> usize {
    let mut a = FRAMES.lock();
    a.count = 0;
    for r in info
        .memory_map()
        .iter()
        .filter(|r| r.kind == MemoryKind::USABLE)
    {
        let start = r.start.max(LOW_LIMIT).next_multiple_of(PAGE_4K);
        let end = r.end() & !(PAGE_4K - 1);
        if start < end {
            let n = a.count;
            a.regions[n] = Range { start, end };
            a.count += 1;
        }
    }
    a.cursor = 0;
    a.next = a.regions[0].start;
    a.free_list = 0;
    a.free_listed = 0;
    a.available()
}

impl Allocator {
    fn alloc(&mut self) -> Option<u64> {
        if self.free_list != 0 {
            let frame = self.free_list;
            // SAFETY: a freed frame, identity-mapped (frees happen only on the kernel's tables,
            // which map all RAM), whose first word `free` wrote.
            self.free_list = unsafe { (frame as *const u64).read() };
            self.free_listed -= 1;
            return Some(frame);
        }
        while self.cursor < self.count {
            if self.next < self.regions[self.cursor].end {
                let frame = self.next;
                self.next += PAGE_4K;
                return Some(frame);
            }
            self.cursor += 1;
            self.next = self.regions.get(self.cursor).map_or(0, |r| r.start);
        }
        None
    }

    fn alloc_contiguous(&mut self, frames: usize) -> Option<u64> {
        let bytes = frames as u64 * PAGE_4K;
        let cursor = self.cursor;
        let next = self.next;
        let region = self.regions[..self.count]
            .iter_mut()
            .enumerate()
            .skip(cursor)
            .rev()
            .find(|(i, r)| r.end - if *i == cursor { next } else { r.start } >= bytes)?
            .1;
        region.end -= bytes;
        Some(region.end)
    }

    fn available(&self) -> usize {
        let bump: u64 = self.regions[self.cursor.min(self.count)..self.count]
            .iter()
            .map(|r| r.end - r.start.max(self.next))
            .sum();
        (bump / PAGE_4K) as usize + self.free_listed
    }

    fn owns(&self, frame: u64) -> bool {
        frame.is_multiple_of(PAGE_4K)
            && self.regions[..self.count]
                .iter()
                .any(|r| r.start <= frame && frame < r.end)
    }
}

/// A free 4 KiB frame (contents undefined), or `None` when RAM is exhausted.
pub fn alloc_frame() -> Option<u64> {
    FRAMES.lock().alloc()
}

/// `frames` physically contiguous frames (contents undefined), taken for good from the top of
/// the highest region that has room, away from where single frames are bumped from.
pub fn alloc_contiguous(frames: usize) -> Option<u64> {
    FRAMES.lock().alloc_contiguous(frames)
}

/// Returns `frame` to the allocator.
///
/// # Safety
/// `frame` came from [`alloc_frame`], is no longer used, is not freed twice, and all RAM is
/// identity-mapped writable (the kernel's own tables are active).
pub unsafe fn free_frame(frame: u64) -> Result<(), FrameError> {
    let mut a = FRAMES.lock();
    if !a.owns(frame) {
        return Err(FrameError::NotOurs(frame));
    }
    // SAFETY: the caller hands the frame back to us and it is mapped; its first word links it.
    unsafe { (frame as *mut u64).write(a.free_list) };
    a.free_list = frame;
    a.free_listed += 1;
    Ok(())
}

/// Frames that can still be allocated.
pub fn available() -> usize {
    FRAMES.lock().available()
}

/// Page-table pages from the frame allocator, zeroed through the identity map: usable only once
/// the kernel's own tables map all RAM.
pub struct Frames;

impl FrameSource for Frames {
    fn alloc_zeroed_table(&mut self) -> Option<u64> {
        let frame = alloc_frame()?;
        // SAFETY: a frame we now own, identity-mapped writable (this type's contract).
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_4K as usize) };
        Some(frame)
    }
}
