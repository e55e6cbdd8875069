//! Turning on Veil's EL2 stage-1 MMU (architecture part of `memory::el2_map`).

use aarch64_cpu::{
    asm::barrier,
    registers::{ID_AA64MMFR0_EL1, MAIR_EL2, SCTLR_EL2, TCR_EL2, TTBR0_EL2},
};
use core::arch::asm;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};

/// Programs MAIR/TCR/TTBR0_EL2 for the map whose root is `root` and turns on the MMU and caches.
///
/// # Safety
/// `root` must be a complete identity map of everything this CPU touches from now on (its code,
/// stack, data, and devices), built by `el2_map::build_boot_map`.
pub unsafe fn enable(root: u64) {
    // MAIR_EL2: the two memory types el2_map's attributes index.
    //   Attr0 = Device-nGnRE: registers, no gathering or reordering, early write ack allowed.
    //   Attr1 = Normal, inner and outer write-back non-transient, read- and write-allocate.
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc,
    );

    // TCR_EL2 (E2H=0 layout): one 39-bit region from TTBR0 (T0SZ=25, walk from level 1 as
    // el2_map::ROOT_LEVEL builds it), 4 KiB granule, table walks cacheable write-back and inner
    // shareable like the memory they read; PS = the CPU's physical address size, capped at 48
    // bits because 52-bit output addresses need a different descriptor format.
    let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(0b101);
    TCR_EL2.write(
        TCR_EL2::T0SZ.val(64 - crate::memory::el2_map::VA_BITS)
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::SH0::Inner
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::PS.val(pa_range)
            + TCR_EL2::TBI::Used,
    );
    // TCR_EL2 bits 31 and 23 are RES1 in the E2H=0 layout.
    TCR_EL2.set(TCR_EL2.get() | (1 << 31) | (1 << 23));

    TTBR0_EL2.set_baddr(root);

    // Nothing from before may linger in the TLBs for EL2.
    // SAFETY: TLB invalidation has no effect on memory.
    unsafe { asm!("tlbi alle2", options(nostack)) };
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);

    // SCTLR_EL2: M = stage-1 MMU on; C and I = data and instruction caches on; SA = SP
    // alignment checking (catches a corrupted stack early). A stays 0: Rust's generated code may
    // do unaligned accesses to Normal memory, which the architecture allows.
    SCTLR_EL2.modify(
        SCTLR_EL2::M::Enable
            + SCTLR_EL2::C::Cacheable
            + SCTLR_EL2::I::Cacheable
            + SCTLR_EL2::SA::Enable,
    );
    barrier::isb(barrier::SY);
}

/// Makes this CPU use the map the boot CPU built (secondary CPUs).
///
/// # Safety
/// As for [`enable`].
pub unsafe fn enable_secondary(root: u64) {
    // SAFETY: forwarded contract.
    unsafe { enable(root) }
}
