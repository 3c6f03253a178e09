//! A small heap in .bss (`sev::guest::DecoderHeap`). Only the #VC core needs one: iced-x86
//! builds its decoder tables (about 330 KiB) there on first use, which `sev::vc::init_decoder`
//! forces at boot so that no #VC ever allocates. The checks use it for their failure messages.

use sev::guest::DecoderHeap;

#[global_allocator]
static HEAP: DecoderHeap<{ 1 << 20 }> = DecoderHeap::new();

/// Hands the area to the allocator. Called once, by `main`, before anything allocates.
pub fn init() {
    HEAP.init();
}
