//! Virtual devices: what a guest reaches at an address where it has no RAM.
//!
//! A guest's access to such an address faults into Veil (a stage-2 translation fault); the data
//! abort handler decodes it and hands it to the VM's [`MmioBus`], which finds the device by
//! address. Each device is a register model that knows nothing of traps or CPUs, so it is tested
//! on the host like any other state machine.

pub mod pl011;
pub mod pl031;
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

struct MmioRegion {
    base: u64,
    size: u64,
    device: Box<dyn MmioDevice>,
}

/// The devices of one VM, by guest physical address.
#[derive(Default)]
pub struct MmioBus {
    /// Sorted by base; regions never overlap.
    regions: Vec<MmioRegion>,
}

/// A region passed to [`MmioBus::add`] overlaps one already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub base: u64,
}

impl MmioBus {
    pub fn new() -> Self {
        MmioBus {
            regions: Vec::new(),
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
        if self
            .regions
            .iter()
            .any(|r| base < r.base + r.size && r.base < end)
        {
            return Err(Overlap { base });
        }
        let at = self.regions.partition_point(|r| r.base < base);
        self.regions.insert(at, MmioRegion { base, size, device });
        Ok(())
    }

    /// The device at `ipa` and the offset into it.
    pub fn find(&self, ipa: u64) -> Option<(&dyn MmioDevice, u64)> {
        let idx = self.regions.partition_point(|r| r.base <= ipa);
        let region = self.regions.get(idx.checked_sub(1)?)?;
        (ipa - region.base < region.size).then(|| (region.device.as_ref(), ipa - region.base))
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
