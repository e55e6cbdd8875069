//! Memory: Veil's own image, its heap and page frames, and the two kinds of translation tables it
//! builds — its own EL2 stage-1 identity map and each VM's stage-2 map.
//!
//! Ownership: every byte of host RAM that is not Veil's image, the host DTB, the VM package or a
//! firmware reservation goes to the frame allocator ([`frames`]). The heap is one block of frames;
//! each VM's RAM is another, owned by that VM. No frame is ever in two of these.

pub mod bulk;
pub mod el2_map;
pub mod frames;
pub mod heap;
pub mod layout;
pub mod stage2;

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/cache.rs"]
pub mod cache;

#[cfg(not(target_arch = "aarch64"))]
pub mod cache {
    //! Host builds have no caches to maintain.
    pub fn clean_dcache_range(_start: usize, _len: usize) {}
    pub fn clean_invalidate_dcache_range(_start: usize, _len: usize) {}
    pub fn invalidate_icache_all() {}
}

/// The translation granule Veil uses everywhere (stage 1 and stage 2).
pub const PAGE_SIZE: u64 = 4096;
/// The level-2 block size.
pub const BLOCK_2M: u64 = 2 << 20;

/// Rounds `value` up to a multiple of `align` (a power of two); `None` on overflow.
pub const fn align_up(value: u64, align: u64) -> Option<u64> {
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(align_up(0, PAGE_SIZE), Some(0));
        assert_eq!(align_up(1, PAGE_SIZE), Some(4096));
        assert_eq!(align_up(4096, PAGE_SIZE), Some(4096));
        assert_eq!(align_up(u64::MAX, PAGE_SIZE), None);
        assert_eq!(align_down(0x1fff, PAGE_SIZE), 0x1000);
    }
}

#[cfg(target_arch = "aarch64")]
#[path = "_arch/aarch64/mmu.rs"]
pub mod mmu;
