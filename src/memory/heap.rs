//! Veil's heap: one block of host RAM, given at boot, behind a buddy allocator.
//!
//! Everything that lives as long as a VM (VM and vCPU structures, stage-2 tables, device models,
//! generated DTBs) comes from here. The exit path does not allocate.

/// Size of the heap. Stage-2 tables for a 1 GiB guest mapped with 2 MiB blocks take a few
/// pages; a guest DTB a few KiB. 16 MiB leaves ample room for several VMs.
pub const HEAP_SIZE: u64 = 16 << 20;

#[cfg(not(test))]
#[global_allocator]
static HEAP: Heap = Heap(buddy_system_allocator::LockedHeap::new());

/// The buddy allocator, with zeroed allocations (page-sized translation tables among them)
/// cleared by `memory::bulk` in 64-byte blocks rather than by the strict-align `memset`.
struct Heap(buddy_system_allocator::LockedHeap<32>);

// SAFETY: every call is the buddy allocator's own; alloc_zeroed only adds zeroing the block it
// returns, which is the caller's to use.
unsafe impl core::alloc::GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarded; a non-null result is `layout.size()` bytes of heap (Normal memory)
        // that nothing else uses.
        unsafe {
            let block = self.0.alloc(layout);
            if !block.is_null() {
                super::bulk::zero(block, layout.size());
            }
            block
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// Hands `[base, base + HEAP_SIZE)` to the global allocator.
///
/// # Safety
/// The range must be free RAM, mapped read-write in Veil's EL2 map, used by nothing else, ever.
pub unsafe fn init(base: u64) {
    #[cfg(not(test))]
    // SAFETY: the caller gives unused, mapped RAM for the heap's exclusive use.
    unsafe {
        HEAP.0.lock().init(base as usize, HEAP_SIZE as usize);
    }
    #[cfg(test)]
    let _ = base;
}
