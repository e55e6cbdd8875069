//! Virtual devices: what a guest reaches at an address where it has no RAM.
//!
//! A guest's access to such an address faults into Veil (a stage-2 translation fault); the data
//! abort handler decodes it and hands it to the VM's [`MmioBus`], which finds the device by
//! address. Each device is a register model that knows nothing of traps or CPUs, so it is tested
//! on the host like any other state machine.

pub mod pl011;
pub mod pl031;
pub mod read_cells;
pub mod virtio_mmio;

use alloc::boxed::Box;
use alloc::vec::Vec;

/// Why a device refused an access; the guest receives an external abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The register does not exist or does not take this access width.
    BadAccess,
}

/// A device's interrupt output, wired by the VM to its virtual GIC. Devices call it when the
/// level changes (they may hold their own lock: the vGIC's lock comes after it).
pub trait IrqLine: Send + Sync {
    fn set_level(&self, level: bool);
}

/// A memory-mapped device model. Offsets are relative to the device's base; `size` is 1, 2, 4
/// or 8 bytes. Devices lock their own state, so one VM's vCPUs may reach a device at once.
///
/// An access a device refuses (`Err`) must leave it exactly as it was: the exit path may ask
/// again (`traps::fast_mmio` leaves refusals to the full exit, which performs the access anew
/// and then injects the abort).
pub trait MmioDevice: Send + Sync {
    /// A short name for log lines.
    fn name(&self) -> &'static str;
    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError>;
    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError>;
}

/// A device shared with other parts of Veil (e.g. a UART that also takes console input).
impl<T: MmioDevice> MmioDevice for alloc::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn read(&self, offset: u64, size: u8) -> Result<u64, MmioError> {
        (**self).read(offset, size)
    }
    fn write(&self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        (**self).write(offset, size, value)
    }
}

/// One device's window on the bus.
struct MmioRegion {
    base: u64,
    size: u64,
    device: Box<dyn MmioDevice>,
}

/// The devices of one VM, by guest physical address.
///
/// Lookups are on every device exit, so they cost one load where it matters: the bus may
/// index a window of the address space (where the virtual board puts its devices) by 64 KiB
/// block, each block naming the one region that touches it. Blocks several regions share, and
/// addresses outside the window, are found by a scan of the (few) regions.
#[derive(Default)]
pub struct MmioBus {
    /// In the order they were added; they never overlap.
    regions: Vec<MmioRegion>,
    /// The first address the block index covers.
    window_base: u64,
    /// Per 64 KiB block from `window_base`: the region touching it, [`NO_REGION`] or
    /// [`SEVERAL_REGIONS`].
    blocks: Vec<u8>,
}

/// log2 of the block size of the bus's index.
const BLOCK_SHIFT: u32 = 16;
/// An index entry: no region touches the block.
const NO_REGION: u8 = 0xff;
/// An index entry: more than one region touches the block (or the region's number does not
/// fit), so the regions are scanned.
const SEVERAL_REGIONS: u8 = 0xfe;

/// A region passed to [`MmioBus::add`] overlaps one already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub base: u64,
}

impl MmioBus {
    /// A bus without an index: every lookup scans.
    pub fn new() -> Self {
        MmioBus::default()
    }

    /// A bus indexing `[window_base, window_base + window_size)` by 64 KiB block.
    pub fn with_index(window_base: u64, window_size: u64) -> Self {
        MmioBus {
            regions: Vec::new(),
            window_base,
            blocks: alloc::vec![NO_REGION; (window_size >> BLOCK_SHIFT) as usize],
        }
    }

    /// Places `device` at `[base, base + size)`.
    pub fn add(
        &mut self,
        base: u64,
        size: u64,
        device: Box<dyn MmioDevice>,
    ) -> Result<(), Overlap> {
        let end = base.checked_add(size).ok_or(Overlap { base })?;
        if size == 0
            || self
                .regions
                .iter()
                .any(|r| base < r.base + r.size && r.base < end)
        {
            return Err(Overlap { base });
        }
        let number = self.regions.len();
        self.regions.push(MmioRegion { base, size, device });
        // Mark the blocks the region touches inside the window.
        let first = base.saturating_sub(self.window_base) >> BLOCK_SHIFT;
        let last = (end - 1).saturating_sub(self.window_base) >> BLOCK_SHIFT;
        if end > self.window_base {
            for block in first..=last {
                let Some(entry) = self.blocks.get_mut(block as usize) else {
                    break;
                };
                *entry = if *entry == NO_REGION && number < SEVERAL_REGIONS as usize {
                    number as u8
                } else {
                    SEVERAL_REGIONS
                };
            }
        }
        Ok(())
    }

    /// The region at `ipa` and the offset into it.
    fn region_at(&self, ipa: u64) -> Option<(&MmioRegion, u64)> {
        let block = ipa.wrapping_sub(self.window_base) >> BLOCK_SHIFT;
        let region = match self.blocks.get(block as usize) {
            Some(&NO_REGION) => return None,
            Some(&SEVERAL_REGIONS) | None => self
                .regions
                .iter()
                .find(|r| ipa.wrapping_sub(r.base) < r.size)?,
            Some(&number) => &self.regions[number as usize],
        };
        let offset = ipa.wrapping_sub(region.base);
        (offset < region.size).then_some((region, offset))
    }

    /// The device at `ipa` and the offset into it.
    pub fn find(&self, ipa: u64) -> Option<(&dyn MmioDevice, u64)> {
        self.region_at(ipa)
            .map(|(region, offset)| (region.device.as_ref(), offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl MmioDevice for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn read(&self, offset: u64, _size: u8) -> Result<u64, MmioError> {
            Ok(self.0 + offset)
        }
        fn write(&self, _offset: u64, _size: u8, _value: u64) -> Result<(), MmioError> {
            Err(MmioError::BadAccess)
        }
    }

    #[test]
    fn find_by_address() {
        let mut bus = MmioBus::new();
        bus.add(0x0900_0000, 0x1000, Box::new(Fixed(100))).unwrap();
        bus.add(0x0800_0000, 0x1_0000, Box::new(Fixed(200)))
            .unwrap();
        let (dev, off) = bus.find(0x0900_0ffc).unwrap();
        assert_eq!((dev.read(off, 4).unwrap(), off), (100 + 0xffc, 0xffc));
        let (dev, off) = bus.find(0x0800_0000).unwrap();
        assert_eq!(dev.read(off, 4).unwrap(), 200);
        assert!(bus.find(0x0900_1000).is_none());
        assert!(bus.find(0x07ff_ffff).is_none());
        assert!(bus.find(0).is_none());
        assert!(bus.find(u64::MAX).is_none());
    }

    #[test]
    fn the_index_agrees_with_a_scan() {
        // The virtual board's layout, plus regions sharing a block, straddling the window's
        // ends and lying outside it.
        let layout: &[(u64, u64)] = &[
            (0x0800_1000, 0xf000),
            (0x080a_0000, 0x8_0000),
            (0x0900_0000, 0x1000),
            (0x0900_8000, 0x100),
            (0x0901_0000, 0x1000),
            (0x0a00_0000, 0x4000),
            (0x07ff_f000, 0x2000),
            (0x0bff_0000, 0x2_0000),
            (0x1000_0000, 0x1000),
            (0x100, 0x10),
        ];
        let mut indexed = MmioBus::with_index(0x0800_0000, 0x0400_0000);
        let mut scanned = MmioBus::new();
        for (i, &(base, size)) in layout.iter().enumerate() {
            indexed
                .add(base, size, Box::new(Fixed(i as u64 * 0x1_0000_0000)))
                .unwrap();
            scanned
                .add(base, size, Box::new(Fixed(i as u64 * 0x1_0000_0000)))
                .unwrap();
        }
        let read = |bus: &MmioBus, ipa| bus.find(ipa).map(|(d, o)| (d.read(o, 4).unwrap(), o));
        let mut probes = vec![
            0,
            0xff,
            0x100,
            0x10f,
            0x110,
            u64::MAX,
            0x0c00_0000,
            0x0c01_ffff,
        ];
        for &(base, size) in layout {
            for ipa in [
                base,
                base + 1,
                base + size - 1,
                base + size,
                base.wrapping_sub(1),
            ] {
                probes.push(ipa);
            }
        }
        // Every 4 KiB of the window and around it.
        probes.extend((0x07f0_0000..0x0c10_0000u64).step_by(0x1000));
        for ipa in probes {
            assert_eq!(read(&indexed, ipa), read(&scanned, ipa), "{ipa:#x}");
        }
        assert_eq!(
            read(&indexed, 0x0900_8004),
            Some((3 * 0x1_0000_0000 + 4, 4))
        );
        assert_eq!(read(&indexed, 0x0900_4000), None);
    }

    #[test]
    fn overlaps_are_refused() {
        let mut bus = MmioBus::new();
        bus.add(0x1000, 0x1000, Box::new(Fixed(0))).unwrap();
        assert_eq!(
            bus.add(0x1fff, 0x10, Box::new(Fixed(0))),
            Err(Overlap { base: 0x1fff })
        );
        assert_eq!(
            bus.add(0x0, 0x1001, Box::new(Fixed(0))),
            Err(Overlap { base: 0 })
        );
        assert!(bus.add(u64::MAX, 2, Box::new(Fixed(0))).is_err());
        bus.add(0x2000, 0x1000, Box::new(Fixed(0))).unwrap();
    }
}
