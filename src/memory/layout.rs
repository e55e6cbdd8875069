//! Veil's image in memory. This is the only module that reads linker-script symbols
//! (`linker/veil.ld`); everything else asks it.

use crate::board::discovery::Region;

/// Each physical CPU's EL2 stack, in bytes (`STACK_SIZE` in `linker/veil.ld`).
pub const STACK_SIZE: u64 = 0x10000;

#[cfg(target_os = "none")]
mod symbols {
    unsafe extern "C" {
        pub static __image_start: u8;
        pub static __image_end: u8;
        pub static __stacks_start: u8;
    }
}

/// Where Veil's image lies: code, data, bss and the per-CPU stacks.
pub fn image() -> Region {
    #[cfg(target_os = "none")]
    {
        let (start, end) = (
            &raw const symbols::__image_start as u64,
            &raw const symbols::__image_end as u64,
        );
        Region {
            base: start,
            size: end - start,
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        Region { base: 0, size: 0 }
    }
}

/// The top of CPU `index`'s EL2 stack.
pub fn stack_top(index: usize) -> u64 {
    #[cfg(target_os = "none")]
    {
        let base = &raw const symbols::__stacks_start as u64;
        base + (index as u64 + 1) * STACK_SIZE
    }
    #[cfg(not(target_os = "none"))]
    {
        (index as u64 + 1) * STACK_SIZE
    }
}
