//! The GDT and the 64-bit TSS, one pair per CPU.
//!
//! Long mode ignores segment bases and limits for code and data, so the GDT only needs a 64-bit
//! kernel code segment, a data segment (for SS/DS/ES) and a TSS. The TSS matters for one reason:
//! its seven Interrupt Stack Table (IST) pointers. Every IDT gate runs on an IST stack (see
//! [`crate::interrupts`]), so each CPU needs its own TSS with its own IST stacks, and because
//! `ltr` marks the TSS descriptor busy, its own GDT too.
//!
//! Both structures live in memory the caller provides (a `static` for the boot CPU, the heap for
//! application processors): [`Tss::new`] takes the tops of the IST stacks, [`Gdt::new`] the TSS,
//! and [`Gdt::load`] makes them the running CPU's. FS and GS are never reloaded, so the GS base
//! that per-CPU data uses survives [`Gdt::load`].
//!
//! Two things change after loading, both for the NMI entry of [`crate::interrupts`]: the TSS's
//! general IST slot, which an NMI moves down while it handles an NMI that interrupted a stub on
//! that stack ([`Tss::set_ist`]), and the [`NMI_SCRATCH`] bytes above the NMI stack's top, where
//! [`Gdt::load`] leaves the TSS's address and the NMI entry keeps its state.

use core::arch::asm;
use core::cell::UnsafeCell;

/// Selector of the 64-bit kernel code segment.
pub const KERNEL_CODE: u16 = 0x08;
/// Selector of the kernel data segment (SS, DS, ES).
pub const KERNEL_DATA: u16 = 0x10;
/// Selector of the TSS (a 16-byte system descriptor: entries 3 and 4).
pub const TSS: u16 = 0x18;

/// IST slots (1-based, as an IDT gate names them) and what runs on each.
pub mod ist {
    /// NMIs: may arrive at any instruction, including inside another handler's entry.
    pub const NMI: u8 = 1;
    /// #DF: the stack may be what failed.
    pub const DOUBLE_FAULT: u8 = 2;
    /// #MC: may arrive at any instruction.
    pub const MACHINE_CHECK: u8 = 3;
    /// Every other vector: used only until the entry stub moves to the interrupted stack.
    pub const GENERAL: u8 = 4;
}

/// Number of IST slots in a 64-bit TSS.
pub const IST_SLOTS: usize = 7;
/// Size of each IST stack in [`IstStacks`]: enough for the SSE save area, the register dump and
/// a handler that runs on it (NMI, #DF, #MC, or a fault inside the entry stub itself).
pub const IST_STACK_SIZE: usize = 16 * 1024;
/// Bytes at the very end of the NMI stack, above the top the TSS gives the CPU (which only
/// pushes below it): the NMI entry's per-CPU words, the TSS address ([`Gdt::load`] writes it)
/// and the NMI state (`crate::interrupts`). Per CPU without a per-CPU register: an NMI finds
/// them at its own stack's top.
pub const NMI_SCRATCH: usize = 16;

/// Access byte: present, DPL 0, code/data, executable, readable.
const ACCESS_CODE: u8 = 0x9a;
/// Access byte: present, DPL 0, code/data, writable.
const ACCESS_DATA: u8 = 0x92;
/// Access byte: present, DPL 0, system, available 64-bit TSS.
const ACCESS_TSS: u8 = 0x89;
/// Flags nibble of the code segment: L (64-bit code).
const FLAGS_LONG: u8 = 0x2;
/// Flags nibble of the data segment: G (4 KiB granularity), D/B (32-bit).
const FLAGS_DATA: u8 = 0xc;

/// Encodes an 8-byte segment descriptor (the low half for system descriptors).
pub const fn descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | (access as u64) << 40
        | ((limit >> 16) & 0xf) << 48
        | ((flags as u64) & 0xf) << 52
        | ((base >> 24) & 0xff) << 56
}

/// Encodes the 16-byte descriptor of an available 64-bit TSS at `base`, as (low, high) entries.
pub const fn tss_descriptor(base: u64) -> (u64, u64) {
    let limit = (size_of::<Tss>() - 1) as u32;
    (descriptor(base as u32, limit, ACCESS_TSS, 0), base >> 32)
}

/// The fields of a 64-bit Task State Segment: only the IST pointers are used (no privilege
/// changes happen, so RSP0-2 stay 0; the I/O map base points past the limit: no I/O bitmap).
#[repr(C, packed(4))]
struct TssFields {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    /// Tops of IST stacks 1..=7 (slot `n` is `ist[n - 1]`).
    ist: [u64; IST_SLOTS],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

/// A 64-bit Task State Segment. The CPU reads its IST slots at every interrupt; the NMI entry
/// changes the general slot while it runs ([`Tss::set_ist`]), hence the `UnsafeCell`.
#[repr(transparent)]
pub struct Tss(UnsafeCell<TssFields>);

// SAFETY: only the CPU that loaded the TSS reads it (at interrupt delivery) or changes it (its
// NMI entry, with no other code of that CPU running meanwhile); other CPUs never touch it.
unsafe impl Sync for Tss {}

impl Tss {
    /// A TSS whose IST slot `n` (1-based) points at `ist_tops[n - 1]`. Each top must be 16-byte
    /// aligned (the CPU aligns it down anyway) and end a stack no other CPU uses; the NMI slot's
    /// top must have [`NMI_SCRATCH`] bytes of that stack above it ([`IstStacks::tops`] gives
    /// both).
    pub const fn new(ist_tops: [u64; IST_SLOTS]) -> Self {
        Self(UnsafeCell::new(TssFields {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: ist_tops,
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: size_of::<TssFields>() as u16,
        }))
    }

    /// The address of IST slot `slot` (1-based) inside the TSS (4-byte aligned: the TSS packs
    /// its 64-bit fields that way).
    fn ist_slot(&self, slot: u8) -> *mut u64 {
        let fields = self.0.get();
        // SAFETY: computes a field address inside the TSS; `slot` is 1..=7 (indexing panics
        // otherwise).
        unsafe {
            (&raw mut (*fields).ist)
                .cast::<u64>()
                .add(usize::from(slot) - 1)
        }
    }

    /// The top of IST stack `slot` (1-based).
    pub fn ist(&self, slot: u8) -> u64 {
        assert!((1..=IST_SLOTS).contains(&usize::from(slot)));
        // SAFETY: a field of this TSS, read as the CPU reads it (unaligned: packed).
        unsafe { self.ist_slot(slot).read_unaligned() }
    }

    /// Points IST slot `slot` (1-based) at `top` and returns what it held. Only the NMI entry
    /// does this, on the CPU whose TSS this is, for the duration of its handler.
    ///
    /// # Safety
    /// This is the running CPU's TSS, and `top` is 16-byte aligned with free stack below it
    /// for whatever may be delivered on that slot until the old value is put back.
    pub(crate) unsafe fn set_ist(&self, slot: u8, top: u64) -> u64 {
        let old = self.ist(slot);
        // SAFETY: a field of this TSS (the caller's CPU's; no one else writes it), written with
        // one store, so an interrupt delivered meanwhile sees the old or the new top.
        unsafe { self.ist_slot(slot).write_unaligned(top) };
        old
    }
}

/// Memory for one CPU's seven IST stacks. The CPU writes to it behind the compiler's back,
/// hence the `UnsafeCell` (which also keeps a `static` of it out of read-only data).
#[repr(C, align(16))]
pub struct IstStacks(UnsafeCell<[[u8; IST_STACK_SIZE]; IST_SLOTS]>);

// SAFETY: Rust code never reads or writes the stacks; only the CPU of the TSS they are given to
// uses them.
unsafe impl Sync for IstStacks {}

impl IstStacks {
    /// Zeroed stacks (a `static` of this lands in .bss; on the heap, allocate it zeroed).
    pub const fn new() -> Self {
        Self(UnsafeCell::new([[0; IST_STACK_SIZE]; IST_SLOTS]))
    }

    /// The top of each stack, in IST-slot order, for [`Tss::new`]: one past its highest byte,
    /// except for the NMI stack, whose top leaves its last [`NMI_SCRATCH`] bytes above it.
    pub fn tops(&self) -> [u64; IST_SLOTS] {
        let base = self.0.get() as u64;
        core::array::from_fn(|i| {
            let end = base + ((i + 1) * IST_STACK_SIZE) as u64;
            if i + 1 == usize::from(ist::NMI) {
                end - NMI_SCRATCH as u64
            } else {
                end
            }
        })
    }
}

impl Default for IstStacks {
    fn default() -> Self {
        Self::new()
    }
}

/// A GDT with a TSS and IST stacks of its own on the heap, leaked: for a CPU started at run
/// time (an application processor), which keeps them for as long as it runs.
#[cfg(feature = "alloc")]
pub fn leaked_for_new_cpu() -> &'static Gdt {
    use alloc::boxed::Box;
    let layout = core::alloc::Layout::new::<IstStacks>();
    // SAFETY: the layout has a non-zero size; IstStacks is plain bytes, valid when zeroed.
    let ist = unsafe { alloc::alloc::alloc_zeroed(layout) } as *const IstStacks;
    if ist.is_null() {
        alloc::alloc::handle_alloc_error(layout);
    }
    // SAFETY: freshly allocated, initialised (zeroed), never freed.
    let ist: &'static IstStacks = unsafe { &*ist };
    let tss: &'static Tss = Box::leak(Box::new(Tss::new(ist.tops())));
    Box::leak(Box::new(Gdt::new(tss)))
}

/// One CPU's GDT: null, kernel code, kernel data, TSS (two entries). The CPU writes the TSS
/// descriptor's busy bit (`ltr`), hence the `UnsafeCell`.
#[derive(Debug)]
#[repr(C, align(16))]
pub struct Gdt(UnsafeCell<[u64; 5]>);

// SAFETY: only the CPU that loads the GDT writes it (the busy bit, by `ltr` or `reload`), at
// times its contract gives; everything else only reads descriptors that never change.
unsafe impl Sync for Gdt {}

/// The busy bit of a TSS descriptor's type (0x9 available, 0xB busy).
const TSS_BUSY: u64 = 1 << 41;

impl Gdt {
    /// A GDT whose TSS descriptor points at `tss`.
    pub fn new(tss: &'static Tss) -> Self {
        let (lo, hi) = tss_descriptor(tss as *const Tss as u64);
        Self(UnsafeCell::new([
            0,
            descriptor(0, 0, ACCESS_CODE, FLAGS_LONG),
            descriptor(0, 0xf_ffff, ACCESS_DATA, FLAGS_DATA),
            lo,
            hi,
        ]))
    }

    /// The address of the TSS the descriptor points at.
    fn tss_address(&self) -> u64 {
        // SAFETY: a read of the descriptors; the CPU changes only the busy bit, not the base.
        let [_, _, _, lo, hi] = unsafe { self.0.get().read_volatile() };
        ((lo >> 16) & 0xff_ffff) | ((lo >> 56) & 0xff) << 24 | (hi & 0xffff_ffff) << 32
    }

    /// [`load`](Self::load) again, on a CPU that loaded this GDT before and was reset since (an
    /// application processor back from offline): its earlier `ltr` left the TSS busy, so the
    /// descriptor is marked available first.
    ///
    /// # Safety
    /// As for `load`, except that the one CPU that loaded this GDT before is the caller, which
    /// no longer runs on it (it was reset in between).
    pub unsafe fn reload(&'static self) {
        // SAFETY: the TSS descriptor's low word inside this GDT, which no CPU uses right now
        // (the caller's contract).
        unsafe {
            let lo = self.0.get().cast::<u64>().add(3);
            lo.write_volatile(lo.read_volatile() & !TSS_BUSY);
            self.load();
        }
    }

    /// Makes this the running CPU's GDT: loads GDTR, reloads CS (far return), SS/DS/ES, and the
    /// task register, and leaves the TSS's address in the NMI stack's scratch words for the NMI
    /// entry ([`NMI_SCRATCH`]). FS and GS are left alone (their bases hold per-CPU pointers).
    ///
    /// # Safety
    /// Once per CPU; no other CPU may have loaded this GDT (`ltr` marks its TSS busy, and a
    /// second `ltr` of a busy TSS raises #GP). The GDT and its TSS stay in place for the rest of
    /// the run, and the TSS's IST stacks are as [`Tss::new`] requires.
    pub unsafe fn load(&'static self) {
        let tss = self.tss_address();
        // SAFETY: the GDT was built by `new` from a 'static TSS.
        let nmi_top = unsafe { &*(tss as *const Tss) }.ist(ist::NMI);
        // SAFETY: the first scratch word above the NMI stack's top (`Tss::new`'s contract), used
        // by nothing else; no NMI is handled on this CPU before the TSS is loaded below.
        unsafe { (nmi_top as *mut u64).write(tss) };
        crate::interrupts::register_nmi_stack(nmi_top);
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let ptr = Pointer {
            limit: (size_of::<Self>() - 1) as u16,
            base: self.0.get() as u64,
        };
        // SAFETY: the GDT is 'static and holds valid code/data/TSS descriptors at the selectors
        // used; the far return reloads CS with the 64-bit code segment the caller runs in.
        unsafe {
            asm!(
                "lgdt [{ptr}]",
                "push {code}",
                "lea {tmp}, [rip + 2f]",
                "push {tmp}",
                "retfq",
                "2:",
                "mov {tmp:e}, {data}",
                "mov ss, {tmp:e}",
                "mov ds, {tmp:e}",
                "mov es, {tmp:e}",
                "mov {tmp:e}, {tss}",
                "ltr {tmp:x}",
                ptr = in(reg) &ptr,
                tmp = out(reg) _,
                code = const KERNEL_CODE as u64,
                data = const KERNEL_DATA as u32,
                tss = const TSS as u32,
                options(preserves_flags),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_layout() {
        assert_eq!(size_of::<Tss>(), 104);
        assert_eq!(core::mem::offset_of!(TssFields, ist), 0x24);
        let t = Tss::new([1, 2, 3, 4, 5, 6, 7]);
        assert_eq!((t.ist(1), t.ist(7)), (1, 7));
        // SAFETY: reads a field of a TSS no CPU uses.
        assert_eq!(unsafe { (*t.0.get()).iomap_base }, 104);
        let raw = t.0.get() as *const u8;
        // SAFETY: this test's own TSS, not in use by any CPU; slot 4 at 0x24 + 3 * 8.
        let old = unsafe { t.set_ist(ist::GENERAL, 0x1230) };
        assert_eq!((old, t.ist(ist::GENERAL)), (4, 0x1230));
        // SAFETY: reads 8 bytes inside the 104-byte TSS.
        let at = unsafe { raw.add(0x24 + 3 * 8).cast::<u64>().read_unaligned() };
        assert_eq!(at, 0x1230, "the slot the CPU reads");
        assert_eq!((t.ist(3), t.ist(5)), (3, 5), "neighbours untouched");
    }

    #[test]
    fn gdt_knows_its_tss() {
        let tss: &'static Tss = Box::leak(Box::new(Tss::new([0; IST_SLOTS])));
        let gdt = Gdt::new(tss);
        assert_eq!(gdt.tss_address(), tss as *const Tss as u64);
    }

    #[test]
    fn code_and_data_descriptors() {
        // The well-known flat long-mode descriptors (as Linux and the x86_64 crate encode them,
        // minus the accessed bit).
        assert_eq!(
            descriptor(0, 0, ACCESS_CODE, FLAGS_LONG),
            0x0020_9a00_0000_0000
        );
        assert_eq!(
            descriptor(0, 0xf_ffff, ACCESS_DATA, FLAGS_DATA),
            0x00cf_9200_0000_ffff
        );
    }

    #[test]
    fn tss_descriptor_splits_base() {
        let (lo, hi) = tss_descriptor(0x1234_5678_9abc_def0);
        assert_eq!(lo & 0xffff, 103, "limit");
        assert_eq!((lo >> 16) & 0xff_ffff, 0xbc_def0, "base 0..24");
        assert_eq!((lo >> 40) & 0xff, 0x89, "present, available 64-bit TSS");
        assert_eq!((lo >> 56) & 0xff, 0x9a, "base 24..32");
        assert_eq!(hi, 0x1234_5678, "base 32..64");
    }

    #[test]
    fn ist_tops_are_disjoint_and_aligned() {
        let s = Box::new(IstStacks::new());
        let tops = s.tops();
        let base = &*s as *const IstStacks as u64;
        for (i, t) in tops.iter().enumerate() {
            let end = base + ((i + 1) * IST_STACK_SIZE) as u64;
            let scratch = if i + 1 == usize::from(ist::NMI) {
                NMI_SCRATCH as u64
            } else {
                0
            };
            assert_eq!(*t, end - scratch, "slot {}", i + 1);
            assert_eq!(t % 16, 0);
        }
    }
}
