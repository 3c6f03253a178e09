//! The AP jump table page and the code that parks an AP on it (GHCB specification: AP Jump
//! Table and AP Reset Hold; the design of Linux's SEV-ES kexec series).
//!
//! Under SEV-ES the hypervisor cannot reset a vCPU: its registers are in the encrypted VMSA.
//! A guest parks an AP itself, with the AP Reset Hold request of the MSR protocol (GHCB
//! protocol version 2), and a start-up IPI only makes that request return; the AP must then
//! reset itself: go to real mode and jump to the reset vector held in the first 4 bytes of the
//! AP jump table (IP, then CS), where the guest's real-mode start-up code runs.
//!
//! The parking code lives on the jump table page itself, so that nothing it runs from can be
//! reused while the AP waits: [`ApJumpTable::install`] copies it there. [`ApJumpTable::park`],
//! called in 64-bit mode on page tables that identity-map the page, loads the page's GDT and
//! goes through a 16-bit code segment whose base is the page (compatibility mode) to 16-bit
//! protected mode with paging off; the page may be anywhere below 4 GiB, which real mode could
//! not reach. There it loops on AP Reset Hold (no #VC: the GHCB MSR and VMGEXIT do not raise
//! one, and no IDT is needed), then clears CR0.PE and far-jumps through the table's reset
//! vector. A malformed reply ends in a termination request ([`GuestReason::MsrProtocol`]).
//!
//! GHCB protocol version 1 has no AP Reset Hold in the MSR protocol (and the NAE event's GHCB
//! is out of reach with paging off, where every access is private). Under it the table is
//! installed [`ParkMode::PassThrough`]: the code skips the hold and goes straight through the
//! reset vector. That still starts APs, whose first start-up IPI brings them here from their
//! launch state (the guest writes the reset vector before it sends one), but an AP parked
//! later would run off at once: such a guest cannot take CPUs offline.
//!
//! Page layout (offsets from the page):
//!
//! | offset | what |
//! | --- | --- |
//! | 0 | reset vector: IP (u16), CS (u16), set by [`ApJumpTable::set_reset_vector`] |
//! | 4 | park mode (u8): 0 hold ([`ParkMode::ResetHold`]), 1 pass through |
//! | 8 | GDT: null, 16-bit code (base = page), 16-bit data (base = page) |
//! | 0x20 | GDTR for the 64-bit `lgdt` (limit, 64-bit base) |
//! | 0x30 | the termination request the code sends on failure |
//! | 0x38 | the 16-bit code |

use crate::msr_protocol::{GhcbVersion, MsrRequest};
use crate::termination::{GuestReason, TerminationReason};

/// Offset of the park mode byte in the page.
const MODE_OFFSET: usize = 0x04;
/// Offset of the GDT in the page.
const GDT_OFFSET: usize = 0x08;
/// Offset of the GDTR.
const GDTR_OFFSET: usize = 0x20;
/// Offset of the termination request.
const TERMINATE_OFFSET: usize = 0x30;
/// Offset of the 16-bit code.
const CODE_OFFSET: usize = 0x38;
/// The 16-bit code selector of the page's GDT.
const CODE16_SELECTOR: u64 = 0x08;

// The blob: reset vector, GDT, GDTR and termination request zeroed (filled in by `install`),
// then the 16-bit code. Entered at `.Ljt_code` in 16-bit compatibility mode (CS = 0x08, base =
// the page) with paging on.
core::arch::global_asm!(
    r#"
    .pushsection .text.ap_jump_table, "ax"
    .code16
    .global sev_ap_jump_table_start
sev_ap_jump_table_start:
    .word 0, 0
    .balign 8, 0
    .quad 0, 0, 0
    .word 0
    .quad 0
    .balign 16, 0
    .quad 0
.Ljt_code:
    /* Paging off (the page is identity-mapped, so fetching goes on): long mode ends. */
    movl %cr0, %eax
    andl $0x7fffffff, %eax
    movl %eax, %cr0
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* Pass-through mode (GHCB protocol 1: no AP Reset Hold): straight to the reset vector. */
    cmpb $0, (0x04)
    jne .Ljt_reset
.Ljt_hold:
    /* AP Reset Hold through the GHCB MSR: request 0x006, reply 0x007 with GHCBData[63:12]
       non-zero once a start-up IPI woke the AP (zero: ask again). */
    movl $0xc0010130, %ecx
    movl $0x006, %eax
    xorl %edx, %edx
    wrmsr
    rep vmmcall
    rdmsr
    movl %eax, %ebx
    andl $0xfff, %ebx
    cmpl $0x007, %ebx
    jne .Ljt_fail
    shrl $12, %eax
    orl %edx, %eax
    jz .Ljt_hold
.Ljt_reset:
    /* Real mode, then the reset vector at DS:0 (DS keeps the page as its base). */
    movl %cr0, %eax
    andl $0xfffffffe, %eax
    movl %eax, %cr0
    ljmpw *0
.Ljt_fail:
    movl $0xc0010130, %ecx
    movl (0x30), %eax
    movl (0x34), %edx
    wrmsr
    rep vmmcall
    hlt
    jmp .Ljt_fail
    .global sev_ap_jump_table_end
sev_ap_jump_table_end:
    .code64
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static sev_ap_jump_table_start: u8;
    static sev_ap_jump_table_end: u8;
}

/// The blob [`ApJumpTable::install`] copies.
fn blob() -> &'static [u8] {
    let start = &raw const sev_ap_jump_table_start;
    let end = &raw const sev_ap_jump_table_end;
    // SAFETY: both symbols delimit the assembly above, in the program's text, which is mapped
    // and never written.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// Why a page cannot serve as the AP jump table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JumpTableError {
    /// Not a 4 KiB-aligned page below 4 GiB (the GHCB specification's limit; the 16-bit
    /// segments reach it with a 32-bit base).
    BadPage(u64),
}

/// How the code on the page parks an AP (see the module docs), by the negotiated GHCB protocol
/// version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ParkMode {
    /// AP Reset Hold until a start-up IPI wakes the AP, then the reset vector (version 2).
    ResetHold = 0,
    /// Straight to the reset vector, no hold (version 1): the AP continues at once.
    PassThrough = 1,
}

impl ParkMode {
    /// The mode protocol version `version` allows.
    pub fn for_version(version: GhcbVersion) -> Self {
        if version.has_msr_ap_reset_hold() {
            Self::ResetHold
        } else {
            Self::PassThrough
        }
    }
}

/// A 16-bit protected-mode segment descriptor with `base` (< 4 GiB), limit 0xFFFF, byte
/// granularity, ring 0: `access` 0x9A for code, 0x92 for data.
const fn descriptor16(base: u64, access: u64) -> u64 {
    0xffff | (base & 0xff_ffff) << 16 | access << 40 | (base >> 24 & 0xff) << 56
}

/// The AP jump table page of this guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApJumpTable {
    gpa: u64,
}

/// The page [`ApJumpTable::install`] writes at `gpa`: the parking code in `mode`, the reset
/// vector zeroed.
fn page_image(gpa: u64, mode: ParkMode) -> Result<[u8; 4096], JumpTableError> {
    if !gpa.is_multiple_of(4096) || gpa + 4096 > 1 << 32 || gpa == 0 {
        return Err(JumpTableError::BadPage(gpa));
    }
    let code = blob();
    let mut page = [0u8; 4096];
    page[..code.len()].copy_from_slice(code);
    page[MODE_OFFSET] = mode as u8;
    let gdt = [0, descriptor16(gpa, 0x9a), descriptor16(gpa, 0x92)];
    for (i, d) in gdt.iter().enumerate() {
        let at = GDT_OFFSET + i * 8;
        page[at..at + 8].copy_from_slice(&d.to_le_bytes());
    }
    page[GDTR_OFFSET..GDTR_OFFSET + 2].copy_from_slice(&(3 * 8 - 1u16).to_le_bytes());
    page[GDTR_OFFSET + 2..GDTR_OFFSET + 10]
        .copy_from_slice(&(gpa + GDT_OFFSET as u64).to_le_bytes());
    let terminate = MsrRequest::Terminate(TerminationReason::from(GuestReason::MsrProtocol));
    page[TERMINATE_OFFSET..TERMINATE_OFFSET + 8].copy_from_slice(&terminate.encode().to_le_bytes());
    Ok(page)
}

impl ApJumpTable {
    /// Copies the parking code, parking in `mode`, to the page at `gpa` with its reset vector
    /// zeroed. Call before any AP can park there (a parked AP runs this page).
    ///
    /// # Safety
    /// `gpa` is reserved for the AP jump table, identity-mapped writable and private in the
    /// running page tables, and no AP runs from it now.
    pub unsafe fn install(gpa: u64, mode: ParkMode) -> Result<Self, JumpTableError> {
        let page = page_image(gpa, mode)?;
        // SAFETY: the caller reserved the page, mapped identity and writable, and no AP runs it.
        unsafe { core::ptr::copy_nonoverlapping(page.as_ptr(), gpa as *mut u8, page.len()) };
        Ok(Self { gpa })
    }

    /// The jump table [`install`](Self::install) set up at `gpa` (for the code that parks APs
    /// there without installing it).
    pub const fn at(gpa: u64) -> Self {
        Self { gpa }
    }

    /// The page's address (its GPA: identity-mapped), what AP_JUMP_TABLE registers.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Sets the real-mode reset vector woken APs jump to: `cs:ip`.
    pub fn set_reset_vector(&self, cs: u16, ip: u16) {
        let v = u32::from(ip) | u32::from(cs) << 16;
        // SAFETY: the first 4 bytes of the installed page, identity-mapped; an AP reads them
        // only after it was woken, which happens after this store.
        unsafe { core::ptr::write_volatile(self.gpa as *mut u32, v) };
    }

    /// Parks the calling CPU in AP Reset Hold; once a start-up IPI wakes it, it continues in
    /// real mode at the reset vector. Never returns. In [`ParkMode::PassThrough`] it continues
    /// there at once.
    ///
    /// # Safety
    /// The page was [`install`](Self::install)ed; the running page tables identity-map it
    /// executable; the CPU runs in 64-bit mode at CPL 0 in an SEV-ES guest and leaves nothing
    /// behind that it needs (its stack and state are abandoned); no NMI will be sent to it
    /// while parked (it has no IDT there).
    pub unsafe fn park(&self) -> ! {
        // SAFETY: per the contract above: the GDT and code are on the page, which stays
        // identity-mapped through the switch to compatibility mode and paging off.
        unsafe {
            core::arch::asm!(
                "cli",
                "lgdt [{gdtr}]",
                "push {cs}",
                "push {ip}",
                "retfq",
                gdtr = in(reg) self.gpa + GDTR_OFFSET as u64,
                cs = in(reg) CODE16_SELECTOR,
                ip = in(reg) CODE_OFFSET as u64,
                options(noreturn),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_fits_and_the_code_starts_where_park_enters() {
        let code = blob();
        assert!(code.len() < 4096);
        assert!(code[..CODE_OFFSET].iter().all(|&b| b == 0));
        // movl %cr0, %eax in 16-bit code: 0F 20 C0.
        assert_eq!(&code[CODE_OFFSET..CODE_OFFSET + 3], &[0x0f, 0x20, 0xc0]);
        // The VMGEXIT is `rep vmmcall`.
        assert!(code.windows(4).any(|w| w == [0xf3, 0x0f, 0x01, 0xd9]));
    }

    #[test]
    fn sixteen_bit_descriptors_put_the_base_where_the_cpu_reads_it() {
        let d = descriptor16(0x1234_5000, 0x9a);
        assert_eq!(d & 0xffff, 0xffff, "limit 15:0");
        assert_eq!((d >> 16) & 0xff_ffff, 0x34_5000, "base 23:0");
        assert_eq!((d >> 40) & 0xff, 0x9a, "access");
        assert_eq!((d >> 48) & 0xff, 0, "limit 19:16, G = 0, D = 0, L = 0");
        assert_eq!(d >> 56, 0x12, "base 31:24");
    }

    #[test]
    fn pages_the_code_cannot_reach_are_refused() {
        for gpa in [0, 0x1001, 0x1_0000_0000] {
            // SAFETY: refused before anything is written.
            assert_eq!(
                unsafe { ApJumpTable::install(gpa, ParkMode::ResetHold) },
                Err(JumpTableError::BadPage(gpa))
            );
        }
    }

    #[test]
    fn the_park_mode_follows_the_protocol_version() {
        assert_eq!(ParkMode::for_version(GhcbVersion::V2), ParkMode::ResetHold);
        assert_eq!(
            ParkMode::for_version(GhcbVersion::V1),
            ParkMode::PassThrough
        );
    }

    /// The mode byte is where the code reads it, and the code reads it before the hold: a
    /// pass-through page never sends AP Reset Hold.
    #[test]
    fn the_code_tests_the_mode_byte_before_the_hold() {
        let gpa = 0x9_f000;
        for mode in [ParkMode::ResetHold, ParkMode::PassThrough] {
            let page = page_image(gpa, mode).unwrap();
            assert_eq!(page[MODE_OFFSET], mode as u8);
            assert_eq!(&page[..4], &[0; 4], "reset vector not set yet");
            let gdtr_base =
                u64::from_le_bytes(page[GDTR_OFFSET + 2..GDTR_OFFSET + 10].try_into().unwrap());
            assert_eq!(gdtr_base, gpa + GDT_OFFSET as u64);
        }
        let code = &blob()[CODE_OFFSET..];
        // cmp byte [0x0004], 0 in 16-bit code: 80 3E 04 00 00.
        let cmp = [0x80, 0x3e, MODE_OFFSET as u8, 0x00, 0x00];
        let test_at = code
            .windows(5)
            .position(|w| w == cmp)
            .expect("the mode test");
        // mov eax, 0x006 (the AP Reset Hold request): 66 B8 06 00 00 00.
        let hold = [0x66, 0xb8, 0x06, 0x00, 0x00, 0x00];
        let hold_at = code
            .windows(6)
            .position(|w| w == hold)
            .expect("the hold request");
        assert!(test_at < hold_at);
    }
}
