//! The IGVM entry point every vCPU of a guest on the launch contract starts at.
//!
//! `handoff::launch` starts every vCPU at the same RIP with RSP = 0, the parameter area's GPA
//! in RDI and the vCPU's index in RSI. Before any Rust code can run, the entry must pick a stack
//! by that index, which only assembly can do; [`igvm_entry!`](crate::igvm_entry) writes that
//! entry once for every guest (the stage's IGVM path and the simulator's test guest).

/// Defines the naked IGVM entry point `$name` (exported unmangled, for the IGVM builder to
/// look up): vCPU 0 runs `$main(param_gpa: u64) -> !` on `$stack` (`$stack_size` bytes, RDI
/// kept), an AP runs `$ap_main(index: u64) -> !` on its slot of `$ap_stacks` (`$ap_stack_size`
/// bytes per vCPU index, `$vcpus` slots, slot 0 unused). An index of `$vcpus` or more is a
/// launch bug: `ud2` without an IDT shuts that vCPU down. RBP is cleared so backtraces end
/// here. The stack statics are checked at compile time to be as large as the sizes say.
///
/// ```ignore
/// sev::igvm_entry! {
///     /// The IGVM entry point of every vCPU.
///     pub fn _start;
///     boot: main, STACK, STACK_SIZE;
///     aps: ap::main, ap::STACKS, ap::STACK_SIZE, MAX_VCPUS;
/// }
/// ```
#[macro_export]
macro_rules! igvm_entry {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident;
        boot: $main:path, $stack:path, $stack_size:expr;
        aps: $ap_main:path, $ap_stacks:path, $ap_stack_size:expr, $vcpus:expr $(;)?
    ) => {
        // The stacks are at least as large as the entry assumes.
        const _: () = {
            assert!($crate::guest::size_of_static(&raw const $stack) >= $stack_size);
            assert!(
                $crate::guest::size_of_static(&raw const $ap_stacks)
                    >= $ap_stack_size * $vcpus as usize
            );
        };

        $(#[$attr])*
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        $vis extern "C" fn $name() -> ! {
            ::core::arch::naked_asm!(
                "test rsi, rsi",
                "jnz 2f",
                "lea rsp, [rip + {stack} + {size}]",
                "xor ebp, ebp",
                "call {main}",
                "ud2",
                "2:",
                "cmp rsi, {vcpus}",
                "jae 3f",
                "imul rax, rsi, {ap_size}",
                "lea rsp, [rip + {ap_stacks} + {ap_size}]",
                "add rsp, rax",
                "xor ebp, ebp",
                "mov rdi, rsi",
                "call {ap_main}",
                "3:",
                "ud2",
                stack = sym $stack,
                size = const $stack_size,
                main = sym $main,
                vcpus = const $vcpus,
                ap_size = const $ap_stack_size,
                ap_stacks = sym $ap_stacks,
                ap_main = sym $ap_main,
            )
        }
    };
}

/// The size of the static `_at` points to, for [`igvm_entry!`](crate::igvm_entry)'s
/// compile-time checks (a raw pointer, so that `static mut` stacks need no reference).
#[doc(hidden)]
pub const fn size_of_static<T>(_at: *const T) -> usize {
    size_of::<T>()
}
