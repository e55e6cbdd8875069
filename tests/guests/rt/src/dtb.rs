//! The device tree the loader passed in x0: the guest's view of its board.
//!
//! The DTB is read in place through the `fdt` crate, which needs no allocator. The runtime
//! treats it as read-only for the guest's whole life, which is what makes `'static` borrows of
//! it sound; no test guest writes to the memory it occupies.

use fdt::{Fdt, FdtError};

use crate::entry::dtb_address;

/// The DTB at the address the loader passed in x0 to vCPU 0, checked for a valid header.
///
/// Fails with [`FdtError::BadPtr`] when x0 was 0 or not 8-byte aligned (the boot protocol
/// requires 8), rather than reading at an address no loader would use.
pub fn get() -> Result<Fdt<'static>, FdtError> {
    let address = dtb_address();
    if address == 0 || !address.is_multiple_of(8) {
        return Err(FdtError::BadPtr);
    }
    // SAFETY: the boot protocol puts a DTB at this address in the guest's RAM, where it stays
    // unmodified (see the module docs); `from_ptr` reads its header before trusting its size.
    unsafe { Fdt::from_ptr(address as *const u8) }
}

/// Calls `f` with the MPIDR affinity (`reg`, masked with
/// [`MPIDR_AFFINITY_MASK`](crate::cpu::MPIDR_AFFINITY_MASK)) of each `/cpus/cpu@N` node, in DTB
/// order; nothing when there is no valid DTB or no `/cpus`.
pub fn for_each_cpu(mut f: impl FnMut(u64)) {
    let Ok(fdt) = get() else { return };
    let Some(node) = fdt.find_node("/cpus") else {
        return;
    };
    node.children()
        .filter(|n| n.name.split('@').next() == Some("cpu"))
        .filter_map(|n| n.reg()?.next())
        .for_each(|r| f(r.starting_address as u64 & crate::cpu::MPIDR_AFFINITY_MASK));
}

/// A place for a note from one boot to the next across a warm reset (PSCI SYSTEM_RESET), which
/// leaves RAM as it was: two words at the start of the last 4 KiB page of RAM (from `/memory`),
/// where no loader puts anything (image, DTB and initrd sit at the bottom). `None` without a
/// valid DTB or `/memory`.
pub fn reset_note() -> Option<*mut [u64; 2]> {
    let fdt = get().ok()?;
    let region = fdt.memory().regions().next()?;
    let end = region.starting_address as usize + region.size?;
    Some((end - 0x1000) as *mut [u64; 2])
}

/// The kernel command line: `/chosen/bootargs`, or `None` if there is no valid DTB, no
/// `/chosen` or no `bootargs` in it. See [`crate::bootargs`] for picking words out of it.
pub fn bootargs() -> Option<&'static str> {
    let fdt = get().ok()?;
    // Fdt::chosen() panics without /chosen; a board may legitimately have none.
    let chosen = fdt.find_node("/chosen")?;
    chosen.property("bootargs")?.as_str()
}
