//! The virtual board every guest sees: one memory map, one interrupt map.
//!
//! Veil shows each VM the same machine as QEMU's `virt` board, so a kernel that boots there
//! boots on Veil unchanged. This module is the single source of truth for that machine: the
//! guest DTB (`super::guest_dtb`), the image loader (`super::loader`), stage-2 mappings and the
//! device emulators all take their addresses and interrupt numbers from here and from nowhere
//! else.
//!
//! Every value was checked against the DTB that QEMU 10.0 dumps for
//! `-M virt,gic-version=3` and `-M virt,gic-version=2` (`dumpdtb=FILE`, then `dtc -I dtb`).
//! Veil shows only the subset of that board it emulates: no ITS, GICv2m, PCIe, flash, fw-cfg,
//! PL061 or PMU.
//!
//! Interrupt numbers come in two spellings. The GIC and Veil's vGIC speak in INTIDs
//! (SGI 0-15, PPI 16-31, SPI 32+); a DTB `interrupts` specifier names a PPI or SPI by its
//! number *within its class*. Constants below say which one they are; [`ppi_intid`] and
//! [`spi_intid`] convert.

/// Guest-physical (IPA) address where guest RAM starts.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Most guest RAM the board has room for: QEMU `virt`'s RAM window ends at 256 GiB, where its
/// high MMIO region begins; it also keeps every IPA below 2^40, the smallest stage-2 input
/// size worth supporting.
pub const RAM_MAX_SIZE: u64 = 0x40_0000_0000 - RAM_BASE;

/// GIC distributor (v2 and v3) base address.
pub const GICD_BASE: u64 = 0x0800_0000;
/// Size of the GIC distributor window.
pub const GICD_SIZE: u64 = 0x1_0000;

/// GICv2 CPU interface base address (GICv2 guests only).
pub const GICC_BASE: u64 = 0x0801_0000;
/// Size of the GICv2 CPU interface window as QEMU describes it.
pub const GICC_SIZE: u64 = 0x1_0000;

/// GICv3 redistributor region base address (GICv3 guests only).
pub const GICR_BASE: u64 = 0x080A_0000;
/// Size of one vCPU's redistributor: an RD_base frame plus an SGI_base frame, 64 KiB each.
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Size of the whole redistributor window QEMU reserves; it ends where the PL011 starts.
pub const GICR_REGION_SIZE: u64 = 0xF6_0000;
/// Most vCPUs a GICv3 guest can have: as many redistributors as fit in the window.
pub const GICV3_MAX_VCPUS: usize = (GICR_REGION_SIZE / GICR_STRIDE) as usize;
/// Most vCPUs a GICv2 guest can have: the architecture's limit of 8 CPU interfaces.
pub const GICV2_MAX_VCPUS: usize = 8;

/// PL011 UART base address (the guest console).
pub const PL011_BASE: u64 = 0x0900_0000;
/// Size of the PL011 register window.
pub const PL011_SIZE: u64 = 0x1000;
/// PL011 interrupt as a DTB SPI number (INTID 33).
pub const PL011_SPI: u32 = 1;

/// PL031 real-time clock base address.
pub const PL031_BASE: u64 = 0x0901_0000;
/// Size of the PL031 register window.
pub const PL031_SIZE: u64 = 0x1000;
/// PL031 interrupt as a DTB SPI number (INTID 34).
pub const PL031_SPI: u32 = 2;

/// Frequency of the fixed `apb-pclk` clock that feeds the PrimeCell devices.
pub const APB_PCLK_HZ: u32 = 24_000_000;

/// Base address of the first virtio-mmio transport slot.
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
/// Size of one virtio-mmio transport slot.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x200;
/// Number of virtio-mmio transport slots.
pub const VIRTIO_MMIO_SLOTS: u32 = 32;
/// DTB SPI number of slot 0; slot `n` uses SPI `VIRTIO_MMIO_FIRST_SPI + n` (INTID 48 + n).
pub const VIRTIO_MMIO_FIRST_SPI: u32 = 16;

/// Where the board's devices are: from the GIC to the end of the virtio-mmio slots, with room
/// to spare. Each VM's MMIO bus indexes this window (`devices::MmioBus::with_index`).
pub const DEVICE_WINDOW_BASE: u64 = 0x0800_0000;
pub const DEVICE_WINDOW_SIZE: u64 = 0x0400_0000;

/// EL1 virtual timer PPI as an INTID (DTB PPI 11); the one Linux uses in a guest.
pub const VIRT_TIMER_INTID: u32 = 27;
/// EL1 non-secure physical timer PPI as an INTID (DTB PPI 14).
pub const PHYS_TIMER_INTID: u32 = 30;
/// EL2 physical (hypervisor) timer PPI as an INTID (DTB PPI 10).
pub const HYP_TIMER_INTID: u32 = 26;
/// Secure physical timer PPI as an INTID (DTB PPI 13).
pub const SEC_PHYS_TIMER_INTID: u32 = 29;

/// GIC virtual-interface maintenance interrupt PPI as an INTID (DTB PPI 9).
pub const MAINTENANCE_INTID: u32 = 25;

/// Offset from [`RAM_BASE`] at which a raw binary is loaded and entered, as QEMU does.
pub const RAW_IMAGE_OFFSET: u64 = 0x8_0000;

/// First PPI INTID: DTB PPI `n` is INTID `PPI_BASE_INTID + n`.
pub const PPI_BASE_INTID: u32 = 16;
/// First SPI INTID: DTB SPI `n` is INTID `SPI_BASE_INTID + n`.
pub const SPI_BASE_INTID: u32 = 32;

/// The INTID of DTB PPI number `ppi`.
pub const fn ppi_intid(ppi: u32) -> u32 {
    PPI_BASE_INTID + ppi
}

/// The INTID of DTB SPI number `spi`.
pub const fn spi_intid(spi: u32) -> u32 {
    SPI_BASE_INTID + spi
}

/// The DTB PPI number of a PPI INTID (16..=31).
pub const fn intid_to_ppi(intid: u32) -> u32 {
    intid - PPI_BASE_INTID
}

/// Base address of virtio-mmio slot `slot`, or `None` past the last slot.
pub const fn virtio_mmio_slot_base(slot: u32) -> Option<u64> {
    if slot < VIRTIO_MMIO_SLOTS {
        Some(VIRTIO_MMIO_BASE + slot as u64 * VIRTIO_MMIO_SLOT_SIZE)
    } else {
        None
    }
}

/// Size of the redistributor window a GICv3 guest with `nr_vcpus` vCPUs sees, or `None` if
/// that many redistributors do not fit.
pub const fn gicr_size(nr_vcpus: usize) -> Option<u64> {
    if nr_vcpus <= GICV3_MAX_VCPUS {
        Some(nr_vcpus as u64 * GICR_STRIDE)
    } else {
        None
    }
}

// The map must not overlap itself; a wrong edit here would otherwise surface as a guest
// driver poking the wrong device.
const _: () = {
    assert!(GICD_BASE + GICD_SIZE <= GICC_BASE);
    assert!(GICC_BASE + GICC_SIZE <= GICR_BASE);
    assert!(GICR_BASE + GICR_REGION_SIZE <= PL011_BASE);
    assert!(PL011_BASE + PL011_SIZE <= PL031_BASE);
    assert!(PL031_BASE + PL031_SIZE <= VIRTIO_MMIO_BASE);
    assert!(VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOTS as u64 * VIRTIO_MMIO_SLOT_SIZE <= RAM_BASE);
    assert!(GICV3_MAX_VCPUS == 123);
    assert!(RAM_BASE.checked_add(RAM_MAX_SIZE).is_some());
    // SPIs of the devices must not collide with each other.
    assert!(PL011_SPI != PL031_SPI);
    assert!(PL031_SPI < VIRTIO_MMIO_FIRST_SPI);
    // Timer and maintenance interrupts are PPIs.
    assert!(VIRT_TIMER_INTID >= PPI_BASE_INTID && VIRT_TIMER_INTID < SPI_BASE_INTID);
    assert!(PHYS_TIMER_INTID >= PPI_BASE_INTID && PHYS_TIMER_INTID < SPI_BASE_INTID);
    assert!(HYP_TIMER_INTID >= PPI_BASE_INTID && HYP_TIMER_INTID < SPI_BASE_INTID);
    assert!(SEC_PHYS_TIMER_INTID >= PPI_BASE_INTID && SEC_PHYS_TIMER_INTID < SPI_BASE_INTID);
    assert!(MAINTENANCE_INTID >= PPI_BASE_INTID && MAINTENANCE_INTID < SPI_BASE_INTID);
    assert!(RAW_IMAGE_OFFSET.is_multiple_of(4096));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_numbers_match_qemu_virt() {
        // QEMU's DTB: timer interrupts = <1 13 f 1 14 f 1 11 f 1 10 f>.
        assert_eq!(intid_to_ppi(SEC_PHYS_TIMER_INTID), 13);
        assert_eq!(intid_to_ppi(PHYS_TIMER_INTID), 14);
        assert_eq!(intid_to_ppi(VIRT_TIMER_INTID), 11);
        assert_eq!(intid_to_ppi(HYP_TIMER_INTID), 10);
        // QEMU's DTB with virtualization=on: intc interrupts = <1 9 4>.
        assert_eq!(intid_to_ppi(MAINTENANCE_INTID), 9);
        assert_eq!(spi_intid(PL011_SPI), 33);
        assert_eq!(spi_intid(VIRTIO_MMIO_FIRST_SPI), 48);
        assert_eq!(ppi_intid(11), VIRT_TIMER_INTID);
    }

    #[test]
    fn virtio_slots() {
        assert_eq!(virtio_mmio_slot_base(0), Some(0x0a00_0000));
        assert_eq!(virtio_mmio_slot_base(31), Some(0x0a00_3e00));
        assert_eq!(virtio_mmio_slot_base(32), None);
    }

    #[test]
    fn redistributor_window() {
        assert_eq!(gicr_size(1), Some(0x2_0000));
        assert_eq!(gicr_size(8), Some(0x10_0000));
        // QEMU's own DTB sizes the window for 123 redistributors: 0xf60000.
        assert_eq!(gicr_size(123), Some(GICR_REGION_SIZE));
        assert_eq!(gicr_size(124), None);
    }
}
