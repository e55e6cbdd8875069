//! Veil's heap: one block of host RAM, given at boot, behind a buddy allocator.
//!
//! Everything that lives as long as a VM (VM and vCPU structures, stage-2 tables, device models,
//! generated DTBs) comes from here. The exit path does not allocate.

/// Size of the heap. Stage-2 tables for a 1 GiB guest mapped with 2 MiB blocks take a few
/// pages; a guest DTB a few KiB. 16 MiB leaves ample room for several VMs.
pub const HEAP_SIZE: u64 = 16 << 20;

#[cfg(not(test))]
#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::new();

/// Hands `[base, base + HEAP_SIZE)` to the global allocator.
///
/// # Safety
/// The range must be free RAM, mapped read-write in Veil's EL2 map, used by nothing else, ever.
pub unsafe fn init(base: u64) {
    #[cfg(not(test))]
    // SAFETY: the caller gives unused, mapped RAM for the heap's exclusive use.
    unsafe {
        HEAP.lock().init(base as usize, HEAP_SIZE as usize);
    }
    #[cfg(test)]
    let _ = base;
}
