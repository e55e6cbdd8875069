//! A VM's stage-2 translation: guest physical (IPA) to host physical, built with `aarch64-paging`.
//!
//! Guest RAM is mapped Normal write-back, read-write and executable, with 1 GiB and 2 MiB blocks
//! wherever alignment allows; passthrough device windows Device-nGnRE and execute-never.
//! Everything else is unmapped, so the guest's access faults into Veil (emulated devices, or an
//! abort). Tables come from Veil's heap, which its EL2 map identity-maps.
//!
//! The IPA space is 39 bits, walked from level 1 with one root table (VTCR_EL2.T0SZ = 25,
//! SL0 = 1); [`vtcr`] computes the register from the CPU's physical address size.

use aarch64_paging::{
    MapError, Mapping,
    descriptor::{Descriptor, PhysicalAddress, Stage2Attributes},
    idmap::IdTranslation,
    paging::{Constraints, MemoryRegion, Stage2},
};

/// Bits of guest physical address space.
pub const IPA_BITS: u64 = 39;
/// The table walk starts at level 1 (512 entries of 1 GiB).
pub const ROOT_LEVEL: usize = 1;

/// Guest RAM: Normal, inner and outer write-back, inner shareable, read-write, executable.
pub const RAM: Stage2Attributes = Stage2Attributes::VALID
    .union(Stage2Attributes::MEMATTR_NORMAL_INNER_WB)
    .union(Stage2Attributes::MEMATTR_NORMAL_OUTER_WB)
    .union(Stage2Attributes::SH_INNER)
    .union(Stage2Attributes::S2AP_ACCESS_RW)
    .union(Stage2Attributes::ACCESS_FLAG);

/// Passthrough device registers: Device-nGnRE, read-write, execute-never.
pub const DEVICE: Stage2Attributes = Stage2Attributes::VALID
    .union(Stage2Attributes::MEMATTR_DEVICE_nGnRE)
    .union(Stage2Attributes::S2AP_ACCESS_RW)
    .union(Stage2Attributes::ACCESS_FLAG)
    .union(Stage2Attributes::XN);

/// One VM's stage-2 tables.
pub struct Stage2Table {
    map: Mapping<IdTranslation<Stage2Attributes>, Stage2>,
}

// SAFETY: the tables are plain memory owned by this value; `Mapping` holds raw pointers only to
// them. Every mutation goes through `&mut self`, and VMs keep the table behind a lock.
unsafe impl Send for Stage2Table {}
// SAFETY: shared access only reads the tables (`translate`).
unsafe impl Sync for Stage2Table {}

/// A translation found by [`Stage2Table::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translated {
    pub pa: u64,
    pub attributes: Stage2Attributes,
    /// The level of the leaf descriptor (1 = 1 GiB block, 2 = 2 MiB block, 3 = page).
    pub level: usize,
}

impl Stage2Table {
    pub fn new() -> Self {
        Stage2Table {
            map: Mapping::new(IdTranslation::new(), ROOT_LEVEL, Stage2),
        }
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` with `attributes`. All three page-aligned.
    pub fn map(
        &mut self,
        ipa: u64,
        pa: u64,
        size: u64,
        attributes: Stage2Attributes,
    ) -> Result<(), MapError> {
        let end = ipa.checked_add(size).filter(|&e| e <= 1 << IPA_BITS);
        let Some(end) = end else {
            return Err(MapError::AddressRange(
                aarch64_paging::descriptor::VirtualAddress(ipa as usize),
            ));
        };
        let region = MemoryRegion::new(ipa as usize, end as usize);
        self.map.map_range(
            &region,
            PhysicalAddress(pa as usize),
            attributes,
            Constraints::empty(),
        )
    }

    /// Removes any mapping of `[ipa, ipa + size)`, splitting blocks as needed.
    pub fn unmap(&mut self, ipa: u64, size: u64) -> Result<(), MapError> {
        let region = MemoryRegion::new(ipa as usize, ipa.saturating_add(size) as usize);
        self.map.modify_range(&region, &|_range, desc| {
            desc.set(PhysicalAddress(0), Stage2Attributes::empty())
        })
    }

    /// Where `ipa` goes, if anywhere.
    pub fn translate(&self, ipa: u64) -> Option<Translated> {
        if ipa >= 1 << IPA_BITS {
            return None;
        }
        let region = MemoryRegion::new(ipa as usize, ipa as usize + 1);
        let mut found = None;
        self.map
            .walk_range(
                &region,
                &mut |mr: &MemoryRegion, d: &Descriptor<Stage2Attributes>, level: usize| {
                    let leaf = level == 3 || !d.flags().contains(Stage2Attributes::TABLE_OR_PAGE);
                    if d.is_valid() && leaf {
                        let _ = mr;
                        // A leaf at `level` maps 4 KiB << 9 * (3 - level) bytes.
                        let offset = ipa & ((4096u64 << (9 * (3 - level))) - 1);
                        found = Some(Translated {
                            pa: d.output_address().0 as u64 + offset,
                            attributes: d.flags() & !Stage2Attributes::TABLE_OR_PAGE,
                            level,
                        });
                    }
                    Ok(())
                },
            )
            .ok()?;
        found
    }

    /// The root table's physical address (VTTBR_EL2.BADDR).
    pub fn root(&self) -> u64 {
        self.map.root_address().0 as u64
    }
}

impl Default for Stage2Table {
    fn default() -> Self {
        Self::new()
    }
}

/// VTTBR_EL2 for a VM: the root table and the VMID in bits [55:48] (8-bit VMIDs).
pub const fn vttbr(root: u64, vmid: u8) -> u64 {
    root | (vmid as u64) << 48
}

/// VTCR_EL2 for [`Stage2Table`]s on a CPU whose ID_AA64MMFR0_EL1.PARange is `pa_range`.
///
/// T0SZ = 64 - 39; SL0 = 0b01 (start at level 1 with the 4 KiB granule); IRGN0/ORGN0 = 0b01
/// (walks are write-back read/write-allocate cacheable); SH0 = 0b11 (inner shareable); TG0 = 0b00
/// (4 KiB); PS = the physical address size, capped at 48 bits since 52-bit output addresses need
/// another descriptor format; VS = 0 (8-bit VMID); bit 31 is RES1.
pub const fn vtcr(pa_range: u64) -> u64 {
    let ps = if pa_range > 0b101 { 0b101 } else { pa_range };
    (1 << 31)
        | (ps << 16)
        | (0b00 << 14)
        | (0b11 << 12)
        | (0b01 << 10)
        | (0b01 << 8)
        | (0b01 << 6)
        | (64 - IPA_BITS)
}

/// The guest-visible ID_AA64MMFR0_EL1.PARange: 0b001 = 36 bits, the largest size that fits in
/// the 39-bit IPA space (the next encoding, 40 bits, would not).
pub const GUEST_PA_RANGE: u64 = 0b001;

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;
    const M2: u64 = 2 << 20;

    #[test]
    fn ram_uses_blocks_where_aligned() {
        let mut s2 = Stage2Table::new();
        // 1 GiB + 4 MiB + 8 KiB of RAM at IPA 1 GiB, backed at an unrelated PA.
        let size = G + 2 * M2 + 0x2000;
        s2.map(0x4000_0000, 0x1_0000_0000, size, RAM).unwrap();
        let t = s2.translate(0x4000_1234).unwrap();
        assert_eq!((t.pa, t.level), (0x1_0000_1234, 1));
        assert_eq!(t.attributes, RAM);
        let t = s2.translate(0x8000_0000 + M2 + 8).unwrap();
        assert_eq!((t.pa, t.level), (0x1_4000_0000 + M2 + 8, 2));
        let t = s2.translate(0x8000_0000 + 2 * M2 + 0x1fff).unwrap();
        assert_eq!((t.pa, t.level), (0x1_4000_0000 + 2 * M2 + 0x1fff, 3));
        assert!(s2.translate(0x8000_0000 + 2 * M2 + 0x2000).is_none());
        assert!(s2.translate(0x3fff_ffff).is_none());
    }

    #[test]
    fn ipa_differs_from_pa_and_devices_are_xn() {
        let mut s2 = Stage2Table::new();
        s2.map(0x0900_0000, 0xfe20_1000, 0x1000, DEVICE).unwrap();
        let t = s2.translate(0x0900_0004).unwrap();
        assert_eq!(t.pa, 0xfe20_1004);
        assert!(t.attributes.contains(Stage2Attributes::XN));
        assert!(
            !t.attributes
                .contains(Stage2Attributes::MEMATTR_NORMAL_INNER_WB)
        );
    }

    #[test]
    fn unmap_splits_a_block() {
        let mut s2 = Stage2Table::new();
        s2.map(0x4000_0000, 0x8000_0000, M2, RAM).unwrap();
        s2.unmap(0x4000_1000, 0x1000).unwrap();
        assert!(s2.translate(0x4000_1000).is_none());
        assert_eq!(s2.translate(0x4000_0000).unwrap().pa, 0x8000_0000);
        assert_eq!(s2.translate(0x4000_2000).unwrap().pa, 0x8000_2000);
        assert_eq!(s2.translate(0x4000_2000).unwrap().level, 3);
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let mut s2 = Stage2Table::new();
        assert!(s2.map((1 << IPA_BITS) - 0x1000, 0, 0x2000, RAM).is_err());
        assert!(s2.map(u64::MAX - 0xfff, 0, 0x1000, RAM).is_err());
        assert!(s2.translate(1 << IPA_BITS).is_none());
    }

    #[test]
    fn register_values() {
        assert_eq!(vttbr(0x4123_4000, 5), 0x0005_0000_4123_4000);
        // PARange 48 bits (0b101): PS = 0b101.
        assert_eq!(vtcr(0b101), 0x8005_3559);
        // A 52-bit CPU is capped at 48 bits.
        assert_eq!(vtcr(0b110), vtcr(0b101));
        // A 40-bit CPU (Cortex-A72 class: 44 bits is 0b100).
        assert_eq!((vtcr(0b100) >> 16) & 0b111, 0b100);
    }
}
