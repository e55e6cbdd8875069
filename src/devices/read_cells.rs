//! Device registers the exception vectors answer by themselves.
//!
//! Some registers are read far more often than anything else a device does, and reading them
//! changes nothing: a UART's flag register, polled around every byte a console sends; a GIC
//! distributor's control register, polled for RWP after every enable a GICv3 driver writes;
//! the identification registers drivers probe. A device *publishes* such a register as a
//! cell, a 32-bit word holding exactly what a 32-bit read returns, which it keeps current
//! itself (stored under the device's own lock whenever the value changes). Each VM collects
//! its devices' cells in one [`ReadCells`] table at creation, and the vectors answer a 32-bit
//! load of a published register from it (`.Lfast_dabt` in `traps/_arch/aarch64/vectors.s`):
//! a hash of the address, one compare, one load, with four scratch registers saved and no
//! Rust. Everything else — other widths, stores, sign-extending loads, big-endian guests,
//! registers not published — takes the device's own `read` and `write` as before.
//!
//! The table is open-addressed without probing: a register whose slot is taken is simply not
//! published (it keeps working, a little slower), so a lookup is always one slot.

use core::sync::atomic::AtomicU32;

/// Slots in a table (a power of two; the vectors mask the hash with `SLOTS - 1`).
pub const SLOTS: usize = 64;

/// One slot: a register's guest physical address and its cell. `#[repr(C)]`: the vectors read
/// it as two words.
#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    /// The register's IPA; [`EMPTY`] for none (no aligned 32-bit register is there).
    ipa: u64,
    cell: *const AtomicU32,
}

/// An empty slot's address.
const EMPTY: u64 = u64::MAX;

/// One VM's published registers, by guest physical address.
///
/// Holds pointers to its devices' cells: the VM that owns the table owns the devices too, so
/// both live as long as each other.
#[repr(C)]
pub struct ReadCells {
    slots: [Slot; SLOTS],
}

// SAFETY: the cells are atomics owned by the VM's devices, which are Send + Sync and outlive the
// table (see above); the table itself is immutable once built.
unsafe impl Send for ReadCells {}
unsafe impl Sync for ReadCells {}

/// Why a register was not published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpublished {
    /// Not 4-byte aligned: no 32-bit load reads exactly it.
    Misaligned,
    /// Its slot holds another register.
    SlotTaken { by: u64 },
}

/// The slot of `ipa`. The vectors compute the same: `eor x3, ipa, ipa, lsr #14` then
/// `ubfx x3, x3, #2, #6` — the word index, with the 64 KiB block number folded in so that
/// devices' registers at equal offsets land apart.
pub const fn slot_of(ipa: u64) -> usize {
    (((ipa ^ (ipa >> 14)) >> 2) as usize) & (SLOTS - 1)
}

impl Default for ReadCells {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadCells {
    pub const fn new() -> Self {
        ReadCells {
            slots: [Slot {
                ipa: EMPTY,
                cell: core::ptr::null(),
            }; SLOTS],
        }
    }

    /// Publishes the register at `ipa`, whose 32-bit reads return `cell`'s value and have no
    /// side effect. The caller keeps `cell` alive as long as the table (see the type's doc).
    pub fn publish(&mut self, ipa: u64, cell: &AtomicU32) -> Result<(), Unpublished> {
        if ipa % 4 != 0 {
            return Err(Unpublished::Misaligned);
        }
        let slot = &mut self.slots[slot_of(ipa)];
        if slot.ipa != EMPTY && slot.ipa != ipa {
            return Err(Unpublished::SlotTaken { by: slot.ipa });
        }
        *slot = Slot { ipa, cell };
        Ok(())
    }

    /// What the vectors answer for a 32-bit load at `ipa`, if anything: their lookup, in Rust,
    /// for the tests.
    #[cfg(test)]
    pub fn read(&self, ipa: u64) -> Option<u32> {
        let slot = &self.slots[slot_of(ipa)];
        if slot.ipa != ipa || slot.cell.is_null() {
            return None;
        }
        // SAFETY: a published cell lives as long as the table (see `publish`).
        Some(unsafe { &*slot.cell }.load(core::sync::atomic::Ordering::Relaxed))
    }

    /// The published addresses.
    #[cfg(test)]
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().map(|s| s.ipa).filter(|&ipa| ipa != EMPTY)
    }
}

const _: () = assert!(core::mem::size_of::<Slot>() == 16);
const _: () = assert!(SLOTS.is_power_of_two());

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;

    #[test]
    fn published_cells_are_read_live() {
        let fr = AtomicU32::new(0x90);
        let typer = AtomicU32::new(0x7);
        let mut cells = ReadCells::new();
        cells.publish(0x0900_0018, &fr).unwrap();
        cells.publish(0x0800_0004, &typer).unwrap();
        assert_eq!(cells.read(0x0900_0018), Some(0x90));
        assert_eq!(cells.read(0x0800_0004), Some(0x7));
        fr.store(0x80, Ordering::Relaxed);
        assert_eq!(cells.read(0x0900_0018), Some(0x80));
        // Neighbours, other devices at the same offset, and the empty-slot marker itself.
        for ipa in [0x0900_0014, 0x0900_001c, 0x0901_0018, 0x0800_0000, EMPTY, 0] {
            assert_eq!(cells.read(ipa), None, "{ipa:#x}");
        }
        let mut published: alloc::vec::Vec<u64> = cells.addresses().collect();
        published.sort();
        assert_eq!(published, [0x0800_0004, 0x0900_0018]);
    }

    #[test]
    fn a_taken_slot_leaves_the_register_unpublished() {
        let a = AtomicU32::new(1);
        let b = AtomicU32::new(2);
        let mut cells = ReadCells::new();
        cells.publish(0x0900_0000, &a).unwrap();
        // Find another address with the same slot.
        let other = (1..)
            .map(|i| 0x0900_0000 + 4 * i)
            .find(|&ipa| slot_of(ipa) == slot_of(0x0900_0000))
            .unwrap();
        assert_eq!(
            cells.publish(other, &b),
            Err(Unpublished::SlotTaken { by: 0x0900_0000 })
        );
        assert_eq!(cells.read(other), None);
        assert_eq!(cells.read(0x0900_0000), Some(1));
        // Publishing the same register again just replaces its cell.
        cells.publish(0x0900_0000, &b).unwrap();
        assert_eq!(cells.read(0x0900_0000), Some(2));
        assert_eq!(cells.publish(0x0900_0002, &a), Err(Unpublished::Misaligned));
    }

    #[test]
    fn the_hash_is_what_the_vectors_compute() {
        // eor x3, x1, x1, lsr #14; ubfx x3, x3, #2, #6
        for ipa in [
            0x0800_0004u64,
            0x0900_0018,
            0x080a_0000,
            0x0a00_01fc,
            0xffff_ffff_fffc,
        ] {
            let x3 = ipa ^ (ipa >> 14);
            let ubfx = (x3 >> 2) & 0x3f;
            assert_eq!(slot_of(ipa), ubfx as usize, "{ipa:#x}");
        }
    }

    #[test]
    fn the_virtual_boards_hot_registers_do_not_collide() {
        use crate::vm::virtual_board::{GICD_BASE, GICR_BASE, GICR_STRIDE, PL011_BASE};
        // UARTFR; GICD_CTLR, TYPER, IIDR; GICR_CTLR of eight vCPUs.
        let mut hot = alloc::vec![PL011_BASE + 0x18, GICD_BASE, GICD_BASE + 4, GICD_BASE + 8];
        hot.extend((0..8).map(|v| GICR_BASE + v * GICR_STRIDE));
        let cell = AtomicU32::new(0);
        let mut cells = ReadCells::new();
        for &ipa in &hot {
            assert_eq!(cells.publish(ipa, &cell), Ok(()), "{ipa:#x}");
        }
    }
}
